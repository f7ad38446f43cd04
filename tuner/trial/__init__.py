"""Running a trial: build the task and the optimizer, step, record the losses (`loop.py`), with
checkpoints and what a Ray worker runs for a job."""
