"""Tuning efficiency on Ray: Σ individuals' compute seconds / (wall seconds × workers).

noisy_bowl, the schedule's 7 optimizers tuned concurrently, a shortened GA (population and number
of generations cut, individuals the real 1000 steps). Target ≥ 0.85 on 2 workers.

    .venv/bin/python benchmarks/tuning_efficiency.py [--workers 2] [--population 8] [--generations 2]
"""
import argparse
import tempfile
import time

import tuner
from tuner.driver.schedule import load_schedule


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--population", type=int, default=8)
    p.add_argument("--generations", type=int, default=2)
    p.add_argument("--steps", type=int, default=1000)
    a = p.parse_args()
    schedule = load_schedule("noisy_bowl", {"population": a.population,
                                            "generations": [{"noise": 3, "steps": a.steps}] * a.generations})
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        r = tuner.tune("noisy_bowl", schedule=schedule, run_dir=f"{d}/run",
                       resources=tuner.Resources(workers=a.workers))
        total = time.perf_counter() - t0
    n = len(schedule.optimizers) * a.population * a.generations
    print(f"individuals: {n} ({', '.join(schedule.optimizers)}; {a.generations} generations x {a.population}, "
          f"{a.steps} steps)")
    print(f"workers: {r.workers}  tuning wall: {r.wall_seconds:.1f} s  (incl. Ray start: {total:.1f} s)")
    print(f"efficiency (compute s / (wall s x workers), Ray start excluded): {r.efficiency:.3f}")


if __name__ == "__main__":
    main()
