"""Batched trials wired through the session (issue 15): a generation's individuals and an optimizer's
full runs go out as `BatchJob`s, chunked by ⌈workers / active optimizers⌉, and give the same records
and tuned values as one `run_trial` per job; a resumed run re-chunks only what is missing."""
import json
import math

import pytest

import tuner
from tuner.driver.plan import PlanError, Resources
from tuner.driver.rundir import RunDir
from tuner.driver.schedule import Schedule
from tuner.search.ga import individual_seed
from tuner.driver.session import Session, full_run_seed
from tuner.trial.loop import BatchJob, Job, run_job, run_trial

from conftest import drive_session

OPTIMIZERS = ["Adam", "LODO"]


def _schedule(optimizers=OPTIMIZERS, population=4, full_steps=450, seeds=2, milestone=None) -> Schedule:
    return Schedule.from_dict({"task": "noisy_bowl", "population": population,
                               "generations": [{"noise": 3, "steps": 100}] * 2, "optimizers": optimizers,
                               "full_run": {"steps": full_steps, "seeds": seeds, "time_milestone_s": milestone},
                               "lr_scale": 1.0})


def _session(path, schedule: Schedule, batch: bool, workers: int = 2) -> Session:
    rd = RunDir(path) if path.exists() else RunDir.create(path, task="noisy_bowl", schedule=schedule.to_dict(),
                                                          seed=3, optimizers=list(schedule.optimizers))
    session = Session(rd, schedule, 3, full_runs=True)
    session.workers, session.batch = workers, batch
    return session




def _records(path) -> tuple[dict, dict, dict]:
    tuning = {p.relative_to(path).as_posix(): json.loads(p.read_text()) for p in (path / "tuning").rglob("g*.json")}
    full = {p.relative_to(path).as_posix(): json.loads(p.read_text()) for p in (path / "full").rglob("seed-*.json")}
    return tuning, full, json.loads((path / "tuned.json").read_text())["hyperparameters"]


def test_batched_and_unbatched_sessions_give_the_same_records_and_tuned_values(tmp_path):
    schedule = _schedule()
    runs = {}
    for batch in (True, False):
        session = _session(tmp_path / str(batch), schedule, batch)
        jobs = session.start(OPTIMIZERS)
        assert all(isinstance(j, BatchJob) for j in jobs) == batch
        drive_session(session, jobs)
        runs[batch] = _records(tmp_path / str(batch))
    (tuning, full, tuned), (tuning_ref, full_ref, tuned_ref) = runs[True], runs[False]
    assert tuned == tuned_ref  # the same ranking, so the same GA means, bit for bit
    assert tuning.keys() == tuning_ref.keys() and len(tuning) == 2 * 2 * 4
    for name, record in tuning.items():
        ref = tuning_ref[name]
        assert (record["seed"], record["hparams"], record["steps"]) == (ref["seed"], ref["hparams"], ref["steps"])
        assert record["fitness"] == pytest.approx(ref["fitness"], rel=1e-9)
    assert full.keys() == full_ref.keys() and len(full) == 2 * 2
    for name, record in full.items():
        ref = full_ref[name]
        assert record["final_loss"] == pytest.approx(ref["final_loss"], rel=1e-9)
        assert record["curve"]["loss"] == pytest.approx(ref["curve"]["loss"], rel=1e-9)
        assert record["lanes"] >= 1 and "lanes" not in ref
        assert ("sigma" in record) == ("sigma" in ref) == name.startswith("full/LODO")
        if "sigma" in ref:  # σ every 200 optimizer steps, on the lane's own probes
            assert record["sigma"]["step"] == ref["sigma"]["step"] == [200, 400]
            assert record["sigma"]["value"] == pytest.approx(ref["sigma"]["value"], rel=1e-9)


def test_a_resume_after_an_interruption_mid_generation_recomputes_only_the_missing_chunks(tmp_path):
    """With 4 workers and 2 optimizers each generation is 2 chunks of 2. The first session stops
    after generation 0 and one chunk of generation 1; the resumed one re-chunks the 6 missing
    individuals and gives the uninterrupted run's records, bit for bit."""
    schedule = _schedule()
    straight = _session(tmp_path / "straight", schedule, batch=True, workers=4)
    drive_session(straight, straight.start(OPTIMIZERS))

    first = _session(tmp_path / "cut", schedule, batch=True, workers=4)
    jobs = first.start(OPTIMIZERS)
    assert [len(j.jobs) for j in jobs] == [2, 2, 2, 2]
    drive_session(first, jobs, stop_after=5)  # 4 chunks of generation 0, then 1 of generation 1
    assert len(list((tmp_path / "cut" / "tuning").rglob("g01-*.json"))) == 2

    resumed = _session(tmp_path / "cut", schedule, batch=True, workers=4)
    jobs = resumed.start(OPTIMIZERS)
    lanes = [j.key for batch in jobs for j in batch.jobs if j.key[0] == "tuning"]  # (and generation 0's noise checks)
    assert len(lanes) == 6 and all(key[2] == 1 for key in lanes)  # only generation 1's missing individuals
    drive_session(resumed, jobs)
    assert (resumed.reused, resumed.ran) == (10, 6)
    (tuning, full, tuned), (tuning_ref, full_ref, tuned_ref) = _records(tmp_path / "cut"), _records(tmp_path / "straight")
    assert tuned == tuned_ref
    assert {k: r["fitness"] for k, r in tuning.items()} == {k: r["fitness"] for k, r in tuning_ref.items()}
    assert {k: r["final_loss"] for k, r in full.items()} == {k: r["final_loss"] for k, r in full_ref.items()}


def test_chunks_are_workers_over_active_optimizers_and_unbatchable_jobs_stay_single(tmp_path):
    optimizers = ["Adam", "LODO", "L2LBGDBGD", "LARS"]
    schedule = _schedule(optimizers=optimizers, population=6)
    for workers, sizes in ((2, [6]), (8, [3, 3]), (16, [1, 2, 1, 2]), (24, [1] * 6)):  # ⌈workers / 4⌉ chunks
        session = _session(tmp_path / f"w{workers}", schedule, batch=True, workers=workers)
        jobs = session.start(optimizers)
        batches = [j for j in jobs if isinstance(j, BatchJob)]
        assert [len(b.jobs) for b in batches if b.optimizer == "Adam"] == sizes
        assert [len(b.jobs) for b in batches if b.optimizer == "LODO"] == sizes
        assert sorted(j.key[3] for b in batches if b.optimizer == "Adam" for j in b.jobs) == list(range(6))
        # L2LBGDBGD has nothing to tune: its 2 full runs at once, batched like the rest
        l2l = [j.key for b in batches if b.optimizer == "L2LBGDBGD" for j in b.jobs]
        assert sorted(l2l) == [("full", "L2LBGDBGD", i) for i in range(2)]
        # LARS has no batched form: one job per individual
        assert sorted(j.key for j in jobs if not isinstance(j, BatchJob)) == [("tuning", "LARS", 0, i) for i in range(6)]


def test_full_runs_with_a_time_milestone_or_a_checkpoint_to_continue_keep_the_unbatched_path(tmp_path):
    session = _session(tmp_path / "t", _schedule(milestone=1.0), batch=True)
    assert all(isinstance(j, Job) for j in session.start_full("Adam", {"lr": 0.1}))  # Table 1's time milestone

    session = _session(tmp_path / "c", _schedule(seeds=3), batch=True, workers=1)
    (tmp_path / "c" / "full" / "Adam").mkdir(parents=True)
    (tmp_path / "c" / "full" / "Adam" / "seed-1.ckpt").write_bytes(b"an interrupted unbatched run")
    [batch, single] = session.start_full("Adam", {"lr": 0.1})
    assert [j.key for j in batch.jobs] == [("full", "Adam", 0), ("full", "Adam", 2)]
    assert single.key == ("full", "Adam", 1) and single.checkpoint.endswith("seed-1.ckpt")


def test_a_batch_whose_program_raises_runs_its_jobs_one_by_one_so_errors_stay_per_job():
    jobs = tuple(Job(key=("tuning", "Adam", 0, i), task="noisy_bowl", optimizer="Adam", hparams=hp, steps=50, seed=i)
                 for i, hp in enumerate([{"lr": 0.1}, {"lr": -1.0}, {"lr": 0.2}]))
    result = run_job(BatchJob(jobs))
    [good, bad, other] = result["batch"]
    assert "Invalid lr" in bad["error"] and "error" not in good and "error" not in other
    assert good["final_loss"] == run_trial("noisy_bowl", "Adam", {"lr": 0.1}, 50, 0).final_loss  # the unbatched run
    assert "Invalid lr" in good["batch_error"]


def test_a_batch_result_is_recorded_per_job_with_the_lane_count(tmp_path):
    session = _session(tmp_path / "r", _schedule(seeds=3), batch=True, workers=1)
    [batch] = session.start_full("Momentum", {"lr": 0.1, "momentum": 0.5})
    result = run_job(batch)
    assert len(result["batch"]) == 3 and result["seconds"] > 0
    session.on_result(batch, result)
    for i in range(3):
        record = session.rd.read_full("Momentum", i)
        reference = run_trial("noisy_bowl", "Momentum", {"lr": 0.1, "momentum": 0.5}, 450, full_run_seed(3, i))
        assert record["final_loss"] == pytest.approx(reference.final_loss, rel=1e-12) and record["lanes"] == 3
        assert record["seconds"] == pytest.approx(result["seconds"] / 3)
    assert session.full_ran == 3 and session.full_left["Momentum"] == 0


def test_a_batch_lost_with_its_worker_records_the_error_for_each_job(tmp_path):
    session = _session(tmp_path / "e", _schedule(seeds=2), batch=True, workers=1)
    [batch] = session.start_full("Adam", {"lr": 0.1})
    session.on_result(batch, {"error": "worker died 3 times: RayActorError: gone", "seconds": 0.0})
    assert [session.rd.read_full("Adam", i)["final_loss"] for i in range(2)] == [math.inf, math.inf]
    assert session.errors == 2


def test_batch_must_be_a_bool():
    with pytest.raises(PlanError, match=r"^resources.batch: 'no' is not allowed \(must be True or False\)$"):
        Resources(batch="no")


@pytest.mark.slow  # end to end through Ray or a CLI subprocess: `make test-slow`
def test_through_ray_batched_and_unbatched_runs_tune_the_same(ray_session, tmp_path):
    schedule = _schedule(full_steps=200)
    results = {batch: tuner.run("noisy_bowl", schedule=schedule, seed=3, run_dir=tmp_path / str(batch),
                                resources=Resources(workers=2, batch=batch)) for batch in (True, False)}
    assert results[True].hyperparameters == results[False].hyperparameters
    assert (results[True].ran, results[True].full_ran, results[True].errors) == (16, 4, 0)
    for optimizer in OPTIMIZERS:
        assert results[True].report[optimizer]["final_loss_mean"] == \
            pytest.approx(results[False].report[optimizer]["final_loss_mean"], rel=1e-9)
    assert all("lanes" in json.loads(p.read_text()) for p in (tmp_path / "True" / "full").rglob("seed-*.json"))
    assert not any("lanes" in json.loads(p.read_text()) for p in (tmp_path / "False" / "full").rglob("seed-*.json"))


def test_sized_generations_with_common_seeds_and_elite_init_run_batched_resume_and_match_unbatched(tmp_path):
    """The improved GA's new rows and options through the session: generation 0 of 8 individuals on one
    trial seed, then 4; batched (cut after 3 chunks, resumed) and unbatched give the same records."""
    schedule = Schedule.from_dict({
        "task": "noisy_bowl", "population": 4, "optimizers": ["Adam"], "lr_scale": 1.0,
        "generations": [{"noise": 1, "steps": 100, "population": 8}, {"noise": 0.5, "steps": 150}],
        "ga": {"init": "elite", "step_size": "csa", "covariance": "rank_mu", "trial_seeds": "common"},
        "full_run": {"steps": 200, "seeds": 2, "time_milestone_s": None}})
    reference = _session(tmp_path / "ref", schedule, batch=False)
    drive_session(reference, reference.start(["Adam"]))
    cut = _session(tmp_path / "cut", schedule, batch=True, workers=2)
    jobs = cut.start(["Adam"])
    assert [len(j.jobs) for j in jobs] == [4, 4]  # generation 0's 8 individuals in 2 chunks
    drive_session(cut, jobs, stop_after=3)
    resumed = _session(tmp_path / "cut", schedule, batch=True, workers=2)
    drive_session(resumed, resumed.start(["Adam"]))
    (tuning, full, tuned), (tuning_ref, full_ref, tuned_ref) = _records(tmp_path / "cut"), _records(tmp_path / "ref")
    assert tuned == tuned_ref
    assert sorted(tuning) == sorted(tuning_ref) and len(tuning) == 8 + 4
    assert {r["seed"] for k, r in tuning.items() if "/g00-" in k} == {individual_seed(3, "Adam", 0, 0)}
    assert {k: r["hparams"] for k, r in tuning.items()} == {k: r["hparams"] for k, r in tuning_ref.items()}
    assert {k: r["fitness"] for k, r in tuning.items()} == \
        pytest.approx({k: r["fitness"] for k, r in tuning_ref.items()}, rel=1e-9)  # batched kernels: last-bit differences
    assert {k: r["final_loss"] for k, r in full.items()} == pytest.approx({k: r["final_loss"] for k, r in full_ref.items()}, rel=1e-9)
