"""Tasks (docs/paper.md §3, docs/tasks.md): the built-in ones by name, and the user's own.

    tasks.available()                                  # the built-in names
    tasks.create("noisy_bowl", seed=0, dim=10)         # a built-in task
    tasks.create("examples/digits/digits.py:digits")   # a user task from a file ...
    tasks.create("mypackage.mytasks:MyTask")           # ... from a module, or the class/factory itself
    tasks.resolve(spec)                                # a TaskSpec: factory, display name, Ray needs

Built-in entries are "module:Class" strings, imported only when that task is created, so the
small tasks never pay for torchvision-sized imports.
"""
from __future__ import annotations

import importlib
import logging
import importlib.util
import inspect
import math
import os
import re
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tasks.base import Task

logging.getLogger(__name__).addHandler(logging.NullHandler())  # a library: the application configures logging

__all__ = ["OptionError", "Task", "TaskSpec", "available", "check_options", "create", "options", "resolve"]

_REGISTRY = {
    "noisy_bowl": "tasks.noisy_bowl:NoisyBowl",
    "rosenbrock": "tasks.rosenbrock:Rosenbrock",
    "image_generation": "tasks.image_generation:ImageGeneration",
    "resnet18_cifar10": "tasks.resnet18_cifar10:ResNet18CIFAR10",
}
_FORMS = '"package.module:Name" or "path/to/file.py:Name"'
_DISPLAY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_OWN_PACKAGES = ("tasks", "lodo", "tuner")  # installed with lodo-tune on every worker
_OWN_NAMES = (*_OWN_PACKAGES, "cli", "schedules")  # every top-level module of lodo-tune
_FILES: dict[str, Path] = {}  # module name -> the file `_load_file` imported it from


def available() -> list[str]:
    """The built-in task names, in the paper's order."""
    return list(_REGISTRY)


@dataclass(frozen=True)
class TaskSpec:
    """A resolved task: how to build it, what to call it, and what Ray needs to build it elsewhere.

    name: the display name (tables, run directories, the report).
    factory: the Task subclass or factory; called as factory(seed=..., device=..., **options).
    ref: what a trial job carries to a worker, where `tasks.create(ref, ...)` builds the task:
        a built-in name, "module:Name", or the object itself (pickled by Ray).
    source: a string that resolves to this task in a new process (for run manifests and resume;
        files as absolute paths), None for an object defined in `__main__`.
    runtime_env: the Ray runtime_env fragment that makes `ref` importable on every worker,
        {"py_modules": [path]} for a module or file outside the installed packages, else {}.
        Ray accepts local paths there only per job: pass it to `ray.init(runtime_env=...)`.
    builtin: whether it is one of `available()`.
    """

    name: str
    factory: Callable[..., Task] = field(repr=False)
    ref: Any
    source: str | None
    runtime_env: dict = field(default_factory=dict)
    builtin: bool = False

    def options(self) -> list[str]:
        """The keyword options the task accepts (its constructor's or factory's, less seed and device)."""
        params = _parameters(self.factory)
        return [p.name for p in params if p.name not in ("self", "seed", "device")
                and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

    def accepts_any_option(self) -> bool:
        """True when the factory takes **options, so option names are checked only by calling it."""
        return any(p.kind is p.VAR_KEYWORD for p in _parameters(self.factory))

    def create(self, seed: int = 0, device="cpu", **options_) -> Task:
        """Build the task from `seed` on `device`; one-line ValueError for an unknown option or a non-Task result."""
        if not self.accepts_any_option():
            valid = self.options()
            unknown = sorted(set(options_) - set(valid))
            if unknown:
                raise ValueError(f"Unknown option for task {self.name!r}: {', '.join(unknown)} "
                                 f"(valid: {', '.join(valid) or 'none'})")
        task = self.factory(seed=seed, device=device, **options_)
        if not isinstance(task, Task):
            raise ValueError(f"Invalid task: {self.source or self.name!r} returned {type(task).__name__}, "
                             f"not a tasks.Task")
        return task


def _parameters(factory) -> list[inspect.Parameter]:
    target = factory.__init__ if inspect.isclass(factory) else factory
    return list(inspect.signature(target).parameters.values())


def _fail(spec: str, problem: str):
    raise ValueError(f"Invalid task: {spec!r}: {problem}")


def _installed(path: str) -> bool:
    """Whether `path` lies in the interpreter's library (stdlib or site-packages): present on every worker."""
    roots = {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    path = os.path.realpath(path)
    return any(path.startswith(os.path.realpath(root) + os.sep) for root in roots)


def _runtime_env(module_name: str) -> dict:
    """{"py_modules": [the top-level package's directory or the single-file module]} unless installed."""
    top = module_name.split(".")[0]
    module = sys.modules.get(top)
    if top in _OWN_PACKAGES or module is None or top == "__main__":
        return {}
    paths = list(getattr(module, "__path__", []) or [])
    path = paths[0] if paths else getattr(module, "__file__", None)
    if not path or _installed(path):
        return {}
    return {"py_modules": [os.path.abspath(path)]}


def _import(spec: str, module_name: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and (module_name == error.name or module_name.startswith(error.name + ".")):
            _fail(spec, f"module {module_name!r} not found")
        _fail(spec, f"importing {module_name!r} failed ({type(error).__name__}: {error})")
    except (Exception, SystemExit) as error:  # the user's module raised (or called sys.exit) while importing
        _fail(spec, f"importing {module_name!r} failed ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})")


def _load_file(spec: str, file: str):
    """Import a .py file as the top-level module named after it (so pickles and Ray workers find it)."""
    path = Path(file)
    if not path.is_file():
        _fail(spec, f"file {file!r} not found")
    module_name = path.stem
    if not module_name.isidentifier():
        _fail(spec, f"the file name {path.name!r} must be a Python identifier (it is imported as a module)")
    if module_name in _OWN_NAMES:
        _fail(spec, f"its module name {module_name!r} is lodo-tune's own ({', '.join(_OWN_NAMES)}): rename the file")
    path = path.resolve()
    existing = sys.modules.get(module_name)
    if existing is not None:
        if getattr(existing, "__file__", None) and Path(existing.__file__).resolve() == path:
            return existing
        _fail(spec, f"its module name {module_name!r} is taken by {getattr(existing, '__file__', None) or 'a built-in module'} "
                    f"(rename the file)")
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    _FILES[module_name] = path
    try:
        module_spec.loader.exec_module(module)
    except (Exception, SystemExit) as error:  # sys.exit() at import is the module's failure, not the run's exit
        del sys.modules[module_name], _FILES[module_name]
        _fail(spec, f"importing {file!r} failed ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})")
    return module


def _display_name(obj, fallback: str) -> str:
    """The object's own `name` (a Task subclass's class attribute, a factory's attribute) or `fallback`."""
    own = getattr(obj, "name", None)
    if inspect.isclass(obj):
        definer = next((c for c in obj.__mro__ if "name" in c.__dict__), None)
        if definer is None or definer.__module__.split(".")[0] == "tasks":
            own = None  # the library's placeholder ("task"), not the user's choice
    return own if isinstance(own, str) and own else fallback


def _check_object(spec: str, obj) -> None:
    if inspect.isclass(obj):
        if not issubclass(obj, Task):
            _fail(spec, f"{obj.__name__} is a class but not a tasks.Task subclass")
        if inspect.isabstract(obj):
            missing = ", ".join(sorted(obj.__abstractmethods__))
            _fail(spec, f"{obj.__name__} does not implement {missing}")
    elif not callable(obj):
        _fail(spec, f"it is {type(obj).__name__}, not a tasks.Task subclass or a factory f(seed, device, **options)")
    params = _parameters(obj)
    names = {p.name for p in params}
    if not {"seed", "device"} <= names and not any(p.kind is p.VAR_KEYWORD for p in params):
        _fail(spec, f"it must accept seed and device (its signature: {inspect.signature(obj)})")


def _from_object(obj, spec: str, name: str, source: str | None, ref, module_name: str | None) -> TaskSpec:
    _check_object(spec, obj)
    display = _display_name(obj, name)
    if not _DISPLAY_NAME.match(display):
        _fail(spec, f"its name {display!r} must be letters, digits, '_', '.', '-' (it names files)")
    if display in _REGISTRY:
        _fail(spec, f"its name {display!r} is a built-in task's (give it another `name`)")
    return TaskSpec(name=display, factory=obj, ref=ref, source=source,
                    runtime_env=_runtime_env(module_name) if module_name else {})


def _from_string(spec: str) -> TaskSpec:
    if spec in _REGISTRY:
        module, cls = _REGISTRY[spec].split(":")
        return TaskSpec(name=spec, factory=getattr(importlib.import_module(module), cls), ref=spec,
                        source=spec, builtin=True)
    if ":" not in spec:
        raise ValueError(f"Unknown task: {spec!r} (valid: {', '.join(_REGISTRY)}; or {_FORMS})")
    where, _, name = spec.rpartition(":")
    if not where or not name.isidentifier():
        _fail(spec, f"must be a built-in name or {_FORMS}")
    is_file = where.endswith(".py") or "/" in where or os.sep in where
    module = _load_file(spec, where) if is_file else _import(spec, where)
    if not hasattr(module, name):
        defined = sorted(k for k, v in vars(module).items() if not k.startswith("_") and callable(v)
                         and getattr(v, "__module__", None) == module.__name__)
        _fail(spec, f"{name!r} not found in {where} (it defines: {', '.join(defined) or 'nothing callable'})")
    ref = f"{module.__name__}:{name}"
    source = f"{_FILES[module.__name__]}:{name}" if is_file else spec
    return _from_object(getattr(module, name), spec, name, source, ref, module.__name__)


def resolve(spec) -> TaskSpec:
    """A TaskSpec for a built-in name, "package.module:Name", "path/to/file.py:Name" (relative to the
    working directory), a Task subclass, a factory f(seed, device, **options) -> Task, or a TaskSpec.

    Every problem is a one-line ValueError naming the spec: module or file not found, Name missing,
    Name neither a Task subclass nor a factory. (A factory's result is checked when it is called.)
    A file is imported as the top-level module named after it, alone: import its siblings through
    a package ("package.module:Name") instead.
    """
    if isinstance(spec, TaskSpec):
        return spec
    if isinstance(spec, str):
        return _from_string(spec)
    name = getattr(spec, "__name__", type(spec).__name__)
    module_name = getattr(spec, "__module__", None)
    qualname = getattr(spec, "__qualname__", name)
    source = None
    if module_name and module_name != "__main__" and "<" not in qualname:
        module = sys.modules.get(module_name)
        if module is not None and getattr(module, qualname, None) is spec:
            source = f"{_FILES.get(module_name, module_name)}:{qualname}"
    return _from_object(spec, f"{module_name}:{qualname}" if module_name else name, name, source, spec,
                        module_name if module_name != "__main__" else None)


class OptionError(ValueError):
    """A built-in task's option value it cannot take; `.option` names it, `.message` says why (one line)."""

    def __init__(self, option: str, message: str):
        super().__init__(f"{option}: {message}")
        self.option, self.message = option, message


def _integer(low: int, high: int | None = None):
    return lambda v: not isinstance(v, bool) and isinstance(v, int) and low <= v and (high is None or v <= high)


def _nonnegative(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and v >= 0 and math.isfinite(v) and v <= 1e30


# The built-in tasks' options and the values they take, checked before any trial (their constructors
# check them too, but only once a trial builds the task, where an error is a trial's fitness).
_OPTION_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "noise_variance": (_nonnegative, "a finite number >= 0 (at most 1e30)"),
    "dim": (_integer(1, 10**6), "an integer in [1, 1000000]"),
    "batch_size": (_integer(1, 10**6), "an integer in [1, 1000000]"),
    "eval_batch_size": (_integer(1, 10**6), "an integer in [1, 1000000]"),
    "num_train": (lambda v: v is None or _integer(1)(v), "a positive integer or null"),
    "num_test": (lambda v: v is None or _integer(1)(v), "a positive integer or null"),
    "data_dir": (lambda v: v is None or isinstance(v, str) and "\0" not in v, "a path or null"),
    "synthetic": (lambda v: isinstance(v, bool), "true or false"),
    "download": (lambda v: isinstance(v, bool), "true or false"),
    "channels_last": (lambda v: isinstance(v, bool), "true or false"),
}


def check_options(spec, options: dict) -> None:
    """OptionError for a built-in task's option value it cannot take (noise_variance -1, "abc", NaN);
    a user task's options are its own business (the tuner builds it once to check them)."""
    spec = resolve(spec)
    if not spec.builtin:
        return
    for name, value in options.items():
        rule = _OPTION_RULES.get(name)
        if rule is not None and not rule[0](value):
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise OptionError(name, f"{shown} is not allowed for task {spec.name!r} (must be {rule[1]})")


def options(spec) -> list[str]:
    """The keyword options task `spec` accepts (its constructor's or factory's, less seed and device)."""
    return resolve(spec).options()


def create(spec, seed: int = 0, device="cpu", **options_) -> Task:
    """Build task `spec` (anything `resolve` takes), initialised from `seed`; the rest are its options."""
    return resolve(spec).create(seed=seed, device=device, **options_)
