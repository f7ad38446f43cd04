"""The lodo-tune command line: bad input, a tiny end-to-end run, --hparams paper, kill -9 + --resume."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cli import main
from tuner.driver.rundir import RunDir
from tuner.driver.schedule import load_schedule

from conftest import kill_9_when

ROOT = Path(__file__).resolve().parents[2]
BAD = ROOT / "tests" / "bad_schedules"

TINY = {"task": "noisy_bowl", "population": 4, "generations": [{"noise": 3, "steps": 200}] * 2,
        "optimizers": ["Adam", "Momentum"], "full_run": {"steps": 300, "seeds": 2, "time_milestone_s": None},
        "lr_scale": 1}


def _schedule(tmp_path, **changes) -> str:
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump({**TINY, **changes}))
    return str(p)


# -- bad input: one line on stderr, exit 2, nothing written (no Ray needed) ----------------------
def _bad_cases(tmp_path):
    other = RunDir.create(tmp_path / "other", task="rosenbrock", schedule={"task": "rosenbrock"}, seed=0,
                          optimizers=["Adam"])
    bowl = RunDir.create(tmp_path / "bowl", task="noisy_bowl", schedule=load_schedule("noisy_bowl").to_dict(),
                         seed=0, optimizers=["Adam"])
    hp = tmp_path / "hp.yaml"
    hp.write_text("Adam: {lr: 0.1, betta1: 0.9}\n")
    cases = {
        "unknown task": (["--task", "noisy_bowll"], "--task: unknown task 'noisy_bowll'"),
        "unknown optimizer": (["--task", "noisy_bowl", "--optimizers", "Adam,Adamm"],
                              "--optimizers: unknown optimizer 'Adamm' (valid: Adam, "),
        "unknown hparam": (["--task", "noisy_bowl", "--hparams", str(hp)],
                           "--hparams: unknown hyperparameter 'betta1' for Adam (valid: lr, beta1, beta2)"),
        "resume other task": (["--task", "noisy_bowl", "--resume", str(other.path)],
                              "is a run of task 'rosenbrock', not 'noisy_bowl'"),
        "resume other seed": (["--resume", str(bowl.path), "--seed", "1"],
                              f"--seed: '{bowl.path}' was run with seed 0, not 1"),
        "resume other optimizers": (["--resume", str(bowl.path), "--optimizers", "LODO"],
                                    f"--optimizers: '{bowl.path}' runs Adam, not LODO"),
        "repeated optimizer": (["--task", "noisy_bowl", "--optimizers", "Adam,LODO,Adam"],
                               "--optimizers: 'Adam' is repeated"),
        "option of another task": (["--task", "rosenbrock", "--noise-variance", "2"],
                                   "--noise-variance: not an option of task 'rosenbrock'"),
        "negative seed": (["--task", "noisy_bowl", "--seed", "-1"], "--seed: -1 is not allowed"),
        "zero steps": (["--task", "noisy_bowl", "--steps", "0"], "--steps"),
        "negative seeds": (["--task", "noisy_bowl", "--seeds", "-2"], "--seeds"),
        "non-positive cpus": (["--task", "noisy_bowl", "--cpus-per-trial", "0"], "--cpus-per-trial"),
    }
    for name in ("unknown_key", "negative_steps", "invalid_yaml_syntax", "unknown_optimizer", "zero_seeds"):
        cases[f"schedule {name}"] = (["--task", "rosenbrock", "--schedule", str(BAD / f"{name}.yaml")], "--schedule:")
    return cases


CASES = ["unknown task", "unknown optimizer", "unknown hparam", "resume other task", "resume other seed",
         "resume other optimizers", "repeated optimizer", "option of another task", "negative seed", "zero steps",
         "negative seeds", "non-positive cpus"] + [f"schedule {n}" for n in (
             "unknown_key", "negative_steps", "invalid_yaml_syntax", "unknown_optimizer", "zero_seeds")]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_prints_one_line_exits_2_and_writes_nothing(case, tmp_path, capsys):
    if case.startswith("schedule") and not BAD.is_dir():
        pytest.skip("tests/bad_schedules corpus missing")
    argv, expected = _bad_cases(tmp_path)[case]
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    run_dir = tmp_path / "new-run"
    if "--resume" not in argv:
        argv = argv + ["--run-dir", str(run_dir)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("lodo-tune: error: ") and err.count("\n") == 1, err
    assert expected in err
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_device_cuda_is_refused_where_torch_sees_no_cuda(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["--task", "noisy_bowl", "--device", "cuda", "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err == "lodo-tune: error: --device: cuda is not available here (torch sees no CUDA device)\n"
    assert not (tmp_path / "r").exists()


def test_a_non_empty_run_dir_is_refused(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "keep").write_text("x")
    assert main(["--task", "noisy_bowl", "--run-dir", str(tmp_path / "r")]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert os.listdir(tmp_path / "r") == ["keep"]


def test_tiny_end_to_end_run_writes_a_complete_run_dir_and_prints_tables(ray_session, tmp_path, capsys):
    rd = tmp_path / "run"
    assert main(["--task", "noisy_bowl", "--schedule", _schedule(tmp_path), "--workers", "2",
                 "--run-dir", str(rd), "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "Tuned hyperparameters" in out and "Results — noisy_bowl" in out and "300 steps" in out
    manifest = json.loads((rd / "manifest.json").read_text())
    assert manifest["task"] == "noisy_bowl" and manifest["seed"] == 1 and manifest["optimizers"] == ["Adam", "Momentum"]
    for opt in ("Adam", "Momentum"):
        assert len(list((rd / "tuning" / opt).glob("g*-i*.json"))) == 2 * 4
        assert len(list((rd / "full" / opt).glob("seed-*.json"))) == 2
    tuned = json.loads((rd / "tuned.json").read_text())
    assert set(tuned["hyperparameters"]) == {"Adam", "Momentum"}
    full = json.loads((rd / "full" / "Adam" / "seed-0.json").read_text())
    assert full["hparams"] == tuned["hyperparameters"]["Adam"] and full["evaluations"] == 300
    summary = json.loads((rd / "summary.json").read_text())
    assert (summary["ran"], summary["reused"], summary["full_ran"]) == (16, 0, 4)


def test_hparams_paper_runs_full_runs_with_table6_values(ray_session, tmp_path, capsys):
    rd = tmp_path / "paper"
    assert main(["--task", "noisy_bowl", "--hparams", "paper", "--optimizers", "Adam,LODO", "--steps", "200",
                 "--seeds", "2", "--time-milestone", "none", "--workers", "2", "--run-dir", str(rd), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    # Table 6, noisy bowl column (the paper, docs/paper.md §5)
    assert data["tuned"]["Adam"]["hyperparameters"] == {"lr": 1.164, "beta1": 0.465, "beta2": 0.9884}
    assert data["tuned"]["LODO"]["hyperparameters"] == {"meta_lr": 0.00096, "beta": 0.195, "lr": 0.27}
    assert not (rd / "tuning").exists() and data["ran"] == 0
    for opt in ("Adam", "LODO"):
        recs = [json.loads(p.read_text()) for p in sorted((rd / "full" / opt).glob("seed-*.json"))]
        assert [r["seed_index"] for r in recs] == [0, 1] and all(r["evaluations"] == 200 for r in recs)
        assert data["results"][opt]["seeds"] == 2


def _records(rd: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in (rd / "tuning").rglob("g*-i*.json")}


@pytest.mark.slow  # ~35 s: two subprocess drivers plus an uninterrupted run (tests/test_api.py covers replay fast)
def test_kill_9_mid_generation_then_resume_gives_bit_identical_tuned_values(ray_session, tmp_path, capsys):
    schedule = _schedule(tmp_path, generations=[{"noise": 3, "steps": 2000}] * 3,
                         full_run={"steps": 100, "seeds": 1, "time_milestone_s": None})
    common = ["--task", "noisy_bowl", "--schedule", schedule, "--workers", "2", "--seed", "5",
              "--address", ray_session, "--quiet"]
    rd = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    kill_9_when([*common, "--run-dir", str(rd)], lambda: (rd / "tuning").exists() and len(_records(rd)) >= 6,
                env=env, timeout=120)
    before = _records(rd)
    assert 6 <= len(before) < 24 and not (rd / "tuned.json").exists()

    resumed = subprocess.run([sys.executable, "-m", "cli", "--resume", str(rd), "--address", ray_session, "--json"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    counts = json.loads(resumed.stdout)
    assert counts["reused"] == len(before) and counts["ran"] == 24 - len(before)
    assert {p: m for p, m in _records(rd).items() if p in before} == before  # no finished record rewritten

    assert main([*common, "--run-dir", str(tmp_path / "straight")]) == 0
    killed = json.loads((rd / "tuned.json").read_text())["hyperparameters"]
    straight = json.loads((tmp_path / "straight" / "tuned.json").read_text())["hyperparameters"]
    assert killed == straight  # exact float equality: bit-identical


@pytest.mark.slow
def test_paper_hparams_reproduce_table1_through_the_cli(tmp_path, capsys):
    """The real 100k-step reproduction with Table 6 values, 8 seeds (step milestone only)."""
    assert main(["--task", "noisy_bowl", "--hparams", "paper", "--optimizers", "Adam,Momentum,LODO",
                 "--time-milestone", "none", "--run-dir", str(tmp_path / "t1"), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    # Table 1, 100k steps (docs/paper.md §6): Adam 15.28 ± 0.07, Momentum 16.59 ± 0.08, LODO 8.99 ± 0.05
    for opt, paper in (("Adam", 15.28), ("Momentum", 16.59), ("LODO", 8.99)):
        assert results[opt]["seeds"] == 8 and results[opt]["diverged"] == 0
        assert results[opt]["final_loss_mean"] == pytest.approx(paper, abs=0.5), opt
