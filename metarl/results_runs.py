"""The runs behind the rows of ``experiments/results.yaml``, read for ``metarl results``.

A row's run gives its evaluation (the family's benchmark pool, or a ``pool: test`` row's
own test pool; an SB3 baseline's ``results.json``), its env steps and train time (from
``progress.csv`` when it holds every iteration, else the TensorBoard events) and its
in-training rows for the learning curves. A run without the evaluation its row needs is
a :class:`~metarl.run_files.RunInputError` naming the ``evaluate`` command to run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from metarl.eval_output import eval_stem, eval_stem_tail
from metarl.results_manifest import Manifest, Row
from metarl.run_files import (
    EvalResult,
    RunInputError,
    complete_from_zero,
    env_steps_so_far,
    hours_so_far,
    load_config,
    read_eval,
    read_events,
    read_progress,
)


@dataclass(frozen=True)
class SeedResult:
    """What one run of a row gives.

    Attributes:
        run: the run directory. seed: its config's seed.
        unit: ``"step"`` or ``"episode"``, as its eval file says.
        curves: metric -> the mean over the pool after each unit, ``[K + 1]``.
        pool_size: the tasks evaluated.
        env_steps: the run's env steps at its evaluated iteration (None if not logged).
        train_seconds: the sum of its ``time/iteration`` up to it (None if incomplete).
        time_source: where they were read: ``progress.csv``, ``events``, ``results.json``.
        training: the in-training rows (iteration -> column -> value), for learning curves.
        benchmark_evals: its benchmark-pool evals with the row's K, any iteration.
        by_task: for a pool that repeats tasks (halfcheetah-dir's two directions), each
            distinct task's mean curve, by a label such as ``direction -1``.
    """

    run: Path
    seed: int
    unit: str
    curves: dict[str, tuple[float, ...]]
    pool_size: int
    env_steps: float | None
    train_seconds: float | None
    time_source: str | None
    training: tuple[dict[str, str], ...] = ()
    benchmark_evals: tuple[EvalResult, ...] = field(default=())
    by_task: dict[str, tuple[float, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class RowResult:
    row: Row
    seeds: tuple[SeedResult, ...]

    @property
    def unit(self) -> str:
        return self.seeds[0].unit


# ---------------------------------------------------------------------------------------
# Reading the runs


def evaluate_command(run_dir: Path, row: Row) -> str:
    pool = "" if row.pool == "benchmark" else f" --tasks {row.pool}"
    episodes = "" if row.episodes is None else f" --episodes {row.episodes}"
    return f"python -m metarl.evaluate {run_dir} --adapt-steps {row.adapt_steps}{episodes}{pool}"


def episode_variants(row: Row) -> tuple[tuple[str, int], ...]:
    """The name part evaluate adds for the row's ``--episodes`` (none for the run's own)."""
    return () if row.episodes is None else (("ep", row.episodes),)


def eval_file(run_dir: Path, row: Row) -> Path:
    """The evaluation a row reads: its pool, iteration and K, its episodes (evaluate's
    default unless the row sets them) and evaluate's default seed; on the test pool also
    the older name without ``_metarl``."""
    assert row.iterations is not None
    names = [eval_stem(row.pool, row.iterations, row.adapt_steps, "metarl", episode_variants(row))]
    if row.pool == "test":
        names.append(eval_stem(row.pool, row.iterations, row.adapt_steps, None))
    for name in names:
        path = run_dir / "eval" / f"{name}.json"
        if path.is_file():
            return path
    raise RunInputError(
        f"{run_dir} has no {row.pool}-pool evaluation of iteration {row.iterations} "
        f"with {row.adapt_steps} adaptation steps (eval/{names[0]}.json): "
        f"run `{evaluate_command(run_dir, row)}`"
    )


def pool_of(path: Path) -> tuple[int, dict[str, tuple[float, ...]]]:
    """An eval file's task count and its distinct tasks' mean curves (``task_label`` ->
    ``[K + 1]``; empty unless the pool repeats tasks); an eval of part of the pool is
    refused."""
    report = json.loads(path.read_text())
    pool = report.get("pool")
    if isinstance(pool, dict):
        size, evaluated = pool.get("size"), pool.get("evaluated")
        if size is not None and evaluated is not None and evaluated != size:
            raise RunInputError(
                f"{path}: evaluated {evaluated} of the pool's {size} tasks; a row needs them all"
            )
    by_task = {
        task_label(group["task"]): tuple(float(v) for v in group["mean"])
        for group in report.get("by_distinct_task", [])
    }
    return len(report.get("per_task", [])) or int(report.get("n_tasks", 0)), by_task


def task_label(task) -> str:
    """``direction -1`` for ``{"direction": -1}``; a task that is not a mapping as it is."""
    if isinstance(task, dict):
        return ", ".join(f"{key} {value}" for key, value in task.items())
    return str(task)


def training_rows(run_dir: Path, iterations: int | None) -> tuple[list[dict[str, str]], str]:
    """The run's per-iteration rows up to ``iterations``, and where they come from:
    ``progress.csv`` when it holds every iteration from 0, else the TensorBoard events
    (runs from before progress.csv, or resumed from a copy, lack some of its rows); of
    two incomplete records, the longer."""
    found = []
    for source, read in (("progress.csv", read_progress), ("events", read_events)):
        rows = read(run_dir) or []
        if iterations is not None:
            rows = [row for row in rows if int(row["iteration"]) < iterations]
        if rows and complete_from_zero(rows) and iterations in (None, len(rows)):
            return rows, source
        found.append((len(rows), source, rows))
    count, source, rows = max(found, key=lambda f: f[0])
    return (rows, source) if count else ([], "none")


def read_seed(run_dir: Path, row: Row) -> SeedResult:
    """One run of ``row``: its scores, budget and time."""
    if not run_dir.is_dir():
        raise RunInputError(f"{row.id}: no run directory {run_dir}")
    config = load_config(run_dir)
    if config.get("env") != row.family:
        raise RunInputError(
            f"{row.id}: {run_dir} trained on {config.get('env')!r}, the row's family is "
            f"{row.family!r}"
        )
    seed = int(config.get("seed", 0))
    if row.kind == "baselines":
        return read_baseline(run_dir, seed)
    path = eval_file(run_dir, row)
    result = read_eval(path)
    if result is None or "return" not in result.metrics:
        raise RunInputError(f"{path} is not an evaluation written by metarl evaluate")
    rows, source = training_rows(run_dir, row.iterations)
    steps = env_steps_so_far(rows) if rows else None
    hours = hours_so_far(rows) if rows else None
    evals = (read_eval(p) for p in sorted((run_dir / "eval").glob("benchmark_iter*.json")))
    stem_tail = "_" + eval_stem_tail(row.adapt_steps, "metarl", episode_variants(row))
    benchmark = tuple(
        e for e in evals
        if e is not None and e.pool == "benchmark" and e.n_units == row.adapt_steps + 1
        and e.path.stem.endswith(stem_tail)
    )  # fmt: skip
    pool_size, by_task = pool_of(path)
    return SeedResult(
        run=run_dir,
        seed=seed,
        unit=result.unit,
        curves={metric: tuple(values) for metric, values in result.metrics.items()},
        pool_size=pool_size,
        env_steps=float(steps[-1]) if steps is not None and len(steps) else None,
        train_seconds=float(hours[-1] * 3600.0) if hours is not None and len(hours) else None,
        time_source=source if hours is not None else None,
        training=tuple(rows),
        benchmark_evals=benchmark,
        by_task=by_task,
    )


def read_baseline(run_dir: Path, seed: int) -> SeedResult:
    """An SB3 baseline's ``results.json``: its return on the run's own test pool."""
    path = run_dir / "results.json"
    try:
        data = json.loads(path.read_text())
        curve = tuple(float(v) for v in data["mean_return_step_k"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunInputError(
            f"{path}: not a baseline's results ({type(exc).__name__}): "
            "run `python -m metarl.baselines` with the row's flags"
        ) from None
    seconds = data.get("seconds")
    return SeedResult(
        run=run_dir,
        seed=seed,
        unit="step",
        curves={"return": curve},
        pool_size=len(data.get("per_task", [])),
        env_steps=float(data["env_steps"]) if "env_steps" in data else None,
        train_seconds=float(seconds) if seconds is not None else None,
        time_source="results.json" if seconds is not None else None,
    )


def read_results(manifest: Manifest) -> list[RowResult]:
    """Every row's runs read; the first problem met is the error."""
    results = []
    for row in manifest.rows:
        seeds = tuple(read_seed(manifest.run_dir(run), row) for run in row.runs)
        units = {seed.unit for seed in seeds}
        if len(units) > 1:
            raise RunInputError(f"{row.id}: its runs adapt by different units ({units})")
        results.append(RowResult(row, seeds))
    return results
