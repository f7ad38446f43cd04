"""Exports of a hand-written run directory with known numbers: exact expected text per format."""
import csv
import io
import json

import pytest

from cli import main
from tuner.report.export import export
from tuner.driver.rundir import RunDir

SCHEDULE = {"task": "noisy_bowl", "population": 4, "generations": [{"noise": 3, "steps": 100}] * 2,
            "optimizers": ["Adam", "LODO"], "full_run": {"steps": 1000, "seeds": 2, "time_milestone_s": 30},
            "lr_scale": 1, "task_options": {}, "scales": {}, "start": {}}


def _full(i, loss, time_loss, sps):
    return {"seed_index": i, "seed": i, "hparams": {}, "steps": 1000, "time_milestone_s": 30,
            "final_loss": loss, "time_loss": time_loss, "steps_per_second": sps, "diverged": False}


@pytest.fixture
def run_dir(tmp_path):
    rd = RunDir.create(tmp_path / "run", task="noisy_bowl", schedule=SCHEDULE, seed=0, optimizers=["Adam", "LODO"])
    rd.write_tuned({"lr_scale": 1, "source": "tuned", "hyperparameters": {"Adam": {"lr": 1.164, "beta1": 0.465,
                                                                                  "beta2": 0.9884}}, "raw": {}})
    rd.write_state("LODO", {"generation": 1, "generations": 2, "done": False,
                            "mean": {"lr": 0.27, "meta_lr": 0.00096, "beta": 0.195}})
    # Adam: losses 15 and 16 → mean 15.5, population std 0.5; time milestone 15, 15.5 → 15.25 ± 0.25
    rd.write_full("Adam", 0, _full(0, 15.0, 15.0, 1000.0))
    rd.write_full("Adam", 1, _full(1, 16.0, 15.5, 2000.0))
    # LODO: one of two seeds done so far
    rd.write_full("LODO", 0, _full(0, 9.0, 10.0, 500.0))
    return rd.path


def test_markdown_has_table6_and_table1_layouts(run_dir):
    assert export(run_dir, "markdown") == """\
### Tuned hyperparameters (tuned by ga) — noisy_bowl

| Optimizer | Hyperparameters | noisy_bowl |
|---|---|---|
| Adam | lr / beta1 / beta2 | 1.164 / 0.465 / 0.9884 |
| LODO | lr / meta_lr / beta | 0.27 / 0.00096 / 0.195 (generation 1/2) |

### Results — noisy_bowl (mean ± std over seeds of the last-10 % training loss)

| Optimizer | 1000 steps | 30 s | steps/s |
|---|---|---|---|
| Adam | 15.50 ± 0.50 | 15.25 ± 0.25 | 1500.0 |
| LODO | 9.000 ± 0.000 (1/2 seeds) | 10.00 ± 0.00 | 500.0 |
"""


def test_csv_keeps_full_precision(run_dir):
    text = export(run_dir, "csv")
    assert text == """\
optimizer,hyperparameter,value,status,searcher
Adam,lr,1.164,done,ga
Adam,beta1,0.465,done,ga
Adam,beta2,0.9884,done,ga
LODO,lr,0.27,generation 1/2,ga
LODO,meta_lr,0.00096,generation 1/2,ga
LODO,beta,0.195,generation 1/2,ga

optimizer,steps,final_loss_mean,final_loss_std,time_milestone_s,time_loss_mean,time_loss_std,steps_per_second,diverged,errors,seeds
Adam,1000,15.5,0.5,30.0,15.25,0.25,1500.0,0,0,2
LODO,1000,9.0,0.0,30.0,10.0,0.0,500.0,0,0,1
"""
    rows = list(csv.reader(io.StringIO(text.split("\n\n")[1])))
    assert (float(rows[1][2]), float(rows[1][3])) == (15.5, 0.5)


def test_latex_is_a_booktabs_tabular(run_dir):
    assert export(run_dir, "latex") == r"""\begin{tabular}{lll}
\toprule
Optimizer & Hyperparameters & noisy\_bowl \\
\midrule
Adam & lr / beta1 / beta2 & 1.164 / 0.465 / 0.9884 \\
LODO & lr / meta\_lr / beta & 0.27 / 0.00096 / 0.195 (generation 1/2) \\
\bottomrule
\end{tabular}

\begin{tabular}{llll}
\toprule
Optimizer & 1000 steps & 30 s & steps/s \\
\midrule
Adam & 15.50 $\pm$ 0.50 & 15.25 $\pm$ 0.25 & 1500.0 \\
LODO & 9.000 $\pm$ 0.000 (1/2 seeds) & 10.00 $\pm$ 0.00 & 500.0 \\
\bottomrule
\end{tabular}
"""


def test_json_loads_back_to_the_same_numbers(run_dir):
    data = json.loads(export(run_dir, "json"))
    assert data["task"] == "noisy_bowl"
    assert data["tuned"]["Adam"] == {"hyperparameters": {"lr": 1.164, "beta1": 0.465, "beta2": 0.9884},
                                     "status": "done"}
    assert data["tuned"]["LODO"]["hyperparameters"] == {"lr": 0.27, "meta_lr": 0.00096, "beta": 0.195}
    adam = data["results"]["Adam"]
    assert (adam["final_loss_mean"], adam["final_loss_std"]) == (15.5, 0.5)
    assert (adam["time_loss_mean"], adam["time_loss_std"]) == (15.25, 0.25)
    assert adam["steps_per_second"] == 1500.0 and adam["seeds"] == 2 and adam["diverged"] == 0
    assert data["results"]["LODO"]["seeds"] == 1


def test_diverged_runs_are_shown_as_diverged_and_json_stays_standard(run_dir):
    rd = RunDir(run_dir)
    for i in range(2):
        rd.write_full("LODO", i, dict(_full(i, float("inf"), float("inf"), 500.0), diverged=True))
    assert "| LODO | diverged | diverged | 500.0 |" in export(run_dir, "markdown")
    data = json.loads(export(run_dir, "json"))  # no Infinity tokens: strict parsers accept it
    assert data["results"]["LODO"]["final_loss_mean"] is None and data["results"]["LODO"]["diverged"] == 2


def test_cli_export_prints_the_format_and_rejects_a_non_run_dir(run_dir, tmp_path, capsys):
    assert main(["export", str(run_dir), "--format", "csv"]) == 0
    assert capsys.readouterr().out == export(run_dir, "csv")
    assert main(["export", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lodo-tune: error: export:")
