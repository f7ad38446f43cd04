"""Issue 41's hostile and absurd inputs, one named regression test each: exit 2 with one short line
on stderr, nothing written (no run directory, no runs/), Ray never started; damaged or edited run
directories refused naming the file. In-process through `cli.main` (no Ray is needed to refuse)."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import lodo
import tuner.driver.executor as executor
from cli import main
from tuner.driver.plan import PlanError, check_address, make_plan
from tuner.driver.rundir import FORMAT, RunDir, RunDirError
from tuner.driver.schedule import ScheduleError, load_schedule

ROOT = Path(__file__).resolve().parents[2]
SCHEDULE = """task: noisy_bowl
population: 4
generations: [{noise: 1, steps: 10}]
optimizers: [Adam]
full_run: {steps: 20, seeds: 1, time_milestone_s: null}
lr_scale: 1
"""


@pytest.fixture
def here(tmp_path, monkeypatch):
    """A clean working directory: a default run directory would land in ./runs."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def refused(capsys, argv, *expected: str) -> str:
    """Run the CLI; it must exit 2 with one line (at most 600 characters) containing `expected`."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("lodo-tune: error: ") and err.count("\n") == 1, err
    assert len(err) <= 620, len(err)
    for text in expected:
        assert text in err, err
    return err


def nothing_written(here: Path, *paths):
    assert not (here / "runs").exists()
    for p in paths:
        assert not Path(p).exists(), p


def schedule_file(here: Path, text: str, name: str = "s.yaml") -> str:
    (here / name).write_text(text)
    return name


# -- tracebacks that were exit 1 ---------------------------------------------------------------------
def test_start_lr_1e308_is_refused_before_ray(here, capsys):
    s = schedule_file(here, SCHEDULE + "start: {Adam: {lr: 1.0e+308}}\n")
    refused(capsys, ["--task", "noisy_bowl", "--schedule", s], "start.Adam.lr", "1.0e+308")
    nothing_written(here)


def test_schedule_that_is_not_utf8(here, capsys):
    (here / "s.yaml").write_bytes(SCHEDULE.encode() + b"# caf\xe9\n")
    refused(capsys, ["--task", "noisy_bowl", "--schedule", "s.yaml"], "s.yaml", "not UTF-8", "0xe9")
    nothing_written(here)


def test_hparams_file_that_is_not_utf8(here, capsys):
    (here / "hp.yaml").write_bytes(b"Adam: {lr: 0.1, beta1: 0.9, beta2: 0.999} # \xff\n")
    refused(capsys, ["--task", "noisy_bowl", "--hparams", "hp.yaml"], "--hparams", "not UTF-8")
    nothing_written(here)


def test_nesting_5000_deep_is_refused_without_recursion_error(here, capsys):
    s = schedule_file(here, SCHEDULE + "task_options: " + "[" * 5000 + "]" * 5000 + "\n")
    refused(capsys, ["--task", "noisy_bowl", "--schedule", s], "nested deeper than 32 levels")
    (here / "hp.yaml").write_text("Adam: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n")
    refused(capsys, ["--task", "noisy_bowl", "--hparams", "hp.yaml"], "--hparams", "nested deeper")
    nothing_written(here)


@pytest.mark.parametrize("text, value", [("population: !!int 'abc'", "'abc'"), ("lr_scale: !!float 'x'", "'x'")])
def test_tags_whose_value_does_not_fit(here, capsys, text, value):
    field = text.split(":")[0]
    lines = [text if line.startswith(field + ":") else line for line in SCHEDULE.splitlines()]
    s = schedule_file(here, "\n".join(lines) + "\n")
    refused(capsys, ["--task", "noisy_bowl", "--schedule", s], "invalid YAML", value)


def test_workers_1e20(here, capsys):
    refused(capsys, ["--task", "noisy_bowl", "--workers", "1e20"], "--workers", "'1e20' is not an integer")
    refused(capsys, ["--task", "noisy_bowl", "--workers", str(10**20)], "--workers", "at most 10,000")
    nothing_written(here)


@pytest.mark.skipif(torch.cuda.device_count() > 0, reason="this machine has a GPU")
def test_gpus_per_trial_without_gpus_leaves_no_run_directory(here, capsys):
    refused(capsys, ["--task", "noisy_bowl", "--gpus-per-trial", "1", "--run-dir", "r"],
            "--gpus-per-trial", "0 GPUs")
    nothing_written(here, here / "r")


def test_cpus_per_trial_1e9_is_refused_before_ray(here, capsys):
    refused(capsys, ["--task", "noisy_bowl", "--cpus-per-trial", "1e9"], "--cpus-per-trial", "at most 1024")
    refused(capsys, ["--task", "noisy_bowl", "--cpus-per-trial", str(os.cpu_count() + 1)], "--workers")
    nothing_written(here)


@pytest.mark.parametrize("address", ["not a host", "host:99999", "ray://", "a:b", "x" * 10000 + ":1"])
def test_address_that_does_not_parse(here, capsys, address):
    refused(capsys, ["--task", "noisy_bowl", "--address", address], "--address", "is not allowed")
    nothing_written(here)


def test_address_that_refuses_is_one_line_at_once(here, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    refused(capsys, ["--task", "noisy_bowl", "--address", f"127.0.0.1:{port}", "--run-dir", "r"],
            "--address", "refused")
    assert time.perf_counter() - t0 < 10
    nothing_written(here, here / "r")


def test_address_that_does_not_answer_is_bounded():
    t0 = time.perf_counter()
    with pytest.raises(PlanError) as error:  # TEST-NET-1: never routed, so the connection cannot succeed
        check_address("192.0.2.1:6379", timeout=0.5)
    assert error.value.parameter == "resources.address" and time.perf_counter() - t0 < 5


class _SlowRay:
    """ray.init that never returns (as when the address answers but is no Ray cluster)."""

    def __init__(self):
        self.shut = False

    def init(self, **kw):
        while True:
            time.sleep(0.01)

    def shutdown(self):
        self.shut = True


def test_joining_a_cluster_that_never_answers_is_a_plan_error(monkeypatch):
    monkeypatch.setattr(executor, "JOIN_TIMEOUT_S", 0.3)
    ray = _SlowRay()
    t0 = time.perf_counter()
    with pytest.raises(PlanError, match="could not join a cluster there within 0.3 s"):
        executor._join(ray, "10.0.0.1:6379", {})
    assert ray.shut and time.perf_counter() - t0 < 5


def test_joining_refused_by_ray_is_a_plan_error():
    class Refusing(_SlowRay):
        def init(self, **kw):
            raise ConnectionError("Could not find any running Ray instance.\nsecond line")

    with pytest.raises(PlanError, match=r"Ray could not join it \(ConnectionError: Could not find any running Ray instance.\)$"):
        executor._join(Refusing(), "auto", {})


def test_a_ctrl_c_while_joining_stays_a_keyboard_interrupt(monkeypatch):
    class Interrupted(_SlowRay):
        def init(self, **kw):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        executor._join(Interrupted(), "auto", {})


def test_run_dir_under_a_regular_file(here, capsys):
    (here / "file").write_text("x")
    refused(capsys, ["--task", "noisy_bowl", "--run-dir", "file/run"], "--run-dir", "is not a directory")
    assert (here / "file").read_text() == "x"
    nothing_written(here)


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="no /proc")
def test_run_dir_under_proc(here, capsys, monkeypatch):
    refused(capsys, ["--task", "noisy_bowl", "--run-dir", "/proc/lodo-tune-x/run", "--workers", "1", "--quiet"],
            "--run-dir", "cannot be created")
    nothing_written(here)


ADAM = {"lr": 0.01, "beta1": 0.9, "beta2": 0.999}


def _run_dir(path: Path, schedule: dict | None = None, optimizers=("Adam",)) -> RunDir:
    """A small finished-looking run directory written through RunDir (as a session writes it)."""
    sched = schedule if schedule is not None else load_schedule("noisy_bowl", {"population": 4}).to_dict()
    rd = RunDir.create(path, task="noisy_bowl", schedule=sched, seed=0, optimizers=list(optimizers),
                       hparams="tuned", given_hyperparameters=None, full_runs=True)
    for o in optimizers:
        for i in range(2):
            rd.write_individual(o, {"generation": 0, "index": i, "seed": i, "hparams": dict(ADAM, lr=0.01 * (i + 1)),
                                    "steps": 10, "fitness": 1.5 + i, "seconds": 0.1, "diverged": False, "curve": None})
        rd.write_state(o, {"generation": 1, "generations": 1, "done": True, "mean": dict(ADAM)})
        rd.write_full(o, 0, {"seed_index": 0, "seed": 0, "hparams": dict(ADAM), "steps": 20,
                             "final_loss": 2.0, "diverged": False, "seconds": 0.5})
    rd.write_tuned({"lr_scale": 1.0, "source": "tuned", "searcher": "ga", "schedule": None,
                    "hyperparameters": {o: dict(ADAM) for o in optimizers},
                    "raw": {o: dict(ADAM) for o in optimizers}})
    return rd


@pytest.mark.parametrize("command", ["export", "report"])
def test_manifest_with_an_empty_schedule_for_export_and_report(here, capsys, command):
    _run_dir(here / "run", schedule={})
    err = refused(capsys, [command, "run"], "manifest.json", "schedule.generations")
    assert "KeyError" not in err
    assert not (here / "run" / "report.md").exists()


@pytest.mark.parametrize("name, content", [
    ("tuned.json", '{"hyperparameters": {"Adam": 3}}'), ("tuned.json", "[1, 2]"),
    ("tuning/Adam/state.json", '{"generation": "x", "mean": 3}'), ("tuning/Adam/state.json", "{}"),
])
def test_wrong_shaped_state_or_tuned_on_resume(here, capsys, name, content):
    rd = _run_dir(here / "run")
    path = rd.path / name
    data = json.loads(content)
    if isinstance(data, dict):  # sealed, so that the shape is what is refused, not the digest
        from tuner.driver.rundir import _seal
        data = _seal(data)
    path.write_text(json.dumps(data))
    err = refused(capsys, ["--resume", "run"], "--resume", name)
    assert "TypeError" not in err


# -- hangs and blow-ups --------------------------------------------------------------------------
LAUGHS = ("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
          + "".join(f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi")))


@pytest.mark.parametrize("where", ["horizon", "fixed", "name", "optimizer", "default"])
def test_billion_laughs_is_refused_quickly(here, capsys, where):
    chain = "{" + LAUGHS.strip().replace("\n", ", ") + "}"
    spec = {"fixed": f"{{name: X, optimizer: torch.optim.SGD, fixed: {chain}}}",
            "name": f"{{name: {chain}, optimizer: torch.optim.SGD}}",
            "optimizer": f"{{name: X, optimizer: {chain}}}",
            "default": f"{{name: X, optimizer: torch.optim.SGD, hyperparameters: {{lr: {{default: {chain}, scale: log}}}}}}"}
    text = SCHEDULE + f"horizon: {chain}\n" if where == "horizon" else \
        SCHEDULE.replace("optimizers: [Adam]", f"optimizers: [{spec[where]}]")
    s = schedule_file(here, text)
    t0 = time.perf_counter()
    refused(capsys, ["--task", "noisy_bowl", "--schedule", s], "aliases are expanded")
    assert time.perf_counter() - t0 < 5
    (here / "hp.yaml").write_text(LAUGHS)
    refused(capsys, ["--task", "noisy_bowl", "--hparams", "hp.yaml"], "--hparams", "aliases are expanded")


def test_a_few_aliases_are_fine(here):
    text = SCHEDULE.replace("generations: [{noise: 1, steps: 10}]", "generations: [&row {noise: 1, steps: 10}, *row]")
    assert len(load_schedule(schedule_file(here, text)).generations) == 2


def test_an_alias_cycle_is_refused(here):
    with pytest.raises(ScheduleError, match="an alias refers to a collection containing it"):
        load_schedule(schedule_file(here, SCHEDULE + "task_options: &x {a: *x}\n"))


@pytest.mark.parametrize("change, field", [
    (("population: 4", f"population: {2**63}"), "population"),
    (("seeds: 1", f"seeds: {2**63}"), "full_run.seeds"),
    (("steps: 10}", "steps: 10, population: 1000000000}"), "generations[0].population"),
    (("lr_scale: 1", f"lr_scale: 1\nsearch: {{searcher: random, trials: {10**30}}}"), "search.trials"),
    (("steps: 20", f"steps: {2**63}"), "full_run.steps"),
    (("time_milestone_s: null", "time_milestone_s: 1.0e+308"), "full_run.time_milestone_s"),
])
def test_sizes_no_machine_could_run(here, capsys, change, field):
    s = schedule_file(here, SCHEDULE.replace(*change))
    refused(capsys, ["--task", "noisy_bowl", "--schedule", s], field)
    nothing_written(here)


def test_seeds_and_steps_flags_beyond_the_limits(here, capsys):
    refused(capsys, ["--task", "noisy_bowl", "--seeds", str(10**12)], "full_run.seeds", "at most 10,000")
    refused(capsys, ["--task", "noisy_bowl", "--steps", str(2**63)], "full_run.steps", "at most 100,000,000")
    refused(capsys, ["--task", "noisy_bowl", "--steps", "1e20"], "--steps")
    nothing_written(here)


def test_schedule_naming_a_fifo_does_not_block(here, capsys):
    os.mkfifo(here / "fifo.yaml")
    t0 = time.perf_counter()
    refused(capsys, ["--task", "noisy_bowl", "--schedule", "fifo.yaml"], "not a regular file")
    refused(capsys, ["--task", "noisy_bowl", "--hparams", "fifo.yaml"], "--hparams", "not a regular file")
    refused(capsys, ["--task", "noisy_bowl", "--schedule", str(here)], "not a regular file")
    assert time.perf_counter() - t0 < 5


def test_ctrl_c_before_the_run_started_names_no_run_directory(here, capsys, monkeypatch):
    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr("tuner.driver.api.run_plan", interrupted)
    assert main(["--task", "noisy_bowl", "--run-dir", "r", "--quiet"]) == 130
    err = capsys.readouterr().err
    assert err == "lodo-tune: error: interrupted before the run started (nothing was written)\n"
    nothing_written(here, here / "r")


# -- exit 0 although nothing could run -------------------------------------------------------------
@pytest.mark.parametrize("value", ["-1", "abc", ".nan", ".inf"])
def test_noise_variance_the_bowl_cannot_take(here, capsys, value):
    s = schedule_file(here, SCHEDULE + f"task_options: {{noise_variance: {value}}}\n")
    refused(capsys, ["--task", "noisy_bowl", "--schedule", s], "task_options.noise_variance")
    nothing_written(here)


@pytest.mark.parametrize("values, field, why", [
    ("{lr: -0.1, beta1: 0.9, beta2: 0.999}", "Adam.lr", "must be > 0"),
    ("{lr: 0.1, beta1: 1.5, beta2: 0.999}", "Adam.beta1", "must be in [0, 1)"),
    ("{lr: .nan, beta1: 0.9, beta2: 0.999}", "Adam.lr", "finite"),
    ("{lr: 1.0e+300, beta1: 0.9, beta2: 0.999}", "Adam.lr", "within"),
    ("{lr: 0.1, beta1: true, beta2: 0.999}", "Adam.beta1", "finite number"),
])
def test_hparams_values_out_of_their_domain(here, capsys, values, field, why):
    (here / "hp.yaml").write_text(f"Adam: {values}\n")
    refused(capsys, ["--task", "noisy_bowl", "--hparams", "hp.yaml"], "--hparams", field, why)
    nothing_written(here)


def test_hparams_domain_follows_the_registry_scales():
    """Every registry hyperparameter: a value outside its scale's domain is refused, its default is not."""
    for name in lodo.available():
        for h in lodo.hyperparameters(name):
            bad = -1.0 if h.scale == "log" else 1.0
            with pytest.raises(PlanError, match=f"{name}.{h.name}"):
                make_plan("noisy_bowl", run_dir="r", hyperparameters={name: {h.name: bad}})
            assert make_plan("noisy_bowl", run_dir="r", optimizers=[name],
                             hyperparameters={name: {h.name: h.default}}).given()[name][h.name] == h.default


# -- other -------------------------------------------------------------------------------------
def test_report_into_a_run_directory_a_session_holds(here, capsys):
    rd = _run_dir(here / "run")
    with RunDir(rd.path).lock():  # a session running on it
        refused(capsys, ["report", "run"], "report:", "in use by process", "--out")
        assert not (rd.path / "report.md").exists()
        assert main(["report", "run", "--out", "elsewhere"]) == 0  # a report elsewhere only reads it
        assert (here / "elsewhere" / "report.md").is_file()
        assert main(["export", "run"]) == 0  # export only reads


def test_hparams_duplicate_key(here, capsys):
    (here / "hp.yaml").write_text("Adam: {lr: 0.1, lr: 0.2, beta1: 0.9, beta2: 0.999}\n")
    refused(capsys, ["--task", "noisy_bowl", "--hparams", "hp.yaml"], "--hparams", "duplicate key 'lr'")
    (here / "hp.json").write_text('{"Adam": {"lr": 0.1, "beta1": 0.9, "beta2": 0.999}, "Adam": {"lr": 1}}')
    refused(capsys, ["--task", "noisy_bowl", "--hparams", "hp.json"], "--hparams", "duplicate key 'Adam'")


@pytest.mark.parametrize("hparams", ["paper", "FILE"])
def test_searcher_with_given_hyperparameters_is_refused(here, capsys, hparams):
    (here / "hp.yaml").write_text("Adam: {lr: 0.1, beta1: 0.9, beta2: 0.999}\n")
    refused(capsys, ["--task", "noisy_bowl", "--hparams", "hp.yaml" if hparams == "FILE" else hparams,
                     "--searcher", "tpe"], "--searcher", "not tuned")


def test_task_module_calling_sys_exit_at_import_is_exit_2_with_json(tmp_path):
    (tmp_path / "quits.py").write_text("import sys\nsys.exit(3)\n")
    done = subprocess.run([sys.executable, "-m", "cli", "--task", "quits.py:Task", "--json"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2, done.stderr
    assert json.loads(done.stdout) == {"error": "--task: Invalid task: 'quits.py:Task': importing 'quits.py' failed "
                                                "(SystemExit: 3)", "exit_code": 2}
    assert done.stderr.strip().splitlines() == ["lodo-tune: error: " + json.loads(done.stdout)["error"]]
    assert not (tmp_path / "runs").exists()


def test_key_with_a_newline_and_a_1mb_key_give_one_short_line(here, capsys):
    s = schedule_file(here, SCHEDULE + '"bad\\nkey": 1\n')
    refused(capsys, ["--task", "noisy_bowl", "--schedule", s], "bad\\nkey: unknown key")
    s = schedule_file(here, SCHEDULE + f'start:\n  Adam:\n    ? "{"k" * 1_000_000}"\n    : 1\n')
    refused(capsys, ["--task", "noisy_bowl", "--schedule", s], "start.Adam.kkk")
    (here / "hp.yaml").write_text(f'Adam:\n  ? "{"k" * 1_000_000}\\n"\n  : 1\n')
    refused(capsys, ["--task", "noisy_bowl", "--hparams", "hp.yaml"], "--hparams", "unknown hyperparameter")
    (here / "big.yaml").write_text("#" * (2 << 20))
    refused(capsys, ["--task", "noisy_bowl", "--schedule", "big.yaml"], "at most 1,048,576")
    refused(capsys, ["--task", "noisy_bowl\nsecond line" + "x" * 10**6], "--task", "noisy_bowl\\nsecond")


def test_optimizer_os_system_is_refused_before_anything_is_called(here, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a))
    for target in ("os.system", "os:system", "subprocess.run", "builtins.eval", "builtins:exec", "shutil.rmtree"):
        s = schedule_file(here, SCHEDULE.replace("optimizers: [Adam]", f"optimizers: [{{name: X, optimizer: '{target}'}}]"))
        refused(capsys, ["--task", "noisy_bowl", "--schedule", s], "optimizers[0].optimizer", "standard library")
    assert calls == []


def test_optimizer_entries_that_are_callables_but_no_factory(here):
    def check(target):
        with pytest.raises(lodo.OptimizerSpecError, match="torch.optim.Optimizer subclass or a factory returning one, a Python function"):
            lodo.OptimizerSpec("X", target)  # constructing does not validate; validate does
            lodo.registry.validate(lodo.OptimizerSpec("X", target))

    import functools
    check(functools.partial(torch.optim.SGD, lr=0.1))  # a partial: not documented, refused
    check(torch.nn.Linear)                               # a class that is no optimizer
    check(print)                                         # a builtin
    check(torch.zeros)                                   # a C function
    spec = lodo.OptimizerSpec("Y", lambda params, lr=0.1: torch.optim.SGD(params, lr=lr),
                              {"lr": {"default": 0.1, "scale": "log"}})
    assert lodo.registry.validate(spec) is spec.optimizer  # a Python factory is one


# -- integrity: format 2 ---------------------------------------------------------------------------
def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_a_new_run_directory_is_format_2_with_every_file_sealed(here):
    rd = _run_dir(here / "run")
    assert rd.format == FORMAT == 2
    for p in [rd.path / "manifest.json", rd.path / "tuned.json", *rd.path.glob("tuning/*/*.json"),
              *rd.path.glob("full/*/*.json")]:
        assert "sha256" in json.loads(p.read_text()), p


@pytest.mark.parametrize("name", ["full/Adam/seed-0.json", "tuning/Adam/g00-i01.json", "tuned.json",
                                  "tuning/Adam/state.json", "manifest.json"])
@pytest.mark.parametrize("delete_digest", [True, False])
def test_an_edited_file_is_refused_with_or_without_its_digest(here, capsys, name, delete_digest):
    rd = _run_dir(here / "run")

    def change(d):
        if delete_digest:
            d.pop("sha256")
        if "final_loss" in d:
            d["final_loss"] = 0.001
        elif "fitness" in d:
            d["fitness"] = 0.0
        elif "hyperparameters" in d:
            d["hyperparameters"]["Adam"]["lr"] = 5.0
        elif "mean" in d:
            d["mean"]["lr"] = 5.0
        else:
            d["seed"] = 1
    _edit(rd.path / name, change)
    # export reads what its tables show (a tuning record is not; the report's GA figure reads it)
    err = refused(capsys, ["report", "run", "--out", "out"] if "/g" in name else ["export", "run"], name.split("/")[-1])
    assert ("no sha256" in err or "has a sha256 but no format" in err) if delete_digest else "does not match" in err
    if "/g" not in name and "/seed" not in name:  # checked when the plan is made, before Ray (records: by the session)
        refused(capsys, ["--resume", "run"], name.split("/")[-1])


def test_a_format_1_directory_still_reads_and_a_stripped_format_does_not(here, capsys):
    rd = _run_dir(here / "run")
    legacy = here / "legacy"
    shutil.copytree(rd.path, legacy)
    _edit(legacy / "manifest.json", lambda d: (d.pop("format"), d.pop("sha256")))
    refused(capsys, ["export", "legacy"], "tuned.json", "has a sha256, which a format-1 run directory")
    for p in [legacy / "tuned.json", legacy / "tuning/Adam/state.json"]:  # as format-1 code wrote them
        _edit(p, lambda d: d.pop("sha256"))
    _edit(legacy / "full/Adam/seed-0.json", lambda d: d.pop("sha256"))  # records before digests had none
    assert main(["export", "legacy", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert RunDir.open(legacy).legacy and out["results"]["Adam"]["final_loss_mean"] == 2.0


def test_a_newer_format_is_refused(here, capsys):
    rd = _run_dir(here / "run")
    from tuner.driver.rundir import _seal
    data = json.loads((rd.path / "manifest.json").read_text())
    data.pop("sha256")
    data["format"] = FORMAT + 1
    (rd.path / "manifest.json").write_text(json.dumps(_seal(data)))
    refused(capsys, ["export", "run"], "format 3", "newer lodo-tune")


def test_damaged_manifest_is_refused_by_resume_before_ray(here, capsys):
    rd = _run_dir(here / "run")
    (rd.path / "manifest.json").write_bytes((rd.path / "manifest.json").read_bytes()[:-40])
    refused(capsys, ["--resume", "run"], "manifest.json")
    with pytest.raises(RunDirError):
        RunDir.open(rd.path)


def test_a_run_refused_once_ray_is_asked_leaves_neither_run_dir_nor_runs(here, capsys, monkeypatch):
    def refuses(*a, **kw):  # as when Ray cannot join --address within its time
        raise PlanError("resources.address", "'10.0.0.1:6379': Ray could not join a cluster there within 60 s")

    monkeypatch.setattr("tuner.driver.api.init_ray", refuses)
    refused(capsys, ["--task", "noisy_bowl", "--quiet"], "--address", "could not join")
    nothing_written(here)
    (here / "kept").mkdir()
    refused(capsys, ["--task", "noisy_bowl", "--quiet", "--run-dir", "kept/a/b"], "--address")
    assert list((here / "kept").iterdir()) == []  # the folders it made are gone, the user's stays


def test_a_seed_torch_cannot_take_is_refused(here, capsys):
    refused(capsys, ["--task", "noisy_bowl", "--seed", str(10**100)], "--seed", "below 2**40")
    with pytest.raises((RuntimeError, ValueError, OverflowError)):  # why: torch's generator cannot take it
        torch.Generator().manual_seed(1000 * 10**100)
    nothing_written(here)
