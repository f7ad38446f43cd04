"""The tuner: trial loop, the Appendix-E GA, schedules, and Ray execution with run directories.

    import tuner
    result = tuner.tune("noisy_bowl", optimizers=["Adam", "LODO"], run_dir="runs/nb",
                        resources=tuner.Resources(workers=2))
    report = tuner.evaluate("noisy_bowl", result.hyperparameters, steps=100_000, seeds=8)
    print(tuner.export_table(result, "markdown"))

Names are imported on first use, so `import tuner.search.ga` stays free of torch and Ray.
"""
import importlib
import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())  # a library: the application configures logging

_EXPORTS = {
    "tune": "tuner.driver.api", "evaluate": "tuner.driver.api", "run": "tuner.driver.api", "run_plan": "tuner.driver.api",
    "export_table": "tuner.driver.api", "TuneResult": "tuner.report.results",
    "make_plan": "tuner.driver.plan", "Plan": "tuner.driver.plan", "PlanError": "tuner.driver.plan", "Resources": "tuner.driver.plan",
    "run_trial": "tuner.trial.loop", "TrialResult": "tuner.trial.loop",
    "GeneticAlgorithm": "tuner.search.ga",
    "load_schedule": "tuner.driver.schedule", "Schedule": "tuner.driver.schedule", "ScheduleError": "tuner.driver.schedule",
    "GASearcher": "tuner.search.tune",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tuner' has no attribute {name!r}")
