"""Ray execution: actors retried when killed mid-trial, raising trials rank last, GPU placement."""
import collections
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tuner.driver.executor import Executor
from tuner.trial.loop import Job, run_job, run_trial


def _job(i, steps=6000, **hp):
    return Job(("t", i), "noisy_bowl", "Adam", hp or {"lr": 0.1}, steps, seed=i)


@pytest.mark.slow  # end to end through Ray or a CLI subprocess: `make test-slow`
def test_a_worker_killed_mid_trial_is_retried_and_results_are_unchanged(ray_session):
    ex = Executor(workers=2).start()
    try:
        pids = [p["pid"] for p in __import__("ray").get([a.whoami.remote() for a in ex.actors])]
        results, killed = {}, []

        def on_result(job, result):
            results[job.key] = result
            if not killed:  # the other worker is mid-trial now: kill its process
                victim = next(p for p in pids if p != result["pid"])
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)

        ex.run([_job(i) for i in range(6)], on_result)
    finally:
        ex.stop()
    assert killed and ex.resubmitted >= 1
    assert sorted(results) == [("t", i) for i in range(6)]
    for i in range(6):  # reference: the same trial run directly in this process
        assert "error" not in results[("t", i)]
        assert results[("t", i)]["final_loss"] == run_trial("noisy_bowl", "Adam", {"lr": 0.1}, 6000, i).final_loss


def test_a_trial_that_raises_returns_its_traceback_and_the_others_finish(ray_session):
    ex = Executor(workers=2)
    results = {}
    try:
        ex.run([_job(0, 200), _job(1, 200, lr=-1.0), _job(2, 200)], lambda j, r: results.__setitem__(j.key, r))
    finally:
        ex.stop()
    assert "Traceback" in results[("t", 1)]["error"] and "lr" in results[("t", 1)]["error"]
    assert math.isfinite(results[("t", 0)]["final_loss"]) and math.isfinite(results[("t", 2)]["final_loss"])
    assert 0 < ex.efficiency() <= 1.0


def test_a_long_job_waits_for_an_idle_worker_instead_of_queueing_behind_a_busy_one(ray_session, monkeypatch):
    # 2 workers, three long jobs: a slow one and two quick ones. Queued two deep, the third would sit
    # behind the slow one (the busier-by-time worker ties on call count); sent only to idle workers it
    # runs after the second quick one, on the other worker, and finishes long before the slow one.
    import tuner.driver.executor as executor

    monkeypatch.setattr(executor, "LONG_JOB", 1000)  # read by the driver only
    ex, order = Executor(workers=2), []
    try:
        ex.start()
        ex.run([_job(0, 60_000), _job(1, 1500), _job(2, 1500)], lambda j, r: order.append((j.key, r["pid"])))
    finally:
        ex.stop()
    assert [key for key, _ in order] == [("t", 1), ("t", 2), ("t", 0)]
    assert order[0][1] == order[1][1] != order[2][1]  # both quick jobs on the worker that was free


def test_full_run_reaches_both_the_step_and_the_time_milestone():
    r = run_job(Job(("f", 0), "noisy_bowl", "Momentum", {"lr": 0.1}, 100, 0, kind="full", time_limit=0.5))
    ref = run_trial("noisy_bowl", "Momentum", {"lr": 0.1}, 100, 0)
    assert r["final_loss"] == ref.final_loss and r["evaluations"] == 100
    assert r["time_evaluations"] > 100 and math.isfinite(r["time_loss"])


_QUIET_START = """
from tuner.driver.executor import Executor, init_ray
from tuner.trial.loop import Job
assert init_ray(workers=1) is True and init_ray(workers=1) is False  # the second call finds it running
import ray
results, ex = [], Executor(workers=1)
ex.run([Job(("t", 0), "noisy_bowl", "Adam", {"lr": 0.1}, 50, seed=0)], lambda job, result: results.append(result))
ex.stop()
ray.shutdown()
assert "error" not in results[0]
"""


def test_starting_ray_and_running_a_trial_prints_nothing():
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    proc = subprocess.run([sys.executable, "-c", _QUIET_START], cwd=Path(__file__).resolve().parents[3], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (proc.stdout, proc.stderr) == ("", "")


def test_trials_get_their_declared_gpu_share_and_distinct_devices(ray_session):
    import ray

    ex = Executor(cpus_per_trial=0.5, gpus_per_trial=0.5).start()
    try:
        who = ray.get([a.whoami.remote() for a in ex.actors])
    finally:
        ex.stop()
    assert len(who) == 4  # 2 GPUs / 0.5 per trial: two trials share each GPU, each sees only its own
    assert collections.Counter(tuple(w["gpu_ids"]) for w in who) == {("0",): 2, ("1",): 2}
    assert collections.Counter(w["cuda_visible_devices"] for w in who) == {"0": 2, "1": 2}


def _full(optimizer: str, steps: int, index: int = 0, task: str = "noisy_bowl") -> Job:
    return Job(("full", optimizer, index), task, optimizer, {}, steps, index, kind="full")


def test_queued_full_runs_go_longest_first_by_each_optimizers_measured_rate():
    from tuner.driver.executor import Costs, _enqueue

    costs = Costs()
    costs.add(Job(("tuning", "Adam", 0, 0), "noisy_bowl", "Adam", {}, 1000, 0), 1.0)       # 1 ms per step
    costs.add(Job(("tuning", "LODO", 0, 0), "noisy_bowl", "LODO", {}, 1000, 0), 10.0)      # 10 ms per step
    assert costs.estimate(_full("Adam", 5000)) == pytest.approx(5.0)
    assert costs.estimate(_full("LODO", 100)) == pytest.approx(1.0)
    assert costs.estimate(_full("Yogi", 100)) == math.inf                                # never measured
    costs.add(_full("Yogi", 100), None)  # a result without seconds teaches nothing
    assert costs.estimate(_full("Yogi", 100)) == math.inf

    pending = collections.deque()
    tuning = Job(("tuning", "Momentum", 3, 0), "noisy_bowl", "Momentum", {}, 1000, 0)
    _enqueue(pending, [_full("Adam", 2000, 0), _full("Adam", 2000, 1)], costs.estimate)  # 2 s each
    _enqueue(pending, [_full("LODO", 1000)], costs.estimate)                              # 10 s
    _enqueue(pending, [_full("Adam", 500, 2), tuning, _full("Yogi", 10)], costs.estimate)  # 0.5 s, ahead, unknown
    assert [job.key for job, _, _ in pending] == [
        tuning.key, ("full", "Yogi", 0), ("full", "LODO", 0), ("full", "Adam", 0), ("full", "Adam", 1),
        ("full", "Adam", 2)]  # the GA's job first, then the longest full runs (ties in arrival order)

    plain = collections.deque()  # equal estimates: first in, first out behind the tuning jobs
    _enqueue(plain, [_full("Adam", 500), _full("LODO", 1000), tuning], lambda job: 0.0)
    assert [job.key for job, _, _ in plain] == [tuning.key, ("full", "Adam", 0), ("full", "LODO", 0)]
