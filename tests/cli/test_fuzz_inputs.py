"""Fuzzing what a user hands lodo-tune: mutated schedules (values and bytes), --hparams files and
damaged run directories. Each input ends in one of two ways: refused (exit 2 / a PlanError or
ScheduleError: one line, bounded length, nothing written), or accepted, and then it can run (the
task and every optimizer build with the values, by torch's and the task's own checks) and, for a
run directory, what is shown equals what was recorded. The default profile is small enough for
`make test`; `-m slow` runs the same properties on many more inputs (FUZZ_EXAMPLES overrides).

Validation is driven in-process (`load_schedule`, `make_plan`, `cli.main` with `run_plan` stubbed):
nothing here starts Ray."""
import collections
import copy
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lodo
import tasks
from cli import main
from tuner.driver.plan import PlanError, make_plan
from tuner.driver.rundir import RunDir, RunDirError, _seal
from tuner.driver.schedule import ScheduleError, load_schedule

FAST, SLOW = int(os.environ.get("FUZZ_EXAMPLES", 30)), int(os.environ.get("FUZZ_EXAMPLES_SLOW", 600))
OUTCOMES: collections.Counter = collections.Counter()  # (test, outcome) -> inputs; printed by the slow tests
ADAM = {"lr": 0.01, "beta1": 0.9, "beta2": 0.999}
BASE = {"task": "noisy_bowl", "population": 4, "generations": [{"noise": 1, "steps": 10}, {"noise": 0.5, "steps": 20}],
        "optimizers": ["Adam", "Momentum"], "full_run": {"steps": 30, "seeds": 2, "time_milestone_s": None},
        "lr_scale": 1, "task_options": {"noise_variance": 1.0}, "start": {"Adam": {"lr": 0.01}},
        "scales": {"Adam": {"lr": "log"}}, "horizon": {"Adam": {"lr": -0.25}},
        "search": {"bounds": {"lr": [1.0e-3, 10]}}, "ga": {"seeds": 1}}
PATHS = [("population",), ("generations",), ("generations", 0), ("generations", 0, "noise"),
         ("generations", 0, "steps"), ("generations", 1, "population"), ("optimizers",), ("optimizers", 0),
         ("full_run",), ("full_run", "steps"), ("full_run", "seeds"), ("full_run", "time_milestone_s"), ("lr_scale",),
         ("task_options",), ("task_options", "noise_variance"), ("task_options", "dim"), ("start", "Adam", "lr"),
         ("start", "Adam", "beta1"), ("start", "Momentum"), ("scales", "Adam", "lr"), ("horizon", "Adam"),
         ("horizon", "Adam", "lr"), ("search", "trials"), ("search", "steps"), ("search", "round"),
         ("search", "searcher"), ("search", "bounds", "lr"), ("search", "bounds", "lr", 1), ("ga", "seeds"),
         ("ga", "init"), ("ga",), ("task",), ("new key",)]
HOSTILE = st.one_of(
    st.integers(-3, 3), st.integers(-(2**70), 2**70), st.sampled_from([2**63, 10**9, 10**30, 10**300]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e308, -1e308, 1e-320, 0.0, 1.5, 0.999999]),
    st.booleans(), st.none(), st.text(max_size=12), st.sampled_from(["a\nb", "k" * 5000, "os.system", "builtins.eval",
                                                                     "torch.optim.SGD", "Adam", "..", "\x00"]),
    st.lists(st.integers(-5, 5), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.just({"name": "X", "optimizer": "os.system"}), st.just({"name": "X", "optimizer": "torch.optim.SGD",
                                                               "hyperparameters": {"lr": {"default": -1, "scale": "log"}}}))


def one_line(error: Exception) -> str:
    text = str(error)
    assert "\n" not in text and "\r" not in text and len(text) <= 1200, (len(text), text[:300])
    return text


def put(data, path, value):
    """`data` with the value at `path` replaced (created where a mapping lacks it); None when the path does not fit."""
    node = data
    for key in path[:-1]:
        if isinstance(node, dict):
            node = node.setdefault(key, {})
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
        else:
            return None
    if isinstance(node, dict):
        node[path[-1]] = value
    elif isinstance(node, list) and isinstance(path[-1], int) and path[-1] < len(node):
        node[path[-1]] = value
    else:
        return None
    return data


def assert_runnable(plan) -> None:
    """An accepted plan can run: the task builds with its options, each optimizer with its start values,
    and the schedule's sizes are ones a trial loop can take (independent of the validators)."""
    s = plan.schedule
    assert isinstance(s.population, int) and s.population >= 2
    for g in s.generations:
        assert math.isfinite(g.noise) and g.noise >= 0 and isinstance(g.steps, int) and g.steps >= 1
    assert s.full_run.steps >= 1 and s.full_run.seeds >= 1 and math.isfinite(s.lr_scale) and s.lr_scale > 0
    task = tasks.create("noisy_bowl", seed=0, **s.task_options)
    assert torch.isfinite(task.loss(task.sample()))
    for o in plan.optimizers:
        values = {h.name: s.start.get(o, {}).get(h.name, h.default) for h in lodo.hyperparameters(o)}
        assert all(math.isfinite(math.log(v)) if h.scale == "log" else 0 <= v < 1
                   for h, v in zip(lodo.hyperparameters(o), values.values()))
        lodo.create(o, [torch.zeros(2, requires_grad=True)], seed=0, **{k: v * (s.lr_scale if k == "lr" else 1)
                                                                         for k, v in values.items()})


def _profile(examples):
    return settings(max_examples=examples, deadline=None, derandomize=examples == FAST,
                    suppress_health_check=list(HealthCheck))


# -- schedules: values -------------------------------------------------------------------------------
def check_schedule_values(data) -> str:
    sched = copy.deepcopy(BASE)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(PATHS))
        if data.draw(st.booleans()) and len(path) > 1:  # delete instead of replace
            parent = sched
            for key in path[:-1]:
                parent = parent.get(key, {}) if isinstance(parent, dict) else {}
            if isinstance(parent, dict):
                parent.pop(path[-1], None)
            continue
        put(sched, path, data.draw(HOSTILE))
    with tempfile.TemporaryDirectory() as tmp:
        path, run_dir = Path(tmp) / "s.yaml", Path(tmp) / "run"
        path.write_text(yaml.safe_dump(sched))
        t0 = time.perf_counter()
        try:
            plan = make_plan("noisy_bowl", schedule=str(path), run_dir=run_dir)
        except (PlanError, ScheduleError) as e:
            one_line(e)
            outcome = "refused"
        else:
            assert_runnable(plan)
            outcome = "accepted"
        assert time.perf_counter() - t0 < 10 and not run_dir.exists()
    return outcome


@_profile(FAST)
@given(st.data())
def test_fuzz_mutated_schedule_values(data):
    OUTCOMES["schedule values", check_schedule_values(data)] += 1


# -- schedules: bytes --------------------------------------------------------------------------------
TEXT = (Path(__file__).resolve().parents[2] / "schedules" / "noisy_bowl-improved.yaml").read_bytes()
PIECES = [b"&a ", b"*a", b"!!int ", b"!!float ", b"!!binary ", b"!!python/object:os.system ", b"[", b"{", b"]", b"}",
          b"\n", b": ", b"- ", b"\xff", b"\xe9", b"\x00", b"'", b'"', b"\t", b"? ", b"<<: *a\n", b"9" * 40, b"1e999",
          b".nan", b"-1", b"%YAML 1.1\n", b"---\n"]


def check_schedule_bytes(data) -> str:
    text = bytearray(TEXT)
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(text)))
        kind = data.draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = data.draw(st.one_of(st.sampled_from(PIECES), st.binary(min_size=1, max_size=4)))
        if kind == "insert":
            text[at:at] = piece
        elif kind == "delete":
            del text[at:at + data.draw(st.integers(1, 30))]
        else:
            text[at:at + len(piece)] = piece
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.yaml"
        path.write_bytes(bytes(text))
        t0 = time.perf_counter()
        try:
            schedule = load_schedule(path)
        except ScheduleError as e:
            one_line(e)
            outcome = "refused"
        else:
            assert schedule.population >= 2 and schedule.generations
            outcome = "accepted"
        assert time.perf_counter() - t0 < 10
    return outcome


@_profile(FAST)
@given(st.data())
def test_fuzz_schedule_bytes(data):
    OUTCOMES["schedule bytes", check_schedule_bytes(data)] += 1


# -- --hparams files ---------------------------------------------------------------------------------
class Reached(Exception):
    """run_plan was called: the CLI accepted the input."""


NAMES = st.sampled_from(["Adam", "Momentum", "RMSprop", "Yogi", "LODO", "L-BFGS", "Adamm", "", "a\nb"])
HPS = st.sampled_from(["lr", "beta1", "beta2", "momentum", "rho", "meta_lr", "beta", "tau", "lr\n", "x" * 300])
VALUES = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.01, 0.9, 0.0, 1.0, -0.1, 1e300]),
                   st.integers(-2, 2), st.booleans(), st.none(), st.text(max_size=5))


def check_hparams(data, monkeypatch) -> str:
    table = data.draw(st.dictionaries(NAMES, st.one_of(st.dictionaries(HPS, VALUES, max_size=4), VALUES), max_size=3))
    if data.draw(st.booleans()):  # mostly well-formed: the registry defaults with a few values replaced
        name = data.draw(st.sampled_from(["Adam", "Momentum", "LODO"]))
        table[name] = {h.name: data.draw(st.one_of(st.just(h.default), VALUES)) for h in lodo.hyperparameters(name)}
    with tempfile.TemporaryDirectory() as tmp:
        path, run_dir = Path(tmp) / "hp.json", Path(tmp) / "run"
        text = json.dumps(table) if data.draw(st.booleans()) else yaml.safe_dump(table)
        if data.draw(st.booleans()):
            text = text.replace('"', "", data.draw(st.integers(0, 2)))  # now and then broken
        path.write_text(text)
        code, err = None, ""
        try:
            import io
            import contextlib
            buffer = io.StringIO()
            with contextlib.redirect_stderr(buffer):
                code = main(["--task", "noisy_bowl", "--hparams", str(path), "--run-dir", str(run_dir), "--quiet"])
            err = buffer.getvalue()
        except Reached as reached:
            plan = reached.args[0]
            for o, values in plan.given().items():  # every given value builds its optimizer (torch's own checks)
                lodo.create(o, [torch.zeros(2, requires_grad=True)], seed=0, **values)
            outcome = "accepted"
        else:
            assert code == 2 and err.count("\n") == 1 and len(err) <= 700, (code, err[:300])
            outcome = "refused"
        assert not run_dir.exists()
    return outcome


def _stubbed(test):
    def run(data):
        with pytest.MonkeyPatch.context() as mp:
            def reached(plan, *a):
                raise Reached(plan)
            mp.setattr("tuner.driver.api.run_plan", reached)
            return test(data, mp)
    return run


@_profile(FAST)
@given(st.data())
def test_fuzz_hparams_files(data):
    OUTCOMES["hparams", _stubbed(check_hparams)(data)] += 1


# -- damaged run directories ----------------------------------------------------------------------------
def make_run_dir(path: Path) -> RunDir:
    """A finished-looking format-2 run directory, written through RunDir as a session writes one."""
    rd = RunDir.create(path, task="noisy_bowl", schedule=load_schedule("noisy_bowl", {"population": 2}).to_dict(),
                       seed=0, optimizers=["Adam"], hparams="tuned", given_hyperparameters=None, full_runs=True)
    for i in range(2):
        rd.write_individual("Adam", {"generation": 0, "index": i, "seed": i, "hparams": dict(ADAM, lr=0.01 * (i + 1)),
                                     "steps": 10, "fitness": 1.5 + i, "seconds": 0.1, "diverged": False, "curve": None})
    rd.write_state("Adam", {"generation": 1, "generations": 10, "done": False, "mean": dict(ADAM)})
    for seed in range(2):
        rd.write_full("Adam", seed, {"seed_index": seed, "seed": seed, "hparams": dict(ADAM), "steps": 30,
                                     "final_loss": 2.0 + seed, "diverged": False, "seconds": 0.5})
    rd.write_tuned({"lr_scale": 1.0, "source": "tuned", "searcher": "ga", "schedule": None,
                    "hyperparameters": {"Adam": dict(ADAM)}, "raw": {"Adam": dict(ADAM)}})
    return rd


FILES = ["manifest.json", "tuned.json", "tuning/Adam/state.json", "tuning/Adam/g00-i00.json",
         "full/Adam/seed-0.json", "full/Adam/seed-1.json"]


def damage(data, path: Path) -> None:
    raw = path.read_bytes()
    kind = data.draw(st.sampled_from(["truncate", "flip", "drop key", "set key", "drop digest", "replace",
                                      "empty", "directory", "whitespace"]))
    if kind == "truncate":
        path.write_bytes(raw[:data.draw(st.integers(0, len(raw) - 1))])
    elif kind == "flip":
        at = data.draw(st.integers(0, len(raw) - 1))
        path.write_bytes(raw[:at] + bytes([raw[at] ^ (1 << data.draw(st.integers(0, 7)))]) + raw[at + 1:])
    elif kind in ("drop key", "set key", "drop digest"):
        doc = json.loads(raw)
        keys = sorted(doc)
        key = "sha256" if kind == "drop digest" else data.draw(st.sampled_from(keys))
        if kind == "set key":
            doc[key] = data.draw(HOSTILE)
        else:
            doc.pop(key, None)
        if data.draw(st.booleans()) and kind != "drop digest":  # a careful editor also drops the digest
            doc.pop("sha256", None)
        path.write_text(json.dumps(doc))
    elif kind == "replace":
        path.write_text(json.dumps(data.draw(HOSTILE)))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "directory":
        path.unlink()
        path.mkdir()
    else:  # whitespace only: the same JSON, which must still read
        path.write_bytes(raw.replace(b"\n", b"\n  "))


def check_run_dir(data, template: Path, baseline: dict) -> str:
    import contextlib
    import io
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        shutil.copytree(template, run)
        for name in data.draw(st.lists(st.sampled_from(FILES), min_size=1, max_size=2, unique=True)):
            damage(data, run / name)
        before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["export", str(run), "--format", "json"])
        if code == 0:  # accepted: what it shows is what was recorded
            shown = json.loads(out.getvalue())
            assert shown == baseline, "an edited run directory was exported as if it were the recorded one"
            outcome = "accepted"
        else:
            assert code == 2 and err.getvalue().count("\n") == 1 and len(err.getvalue()) <= 700, err.getvalue()[:300]
            outcome = "refused"
        assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before  # export only reads
        try:  # --resume checks what it can before Ray: a refusal is one line
            make_plan(run_dir=run, resume=True)
        except PlanError as e:
            one_line(e)
    return outcome


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    import contextlib
    import io
    path = tmp_path_factory.mktemp("fuzz") / "run"
    make_run_dir(path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["export", str(path), "--format", "json"]) == 0
    return path, json.loads(out.getvalue())


def _run_dirs(examples):
    @_profile(examples)
    @given(data=st.data())
    def run(template, data):
        OUTCOMES["run dir", check_run_dir(data, *template)] += 1
    return run


test_fuzz_damaged_run_directories = _run_dirs(FAST)


# -- the longer profile --------------------------------------------------------------------------------
@pytest.mark.slow
def test_fuzz_long_profile(template, capsys):
    for name, check in [("schedule values", check_schedule_values), ("schedule bytes", check_schedule_bytes),
                        ("hparams", _stubbed(check_hparams))]:
        @_profile(SLOW)
        @given(st.data())
        def run(data):
            OUTCOMES[name, check(data)] += 1
        run()
    _run_dirs(SLOW)(template)
    with capsys.disabled():
        print("\nfuzz outcomes:", dict(sorted(OUTCOMES.items())))
