"""What a run directory holds, read for comparing runs: ``config.yaml`` (under today's key
names), ``progress.csv`` and the ``eval/*.json`` that ``metarl evaluate`` wrote.

Used by ``metarl plot`` (:mod:`metarl.plot_data`); no matplotlib here.
"""

from __future__ import annotations

import csv
import glob
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from metarl.options import ConfigError

TEST_COLUMN = re.compile(r"^test/(?P<metric>[^/]+)_(?P<unit>step|episode)_(?P<k>\d+)$")
"""A ``progress.csv`` meta-test column: the mean over the test tasks (not a ``/<group>``)."""


class RunInputError(ConfigError):
    """Bad input naming runs or their keys: one line on stderr, exit code 2."""


@dataclass(frozen=True)
class EvalResult:
    """One ``eval/*.json`` written by ``metarl evaluate``."""

    path: Path
    iteration: int
    pool: str
    unit: str  # "step" or "episode"
    unit_name: str  # as the JSON says: "adaptation step", "episode"
    metrics: dict[str, list[float]]  # metric -> mean over tasks after each unit

    @property
    def n_units(self) -> int:
        return max((len(v) for v in self.metrics.values()), default=0)


@dataclass(frozen=True)
class RunData:
    """What a run directory holds for plotting."""

    path: Path
    config: dict[str, Any]
    progress: list[dict[str, str]] | None  # progress.csv's rows, by iteration
    evals: tuple[EvalResult, ...]

    @property
    def name(self) -> str:
        return self.path.name


# ---------------------------------------------------------------------------------------
# Reading runs


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.yaml").is_file()


def expand_runs(patterns: Sequence[str]) -> list[Path]:
    """Run directories from paths and globs, in the order given, each once.

    A path given as such must be a run directory (one with ``config.yaml``); a glob
    (quoted, so the shell left it) keeps the run directories it matches and must match one.
    """
    runs: dict[Path, None] = {}
    for pattern in patterns:
        path = Path(pattern)
        if path.exists():
            if not is_run_dir(path):
                hint = f"; give the runs in it, e.g. {path / '*'}" if path.is_dir() else ""
                raise RunInputError(f"{pattern} is not a run directory (no config.yaml){hint}")
            runs[path] = None
            continue
        if not glob.has_magic(pattern):
            raise RunInputError(f"no such run directory: {pattern}")
        matched = [Path(p) for p in sorted(glob.glob(pattern)) if is_run_dir(Path(p))]
        if not matched:
            raise RunInputError(f"no run matched {pattern} (a run directory has config.yaml)")
        runs.update(dict.fromkeys(matched))
    resolved: dict[Path, Path] = {}
    for path in runs:
        resolved.setdefault(path.resolve(), path)
    return list(resolved.values())


def load_config(run_dir: Path) -> dict[str, Any]:
    import yaml

    path = run_dir / "config.yaml"
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RunInputError(f"{path}: cannot read it: {str(exc).splitlines()[0]}") from exc
    if not isinstance(config, dict):
        raise RunInputError(f"{path} is not a mapping of config keys")
    return current_keys(config)


def current_keys(config: dict[str, Any]) -> dict[str, Any]:
    """A saved config under today's key names, without the other algorithms' keys that
    older versions saved with every run (so ``--group-by inner_first_order`` groups old
    and new runs alike); as it was where it is not a training run's config."""
    from metarl.configure import restored_config
    from metarl.options import ConfigError

    try:
        return restored_config(config).to_dict()
    except ConfigError:
        return config


def read_progress(run_dir: Path) -> list[dict[str, str]] | None:
    """``progress.csv``'s rows sorted by iteration, empty cells dropped; None without one."""
    path = run_dir / "progress.csv"
    if not path.is_file():
        return None
    with path.open(newline="") as f:
        rows = [
            {k: v for k, v in row.items() if k is not None and v not in ("", None)}
            for row in csv.DictReader(f)
        ]
    rows = [row for row in rows if row.get("iteration", "").isdigit()]
    return sorted(rows, key=lambda row: int(row["iteration"]))


def unit_of(unit_name: str) -> str:
    """``"step"`` or ``"episode"`` from the JSON's ``unit`` (``"adaptation step"``...)."""
    return "episode" if "episode" in unit_name.lower() else "step"


def eval_metrics(summary: list[dict]) -> dict[str, list[float]]:
    """metric -> its mean over tasks after each unit: ``mean`` is ``return``, ``<m>_mean`` m."""
    names: dict[str, str] = {}
    for key in summary[0]:
        if key == "mean":
            names["return"] = key
        elif key.endswith("_mean") and "/" not in key:
            names[key[: -len("_mean")]] = key
    metrics = {}
    for metric, key in names.items():
        values = [row.get(key) for row in summary]
        if all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            metrics[metric] = [float(v) for v in values]
    return metrics


def read_eval(path: Path) -> EvalResult | None:
    """An eval output of ``metarl evaluate``, or None for any other JSON."""
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict):
        return None
    summary, iteration = report.get("summary"), report.get("iteration")
    if not isinstance(summary, list) or not summary or not isinstance(iteration, int):
        return None
    if not all(isinstance(row, dict) for row in summary):
        return None
    metrics = eval_metrics(summary)
    if not metrics:
        return None
    unit_name = str(report.get("unit", "adaptation step"))
    pool = report.get("pool", report.get("tasks", "test"))
    if isinstance(pool, dict):  # evaluate records the pool as {"name": ..., "size": ...}
        pool = pool.get("name", report.get("tasks", "test"))
    pool = str(pool)
    return EvalResult(path, iteration, pool, unit_of(unit_name), unit_name, metrics)


def read_run(run_dir: Path) -> RunData:
    evals = (read_eval(p) for p in sorted((run_dir / "eval").glob("*.json")))
    return RunData(
        path=run_dir,
        config=load_config(run_dir),
        progress=read_progress(run_dir),
        evals=tuple(e for e in evals if e is not None),
    )


def read_events(run_dir: Path) -> list[dict[str, str]] | None:
    """The run's TensorBoard scalars as :func:`read_progress`'s rows (iteration -> tag ->
    value as text), sorted by iteration; None without event files.

    A run resumed from an earlier checkpoint logs some iterations twice: the later write
    (by wall time) is kept, as the resumed run replaced the first one's.
    """
    if not any(run_dir.glob("events.out.tfevents.*")):
        return None
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    rows: dict[int, dict[str, tuple[float, str]]] = {}
    for tag in accumulator.Tags()["scalars"]:
        for event in accumulator.Scalars(tag):
            row = rows.setdefault(int(event.step), {})
            if tag not in row or event.wall_time >= row[tag][0]:
                row[tag] = (event.wall_time, repr(float(event.value)))
    return [
        {"iteration": str(step), **{tag: value for tag, (_, value) in rows[step].items()}}
        for step in sorted(rows)
    ]


def progress_metrics(rows: list[dict[str, str]] | None) -> dict[str, tuple[str, list[int]]]:
    """metric -> (unit, the adaptation units k with a ``test/<metric>_<unit>_k`` value)."""
    found: dict[str, dict[str, set[int]]] = {}
    for row in rows or ():
        for column in row:
            match = TEST_COLUMN.match(column)
            if match:
                by_unit = found.setdefault(match["metric"], {})
                by_unit.setdefault(match["unit"], set()).add(int(match["k"]))
    return {
        metric: (unit, sorted(by_unit[unit]))
        for metric, by_unit in found.items()
        for unit in (("step",) if "step" in by_unit else ("episode",))
    }


def select_eval(evals: Iterable[EvalResult], metric: str, pool: str | None) -> EvalResult | None:
    """The eval to plot: of ``pool`` (any if None) and with ``metric``, the largest
    ``iteration``, then the most adaptation units (then the test pool, then the name)."""
    candidates = [e for e in evals if metric in e.metrics and (pool is None or e.pool == pool)]
    if not candidates:
        return None
    return max(candidates, key=lambda e: (e.iteration, e.n_units, e.pool == "test", e.path.name))


# ---------------------------------------------------------------------------------------
# Series of one run


def number(text: str | None) -> float:
    """A CSV cell as a float; NaN when it is missing or not a number."""
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def env_steps_so_far(rows: list[dict[str, str]]) -> np.ndarray | None:
    """The run's env steps at each row: ``perf/env_steps`` is the total so far (a column
    that does not increase is read as per-iteration counts and summed from iteration 0)."""
    if not rows or not all("perf/env_steps" in row for row in rows):
        return None
    steps = np.array([number(row["perf/env_steps"]) for row in rows])
    if len(steps) == 1 or np.all(np.diff(steps) > 0):
        return steps
    return np.cumsum(steps) if complete_from_zero(rows) else None


def complete_from_zero(rows: list[dict[str, str]]) -> bool:
    iterations = [int(row["iteration"]) for row in rows]
    return iterations == list(range(len(iterations)))


def hours_so_far(rows: list[dict[str, str]]) -> np.ndarray | None:
    """Wall-clock hours at the end of each row's iteration, None unless every iteration
    from 0 on has ``time/iteration`` (a run resumed from a copy may lack the first ones)."""
    if not rows or not complete_from_zero(rows):
        return None
    if not all("time/iteration" in row for row in rows):
        return None
    return np.cumsum([number(row["time/iteration"]) for row in rows]) / 3600.0


@dataclass(frozen=True)
class Series:
    x: np.ndarray
    y: np.ndarray


def learning_series(
    rows: list[dict[str, str]], column: str, x_all: np.ndarray | None
) -> Series | None:
    """``column``'s values at the rows that have it, against ``x_all`` (one per row)."""
    if x_all is None:
        return None
    keep = [i for i, row in enumerate(rows) if column in row]
    if not keep:
        return None
    x = x_all[keep]
    y = np.array([number(rows[i][column]) for i in keep])
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = x[finite], y[finite]
    if x.size == 0:
        return None
    order = np.argsort(x, kind="stable")
    return Series(x[order], y[order])
