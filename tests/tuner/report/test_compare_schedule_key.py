"""The comparison over runs (`lodo-tune report DIR1 DIR2 ...`) groups runs by schedule, and two
schedules that differ only in their `optimizers:` are two schedules: an optimizer declared under
the same name with other fixed arguments is another optimizer, whose runs are not averaged in."""
import math

from tuner.report import compare
from tuner.driver.rundir import RunDir
from tuner.driver.schedule import load_schedule


def adamw(weight_decay: float) -> dict:
    return {"name": "AdamW", "optimizer": "torch.optim.AdamW",
            "hyperparameters": {"lr": {"default": 1e-3, "scale": "log"}}, "fixed": {"weight_decay": weight_decay}}


def run(path, weight_decay: float, loss: float, lr: float, seed: int) -> str:
    schedule = load_schedule("noisy_bowl", {"optimizers": [adamw(weight_decay)],
                                            "full_run": {"steps": 1000, "seeds": 1, "time_milestone_s": None}})
    rd = RunDir.create(path, task="noisy_bowl", schedule=schedule.to_dict(), seed=seed, optimizers=["AdamW"],
                       hparams="tuned")
    rd.write_tuned({"lr_scale": 1.0, "source": "tuned", "hyperparameters": {"AdamW": {"lr": lr}},
                    "raw": {"AdamW": {"lr": lr}}})
    rd.write_full("AdamW", 0, {"seed_index": 0, "seed": 0, "hparams": {"lr": lr}, "steps": 1000,
                               "time_milestone_s": None, "final_loss": loss, "time_loss": None,
                               "diverged": not math.isfinite(loss), "steps_per_second": 100.0})
    return str(rd.path)


def test_schedules_differing_only_in_their_optimizers_are_two_groups(tmp_path):
    runs = [run(tmp_path / "wd0-s0", 0.0, 16.0, 1.0, 0), run(tmp_path / "wd0-s1", 0.0, 18.0, 2.0, 1),
            run(tmp_path / "wd1-s0", 0.1, 30.0, 0.5, 0)]
    data = compare.compare_runs(runs)
    groups = data["optimizers"]["AdamW"]
    assert len(data["schedules"]) == 2 and len(groups) == 2
    by_runs = {len(g["runs"]): g for g in groups}
    assert by_runs[2]["losses"] == [16.0, 18.0] and by_runs[2]["runs"] == runs[:2]
    assert by_runs[1]["losses"] == [30.0] and by_runs[1]["runs"] == runs[2:]
    assert by_runs[2]["schedule"] != by_runs[1]["schedule"]
    assert by_runs[2]["hyperparameters"]["lr"]["values"] == [1.0, 2.0]
