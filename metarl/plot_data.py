"""The numbers ``metarl plot`` draws: runs grouped by config keys, seeds summarised.

Runs are grouped by config keys (default: ``algo`` and ``env``); the seeds of a group
become their mean with a 95% percentile bootstrap band (:func:`metarl.stats.summarize_curves`;
a group of one seed is a line without a band). :func:`plot_data` returns a
:class:`PlotData`; :mod:`metarl.plot` draws it. See :mod:`metarl.plot` for the panels.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from metarl.run_files import (
    RunData,
    RunInputError,
    Series,
    env_steps_so_far,
    hours_so_far,
    learning_series,
    progress_metrics,
    select_eval,
)
from metarl.stats import summarize_curves

PANELS = ("adaptation", "steps", "time")
DEFAULT_GROUP_BY = ("algo", "env")
CONFIDENCE = 0.95
UNSET = "(unset)"
UNIT_LABELS = {"step": "adaptation step", "episode": "episode"}
TIME_LABEL = "wall-clock hours of training (meta-tests not counted)"


@dataclass(frozen=True)
class Curve:
    """One group's line in one panel: the mean over seeds and its bootstrap band.

    ``per_seed`` ``[seeds, points]`` holds what was summarised: each seed's values at
    ``x`` (interpolated where the seeds' own x values differ).
    """

    x: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    per_seed: np.ndarray
    runs: tuple[str, ...]

    @property
    def n_seeds(self) -> int:
        return int(self.per_seed.shape[0])


@dataclass(frozen=True)
class Group:
    """Runs with the same values of the ``--group-by`` keys: one line per panel."""

    label: str
    values: tuple[str, ...]
    runs: tuple[str, ...]
    panels: dict[str, Curve] = field(default_factory=dict)

    @property
    def n_seeds(self) -> int:
        return len(self.runs)

    @property
    def legend_label(self) -> str:
        return f"{self.label} ({self.n_seeds} seed{'' if self.n_seeds == 1 else 's'})"


@dataclass(frozen=True)
class PlotData:
    """Every number :func:`render` draws, and the labels: no matplotlib here."""

    metric: str
    panels: tuple[str, ...]  # the requested panels that have data, in order
    groups: tuple[Group, ...]
    xlabels: dict[str, str]
    ylabels: dict[str, str]
    titles: dict[str, str]
    envs: tuple[str, ...]
    notes: tuple[str, ...]


# ---------------------------------------------------------------------------------------
# Summaries over seeds


def on_common_grid(series: Sequence[Series]) -> tuple[np.ndarray, np.ndarray] | None:
    """``(x, [seeds, points])``: the seeds' values at the same x.

    The same x for every seed: as they are. Otherwise each is interpolated linearly onto
    the union of their x values inside the range every seed covers; None where the
    ranges do not overlap.
    """
    first = series[0].x
    if all(s.x.shape == first.shape and np.allclose(s.x, first, rtol=1e-9) for s in series):
        return first, np.stack([s.y for s in series])
    low = max(float(s.x[0]) for s in series)
    high = min(float(s.x[-1]) for s in series)
    if low > high:
        return None
    grid = np.unique(np.concatenate([s.x[(s.x >= low) & (s.x <= high)] for s in series]))
    return grid, np.stack([np.interp(grid, s.x, s.y) for s in series])


def summarise(x: np.ndarray, per_seed: np.ndarray, runs: Sequence[str], **stats) -> Curve:
    mean, low, high = summarize_curves(per_seed, **stats)
    return Curve(x=x, mean=mean, low=low, high=high, per_seed=per_seed, runs=tuple(runs))


NOT_SETTINGS = frozenset(
    {"seed", "run_name", "logdir", "device", "workers", "sampler", "ray_address",
     "torch_threads", "checkpoint_every", "keep_checkpoints", "family"}
)  # fmt: skip
"""Config keys that say where or how a run ran, not what it trained: never a group hint."""


def differing_keys(runs: Sequence[RunData]) -> list[str]:
    """The config keys every run has (a newer config has more) whose values differ among
    ``runs``, other than :data:`NOT_SETTINGS`."""
    keys = sorted(set.intersection(*(set(run.config) for run in runs)) - NOT_SETTINGS)
    return [
        key for key in keys if len({config_text(run.config.get(key, UNSET)) for run in runs}) > 1
    ]


def config_text(value: Any) -> str:
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


def group_label(keys: Sequence[str], values: Sequence[str]) -> str:
    """``maml-trpo on halfcheetah-dir`` for algo and env; ``key=value`` for other keys."""
    named = dict(zip(keys, values))
    parts = []
    if "algo" in named and "env" in named:
        parts.append(f"{named.pop('algo')} on {named.pop('env')}")
    for key, value in named.items():
        parts.append(value if key in ("algo", "env") else f"{key}={value}")
    return ", ".join(parts)


def parse_group_by(items: Sequence[str] | None) -> tuple[str, ...]:
    if not items:
        return DEFAULT_GROUP_BY
    keys = [key.strip() for item in items for key in item.split(",")]
    if any(not key for key in keys):
        raise RunInputError(f"--group-by: an empty key in {','.join(items)!r}")
    return tuple(dict.fromkeys(keys))


def parse_panels(text: str) -> tuple[str, ...]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in PANELS]
    if unknown or not names:
        raise RunInputError(
            f"--panels: unknown panel {', '.join(map(repr, unknown)) or repr(text)}; "
            f"the panels are {','.join(PANELS)}"
        )
    return tuple(dict.fromkeys(names))


def available_metrics(runs: Sequence[RunData]) -> set[str]:
    found: set[str] = set()
    for run in runs:
        found.update(metric for e in run.evals for metric in e.metrics)
        found.update(progress_metrics(run.progress))
    return found


def unit_words(unit: str, k: int) -> str:
    """How far a ``test/`` column is into adaptation: "after 1 step", "in episode 2"."""
    if unit == "episode":
        return f"in episode {k}"
    return "before adapting" if k == 0 else f"after {k} step{'' if k == 1 else 's'}"


def plot_data(
    runs: Sequence[RunData],
    *,
    metric: str = "return",
    group_by: Sequence[str] = DEFAULT_GROUP_BY,
    panels: Sequence[str] = PANELS,
    eval_pool: str | None = None,
    confidence: float = CONFIDENCE,
    n_boot: int = 10_000,
    seed: int = 0,
) -> PlotData:
    """The numbers of ``metarl plot``: per group and panel, x, the mean over seeds and
    its bootstrap band.

    Raises:
        RunInputError: an unknown group key, metric or eval pool, or nothing to plot.
    """
    if not runs:
        raise RunInputError("no run to plot")
    stats = {"confidence": confidence, "n_boot": n_boot, "seed": seed}
    all_keys = sorted({key for run in runs for key in run.config})
    for key in group_by:
        if key not in all_keys:
            raise RunInputError(
                f"unknown --group-by key {key!r}: the runs' config.yaml have {', '.join(all_keys)}"
            )
    metrics = available_metrics(runs)
    if not metrics:
        raise RunInputError(
            "nothing to plot: none of the runs has meta-test results "
            "(test/ columns in progress.csv or eval/*.json from metarl evaluate)"
        )
    if metric not in metrics:
        raise RunInputError(
            f"unknown metric {metric!r}: the runs have {', '.join(sorted(metrics))}"
        )
    if eval_pool is not None and "adaptation" in panels:
        pools = sorted({e.pool for run in runs for e in run.evals})
        if pools and eval_pool not in pools:
            raise RunInputError(
                f"unknown --eval-pool {eval_pool!r}: the runs' eval files have {', '.join(pools)}"
            )

    notes: list[str] = []
    grouped: dict[tuple[str, ...], list[RunData]] = {}
    for run in runs:
        values = tuple(config_text(run.config.get(key, UNSET)) for key in group_by)
        grouped.setdefault(values, []).append(run)

    groups, learning_words = [], set()
    adaptation_units, eval_iterations = set(), set()
    for values, members in grouped.items():
        label = group_label(group_by, values)
        seeds = [config_text(run.config.get("seed", UNSET)) for run in members]
        repeated = sorted({s for s in seeds if seeds.count(s) > 1})
        if repeated and "seed" not in group_by:
            differ = differing_keys(members)
            hint = (
                f"they differ in {', '.join(differ)}: e.g. --group-by "
                f"{','.join([*group_by, differ[0]])}"
                if differ
                else "the same settings"
            )
            notes.append(
                f"{label}: {len(members)} runs, seed {', '.join(repeated)} more than once ({hint})"
            )
        curves: dict[str, Curve] = {}
        if "adaptation" in panels:
            curve = adaptation_curve(label, members, metric, eval_pool, stats, notes)
            if curve is not None:
                curves["adaptation"], unit, iterations = curve
                adaptation_units.add(unit)
                eval_iterations.update(iterations)
        wanted = [p for p in ("steps", "time") if p in panels]
        if wanted:
            words = learning_curves(label, members, metric, wanted, stats, notes, curves)
            if words:
                learning_words.add(words)
        groups.append(Group(label, values, tuple(str(r.path) for r in members), curves))

    kept = tuple(p for p in panels if any(p in g.panels for g in groups))
    for panel in panels:
        if panel not in kept:
            notes.append(f"no run has data for the {panel} panel: it is left out")
    if not kept:
        raise RunInputError(
            f"nothing to plot: no run has {metric!r} results for the panels {','.join(panels)}"
        )

    metric_words = f"meta-test {metric}"
    unit_name = " / ".join(UNIT_LABELS[unit] for unit in sorted(adaptation_units, reverse=True))
    if len(learning_words) == 1:
        learning = f"{metric_words} {learning_words.pop()}"
    else:
        learning = f"{metric_words}\n(after the last adaptation step or episode)"
    xlabels = {
        "adaptation": unit_name,
        "steps": "env steps (log scale)",
        "time": TIME_LABEL,
    }
    ylabels = {
        "adaptation": f"{metric_words} (mean over tasks)",
        "steps": learning,
        "time": learning,
    }
    checkpoint = (
        f"checkpoint of iteration {eval_iterations.pop()}"
        if len(eval_iterations) == 1
        else "latest evaluated checkpoint"
    )
    titles = {
        "adaptation": f"Adaptation ({checkpoint})",
        "steps": "Learning curve: env steps",
        "time": "Learning curve: wall-clock time",
    }
    envs = tuple(dict.fromkeys(config_text(run.config.get("env", UNSET)) for run in runs))
    return PlotData(
        metric=metric,
        panels=kept,
        groups=tuple(groups),
        xlabels={p: xlabels[p] for p in kept},
        ylabels={p: ylabels[p] for p in kept},
        titles={p: titles[p] for p in kept},
        envs=envs,
        notes=tuple(notes),
    )


def adaptation_curve(label, members, metric, eval_pool, stats, notes):
    """``(Curve, unit, iterations)`` of a group's eval files, or None."""
    chosen = []
    for run in members:
        result = select_eval(run.evals, metric, eval_pool)
        if result is None:
            pool = f" of pool {eval_pool!r}" if eval_pool else ""
            what = "no eval/*.json" if not run.evals else f"no eval file{pool} with {metric!r}"
            notes.append(f"{run.path}: {what}: left out of the adaptation panel")
            continue
        chosen.append((run, result))
    if not chosen:
        return None
    units = [result.unit for _, result in chosen]
    unit = max(set(units), key=units.count)
    for run, result in chosen:
        if result.unit != unit:
            notes.append(f"{run.path}: adapts per {result.unit}, not {unit}: left out")
    chosen = [(run, result) for run, result in chosen if result.unit == unit]
    lengths = {len(result.metrics[metric]) for _, result in chosen}
    length = min(lengths)
    if len(lengths) > 1:
        notes.append(f"{label}: eval files differ in length; the first {length} units are shown")
    iterations = sorted({result.iteration for _, result in chosen})
    if len(iterations) > 1:
        notes.append(
            f"{label}: the seeds' latest evals are of different iterations "
            f"({', '.join(map(str, iterations))})"
        )
    if len(chosen) < len(members):
        notes.append(f"{label}: adaptation curve from {len(chosen)} of {len(members)} seeds")
    per_seed = np.array([result.metrics[metric][:length] for _, result in chosen])
    x = np.arange(length) + (1 if unit == "episode" else 0)
    curve = summarise(x, per_seed, [str(run.path) for run, _ in chosen], **stats)
    return curve, unit, iterations


def learning_curves(label, members, metric, wanted, stats, notes, curves) -> str | None:
    """Add the group's ``steps``/``time`` curves to ``curves``; the y label's "after ..."."""
    found = []
    for run in members:
        columns = progress_metrics(run.progress).get(metric)
        if columns is None:
            what = (
                "no progress.csv"
                if run.progress is None
                else f"no test/{metric}_step_k or test/{metric}_episode_k column in progress.csv"
            )
            notes.append(f"{run.path}: {what}: left out of the learning curves")
            continue
        found.append((run, columns))
    if not found:
        return None
    units = {unit for _, (unit, _) in found}
    unit = "step" if "step" in units else "episode"
    for run, (other, _) in found:
        if other != unit:
            notes.append(f"{run.path}: meta-tests per {other}, not {unit}: left out")
    found = [(run, ks) for run, (u, ks) in found if u == unit]
    k = min(max(ks) for _, ks in found)
    if len({max(ks) for _, ks in found}) > 1:
        notes.append(f"{label}: the seeds meta-test for different lengths; {unit} {k} is shown")
    column = f"test/{metric}_{unit}_{k}"
    axes = {"steps": env_steps_so_far, "time": hours_so_far}
    why = {
        "steps": "no perf/env_steps",
        "time": "no time/iteration from iteration 0 on (resumed from a copy?)",
    }
    for panel in wanted:
        series, names = [], []
        for run, _ in found:
            s = learning_series(run.progress, column, axes[panel](run.progress))
            if s is None:
                notes.append(f"{run.path}: {why[panel]} in progress.csv: left out of {panel}")
                continue
            series.append(s)
            names.append(str(run.path))
        if not series:
            continue
        common = on_common_grid(series)
        if common is None:
            notes.append(f"{label}: the seeds' {panel} ranges do not overlap: no {panel} curve")
            continue
        if len(series) < len(members):
            notes.append(f"{label}: {panel} curve from {len(series)} of {len(members)} seeds")
        grid = common[0]  # wall-clock time always differs: a note only for env steps
        if panel == "steps" and any(s.x[0] < grid[0] or s.x[-1] > grid[-1] for s in series):
            notes.append(
                f"{label}: the steps curve covers only the env steps every seed has "
                f"meta-tests in, {steps_text(grid[0])} to {steps_text(grid[-1])}"
            )
        curves[panel] = summarise(*common, names, **stats)
    return unit_words(unit, k)


def steps_text(value: float, _position=None) -> str:
    """An env-step count for a tick: 800k, 2M, 1.5M."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"
