"""Where a run's values come from: the searcher, the schedule (a bundled name or a file, and
whether it is a faithful Table 5 schedule) and, for values that were not tuned, their source
(Table 6 through ``--hparams paper``, given values, a meta-trained optimizer).

Read from manifest.json alone, and only from what every run directory has: a run directory
from before ``search:`` schedules reads as the GA, one without a recorded ``schedule_source``
is named by matching its schedule against the bundled ones.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import lodo
from tuner.search import SEARCHERS
from tuner.driver.schedule import ScheduleError, bundled, load_schedule

TABLE5_KEYS = ("population", "generations")  # what Table 5 (docs/paper.md §4) fixes of a schedule


def searcher(manifest: dict) -> str:
    """The searcher that tuned the run: the schedule's ``search.searcher``, "ga" when absent."""
    search = manifest["schedule"].get("search")
    return str(search.get("searcher", "ga")) if isinstance(search, dict) else "ga"


def _plain(data):
    """JSON-normalised data (tuples as lists), so a schedule compares equal to its manifest copy."""
    return json.loads(json.dumps(data, sort_keys=True))


def _bundled_dicts() -> dict[str, dict]:
    """Every bundled schedule as its manifest would record it (one that no longer loads is skipped)."""
    out = {}
    for name in bundled():
        try:
            out[name] = _plain(load_schedule(name).to_dict())
        except ScheduleError:
            continue
    return out


@dataclass(frozen=True)
class ScheduleInfo:
    """`label`: how to name the schedule ("schedules/noisy_bowl.yaml", a file's path, ...);
    `faithful`: population, generations and the GA's rules as Table 5 and Appendix E give them
    (None for a task Table 5 has no schedule for); `deviations`: why not, one phrase each."""

    label: str
    faithful: bool | None
    deviations: tuple[str, ...] = ()

    def describe(self) -> str:
        """"schedules/noisy_bowl.yaml (faithful Table 5)", "... (not Table 5: population 4 (Table 5: 32))"."""
        if self.faithful is None:
            return f"{self.label} (no Table 5 schedule for this task)"
        if self.faithful:
            return f"{self.label} (faithful Table 5)"
        return f"{self.label} (not Table 5: {'; '.join(self.deviations)})"


def _same(recorded: dict, reference: dict, key: str) -> bool:
    """Whether `recorded` has `reference`'s `key`: an empty value equals an absent one, and a key
    the recorded schedule lacks (a manifest from before that field existed) is its default."""
    return key not in recorded or (recorded[key] or None) == (reference.get(key) or None)


def _changed(recorded: dict, reference: dict) -> list[str]:
    """The top-level fields in which `recorded` departs from `reference` (its searcher aside)."""
    return sorted(k for k in set(recorded) | set(reference) if k != "search" and not _same(recorded, reference, k))


def _individual_steps(schedule: dict) -> int:
    """Σ P_g × seeds × steps_g, as `Schedule.individual_steps` (a recorded schedule is a plain dict)."""
    seeds = int((schedule.get("ga") or {}).get("seeds", 1))
    return sum(int(g.get("population") or schedule["population"]) * seeds * int(g["steps"]) for g in schedule["generations"])


def _deviations(recorded: dict, faithful: dict) -> list[str]:
    """How `recorded` departs from the task's bundled Table 5 schedule `faithful` in what the GA does."""
    out = []
    if recorded["population"] != faithful["population"]:
        out.append(f"population {recorded['population']} (Table 5: {faithful['population']})")
    if recorded["generations"] != faithful["generations"]:
        out.append(f"{len(recorded['generations'])} generations, {_individual_steps(recorded):,} individual-steps "
                   f"(Table 5: {len(faithful['generations'])}, {_individual_steps(faithful):,})")
    for key, what in (("start", "start values (Appendix E starts at the defaults)"),
                      ("scales", "scale overrides"), ("ga", "GA options (ga:)"),
                      ("horizon", "horizon-scaled hyperparameters (horizon:)")):
        if not _same(recorded, faithful, key):
            out.append(what)
    return out


def schedule_info(manifest: dict) -> ScheduleInfo:
    """Name the run's schedule and say whether it is the task's faithful Table 5 schedule.

    The name: the bundled schedule it equals (its ``search:`` aside: the searcher is reported on
    its own), else the recorded ``schedule_source`` (a file's path, "... (with overrides)"), else
    the task's bundled schedule it shares Table 5 with and what changed, else "a schedule of its own".
    """
    recorded, task = _plain(manifest["schedule"]), manifest["task"]
    known = _bundled_dicts()
    exact = next((name for name, data in known.items() if not _changed(recorded, data)), None)
    if exact is not None:
        label = f"schedules/{exact}.yaml"
    elif manifest.get("schedule_source") and not str(manifest["schedule_source"]).startswith("<"):  # not "<dict>"
        label = str(manifest["schedule_source"])
    elif task in known and all(recorded.get(k) == known[task][k] for k in TABLE5_KEYS):
        label = f"schedules/{task}.yaml with {', '.join(_changed(recorded, known[task]))} changed"
    else:
        label = "a schedule of its own"
    search = recorded.get("search") if isinstance(recorded.get("search"), dict) else {}
    reference = known.get(task, {}).get("search") or {}
    settings = sorted(k for k in search if k != "searcher" and search[k] != reference.get(k))  # the bundled bounds aside
    if searcher(manifest) == "ga" and not recorded.get("ga"):
        settings = []  # the plain GA uses none of them
    if settings:
        label += f", search settings {', '.join(settings)}"
    if task not in known:
        return ScheduleInfo(label, None)
    deviations = _deviations(recorded, known[task])
    return ScheduleInfo(label, not deviations, tuple(deviations))


def values_source(manifest: dict, optimizer: str, hyperparameters: dict | None) -> str:
    """Where `optimizer`'s full-run values came from when it was not tuned by the searcher, else
    "" (tuned). `hyperparameters` are its recorded values (tuned.json), None while tuning."""
    mode = manifest.get("hparams", "tuned")
    if hyperparameters == {}:  # no hyperparameter at all: nothing was searched
        return ("meta-trained offline (its LSTM checkpoint): nothing to tune" if optimizer == "L2LBGDBGD"
                else "nothing to tune")
    if mode == "paper":
        try:
            table6 = lodo.paper_hyperparameters(manifest["task"])
        except ValueError:  # a task Table 6 does not cover
            table6 = {}
        return ("the paper's Table 6 (--hparams paper)" if optimizer in table6
                else "the registry defaults (--hparams paper; Table 6 has no row)")
    if mode == "given":
        return "given values (--hparams FILE or a mapping)"
    return ""
