"""`lodo-tune report`: tables next to the paper's, figures, and graceful degradation.

Run directories are built by hand with known numbers; expected means, stds, ratios and GA means
are computed here from those numbers and the paper's tables as docs/paper.md §5–6 print them.
"""
import importlib.util
import math
import sys

import numpy as np
import pytest

from cli import main
from tuner.report import report
from tuner.driver.rundir import RunDir

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def schedule(task="noisy_bowl", optimizers=("Adam",), population=4, generations=2, steps=1000, seeds=3,
             milestone=None):
    return {"task": task, "population": population,
            "generations": [{"noise": 1.0, "steps": 10}] * generations,
            "optimizers": list(optimizers),
            "full_run": {"steps": steps, "seeds": seeds, "time_milestone_s": milestone},
            "lr_scale": 1.0, "task_options": {}, "scales": {}, "start": {}}


def make_run(path, task="noisy_bowl", optimizers=("Adam",), **kw) -> RunDir:
    return RunDir.create(path, task=task, schedule=schedule(task, optimizers, **kw), seed=0,
                         optimizers=list(optimizers))


def full_record(i, final_loss, steps=1000, time_loss=None, milestone=None, curve=None, diverged=False):
    if curve is None:
        curve = {"step": [500, 1000], "loss": [2 * final_loss, final_loss], "time": [0.5, 1.0]}
    return {"seed_index": i, "seed": i, "hparams": {}, "steps": steps, "time_milestone_s": milestone,
            "final_loss": math.inf if diverged else final_loss, "time_loss": time_loss,
            "diverged": diverged, "steps_per_second": 1000.0, "curve": curve}


def row(text: str, optimizer: str, after: str = "") -> list[str]:
    """The cells of `optimizer`'s row in the first table after the line containing `after`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if after in line)
    for line in lines[start:]:
        if line.startswith(f"| {optimizer} |"):
            return [c.strip() for c in line.strip("|").split("|")]
    raise AssertionError(f"no row for {optimizer} after {after!r}")


def pm(values) -> str:
    """mean ± population std, 4 significant digits for means between 10 and 100 or 0.1 and 1."""
    mean, std = sum(values) / len(values), math.sqrt(sum((v - sum(values) / len(values)) ** 2
                                                          for v in values) / len(values))
    decimals = 2 if mean >= 10 else 4
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


# -- tables ----------------------------------------------------------------------------------
def test_noisy_bowl_table_puts_our_loss_next_to_table1_with_the_ratio(tmp_path):
    rd = make_run(tmp_path / "run", optimizers=("Adam", "BFGS", "LODO-Global"), milestone=2.0)
    adam, adam_time = [15.0, 16.0, 17.5], [14.0, 15.0, 19.0]
    for i, (f, t) in enumerate(zip(adam, adam_time)):
        rd.write_full("Adam", i, full_record(i, f, time_loss=t, milestone=2.0))
        rd.write_full("BFGS", i, full_record(i, 0.0, diverged=True, time_loss=math.inf, milestone=2.0))
        rd.write_full("LODO-Global", i, full_record(i, 11.0, time_loss=12.0, milestone=2.0))
    text = report.write_report(rd.path).read_text()

    # Table 1: Adam 15.28 ± 0.07 at 100k steps, 15.26 ± 0.08 at 300 s.
    cells = row(text, "Adam", "## Results")
    assert cells[1] == pm(adam)
    assert cells[2] == "15.28 ± 0.07"
    assert cells[3] == f"{(16.0 + 1 / 6) / 15.28:.2f}" == "1.06"
    assert cells[4] == pm(adam_time)
    assert cells[5] == "15.26 ± 0.08"
    assert cells[6] == f"{16.0 / 15.26:.2f}" == "1.05"
    # BFGS diverged in both: no ratio.
    assert row(text, "BFGS", "## Results")[1:4] == ["diverged", "diverged", "—"]
    # An optimizer the paper lacks: paper and ratio "—".
    assert row(text, "LODO-Global", "## Results")[2:4] == ["—", "—"]
    # A paper row we did not run: its number, no ratio.
    assert row(text, "LODO", "## Results")[1:4] == ["not run", "8.99 ± 0.05", "—"]
    assert row(text, "Newton", "## Results")[2] == "7.41"
    assert "the ratios compare different budgets" in text  # 1000 steps vs the paper's 100000


@pytest.mark.parametrize("task, optimizer, paper_cell, paper_mean", [
    ("image_generation", "Yogi", "0.683", 0.683),            # Table 2, train NLL
    ("image_generation", "LODO-Residuals", "0.701", 0.701),  # Table 3 (ablations), train loss
    ("resnet18_cifar10", "RMSprop", "2.38", 2.380),          # Table 4, train loss
])
def test_image_tasks_compare_train_loss_with_tables_2_to_4(tmp_path, task, optimizer, paper_cell, paper_mean):
    rd = make_run(tmp_path / "run", task=task, optimizers=(optimizer,), seeds=2)
    losses = [0.75, 0.8]
    for i, f in enumerate(losses):
        rd.write_full(optimizer, i, full_record(i, f))
    text = report.write_report(rd.path, tmp_path / "out").read_text()
    cells = row(text, optimizer, "## Results")
    assert cells[1] == pm(losses)
    assert cells[2] == paper_cell
    assert cells[3] == f"{0.775 / paper_mean:.2f}"


def test_task_without_a_paper_table_shows_only_our_numbers(tmp_path):
    rd = make_run(tmp_path / "run", task="rosenbrock", optimizers=("Adam",), seeds=1)
    rd.write_full("Adam", 0, full_record(0, 0.5))
    text = report.write_report(rd.path).read_text()
    assert "The paper has no results table for rosenbrock." in text
    assert row(text, "Adam", "## Results") == ["Adam", "0.5000 ± 0.0000", "1000.0"]


def test_tuned_hyperparameters_sit_next_to_table6(tmp_path):
    rd = make_run(tmp_path / "run", optimizers=("Adam", "Yogi"))
    rd.write_tuned({"lr_scale": 1.0, "source": "tuned",
                    "hyperparameters": {"Adam": {"lr": 2.345, "beta1": 0.5, "beta2": 0.9876}}, "raw": {}})
    rd.write_state("Yogi", {"generation": 1, "generations": 2, "done": False,
                            "mean": {"lr": 0.1234, "beta1": 0.9, "beta2": 0.99995}})
    text = report.write_report(rd.path).read_text()
    after = "## Tuned hyperparameters"
    lines = [line for line in text.splitlines() if line.startswith("| Adam |")]
    assert "| Adam | lr | 2.345 | 1.164 |" in lines
    assert "| Adam | beta2 | 0.9876 | 0.9884 |" in lines
    yogi = [line for line in text.splitlines() if line.startswith("| Yogi | beta2 |")]
    assert yogi == ["| Yogi | beta2 | 0.9999500 (generation 1/2) | 0.9999723 |"]
    assert row(text, "Yogi", after)[1:4] == ["lr", "0.1234 (generation 1/2)", "2.169"]


def test_ratio_is_dash_when_either_side_is_missing_or_diverged():
    assert report.ratio(9.0, 8.99) == "1.00"
    assert report.ratio(17.98, 8.99) == "2.00"
    assert report.ratio(None, 8.99) == report.ratio(9.0, None) == "—"
    assert report.ratio(math.inf, 8.99) == report.ratio(9.0, math.inf) == "—"


# -- figures ---------------------------------------------------------------------------------
def test_loss_figure_has_one_line_per_optimizer_and_bands_for_several_seeds():
    pytest.importorskip("matplotlib")
    steps = [10, 20, 30]
    adam = [[3.0, 2.0, 1.0], [5.0, 4.0, 3.0], [4.0, 3.0, 2.0]]
    records = {
        "Adam": [full_record(i, l[-1], curve={"step": steps, "loss": l, "time": [1.0, 2.0, 3.0]})
                 for i, l in enumerate(adam)]
        + [full_record(3, 0, diverged=True, curve={"step": [10, 20], "loss": [1.0, math.inf], "time": [1, 2]})],
        # two seeds with other clocks: loss = 10 − t and 20 − 3t, both linear, so the
        # interpolated mean is 15 − 2t and the std |t − 5| on the range both cover, [0, 4].
        "Momentum": [full_record(0, 6, curve={"step": [1, 2, 3, 4, 5], "loss": [10, 9, 8, 7, 6],
                                              "time": [0, 1, 2, 3, 4]}),
                     full_record(1, 4, curve={"step": [1, 2, 3, 4, 5], "loss": [20, 14, 8, 2, -4],
                                              "time": [0, 2, 4, 6, 8]})],
        "Yogi": [full_record(0, 1.0)],  # one seed: a line, no band
        "BFGS": [full_record(0, 0, diverged=True)],  # no finite seed: left out
    }
    fig = report.plot_curves(records)
    by_step, by_time = fig.axes[:2]
    for ax in (by_step, by_time):
        assert [line.get_label() for line in ax.get_lines()] == [
            "Adam (1 diverged seeds left out)", "Momentum", "Yogi"]
        assert len(ax.collections) == 2  # Adam's and Momentum's bands
    adam_line = by_step.get_lines()[0]
    np.testing.assert_array_equal(adam_line.get_xdata(), steps)
    np.testing.assert_allclose(adam_line.get_ydata(), [4.0, 3.0, 2.0])
    momentum = by_time.get_lines()[1]
    t = np.asarray(momentum.get_xdata())
    assert t[0] == 0 and t[-1] == 4
    np.testing.assert_allclose(momentum.get_ydata(), 15 - 2 * t)
    grid, mean, std = report.band([r["curve"] for r in records["Momentum"]], "time")
    np.testing.assert_allclose(std, np.abs(grid - 5))


def ga_run(path, fitness0=(4.0, 1.0, 3.0, 2.0), second=True):
    """An Adam GA of population 4 and 2 generations, recorded as the driver would."""
    import lodo
    from tuner.search.ga import GeneticAlgorithm

    rd = make_run(path, optimizers=("Adam",))
    ga = GeneticAlgorithm(lodo.hyperparameters("Adam"), [(1.0, 10)] * 2, 4, seed=0, name="Adam")
    gen0 = ga.ask()
    for ind, f in zip(gen0, fitness0):
        rd.write_individual("Adam", {"generation": 0, "index": ind.index, "seed": ind.seed,
                                     "hparams": ind.hparams, "steps": 10, "fitness": f})
    if second:
        ga.tell(list(fitness0))
        for ind in ga.ask():
            rd.write_individual("Adam", {"generation": 1, "index": ind.index, "seed": ind.seed,
                                         "hparams": ind.hparams, "steps": 10, "fitness": 1.0 + ind.index})
    return rd, [ind.hparams for ind in gen0]


def test_tuning_figure_shows_the_ga_mean_by_generation_and_every_individual(tmp_path):
    pytest.importorskip("matplotlib")
    import lodo

    rd, gen0 = ga_run(tmp_path / "run")
    space = lodo.hyperparameters("Adam")
    generations, means, records = report.ga_means(rd, "Adam", space, rd.manifest["schedule"], 0)
    assert generations == [0, 1, 2]
    # Generation 0's mean is the defaults; generation 1's the better half (indices 1 and 3,
    # fitness 1 and 2) averaged in rescaled space: geometric mean of lr, of 1 − beta.
    a, b = gen0[1], gen0[3]
    assert means[0] == pytest.approx({"lr": 1e-3, "beta1": 0.9, "beta2": 0.999})
    assert means[1]["lr"] == pytest.approx(math.sqrt(a["lr"] * b["lr"]), rel=1e-12)
    assert means[1]["beta1"] == pytest.approx(1 - math.sqrt((1 - a["beta1"]) * (1 - b["beta1"])), rel=1e-12)

    fig = report.plot_tuning("Adam", space, generations, means, records, paper={"lr": 1.164})
    assert [ax.get_title() for ax in fig.axes] == ["lr", "beta1", "beta2"]
    lr_ax, beta1_ax = fig.axes[:2]
    assert lr_ax.get_yscale() == "log" and beta1_ax.get_yscale() == "function"
    assert len(lr_ax.collections) == 1 and len(lr_ax.collections[0].get_offsets()) == 8
    assert [line.get_label() for line in lr_ax.get_lines()] == ["GA mean", "paper (Table 6)"]
    assert [line.get_label() for line in beta1_ax.get_lines()] == ["GA mean"]
    np.testing.assert_allclose(lr_ax.get_lines()[0].get_ydata()[:2], [1e-3, means[1]["lr"]])


def test_tuning_records_from_another_ga_show_individuals_without_a_mean(tmp_path):
    import lodo

    rd, _ = ga_run(tmp_path / "run", second=False)
    rec = rd.read_individual("Adam", 0, 2)
    rd.write_individual("Adam", {**rec, "hparams": {**rec["hparams"], "lr": 0.5}})
    generations, means, records = report.ga_means(rd, "Adam", lodo.hyperparameters("Adam"),
                                                   rd.manifest["schedule"], 0)
    assert means is None and len(records) == 4


def test_report_writes_valid_pngs_of_the_figure_size(tmp_path):
    image = pytest.importorskip("matplotlib.image")
    rd, _ = ga_run(tmp_path / "run")
    for i in range(2):
        rd.write_full("Adam", i, full_record(i, 10.0 + i))
    text = report.write_report(rd.path, tmp_path / "out").read_text()
    for name, shape in (("loss.png", (400, 1000)), ("tuning-Adam.png", (320, 990))):
        path = tmp_path / "out" / "figures" / name
        assert f"](figures/{name})" in text
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        assert image.imread(path).shape[:2] == shape
        assert path.stat().st_size < 100_000


# -- degradation and CLI ---------------------------------------------------------------------
def test_without_matplotlib_the_report_keeps_its_tables_and_says_figures_were_skipped(tmp_path, monkeypatch):
    rd, _ = ga_run(tmp_path / "run")
    rd.write_full("Adam", 0, full_record(0, 20.0))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    text = report.write_report(rd.path).read_text()
    assert row(text, "Adam", "## Results")[1:4] == ["20.00 ± 0.00 (1/3 seeds)", "15.28 ± 0.07", f"{20 / 15.28:.2f}"]
    assert "| Adam | lr |" in text
    assert sum("Figures skipped" in line for line in text.splitlines()) == 1
    assert not (rd.path / "figures").exists()


def test_unfinished_run_with_tuning_only_still_gives_a_report(tmp_path):
    rd, _ = ga_run(tmp_path / "run", second=False)
    text = report.write_report(rd.path).read_text()
    assert "No full-length runs yet" in text
    assert row(text, "Adam", "## Results")[1:4] == ["—", "15.28 ± 0.07", "—"]
    assert "| Adam | lr | — (generation 0/2) | 1.164 |" in text
    if importlib.util.find_spec("matplotlib") is not None:
        assert (rd.path / "figures" / "tuning-Adam.png").is_file()
        assert not (rd.path / "figures" / "loss.png").exists()


def test_cli_prints_the_report_path_and_rejects_a_missing_run_dir(tmp_path, capsys):
    rd = make_run(tmp_path / "run")
    assert main(["report", str(rd.path), "--out", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "out" / "report.md")
    missing = tmp_path / "nowhere"
    assert main(["report", str(missing)]) == 2
    assert capsys.readouterr().err == f"lodo-tune: error: report: '{missing}' is not a run directory (no manifest.json)\n"
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="unreadable manifest.json"):
        report.write_report(tmp_path / "bad")


# Transcribed independently from the paper (docs/paper.md §6): every row the report shows as "paper".
PAPER_CELLS = {
    "noisy_bowl": {"Adam": ("15.28 ± 0.07", "15.26 ± 0.08"), "Momentum": ("16.59 ± 0.08", "16.56 ± 0.05"),
                   "RMSprop": ("22.37 ± 0.06", "22.47 ± 0.13"), "Yogi": ("15.35 ± 0.10", "15.16 ± 0.05"),
                   "L-BFGS": ("49.30 ± 1.04", "40.60 ± 1.40"), "O-LBFGS": ("13.96 ± 0.08", "10.80 ± 0.17"),
                   "L2LBGDBGD": ("14.79 ± 0.08", "14.81 ± 0.10"), "LODO": ("8.99 ± 0.05", "10.05 ± 0.22"),
                   "BFGS": ("diverged", "diverged"), "Levenberg-Marquardt": ("7.40 ± 0.02", "7.35 ± 0.07"),
                   "Newton": ("7.41", "7.41")},
    "image_generation": {"Adam": ("0.830",), "Momentum": ("0.708",), "RMSprop": ("0.917",), "Yogi": ("0.683",),
                         "LARS": ("0.701",), "LODO": ("0.696",), "LODO-Diagonal": ("diverged",),
                         "LODO-Global": ("0.770",), "LODO-Residuals": ("0.701",),
                         "LODO-No-Momentum": ("0.753",), "LODO-SGD": ("0.709",)},
    "resnet18_cifar10": {"Adam": ("0.326",), "Momentum": ("0.386",), "RMSprop": ("2.38",), "Yogi": ("0.398",),
                         "LARS": ("0.296",), "LODO": ("0.624",)},
}


@pytest.mark.parametrize("task", sorted(PAPER_CELLS))
def test_every_paper_row_matches_the_papers_tables(tmp_path, task):
    milestone = 300.0 if task == "noisy_bowl" else None
    rd = make_run(tmp_path / "run", task=task, optimizers=("Adam",), milestone=milestone)
    rd.write_full("Adam", 0, full_record(0, 1.0, time_loss=1.0, milestone=milestone))
    text = report.write_report(rd.path).read_text()
    for optimizer, cells in PAPER_CELLS[task].items():
        got = row(text, optimizer, "## Results")
        assert got[2] == cells[0], optimizer
        if len(cells) > 1:
            assert got[5] == cells[1], optimizer


def test_manifest_without_a_schedule_is_rejected_naming_the_path(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "manifest.json").write_text('{"task": "noisy_bowl"}')
    with pytest.raises(ValueError, match=f"'{tmp_path / 'run'}' lacks one of task, schedule, seed, optimizers"):
        report.write_report(tmp_path / "run")


# -- σ and trajectories -------------------------------------------------------------------------
def sigma_record(i, values, steps=(100, 200, 300), diverged=False, trajectory=None):
    rec = full_record(i, 9.0, diverged=diverged)
    if values is not None:
        rec["sigma"] = {"step": list(steps), "value": list(values)}
    if trajectory is not None:
        rec["trajectory"] = trajectory
    return rec


def test_sigma_figure_has_a_log_line_per_optimizer_with_sigma_and_a_band_for_several_seeds():
    pytest.importorskip("matplotlib")
    records = {
        "LODO": [sigma_record(0, [1.0, 0.5, 0.25]), sigma_record(1, [0.5, 0.25, 0.125]),
                 sigma_record(2, [0.9, math.nan, math.nan], diverged=True)],  # left out
        "LODO-Global": [sigma_record(0, [0.8, 0.7, 0.6])],  # one seed: a line, no band
        "Adam": [sigma_record(0, None)],  # no σ: no line
    }
    ax = report.plot_sigma(records).axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["LODO (2 seeds)", "LODO-Global"]
    assert len(ax.collections) == 1 and ax.get_yscale() == "log"
    lodo_line = ax.get_lines()[0]
    np.testing.assert_array_equal(lodo_line.get_xdata(), [100, 200, 300])
    np.testing.assert_allclose(lodo_line.get_ydata(), [0.75, 0.375, 0.1875])  # (a + b) / 2 by hand
    # The band is mean ± std (ddof 0): |a − b| / 2 = 0.25, 0.125, 0.0625.
    band_y = np.concatenate([p.vertices[:, 1] for p in ax.collections[0].get_paths()])
    assert band_y.max() == pytest.approx(1.0) and band_y.min() == pytest.approx(0.125)


def test_trajectory_figure_draws_seed0_of_each_optimizer_over_the_rosenbrock_heat_map():
    pytest.importorskip("matplotlib")
    adam0, adam1 = [[-0.5, 2.0], [-0.4, 1.9], [0.2, 1.0]], [[-0.5, 2.0], [9.0, 9.0]]
    lodo0 = [[-0.5, 2.0], [0.0, 1.5], [math.inf, math.nan]]  # a diverged path stops where it left
    records = {"Adam": [sigma_record(1, None, trajectory=adam1), sigma_record(0, None, trajectory=adam0)],
               "LODO": [sigma_record(0, None, trajectory=lodo0)],
               "Momentum": [sigma_record(0, None)]}  # no trajectory: no line
    ax = report.plot_trajectories(records).axes[0]
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["Adam", "LODO", "start (−0.5, 2)", "minimum (1, 1)"]
    np.testing.assert_array_equal(lines[0].get_xydata(), adam0)
    assert np.isnan(lines[1].get_xydata()[2]).all()
    np.testing.assert_array_equal(lines[2].get_xydata(), [[-0.5, 2.0]])
    np.testing.assert_array_equal(lines[3].get_xydata(), [[1.0, 1.0]])
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    assert x0 < -0.5 < 1 < x1 and y0 < 1 < 2 < y1  # the box holds the start and the minimum
    # Heat map: log10(f + 1e-4), origin lower: f(−1.5, −0.5) = 0.01·6.25 + (2.25 + 0.5)² = 7.625,
    # f(1.5, 2.5) = 0.01·0.25 + (2.25 − 2.5)² = 0.065.
    heat = np.asarray(ax.images[0].get_array())
    assert heat[0, 0] == pytest.approx(math.log10(7.625 + 1e-4))
    assert heat[-1, -1] == pytest.approx(math.log10(0.065 + 1e-4))
    assert len(ax.collections) >= 1  # the contours


def test_report_embeds_sigma_and_trajectory_pngs_only_when_the_run_has_them(tmp_path):
    pytest.importorskip("matplotlib")
    rd = make_run(tmp_path / "bowl", optimizers=("LODO", "Adam"))
    for i in range(2):
        rd.write_full("LODO", i, sigma_record(i, [1.0 - 0.1 * i, 0.5, 0.3]))
        rd.write_full("Adam", i, full_record(i, 10.0))
    text = report.write_report(rd.path).read_text()
    figures = rd.path / "figures"
    assert "](figures/sigma.png)" in text and "trajectories.png" not in text
    assert (figures / "sigma.png").read_bytes()[:8] == PNG_SIGNATURE
    assert not (figures / "trajectories.png").exists()

    rd = make_run(tmp_path / "rosenbrock", task="rosenbrock", optimizers=("Adam",), steps=200)
    rd.write_full("Adam", 0, sigma_record(0, None, trajectory=[[-0.5, 2.0], [0.0, 1.0], [1.0, 1.0]]))
    text = report.write_report(rd.path).read_text()
    figures = rd.path / "figures"
    assert "](figures/trajectories.png)" in text and "sigma.png" not in text
    assert (figures / "trajectories.png").read_bytes()[:8] == PNG_SIGNATURE
    assert not (figures / "sigma.png").exists()

    rd = make_run(tmp_path / "plain", optimizers=("Adam",))
    rd.write_full("Adam", 0, full_record(0, 10.0))
    text = report.write_report(rd.path).read_text()
    assert "sigma.png" not in text and "trajectories.png" not in text
