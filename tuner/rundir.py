"""A run directory: the durable record of one tuning + full-run session.

Layout (one file per record, so a crash can only lose the record being written)::

    manifest.json                   task, schedule (full dict), seed, optimizers, versions, created
    tuning/<optimizer>/g03-i17.json one finished GA individual (hparams, steps, seed, fitness, curve)
    tuning/<optimizer>/state.json   the GA's mean after its last complete generation
    errors/<optimizer>/g03-i17.txt  traceback of an individual whose trial raised (fitness +inf)
    errors/<optimizer>/full-seed-2.txt  traceback of a full run that raised
    tuned.json                      tuned hyperparameters (after lr scaling) and the raw GA means
    full/<optimizer>/seed-2.json    one finished full-length run (seed-2.ckpt: its checkpoint until then)
    summary.json                    reused/ran counts, efficiency, wall time of the last session
    log.jsonl                       the run log: what happened, one JSON object per line (below)

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
    tuned            optimizer, hyperparameters
    full_run         optimizer, seed_index, final_loss, diverged, seconds
    error            the run stopped on an exception: error ("Type: message")
    interrupted      the run stopped on Ctrl-C / SIGINT
    end              the session's summary (as summary.json)

Readers skip a line that does not parse (a line can only be torn by a full disk or power loss).
"""
from __future__ import annotations

import datetime
import importlib.metadata
import json
import math
import os
import platform
import re
import tempfile
from pathlib import Path

MANIFEST = "manifest.json"
LOG = "log.jsonl"
IDENTITY = ("task", "schedule", "seed", "optimizers")  # what a resumed run must match
_SAFE = re.compile(r"[^A-Za-z0-9_.+-]")


class RunDirError(ValueError):
    """A run directory that cannot be created or resumed (one-line message)."""


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


def read_json(path: Path):
    with open(path) as f:
        return json.load(f)


def _read_if_exists(path: Path):
    return read_json(path) if path.is_file() else None


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

    # -- creation / opening ------------------------------------------------------------------
    @staticmethod
    def check_new(path) -> None:
        """Raise RunDirError unless `path` can become a fresh run directory (writes nothing)."""
        p = Path(path)
        if p.exists() and not p.is_dir():
            raise RunDirError(f"{str(p)!r} exists and is not a directory")
        if p.is_dir() and any(p.iterdir()):
            raise RunDirError(f"{str(p)!r} is not empty (resume it to continue it)")

    @classmethod
    def open(cls, path) -> "RunDir":
        """An existing run directory; RunDirError unless its manifest reads and has the run's identity."""
        rd = cls(path)
        if not (rd.path / MANIFEST).is_file():
            raise RunDirError(f"{str(rd.path)!r} is not a run directory (no {MANIFEST})")
        try:
            manifest = rd.manifest
        except (OSError, ValueError) as e:
            raise RunDirError(f"unreadable {MANIFEST} in {str(rd.path)!r} ({e})") from None
        if not isinstance(manifest, dict) or not all(k in manifest for k in IDENTITY):
            raise RunDirError(f"{MANIFEST} in {str(rd.path)!r} lacks one of {', '.join(IDENTITY)}")
        return rd

    @classmethod
    def create(cls, path, *, task: str, schedule: dict, seed: int, optimizers: list[str], **extra) -> "RunDir":
        rd = cls(path)
        rd.path.mkdir(parents=True, exist_ok=True)
        manifest = {
            "task": task,
            "schedule": schedule,
            "seed": seed,
            "optimizers": list(optimizers),
            "versions": versions(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **extra,
        }
        atomic_write_json(rd.path / MANIFEST, manifest)
        return rd

    @property
    def manifest(self) -> dict:
        return read_json(self.path / MANIFEST)

    @property
    def log(self) -> RunLog:
        """The run log, log.jsonl (`RunLog`): `rd.log.write("event", **fields)`."""
        return RunLog(self.path / LOG)

    # -- tuning records ----------------------------------------------------------------------
    def individual_path(self, optimizer: str, generation: int, index: int) -> Path:
        return self.path / "tuning" / safe_name(optimizer) / f"g{generation:02d}-i{index:02d}.json"

    def write_individual(self, optimizer: str, record: dict) -> None:
        atomic_write_json(self.individual_path(optimizer, record["generation"], record["index"]), record)

    def read_individual(self, optimizer: str, generation: int, index: int) -> dict | None:
        return _read_if_exists(self.individual_path(optimizer, generation, index))

    def individuals(self, optimizer: str) -> list[dict]:
        d = self.path / "tuning" / safe_name(optimizer)
        if not d.is_dir():
            return []
        recs = [read_json(p) for p in sorted(d.glob("g*-i*.json"))]
        return sorted(recs, key=lambda r: (r["generation"], r["index"]))

    def write_state(self, optimizer: str, state: dict) -> None:
        atomic_write_json(self.path / "tuning" / safe_name(optimizer) / "state.json", state)

    def read_state(self, optimizer: str) -> dict | None:
        return _read_if_exists(self.path / "tuning" / safe_name(optimizer) / "state.json")

    def write_error(self, optimizer: str, name: str, traceback: str) -> Path:
        """errors/<optimizer>/<name>.txt: "g03-i17" (an individual) or "full-seed-2" (a full run)."""
        p = self.path / "errors" / safe_name(optimizer) / f"{name}.txt"
        atomic_write_text(p, traceback)
        return p

    def write_tuned(self, tuned: dict) -> None:
        atomic_write_json(self.path / "tuned.json", tuned)

    def read_tuned(self) -> dict | None:
        return _read_if_exists(self.path / "tuned.json")

    # -- full-length runs --------------------------------------------------------------------
    def full_path(self, optimizer: str, seed_index: int) -> Path:
        return self.path / "full" / safe_name(optimizer) / f"seed-{seed_index}.json"

    def write_full(self, optimizer: str, seed_index: int, record: dict) -> None:
        atomic_write_json(self.full_path(optimizer, seed_index), record)

    def read_full(self, optimizer: str, seed_index: int) -> dict | None:
        return _read_if_exists(self.full_path(optimizer, seed_index))

    def full_runs(self, optimizer: str) -> list[dict]:
        d = self.path / "full" / safe_name(optimizer)
        if not d.is_dir():
            return []
        recs = [read_json(p) for p in d.glob("seed-*.json")]
        return sorted(recs, key=lambda r: r["seed_index"])

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.path / "summary.json", summary)

