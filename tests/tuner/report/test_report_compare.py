"""Where the values come from (searcher, schedule, faithful Table 5, or their source) and the
comparison report over several runs (`lodo-tune report DIR1 DIR2 ...`).

Schedules come from the bundled YAMLs through `load_schedule` and records through the RunDir
API, so the run directories have the format a run writes; one test makes them with tuner.driver.
Expected means, stds and extremes are numpy's on the numbers written; paper values are Table 1
and Table 6 as docs/paper.md prints them.
"""
import importlib.util
import json
import math
import sys

import numpy as np
import pytest

import tuner
from cli import main
from tuner.report import compare
from tuner.report import provenance
from tuner.report import report
from tuner.driver.plan import Resources
from tuner.driver.rundir import RunDir
from tuner.driver.schedule import load_schedule

SHORT = {"full_run": {"steps": 1000, "seeds": 3, "time_milestone_s": None}}


def schedule(overrides=None, search=None) -> dict:
    data = load_schedule("noisy_bowl", {**SHORT, **(overrides or {})}).to_dict()
    return {**data, "search": {**(data.get("search") or {}), **search}} if search else data


def make_run(path, losses: dict, hparams: dict, *, seed=0, task="noisy_bowl", sched=None, mode="tuned",
             **manifest) -> RunDir:
    """A finished run: `losses` {optimizer: [final loss per full-run seed]}, `hparams` its values."""
    rd = RunDir.create(path, task=task, schedule=sched or schedule(), seed=seed, optimizers=list(hparams),
                       hparams=mode, **manifest)
    rd.write_tuned({"lr_scale": 1.0, "source": mode, "hyperparameters": hparams, "raw": hparams})
    for o, seeds in losses.items():
        for i, f in enumerate(seeds):
            rd.write_full(o, i, {"seed_index": i, "seed": i, "hparams": hparams[o], "steps": 1000,
                                 "time_milestone_s": None, "final_loss": f, "time_loss": None,
                                 "diverged": not math.isfinite(f), "steps_per_second": 100.0})
    return rd


def row(text: str, *first: str, after: str = "") -> list[str]:
    """The cells of the first table row starting with the cells `first`, after the line containing `after`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if after in line)
    for line in lines[start:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[:len(first)] == list(first):
            return cells
    raise AssertionError(f"no row {first} after {after!r}")


def snapshot(path) -> dict:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(path.rglob("*")) if p.is_file()}


# -- one run: where the values come from -------------------------------------------------------
def test_report_names_searcher_and_faithful_schedule_for_each_optimizer(tmp_path):
    rd = make_run(tmp_path / "run", {"Adam": [16.0]}, {"Adam": {"lr": 1.5, "beta1": 0.5, "beta2": 0.99},
                                                       "L2LBGDBGD": {}})
    text = report.write_report(rd.path).read_text()
    assert "Searcher: GA. Schedule: schedules/noisy_bowl.yaml with full_run changed (faithful Table 5)." in text
    assert row(text, "Adam", after="## Where") == ["Adam", "tuned", "GA", "schedules/noisy_bowl.yaml with full_run "
                                                   "changed", "yes"]
    assert row(text, "L2LBGDBGD", after="## Where")[1] == "meta-trained offline (its LSTM checkpoint): nothing to tune"


def test_a_changed_schedule_is_not_table5_and_says_why(tmp_path):
    sched = schedule({"population": 4, "generations": [{"noise": 1, "steps": 10}] * 2})
    rd = make_run(tmp_path / "run", {}, {"Momentum": {"lr": 1.0, "momentum": 0.5}}, sched=sched,
                  schedule_source="my schedule.yaml")
    text = report.write_report(rd.path).read_text()
    # Table 5's noisy_bowl schedule: 32 individuals × 25,000 steps over 10 generations (the issue's 800k evaluations).
    assert ("Schedule: my schedule.yaml (not Table 5: population 4 (Table 5: 32); 2 generations, 80 "
            "individual-steps (Table 5: 10, 800,000))." in text)
    assert row(text, "Momentum", after="## Where")[2:] == ["GA", "my schedule.yaml", "no"]
    twice = schedule({"population": 4, "generations": [{"noise": 1, "steps": 10}] * 2, "ga": {"seeds": 2}})
    rd = make_run(tmp_path / "seeds", {}, {"Momentum": {"lr": 1.0, "momentum": 0.5}}, sched=twice, schedule_source="x.yaml")
    assert "2 generations, 160 individual-steps" in report.write_report(rd.path).read_text()  # 2 trials per individual


def test_values_not_tuned_say_where_they_came_from(tmp_path):
    paper = make_run(tmp_path / "paper", {}, {"Adam": {"lr": 1.164, "beta1": 0.465, "beta2": 0.9884},
                                              "LARS": {"lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0}},
                     mode="paper")
    text = report.write_report(paper.path).read_text()
    assert "No searcher: --hparams paper." in text
    assert row(text, "Adam", after="## Where")[1:3] == ["the paper's Table 6 (--hparams paper)", "—"]
    # Table 6 has no noisy_bowl row for LARS (docs/paper.md §5): the registry defaults.
    assert row(text, "LARS", after="## Where")[1] == "the registry defaults (--hparams paper; Table 6 has no row)"
    given = make_run(tmp_path / "given", {}, {"Adam": {"lr": 0.1, "beta1": 0.9, "beta2": 0.999}}, mode="given")
    assert row(report.write_report(given.path).read_text(), "Adam", after="## Where")[1] == \
        "given values (--hparams FILE or a mapping)"


def test_a_searcher_from_the_schedule_and_a_user_task_without_table5():
    manifest = {"task": "noisy_bowl", "schedule": schedule(search={"searcher": "tpe"})}
    assert provenance.searcher(manifest) == "tpe"
    assert provenance.schedule_info(manifest).faithful  # the schedule is Table 5's; the searcher is another
    old = {"task": "noisy_bowl", "schedule": schedule()}  # before search: existed
    assert provenance.searcher(old) == "ga"
    ga = {"task": "noisy_bowl", "schedule": {**schedule({"start": {"Adam": {"lr": 0.1}}}), "ga": {"elite": 2}}}
    assert provenance.schedule_info(ga).deviations == ("start values (Appendix E starts at the defaults)",
                                                       "GA options (ga:)")
    user = {"task": "digits", "schedule": {**schedule(), "task": "digits"}}
    assert provenance.schedule_info(user).describe() == "a schedule of its own (no Table 5 schedule for this task)"


# -- several runs: the spread over searcher seeds ----------------------------------------------
ADAM = [{"lr": 1.2, "beta1": 0.45, "beta2": 0.988}, {"lr": 1.5, "beta1": 0.61, "beta2": 0.9991},
        {"lr": 2.1, "beta1": 0.52, "beta2": 0.9979}]
LOSSES = [[15.9, 16.2, 16.1], [17.4, 17.0, 17.3], [15.5, 15.3, 15.6]]


def three_runs(tmp_path) -> list:
    return [make_run(tmp_path / f"seed{s}", {"Adam": LOSSES[s], "LODO": [9.0 + s / 10, 9.1]},
                     {"Adam": ADAM[s], "LODO": {"meta_lr": 1e-3, "beta": 0.2, "lr": 0.3 * (s + 1)}}, seed=s).path
            for s in range(3)]


def test_comparison_mean_std_min_max_are_numpys_over_the_runs(tmp_path):
    runs = three_runs(tmp_path)
    before = {p: snapshot(p) for p in runs}
    data = compare.compare_runs(runs)
    per_run = np.array([np.mean(s) for s in LOSSES])  # each run's loss: its mean over its full-run seeds
    (group,) = data["optimizers"]["Adam"]
    assert group["values_from"] == "GA" and len(group["runs"]) == 3
    loss = group["loss"]
    assert loss["n"] == 3 and loss["diverged"] == 0
    np.testing.assert_allclose([loss["mean"], loss["std"], loss["min"], loss["max"]],
                               [per_run.mean(), per_run.std(), per_run.min(), per_run.max()], rtol=1e-12)
    for name in ("lr", "beta1", "beta2"):
        v = np.array([a[name] for a in ADAM])
        s = group["hyperparameters"][name]
        np.testing.assert_allclose([s["mean"], s["std"], s["min"], s["max"]], [v.mean(), v.std(), v.min(), v.max()],
                                   rtol=1e-12)

    path = compare.write_comparison(runs, tmp_path / "out")
    text = path.read_text()
    mean = per_run.mean()
    assert row(text, "Adam", after="## Full-run loss") == [
        "Adam", "GA · S1", "3", f"{mean:.2f}", f"{per_run.std():.2f}", f"{per_run.min():.2f} – {per_run.max():.2f}",
        "15.28 ± 0.07", f"{mean / 15.28:.2f}"]  # Table 1: Adam 15.28 ± 0.07
    lr = np.array([a["lr"] for a in ADAM])
    assert row(text, "Adam", "GA · S1", "lr", after="## Tuned") == [
        "Adam", "GA · S1", "lr", "3", f"{lr.mean():.4g}", f"{lr.std():.4g}", f"{lr.min():.4g} – {lr.max():.4g}",
        "1.164"]  # Table 6: Adam lr 1.164
    assert "- S1: schedules/noisy_bowl.yaml with full_run changed (faithful Table 5)" in text
    assert row(text, f"`{runs[2]}`", after="run directory")[1:3] == ["2", "GA"]
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "out" / compare.FIGURE).read_bytes().startswith(b"\x89PNG")
        assert f"]({compare.FIGURE})" in text
    assert {p: snapshot(p) for p in runs} == before  # nothing written into the run directories
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_runs_of_other_searchers_and_unfinished_or_diverged_runs_are_kept_apart(tmp_path):
    ga = [make_run(tmp_path / f"ga{s}", {"Momentum": [17.0 + s]}, {"Momentum": {"lr": 1.0, "momentum": 0.5}},
                   seed=s).path for s in range(2)]
    tpe = [make_run(tmp_path / f"tpe{s}", {"Momentum": [16.0, 16.5] if s == 0 else [math.inf]},
                    {"Momentum": {"lr": 1.4, "momentum": 0.4}}, seed=s,
                    sched=schedule(search={"searcher": "tpe"})).path for s in range(2)]
    tpe.append(make_run(tmp_path / "tpe2", {}, {"Momentum": {"lr": 1.3, "momentum": 0.45}}, seed=2,
                        sched=schedule(search={"searcher": "tpe"})).path)  # tuned, no full runs yet
    text = compare.write_comparison(ga + tpe, tmp_path / "out").read_text()
    assert row(text, "Momentum", "GA · S1", after="## Full-run loss")[2:6] == ["2", "17.50", "0.50", "17.00 – 18.00"]
    # TPE: one run at 16.25, one whose every seed diverged (counted, not averaged), one without full runs.
    assert row(text, "Momentum", "TPE · S1", after="## Full-run loss")[2:6] == [
        "2 of 3", "16.25 (1 diverged)", "0.00", "16.25 – 16.25"]
    lr = np.array([1.4, 1.4, 1.3])
    assert row(text, "Momentum", "TPE · S1", "lr", after="## Tuned")[3:5] == ["3", f"{lr.mean():.4g}"]


def test_old_style_run_directories_compare_and_report(tmp_path):
    # Written as before this change: no schedule_source in the manifest, no search: in the schedule.
    before = {k: v for k, v in schedule().items() if k != "search"}
    runs = [make_run(tmp_path / f"r{s}", {"Adam": [16.0 + s]}, {"Adam": ADAM[s]}, seed=s, sched=before).path
            for s in range(2)]
    for p in runs:
        manifest = json.loads((p / "manifest.json").read_text())
        assert "schedule_source" not in manifest and "search" not in manifest["schedule"]
    assert main(["report", *map(str, runs), "--out", str(tmp_path / "cmp")]) == 0
    assert row((tmp_path / "cmp" / "comparison.md").read_text(), "Adam", after="## Full-run loss")[1:4] == \
        ["GA · S1", "2", "16.50"]


def test_runs_that_cannot_be_compared_are_refused_in_one_line_with_exit_2(tmp_path, capsys):
    nb = make_run(tmp_path / "nb", {"Adam": [16.0]}, {"Adam": ADAM[0]}).path
    rb = make_run(tmp_path / "rb", {"Adam": [0.1]}, {"Adam": ADAM[0]}, task="rosenbrock",
                  sched=load_schedule("rosenbrock").to_dict()).path
    cases = {
        (str(nb), str(rb)): f"report: '{rb}' is a run of rosenbrock, '{nb}' of noisy_bowl: compare runs of one task",
        (str(nb), str(tmp_path / "none")): f"report: '{tmp_path / 'none'}' is not a run directory (no manifest.json)",
        (str(nb), str(nb)): f"report: '{nb}' is given twice (as '{nb}'): give each run once",
    }
    for argv, message in cases.items():
        assert main(["report", *argv]) == 2
        err = capsys.readouterr().err
        assert err == f"lodo-tune: error: {message}\n"
    other = make_run(tmp_path / "nb2", {"Adam": [16.5]}, {"Adam": ADAM[1]}).path
    before = snapshot(tmp_path)
    assert main(["report", str(nb), str(other), "--out", str(nb / "cmp")]) == 2
    assert capsys.readouterr().err == (f"lodo-tune: error: report: --out: '{nb / 'cmp'}' is inside the run directory "
                                       f"'{nb}', which the comparison never writes to: give another folder\n")
    assert snapshot(tmp_path) == before


def test_without_matplotlib_the_comparison_keeps_its_tables(tmp_path, monkeypatch):
    runs = three_runs(tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    text = compare.write_comparison(runs, tmp_path / "out").read_text()
    assert row(text, "LODO", after="## Full-run loss")[2] == "3"
    assert report.SKIPPED in text and not (tmp_path / "out" / "figures").exists()


def test_comparison_of_runs_made_by_tuner_run(ray_session, tmp_path, monkeypatch):
    sched = load_schedule("noisy_bowl", {"population": 2, "generations": [{"noise": 1, "steps": 30}],
                                         "full_run": {"steps": 60, "seeds": 2, "time_milestone_s": None}})
    runs = []
    for seed in (0, 1):
        runs.append(tmp_path / f"seed{seed}")
        tuner.run("noisy_bowl", optimizers=["Momentum"], schedule=sched, seed=seed, run_dir=runs[-1],
                  resources=Resources(workers=1))  # one actor per run: its start-up is most of the time
    assert provenance.schedule_info(RunDir(runs[0]).manifest).describe() == (
        "schedules/noisy_bowl.yaml (with overrides) (not Table 5: population 2 (Table 5: 32); "
        "1 generations, 60 individual-steps (Table 5: 10, 800,000))")
    monkeypatch.chdir(tmp_path)
    assert main(["report", *map(str, runs)]) == 0  # default: comparison-<task>/ in the current directory
    text = (tmp_path / "comparison-noisy_bowl" / "comparison.md").read_text()
    per_run = np.array([np.mean([r["final_loss"] for r in RunDir(p).full_runs("Momentum")]) for p in runs])
    lr = np.array([RunDir(p).read_tuned()["hyperparameters"]["Momentum"]["lr"] for p in runs])
    cells = row(text, "Momentum", after="## Full-run loss")
    assert cells[2] == "2"
    assert float(cells[3]) == pytest.approx(per_run.mean(), rel=1e-3)
    assert float(cells[4]) == pytest.approx(per_run.std(), rel=1e-2, abs=1e-3)
    assert row(text, "Momentum", "GA · S1", "lr", after="## Tuned")[4] == f"{lr.mean():.4g}"


def test_runs_of_a_user_task_compare_without_the_papers_columns(tmp_path):
    sched = {k: v for k, v in schedule().items() if k != "task"}  # a user task's schedule names no task
    runs = [make_run(tmp_path / f"u{s}", {"Adam": [0.5 + s / 10]}, {"Adam": ADAM[s]}, task="linear_fit", sched=sched,
                     seed=s).path for s in range(2)]
    text = compare.write_comparison(runs, tmp_path / "out").read_text()
    assert "paper" not in text
    assert "- S1: a schedule of its own (no Table 5 schedule for this task)" in text
    assert row(text, "Adam", after="## Full-run loss") == ["Adam", "GA · S1", "2", "0.5500", "0.0500",
                                                           "0.5000 – 0.6000"]
