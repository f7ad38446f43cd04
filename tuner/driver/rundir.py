"""A run directory: the durable record of one tuning + full-run session.

Layout (one file per record, so a crash can only lose the record being written)::

    manifest.json                   task, schedule (full dict), schedule_source, seed, optimizers, versions, created
    tuning/<optimizer>/g03-i17.json one finished GA individual (hparams: the searcher's values, steps, seed,
                                    fitness, curve; trial_hparams: what the trial ran, where a schedule's
                                    `horizon` scaled them)
    tuning/<optimizer>/state.json   the GA's mean after its last complete generation
    tuning/<optimizer>/noise-g03.json  the noise check of generation 3: its best re-run on another seed
    errors/<optimizer>/g03-i17.txt  traceback of an individual whose trial raised (fitness +inf)
    errors/<optimizer>/full-seed-2.txt  traceback of a full run that raised
    tuned.json                      tuned hyperparameters (after lr scaling), the raw GA means (or best
                                    trials), "searcher" (ga, random, tpe, cmaes) and "schedule" (its file);
                                    "failed": {optimizer: why} for those whose trials kept raising
    full/<optimizer>/seed-2.json    one finished full-length run (seed-2.ckpt: its checkpoint until then)
    summary.json                    reused/ran counts, retries, efficiency, wall time of the last session
    log.jsonl                       the run log: what happened, one JSON object per line (below)
    .lock                           who runs on it now: {pid, host, started, argv} (see `RunDir.lock`)

Every write is atomic (temp file + fsync + os.replace): on kill -9 a record either exists
whole or not at all; stray ``*.tmp`` files are ignored.

The run log (`RunLog`) is the one file that is appended to, never rewritten: each session
(the first and every resume) adds its lines after the previous ones, each line written whole
with O_APPEND and fsynced, so a kill -9 leaves every line written before it. Every line is a
JSON object (strict JSON: a non-finite number is written as null) with ``time`` (ISO 8601, UTC,
milliseconds) and ``event``; the events, in the order a run writes them::

    start | resume   the plan: task, optimizers, seed, hyperparameters, full_runs, resources, schedule
    machine          ray (version, cluster resources), torch (version), python, host, device, workers
    resumed          records reused from the previous sessions: tuning, full
    retry            a job resubmitted after its worker died: job [kind, optimizer, ...], attempt, cause
    trial_error      a trial that raised: optimizer, trial, error (last line), traceback (file)
    generation       optimizer, generation, best, mean (finite fitness), diverged, individuals,
                     seconds (wall, this session), ga_mean (the GA's mean after it)
    selection_noise  optimizer, generation, best, rerun, spread, noise, indistinguishable (`tuner.driver.noise`)
    tuned            optimizer, hyperparameters
    failed           optimizer, stage (tuning, full runs), generation, errors, trials, error, traceback
    full_run         optimizer, seed_index, final_loss, diverged, seconds
    error            the run stopped on an exception: error ("Type: message")
    interrupted      the run stopped on Ctrl-C / SIGINT
    end              the session's summary (as summary.json)

Readers skip a line that does not parse (a line can only be torn by a full disk or power loss).

One writer: a session holds `RunDir.lock` (fcntl.flock on ``.lock``, which the OS releases when
the process ends, kill -9 included) for as long as it runs; a second one is refused with
`RunDirLocked` naming the holder, a stale ``.lock`` of a dead process blocks nothing.

Reading is safe: every file is parsed as JSON (no code runs), and anything unreadable, truncated,
of the wrong shape or whose "sha256" does not match its content is a `RunDirError` naming the file.

Integrity (docs/tasks.md, "Trust model and integrity"): the manifest's ``format`` says which files
must carry a digest. Format 2 (`FORMAT`, every run directory created now): manifest.json, each
tuning and full-run record, state.json and tuned.json carry "sha256" (of their canonical JSON
without it), and a missing or wrong one is a `RunDirError` naming the file, so a check cannot be
switched off by deleting the field. A manifest without ``format`` (format 1, written before) is
read as before, a digest verified where present and not required, and resumed as it was written
(records sealed, state.json and tuned.json not); `RunDir.legacy` flags it and resuming it logs a
warning. Since format-1 code never sealed state.json or tuned.json, a format-1 manifest next to a
sealed one is a manifest stripped of its format: a `RunDirError`. The digest catches accidental damage (a torn copy,
a flipped bit, a hand edit made by mistake); it does not stop someone who can write the files,
who can recompute it (or rewrite the manifest as format 1).
"""
from __future__ import annotations

import datetime
import fcntl
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import re
import socket
import sys
import tempfile
from pathlib import Path

MANIFEST = "manifest.json"
FORMAT = 2  # the run-directory format written now: every file listed in the module docstring carries a digest
LOG = "log.jsonl"
LOCK = ".lock"
IDENTITY = ("task", "schedule", "seed", "optimizers")  # what a resumed run must match
_SAFE = re.compile(r"[^A-Za-z0-9_.+-]")


class RunDirError(ValueError):
    """A run directory that cannot be created or resumed, or a file in it that cannot be read (one line)."""


class RunDirLocked(RunDirError):
    """The run directory is in use by another process; `.holder` is its {pid, host, started, argv}."""

    def __init__(self, path, holder: dict):
        self.holder = holder
        super().__init__(f"{str(path)!r} is in use by process {holder.get('pid', '?')} on {holder.get('host', '?')} "
                         f"(started {holder.get('started', '?')}); wait for it to finish or stop it")


def atomic_write(path, write) -> None:
    """Write a file so readers see the old one or the new one, never half of it, even on kill -9:
    `write(f)` fills a temp file (binary) in the same folder, which is fsynced and os.replace'd."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: Path, text: str) -> None:
    """`text` (UTF-8) to `path`, atomically."""
    atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: Path, obj) -> None:
    """JSON with exact float round-trip (repr) and ``Infinity`` for diverged fitness."""
    atomic_write_text(path, json.dumps(obj, indent=1, allow_nan=True) + "\n")


def read_json(path: Path, kind: type | None = dict):
    """The JSON in `path` (of type `kind` unless None); RunDirError naming the file otherwise."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise RunDirError(f"{str(path)!r} cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    if kind is not None and not isinstance(data, kind):
        raise RunDirError(f"{str(path)!r} is not a JSON {kind.__name__} (a {type(data).__name__}): damaged?")
    return data


def _present(path: Path) -> bool:
    """Whether a run directory's file is there; RunDirError when something else (a folder, a FIFO) is in its place."""
    if not os.path.lexists(path):
        return False
    if not path.is_file():
        raise RunDirError(f"{_shown(path)} is not a regular file: damaged? (delete it)")
    return True


def _read_if_exists(path: Path):
    return read_json(path) if _present(path) else None


def record_digest(record: dict) -> str:
    """SHA-256 of a record's canonical JSON, its "sha256" entry excluded."""
    body = {k: v for k, v in record.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, allow_nan=True).encode()).hexdigest()


def _seal(record: dict) -> dict:
    return {**record, "sha256": record_digest(record)}


def _unseal(path: Path, rec: dict, sealed: bool, remedy: str = "delete it to run it again") -> dict:
    """`rec` without its "sha256", which must match (and, when `sealed`, be there); RunDirError naming the file."""
    if "sha256" not in rec:
        if sealed:
            raise RunDirError(f"{str(path)!r} has no sha256 (every file of a format-{FORMAT} run directory has "
                              f"one): damaged or edited? ({remedy})")
        return rec
    if rec.pop("sha256") != record_digest(rec):
        raise RunDirError(f"{str(path)!r} is damaged or was edited (its content does not match its sha256); {remedy}")
    return rec


def read_record(path: Path, required: tuple[str, ...] = (), sealed: bool = False) -> dict:
    """A tuning or full-run record: RunDirError naming the file if it is unreadable, lacks one of
    `required`, or does not match its "sha256" (required when `sealed`: a format-2 run directory;
    records written before digests have none); the record is returned without its digest."""
    rec = _unseal(path, read_json(path), sealed)
    missing = [k for k in required if k not in rec]
    if missing:
        raise RunDirError(f"{str(path)!r} lacks {', '.join(missing)}: damaged? (delete it to run it again)")
    return rec


def _shown(path) -> str:
    """A path for a one-line message: quoted, control characters escaped, at most 200 characters."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(path)[:800])
    return repr(text if len(text) <= 200 else text[:197] + "...")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _values(v) -> bool:
    """{hyperparameter: number}"""
    return isinstance(v, dict) and all(isinstance(k, str) and _number(x) for k, x in v.items())


def _per_optimizer(v) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and (x is None or _values(x)) for k, x in v.items())


def _integer(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


# key -> (test, what it must be): what the session, results and report read from each file
_STATE_SHAPE = {"generation": (_integer, "an integer >= 0"), "mean": (lambda v: v is None or _values(v), "a mapping of numbers")}
_TUNED_SHAPE = {"hyperparameters": (_per_optimizer, "a mapping optimizer -> {hyperparameter: number}")}
_INDIVIDUAL_SHAPE = {"generation": (_integer, "an integer >= 0"), "index": (_integer, "an integer >= 0"),
                     "steps": (_integer, "an integer >= 0"), "fitness": (_number, "a number")}
_FULL_SHAPE = {"seed_index": (_integer, "an integer >= 0"), "steps": (_integer, "an integer >= 0")}
_OPTIONAL = {"raw": (_per_optimizer, "a mapping optimizer -> {hyperparameter: number}"),
             "generations": (_integer, "an integer >= 0"), "lr_scale": (_number, "a number"),
             "hparams": (lambda v: v is None or _values(v), "a mapping of numbers")}


def _shaped(path: Path, data: dict, shape: dict) -> dict:
    """`data` if each key of `shape` (and of `_OPTIONAL`, where present) has the right type; else a
    RunDirError naming the file and the key (a state.json of the wrong shape must not be a TypeError)."""
    for key, (ok, what) in shape.items():
        if key not in data:
            raise RunDirError(f"{_shown(path)} lacks {key}: damaged? (delete it to run it again)")
        if not ok(data[key]):
            raise RunDirError(f"{_shown(path)}: {key} is not {what}: damaged? (delete it to run it again)")
    for key, (ok, what) in _OPTIONAL.items():
        if key in data and key not in shape and not ok(data[key]):
            raise RunDirError(f"{_shown(path)}: {key} is not {what}: damaged? (delete it to run it again)")
    return data


def _schedule_problem(schedule: dict) -> str | None:
    """What the report, export and comparison read from a manifest's schedule, where it is missing or of
    the wrong type ("full_run.seeds is missing"); None when it has the shape they need."""
    generations, full = schedule.get("generations"), schedule.get("full_run")
    if not isinstance(generations, list) or not generations or not all(isinstance(g, dict) for g in generations):
        return "generations is missing or not a list of rows"
    if not isinstance(schedule.get("population"), int) or isinstance(schedule.get("population"), bool):
        return "population is missing or not an integer"
    if not isinstance(full, dict):
        return "full_run is missing or not a mapping"
    for key in ("steps", "seeds"):
        if not _integer(full.get(key)):
            return f"full_run.{key} is missing or not an integer"
    if full.get("time_milestone_s") is not None and not _number(full["time_milestone_s"]):
        return "full_run.time_milestone_s is not a number"
    for key in ("task_options", "scales", "start", "search", "ga", "horizon"):
        if schedule.get(key) is not None and not isinstance(schedule[key], dict):
            return f"{key} is not a mapping"
    if "lr_scale" in schedule and not _number(schedule["lr_scale"]):
        return "lr_scale is not a number"
    if not isinstance(schedule.get("optimizers", []), list):
        return "optimizers is not a list"
    return None


def _holder(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


class Lock:
    """An exclusive lock on a run directory held by this process (`RunDir.lock`); `release()` ends it."""

    def __init__(self, path: Path, fd: int):
        self.path, self.fd = path, fd
        self.created: list[Path] = []  # the folders taking the lock created (the run directory, runs/, ...)

    def remove_created(self) -> None:
        """Remove the lock file and the folders taking it created, where empty (a run refused before it
        started leaves neither its run directory nor runs/ behind)."""
        self.path.unlink(missing_ok=True)
        for folder in self.created:
            try:
                folder.rmdir()
            except OSError:
                break

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def versions() -> dict[str, str]:
    """Versions worth recording next to results."""
    out = {"python": platform.python_version()}
    try:
        out["lodo-tune"] = importlib.metadata.version("lodo-tune")
    except Exception:  # not installed (running from a source tree)
        out["lodo-tune"] = "unknown"
    for mod in ("torch", "ray", "numpy"):
        try:
            out[mod] = importlib.metadata.version(mod)  # not imported: ray imported before init_ray would warn at start
        except Exception:
            out[mod] = "unknown"
    return out


def _strict(value):
    """`value` with non-finite floats as None (strict JSON for `jq` and other readers)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


class RunLog:
    """The run directory's append-only log (JSON lines; the events are in the module docstring)."""

    def __init__(self, path):
        self.path = Path(path)

    def write(self, event: str, **fields) -> dict:
        """Append one line {"time", "event", **fields}; whole, fsynced, before returning it."""
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
        record = {"time": now, "event": event, **_strict(fields)}
        data = (json.dumps(record, allow_nan=False, default=str) + "\n").encode()
        new = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":  # a line torn by a crash: start a new one
                data = b"\n" + data
            while data:  # a regular file takes it in one write; loop in case it does not
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:  # the file's directory entry is durable too
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return record

    def read(self) -> list[dict]:
        """Every line that parses, in order ([] if there is no log)."""
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out


def safe_name(optimizer: str) -> str:
    """Optimizer name as a directory name ("Levenberg-Marquardt" stays, "/" and spaces do not)."""
    return _SAFE.sub("_", optimizer)


class RunDir:
    """Reads and writes the records of one run directory."""

    def __init__(self, path):
        self.path = Path(path)
        self._format: int | None = None

    # -- the one writer ------------------------------------------------------------------------
    def lock(self) -> Lock:
        """Take the run directory for this process (creating the folder): flock on ``.lock``, which
        then names this process; RunDirLocked naming the holder if another process has it. The OS
        drops the lock when the process ends, however it ends."""
        path = self.path / LOCK
        created = [p for p in (self.path, *self.path.parents) if not os.path.lexists(p)]  # deepest first
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:  # under a regular file, in /proc, read-only, ...
            raise RunDirError(f"{_shown(self.path)} cannot be created or locked ({e.strerror or e})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RunDirLocked(self.path, _holder(path)) from None
        me = {"pid": os.getpid(), "host": socket.gethostname(), "argv": sys.argv,
              "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        lock = Lock(path, fd)
        lock.created = created
        return lock

    @staticmethod
    def check_unlocked(path) -> None:
        """RunDirLocked if a live process holds `path`'s lock (a stale ``.lock`` passes)."""
        lock = Path(path) / LOCK
        if not lock.is_file():
            return
        try:
            fd = os.open(lock, os.O_RDONLY)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            raise RunDirLocked(Path(path), _holder(lock)) from None
        finally:
            os.close(fd)

    # -- creation / opening ------------------------------------------------------------------
    @staticmethod
    def check_new(path, holding_lock: bool = False) -> None:
        """Raise RunDirError unless `path` can become a fresh run directory (writes nothing); a
        folder holding only a stale ``.lock`` (a run killed while starting) counts as empty, and so
        does one holding our own (`holding_lock`)."""
        p = Path(path)
        try:
            exists = p.exists()
        except OSError as e:  # a name too long, ...
            raise RunDirError(f"{_shown(p)} cannot be used ({e.strerror or e})") from None
        if exists and not p.is_dir():
            raise RunDirError(f"{_shown(p)} exists and is not a directory")
        above = next((q for q in p.absolute().parents if q.exists()), None)
        if not exists and above is not None and not above.is_dir():
            raise RunDirError(f"{_shown(p)} cannot be created: {_shown(above)} is not a directory")
        if p.is_dir():
            if not holding_lock:
                RunDir.check_unlocked(p)
            if any(q.name != LOCK for q in p.iterdir()):
                raise RunDirError(f"{str(p)!r} is not empty (resume it to continue it)")

    @classmethod
    def open(cls, path, schedule: bool = False) -> "RunDir":
        """An existing run directory; RunDirError unless its manifest reads, verifies and has the run's
        identity, and (`schedule`: for export, report and comparison) the schedule fields they read."""
        rd = cls(path)
        try:
            found = (rd.path / MANIFEST).is_file()
        except OSError as e:
            raise RunDirError(f"{_shown(rd.path)} cannot be read ({e.strerror or e})") from None
        if not found:
            raise RunDirError(f"{_shown(rd.path)} is not a run directory (no {MANIFEST})")
        manifest = rd.manifest  # reads, verifies and checks the identity's types
        # tuned.json and state.json up front (a few small files), so resume refuses them before Ray starts;
        # in format 1 a sealed one shows a manifest stripped of its format
        for p, shape in [(rd.path / "tuned.json", _TUNED_SHAPE),
                         *((p, _STATE_SHAPE) for p in sorted((rd.path / "tuning").glob("*/state.json")))]:
            if _present(p):
                rd._verified(p, shape)
        problem = _schedule_problem(manifest["schedule"]) if schedule else None
        if problem:
            raise RunDirError(f"{_shown(rd.path / MANIFEST)}: schedule.{problem}: damaged?")
        return rd

    def _read_manifest(self) -> dict:
        """manifest.json, verified: readable, its digest (format 2), the identity fields and the
        schedule fields every reader uses, of the right types; RunDirError naming the file otherwise."""
        path = self.path / MANIFEST
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
            raise RunDirError(f"unreadable {MANIFEST} in {_shown(self.path)} ({type(e).__name__}: {str(e)[:120]})") from None
        if not isinstance(manifest, dict) or not all(k in manifest for k in IDENTITY):
            raise RunDirError(f"{MANIFEST} in {_shown(self.path)} lacks one of {', '.join(IDENTITY)}")
        form = manifest.get("format", 1)
        if isinstance(form, bool) or not isinstance(form, int) or form < 2 and "format" in manifest:
            raise RunDirError(f"{_shown(path)}: format {str(form)[:20]!r} is not a run-directory format: damaged?")
        if form > FORMAT:
            raise RunDirError(f"{_shown(path)} is format {form}, written by a newer lodo-tune (this one reads up "
                              f"to format {FORMAT}): upgrade lodo-tune")
        if form == 1 and "sha256" in manifest:
            raise RunDirError(f"{_shown(path)} has a sha256 but no format: damaged or edited?")
        manifest = _unseal(path, manifest, form >= 2, "the run cannot be trusted: start a new one")
        kinds = {"task": str, "schedule": dict, "seed": int, "optimizers": list}
        for key, kind in kinds.items():
            if not isinstance(manifest[key], kind) or isinstance(manifest[key], bool):
                raise RunDirError(f"{_shown(path)}: {key} is {str(manifest[key])[:60]!r}, not a {kind.__name__}: damaged?")
        if not all(isinstance(o, str) for o in manifest["optimizers"]):
            raise RunDirError(f"{_shown(path)}: optimizers {str(manifest['optimizers'])[:80]} are not all names")
        return manifest

    @property
    def format(self) -> int:
        """The run directory's format (`FORMAT` for one created now, 1 for one created before digests were
        required); read once from the verified manifest (0 while there is none: nothing to check against)."""
        if self._format is None:
            if not (self.path / MANIFEST).is_file():
                return 0
            self._format = self.manifest.get("format", 1)
        return self._format

    @property
    def legacy(self) -> bool:
        """A format-1 run directory: its files' digests are checked where present, not required."""
        return self.format == 1

    def _sealed(self) -> bool:
        return self.format >= 2

    @classmethod
    def create(cls, path, *, task: str, schedule: dict, seed: int, optimizers: list[str], **extra) -> "RunDir":
        rd = cls(path)
        rd.path.mkdir(parents=True, exist_ok=True)
        manifest = {
            "format": FORMAT,
            "task": task,
            "schedule": schedule,
            "seed": seed,
            "optimizers": list(optimizers),
            "versions": versions(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **extra,
        }
        atomic_write_json(rd.path / MANIFEST, _seal(manifest))
        return rd

    @property
    def manifest(self) -> dict:
        """The manifest without its digest ("format" says which files carry one), verified (`_read_manifest`)."""
        return self._read_manifest()

    @property
    def log(self) -> RunLog:
        """The run log, log.jsonl (`RunLog`): `rd.log.write("event", **fields)`."""
        return RunLog(self.path / LOG)

    # -- tuning records ----------------------------------------------------------------------
    def individual_path(self, optimizer: str, generation: int, index: int) -> Path:
        return self.path / "tuning" / safe_name(optimizer) / f"g{generation:02d}-i{index:02d}.json"

    INDIVIDUAL = ("generation", "index", "seed", "hparams", "steps", "fitness")
    FULL = ("seed_index", "seed", "hparams", "steps")

    def write_individual(self, optimizer: str, record: dict) -> None:
        atomic_write_json(self.individual_path(optimizer, record["generation"], record["index"]), _seal(record))

    def read_individual(self, optimizer: str, generation: int, index: int) -> dict | None:
        p = self.individual_path(optimizer, generation, index)
        return read_record(p, self.INDIVIDUAL, self._sealed()) if _present(p) else None

    def _records(self, folder: str, optimizer: str, pattern: str, required: tuple, shape: dict) -> list[dict]:
        """Every record of `optimizer` under `folder` matching `pattern`, each verified and shape-checked."""
        d = self.path / folder / safe_name(optimizer)
        if not d.is_dir():
            return []
        sealed = self._sealed()
        return [_shaped(p, read_record(p, required, sealed), shape) for p in sorted(d.glob(pattern))]

    def individuals(self, optimizer: str) -> list[dict]:
        recs = self._records("tuning", optimizer, "g*-i*.json", self.INDIVIDUAL, _INDIVIDUAL_SHAPE)
        return sorted(recs, key=lambda r: (r["generation"], r["index"]))

    def _seal_if(self, data: dict) -> dict:
        """state.json and tuned.json carry a digest from format 2 on (a format-1 directory keeps its own format)."""
        return data if self.legacy else _seal(data)

    def _verified(self, path: Path, shape: dict) -> dict:
        """state.json or tuned.json: digest (required from format 2; in format 1 its presence means the
        manifest was stripped of its format) and shape checked; returned without the digest."""
        data = read_json(path)
        if self.legacy and "sha256" in data:
            raise RunDirError(f"{_shown(path)} has a sha256, which a format-1 run directory's files never have: "
                              f"was {MANIFEST}'s format removed? The run cannot be trusted: start a new one")
        return _shaped(path, _unseal(path, data, self._sealed(), "delete it: resume rebuilds it"), shape)

    def write_state(self, optimizer: str, state: dict) -> None:
        atomic_write_json(self.path / "tuning" / safe_name(optimizer) / "state.json", self._seal_if(state))

    def read_state(self, optimizer: str) -> dict | None:
        """The GA's state.json {generation, generations, done, mean}, verified; None if there is none."""
        p = self.path / "tuning" / safe_name(optimizer) / "state.json"
        if not _present(p):
            return None
        return self._verified(p, _STATE_SHAPE)

    def write_error(self, optimizer: str, name: str, traceback: str) -> Path:
        """errors/<optimizer>/<name>.txt: "g03-i17" (an individual) or "full-seed-2" (a full run)."""
        p = self.path / "errors" / safe_name(optimizer) / f"{name}.txt"
        atomic_write_text(p, traceback)
        return p

    def write_tuned(self, tuned: dict) -> None:
        atomic_write_json(self.path / "tuned.json", self._seal_if(tuned))

    def read_tuned(self) -> dict | None:
        """tuned.json {hyperparameters, raw, lr_scale, source, ...}, verified; None if there is none."""
        p = self.path / "tuned.json"
        if not _present(p):
            return None
        return self._verified(p, _TUNED_SHAPE)

    # -- full-length runs --------------------------------------------------------------------
    def full_path(self, optimizer: str, seed_index: int) -> Path:
        return self.path / "full" / safe_name(optimizer) / f"seed-{seed_index}.json"

    def write_full(self, optimizer: str, seed_index: int, record: dict) -> None:
        atomic_write_json(self.full_path(optimizer, seed_index), _seal(record))

    def read_full(self, optimizer: str, seed_index: int) -> dict | None:
        p = self.full_path(optimizer, seed_index)
        return read_record(p, self.FULL, self._sealed()) if _present(p) else None

    def full_runs(self, optimizer: str) -> list[dict]:
        recs = self._records("full", optimizer, "seed-*.json", self.FULL, _FULL_SHAPE)
        return sorted(recs, key=lambda r: r["seed_index"])

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.path / "summary.json", summary)

    def read_summary(self) -> dict | None:
        return _read_if_exists(self.path / "summary.json")

