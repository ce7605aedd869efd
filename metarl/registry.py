"""Short names ("halfcheetah-vel") -> task families, and the three ways to add one.

A family is registered with :func:`register_family` under a short CLI name and,
at the same time, with Gymnasium under ``metarl/<Name>-v<N>`` (or the id you
give). Entry points are ``"module:Class"`` strings, so registering imports
nothing: importing ``metarl`` never imports MuJoCo.

Users add families three ways:

1. call :func:`register_family` from their own code before training;
2. declare an entry point in the group ``metarl.envs`` of an installed
   package: ``short-name = "pkg.module:ClassName"`` (the class is registered
   under ``short-name``) or ``anything = "pkg.module:register"`` (a function
   that calls :func:`register_family` itself); found by :func:`load_plugins`;
3. pass ``--env pkg.module:ClassName`` naming any class that follows the task API.

A run records where its family came from (:func:`family_record`, the config key
``family``), so that a process that never registered it (``evaluate``, ``--resume``,
``baselines``) registers it from the run (:func:`resolve_recorded`).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import warnings
from dataclasses import dataclass, field
from typing import Any

import gymnasium

ENTRY_POINT_GROUP = "metarl.envs"
VARIES = ("goal", "dynamics", "reward")

HOW_TO_ADD = (
    "Add a family by (a) calling metarl.registry.register_family(...) in your code, "
    "(b) an entry point in the group 'metarl.envs' of an installed package, or "
    "(c) --env package.module:ClassName."
)


class UnknownEnvError(KeyError):
    """An env name that is neither registered nor an importable ``module:Class``."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class FamilySpec:
    """What the registry knows about one family.

    Attributes:
        name: short CLI name, e.g. ``"halfcheetah-vel"``.
        gym_id: the Gymnasium id, e.g. ``"metarl/HalfCheetahVel-v0"``.
        entry_point: ``"module:Class"`` (or the class itself for plug-ins).
        varies: ``"goal"``, ``"dynamics"`` or ``"reward"``.
        horizon: default episode length (steps).
        summary: one line for ``--list-envs``.
        kwargs: keyword arguments always passed to the class.
    """

    name: str
    gym_id: str
    entry_point: Any
    varies: str
    horizon: int
    summary: str = ""
    kwargs: dict = field(default_factory=dict)


_FAMILIES: dict[str, FamilySpec] = {}
_plugins_loaded = False


def register_family(
    name: str,
    entry_point: Any,
    *,
    varies: str,
    horizon: int,
    gym_id: str | None = None,
    summary: str = "",
    kwargs: dict | None = None,
    override: bool = False,
) -> FamilySpec:
    """Register a family under the short ``name`` and with Gymnasium.

    ``entry_point`` is a ``"module:Class"`` string (preferred: nothing is
    imported until the env is made) or the class itself.
    """
    if varies not in VARIES:
        raise ValueError(
            f"register_family({name!r}): varies must be one of {VARIES}, got {varies!r}"
        )
    if horizon <= 0:
        raise ValueError(f"register_family({name!r}): horizon must be > 0, got {horizon}")
    if name in _FAMILIES and not override:
        if _FAMILIES[name].entry_point == entry_point:
            return _FAMILIES[name]
        raise ValueError(f"a family named {name!r} is already registered; pass override=True")
    if gym_id is None:
        camel = "".join(part.capitalize() for part in name.split("-"))
        gym_id = f"metarl/{camel}-v0"
    owner = _gym_id_owner(gym_id)
    if owner is not None and owner != name:
        # re-registering the id would silently make `owner` build this class
        raise ValueError(
            f"register_family({name!r}): the Gymnasium id {gym_id!r} belongs to the family "
            f"{owner!r}; pass another gym_id"
        )
    spec = FamilySpec(name, gym_id, entry_point, varies, horizon, summary, dict(kwargs or {}))
    _FAMILIES[name] = spec
    if gym_id in gymnasium.registry:
        del gymnasium.registry[gym_id]
    gymnasium.register(
        id=gym_id, entry_point=entry_point, max_episode_steps=horizon, kwargs=dict(kwargs or {})
    )
    return spec


def _gym_id_owner(gym_id: str) -> str | None:
    """The name of the registered family whose Gymnasium id is ``gym_id``, if any."""
    return next((spec.name for spec in _FAMILIES.values() if spec.gym_id == gym_id), None)


def load_plugins() -> list[str]:
    """Register the families that installed packages declare in ``metarl.envs``.

    Returns the names of the entry points loaded. A broken plug-in gives a
    warning naming it rather than stopping every other family.
    """
    global _plugins_loaded
    loaded = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            target = ep.load()
            if inspect.isclass(target):
                if ep.name not in _FAMILIES:
                    register_family(
                        ep.name,
                        ep.value,
                        varies=getattr(target, "varies", "goal"),
                        horizon=int(getattr(target, "default_horizon", 200)),
                        summary=(inspect.getdoc(target) or "").split("\n")[0],
                    )
            else:
                target()
        except Exception as exc:  # noqa: BLE001 - report and keep the other families
            # loading *or* registering (a bad varies, a clashing id, a register() that raises)
            warnings.warn(
                f"metarl plug-in {ep.name!r} ({ep.value}) failed to load: {exc}", stacklevel=2
            )
            continue
        loaded.append(ep.name)
    _plugins_loaded = True
    return loaded


def _ensure_plugins() -> None:
    if not _plugins_loaded:
        load_plugins()


def list_families() -> list[FamilySpec]:
    """Every registered family (built-in and plug-in), sorted by name."""
    _ensure_plugins()
    return sorted(_FAMILIES.values(), key=lambda spec: spec.name)


def resolve(name: str) -> FamilySpec:
    """The spec for a short name, a Gymnasium id, or ``"pkg.module:Class"``."""
    _ensure_plugins()
    if name in _FAMILIES:
        return _FAMILIES[name]
    for spec in _FAMILIES.values():
        if name == spec.gym_id or name == f"{spec.name}-v0":
            return spec
    if ":" in name:
        return _register_import_path(name)
    known = ", ".join(sorted(_FAMILIES))
    raise UnknownEnvError(f"unknown env {name!r}. Known families: {known}. {HOW_TO_ADD}")


def _register_import_path(path: str) -> FamilySpec:
    module_name, _, class_name = path.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise UnknownEnvError(
            f"--env {path!r}: cannot import {class_name} from {module_name}: {exc}"
        ) from exc
    for verb in ("sample_tasks", "set_task", "get_task"):
        if not callable(getattr(cls, verb, None)):
            raise UnknownEnvError(
                f"--env {path!r}: {class_name} does not follow the task API (no {verb}()). "
                "See README, 'Writing your own task family'."
            )
    gym_id = f"metarl/{class_name}-v0"
    if _gym_id_owner(gym_id) is not None:  # e.g. two modules with a class of the same name
        gym_id = f"metarl/{module_name}.{class_name}-v0"
    return register_family(
        path,
        cls,
        varies=getattr(cls, "varies", "goal"),
        horizon=int(getattr(cls, "default_horizon", 200)),
        gym_id=gym_id,
        summary=(inspect.getdoc(cls) or "").split("\n")[0],
    )


def entry_point_path(entry_point: Any) -> str:
    """An entry point as an import path: a ``"module:Class"`` string as it is, a class
    (or factory function) as ``"its.module:Its.QualName"``."""
    if isinstance(entry_point, str):
        return entry_point
    return f"{entry_point.__module__}:{entry_point.__qualname__}"


def family_record(spec: FamilySpec) -> dict[str, Any]:
    """What a run records of its family (the config key ``family``) so that another process
    can find it from the run alone: its class's import path, ``varies`` and ``horizon``."""
    return {
        "entry_point": entry_point_path(spec.entry_point),
        "varies": spec.varies,
        "horizon": spec.horizon,
    }


def import_entry_point(path: str) -> Any:
    """The object ``"module:Qual.Name"`` names; an ImportError saying why it cannot be had.

    A class defined in a script (module ``__main__``) is not importable from another process.
    """
    module_name, _, qualname = path.partition(":")
    if not module_name or not qualname:
        raise ImportError(f"{path!r} is not of the form module:Class")
    if module_name in ("__main__", "__mp_main__"):
        raise ImportError("it was defined in the script that trained the run (module __main__)")
    target: Any = importlib.import_module(module_name)
    for attribute in qualname.split("."):
        try:
            target = getattr(target, attribute)
        except AttributeError as exc:
            raise ImportError(f"AttributeError: {exc}") from exc
    return target


def resolve_recorded(name: str, record: dict | None, *, owner: str = "the run") -> FamilySpec:
    """The family ``name``; when this process does not know it, registered first from
    ``record`` (:func:`family_record`, what ``owner``, e.g. ``"run 'runs/x'"``, recorded).

    An :class:`UnknownEnvError` of one line when the recorded class cannot be imported
    here, saying what to install or register; the usual one without a record.
    """
    try:
        return resolve(name)
    except UnknownEnvError as exc:
        path = (record or {}).get("entry_point")
        if not path:
            raise
        unknown = exc
    try:
        import_entry_point(path)
    except Exception as exc:  # noqa: BLE001 - any failure to import is reported as one line
        reason = str(exc) if type(exc) is ImportError else f"{type(exc).__name__}: {exc}"
        raise UnknownEnvError(
            f"{owner} is of family {name!r} from {path!r}, which cannot be imported here "
            f"({reason}); install it (or put it on PYTHONPATH), or call "
            f"metarl.register_family({name!r}, ...) before evaluating or resuming it"
        ) from exc
    if ":" in name:  # an import path names its own class: resolve() said what is wrong
        raise unknown
    try:
        return register_family(
            name, path, varies=record.get("varies", "goal"), horizon=int(record["horizon"])
        )
    except (KeyError, TypeError, ValueError) as exc:  # a bad record, an id of another family
        raise UnknownEnvError(f"{owner} is of family {name!r} from {path!r}: {exc}") from exc


def make_env(name: str, *, horizon: int | None = None, **kwargs: Any) -> gymnasium.Env:
    """Make one env of the family ``name`` (short name, Gymnasium id or ``module:Class``).

    ``horizon`` overrides the family's default episode length (the TimeLimit).
    The env has no task yet: call ``env.unwrapped.set_task(...)``.
    """
    spec = resolve(name)
    return gymnasium.make(spec.gym_id, max_episode_steps=horizon or spec.horizon, **kwargs)


def family_table() -> str:
    """The families as an aligned text table (``metarl envs``, ``--list-envs``)."""
    rows = [("name", "gymnasium id", "varies", "horizon", "summary")]
    rows += [(s.name, s.gym_id, s.varies, str(s.horizon), s.summary) for s in list_families()]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4] for r in rows)
