"""The tuner: trial loop, the Appendix-E GA, schedules, and Ray execution with run directories.

    import tuner
    result = tuner.tune("noisy_bowl", optimizers=["Adam", "LODO"], run_dir="runs/nb",
                        resources=tuner.Resources(workers=2))
    report = tuner.evaluate("noisy_bowl", result.hyperparameters, steps=100_000, seeds=8)
    print(tuner.export_table(result, "markdown"))

Names are imported on first use, so `import tuner.ga` stays free of torch and Ray.
"""
import importlib
import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())  # a library: the application configures logging

_EXPORTS = {
    "tune": "tuner.api", "evaluate": "tuner.api", "run": "tuner.api", "run_plan": "tuner.api",
    "export_table": "tuner.api", "TuneResult": "tuner.results",
    "make_plan": "tuner.plan", "Plan": "tuner.plan", "PlanError": "tuner.plan", "Resources": "tuner.plan",
    "run_trial": "tuner.trial", "TrialResult": "tuner.trial",
    "GeneticAlgorithm": "tuner.ga",
    "load_schedule": "tuner.schedule", "Schedule": "tuner.schedule", "ScheduleError": "tuner.schedule",
    "GASearcher": "tuner.searcher",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tuner' has no attribute {name!r}")
