"""benchmarks/bootstrap_ratio.py: the ratio of means and its interval, read from both file formats."""
import importlib.util
import json
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bootstrap_ratio.py"
spec = importlib.util.spec_from_file_location("bootstrap_ratio", SCRIPT)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_constant_samples_give_their_ratio_with_no_width():
    assert bench.interval(np.full(7, 3.0), np.full(5, 1.5)) == (2.0, 2.0, 2.0)


def test_the_interval_holds_the_ratio_and_a_heavy_tail_widens_it():
    rng = np.random.default_rng(1)
    a, b = rng.lognormal(0.0, 0.3, 40), rng.lognormal(0.0, 0.3, 40)
    ratio, low, high = bench.interval(a, b)
    assert ratio == a.mean() / b.mean() and low < ratio < high
    tailed = a.copy()
    tailed[0] = 100.0  # one seed 100× the rest: the mean ratio becomes uncertain
    _, low_t, high_t = bench.interval(tailed, b)
    assert high_t - low_t > 5 * (high - low)


def test_main_reads_ga_lines_and_cells(tmp_path, capsys):
    ga = tmp_path / "ga.jsonl"
    ga.write_text("".join(json.dumps({"optimizer": o, "seed": k, "final": v}) + "\n"
                          for o, k, v in [("Adam", 0, 2.0), ("Adam", 1, 2.0), ("Yogi", 0, 9.0)]))
    for k, loss in enumerate([1.0, 1.0, None]):  # an unfinished cell has no full_loss
        cell = tmp_path / "tpe" / "Adam" / f"seed-{k}"
        cell.mkdir(parents=True)
        (cell / "cell.json").write_text(json.dumps({"full_loss": loss} if loss is not None else {}))
    assert bench.main([str(ga), str(tmp_path / "tpe"), "--optimizers", "Adam"]) == 0
    out = capsys.readouterr().out
    assert "Adam: GA / tpe mean loss 2.00 (5–95 %: 2.00–2.00; seeds 2 / 2)" in out
