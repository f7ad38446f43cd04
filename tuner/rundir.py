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

Every write is atomic (temp file + fsync + os.replace): on kill -9 a record either exists
whole or not at all; stray ``*.tmp`` files are ignored.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import re
import tempfile
from pathlib import Path

MANIFEST = "manifest.json"
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
            out[mod] = version(mod)  # not imported: ray imported before init_ray would warn at start
        except Exception:
            out[mod] = "unknown"
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

