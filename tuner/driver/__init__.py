"""Driving and storing a run: the plan (every argument validated once), the schedule, the session
that hands out jobs and records results, the Ray executor, the run directory, and the public API."""
