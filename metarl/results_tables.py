"""The text ``metarl results`` writes: table cells, tables, the commands list, and the
generated blocks of a Markdown file. Small pure functions over
:class:`~metarl.results_runs.RowResult`.

A cell is :func:`metarl.stats.summarize_seeds` over one score per seed (the seed's mean
over the pool), written by :func:`metarl.stats.format_ci`: ``mean [low, high]``, the 95%
percentile bootstrap CI with the fixed bootstrap seed; ``; IQM x`` from 5 seeds on; one
seed is its value alone. A generated block lies between ``<!-- NAME:begin -->`` and
``<!-- NAME:end -->``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from metarl.results_manifest import Row
from metarl.results_runs import RowResult, evaluate_command
from metarl.run_files import RunInputError
from metarl.stats import format_ci, summarize_seeds

UNITS_SHOWN = 4
"""Cells per row: before (or episode 1) and after 1, 2, 3 (episodes 2, 3, 4)."""
HEADER = (
    "algorithm", "family", "settings", "seeds", "before / after k are", "budget (one run)",
    "before", "after 1", "after 2", "after 3", "train time (mean over seeds)", "commands",
)  # fmt: skip


# ---------------------------------------------------------------------------------------
# Cells: small pure functions


def digits_for(curves: Sequence[Sequence[float]]) -> int:
    """Decimals of a row's cells: 1, or 2 where every value is below 10 in size (a sparse
    family's returns, a success rate), so its differences still show."""
    return 2 if all(abs(v) < 10 for curve in curves for v in curve) else 1


def score_cell(values: Sequence[float], digits: int = 1) -> str:
    """One score per seed -> ``mean [low, high]`` (:func:`metarl.stats.format_ci`), with
    ``; IQM x`` from 5 seeds on; one seed is its value alone (no interval to show)."""
    summary = summarize_seeds(list(values))
    if summary.n == 1:
        return f"{summary.mean:.{digits}f}"
    cell = format_ci(summary, digits)
    return cell if summary.iqm is None else f"{cell}; IQM {summary.iqm:.{digits}f}"


def score_cells(curves: Sequence[Sequence[float]], shown: int = UNITS_SHOWN) -> list[str]:
    """``[seeds][K + 1]`` curves -> ``shown`` cells, the first units' summaries, then blanks."""
    units = min(len(curve) for curve in curves)
    digits = digits_for(curves)
    cells = [score_cell([curve[k] for curve in curves], digits) for k in range(min(units, shown))]
    return cells + [""] * (shown - len(cells))


def unit_cell(unit: str, units: int, kind: str = "train") -> str:
    """What the score columns are: ``steps 0-3``, ``episodes 1-4`` or a baseline's rounds."""
    if kind == "baselines":
        return f"fine-tuning rounds 0-{units - 1}"
    if unit == "episode":
        return f"episodes 1-{units}"
    return f"steps 0-{units - 1}"


def steps_text(steps: float) -> str:
    """Env steps, three significant digits: ``8.00 M``, ``71.7 M``, ``0.240 M``."""
    if steps < 1e5:
        return f"{steps:,.0f}"
    return f"{steps / 1e6:#.3g}".rstrip(".") + " M"


def budget_cell(iterations: int | None, env_steps: Sequence[float | None]) -> str:
    """``100 it, 8.00 M steps``: the row's iterations and one run's env steps (the mean over
    seeds where they differ, as with early termination)."""
    known = [s for s in env_steps if s is not None]
    parts = [f"{iterations} it"] if iterations is not None else []
    if known:
        parts.append(f"{steps_text(float(np.mean(known)))} steps")
    return ", ".join(parts) or "?"


def time_cell(seconds: Sequence[float | None], sources: Sequence[str | None]) -> str:
    """The mean over seeds of each run's train time and where it was read; seeds without a
    complete record are left out and counted."""
    known = [s for s in seconds if s is not None]
    if not known:
        return "not recorded"
    minutes = float(np.mean(known)) / 60.0
    text = f"{minutes:.0f} min" if minutes < 600 else f"{minutes / 60:.1f} h"
    where = ", ".join(dict.fromkeys(s for s in sources if s is not None))
    count = "" if len(known) == len(seconds) else f"; {len(known)} of {len(seconds)} seeds"
    return f"{text} ({where}{count})"


def settings_cell(result: RowResult) -> str:
    """The row's settings, its other metrics' first and last units (Meta-World's success)
    and, off the benchmark pool, which pool it is."""
    row = result.row
    text = row.settings
    for metric, means in other_metric_means(result).items():
        text += f"; {metric} {means[0]:.2f} -> {means[-1]:.2f}"
    if row.pool != "benchmark":
        tasks = result.seeds[0].pool_size
        text += f"; **the runs' own {tasks} test tasks, not the benchmark pool**"
    return text


def commands_link(row: Row, docs_link: str) -> str:
    return f"[{row.id}]({docs_link}#{row.id})"


def table_row(result: RowResult, docs_link: str) -> list[str]:
    row, seeds = result.row, result.seeds
    curves = [seed.curves["return"] for seed in seeds]
    return [
        row.algorithm,
        row.family,
        settings_cell(result),
        str(len(seeds)),
        unit_cell(result.unit, min(len(c) for c in curves), row.kind),
        budget_cell(row.iterations, [seed.env_steps for seed in seeds]),
        *score_cells(curves),
        time_cell([s.train_seconds for s in seeds], [s.time_source for s in seeds]),
        commands_link(row, docs_link),
    ]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def headline_table(results: Sequence[RowResult], docs_link: str) -> str:
    rows = [table_row(r, docs_link) for r in results if r.row.headline]
    return markdown_table(HEADER, rows) if rows else "(no row has 3 seeds yet)"


def exploration_table(results: Sequence[RowResult]) -> str:
    rows = [table_row(r, "") for r in results if not r.row.headline]
    return markdown_table(HEADER, rows) if rows else "(none)"


def train_command(row: Row) -> str:
    module = "metarl.train" if row.kind == "train" else "metarl.baselines"
    flags = f" {row.flags}" if row.flags else ""
    return f"python -m {module} --config {row.config}{flags} --seed S"


def per_seed_line(result: RowResult, metric: str = "return") -> str:
    """``seed 0: -38.2, -27.8, ...; seed 1: ...``: each run's own means over the pool."""
    parts = []
    digits = digits_for([seed.curves[metric] for seed in result.seeds])
    for seed in sorted(result.seeds, key=lambda s: s.seed):
        values = ", ".join(f"{v:.{digits}f}" for v in seed.curves[metric])
        parts.append(f"seed {seed.seed} (`{seed.run.name}`): {values}")
    return "; ".join(parts)


def other_metric_means(result: RowResult) -> dict[str, np.ndarray]:
    """Metrics beyond the return that every seed has (Meta-World's ``success``): metric ->
    the mean over seeds per unit."""
    metrics = sorted(set.intersection(*(set(s.curves) for s in result.seeds)) - {"return"})
    return {metric: np.mean([s.curves[metric] for s in result.seeds], axis=0) for metric in metrics}


def other_metrics_line(result: RowResult) -> str:
    """The other metrics per unit: ``success (mean over seeds): 0.42, 1.00``."""
    return "; ".join(
        f"{metric} (mean over seeds): " + ", ".join(f"{v:.2f}" for v in means)
        for metric, means in other_metric_means(result).items()
    )


def by_task_line(result: RowResult) -> str:
    """For a pool that repeats tasks, each distinct task's mean over seeds per unit."""
    labels = [label for label in result.seeds[0].by_task if all(
        label in seed.by_task for seed in result.seeds)]  # fmt: skip
    parts = []
    for label in labels:
        curves = [seed.by_task[label] for seed in result.seeds]
        means = np.mean([curve[: min(map(len, curves))] for curve in curves], axis=0)
        parts.append(f"{label}: " + ", ".join(f"{v:.{digits_for(curves)}f}" for v in means))
    return "; ".join(parts)


def commands_block(results: Sequence[RowResult], runs_dir: Path) -> str:
    """Per row: its runs, train and evaluate commands, each seed's numbers and its note."""
    parts = []
    for result in results:
        row = result.row
        seeds = sorted(s.seed for s in result.seeds)
        where = "README" if row.headline else "exploration"
        pool = (
            f"the benchmark pool of {result.seeds[0].pool_size} tasks"
            if row.pool == "benchmark"
            else f"the runs' own test pool of {result.seeds[0].pool_size} tasks"
        )
        lines = [
            f"### {row.id}",
            "",
            f"{row.algorithm} on {row.family} ({where}): {row.settings}. "
            f"Seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}; scored on {pool}, "
            f"{unit_cell(result.unit, len(result.seeds[0].curves['return']), row.kind)}.",
            "",
            f"    {train_command(row)}",
        ]
        if row.kind == "train":
            lines.append(f"    {evaluate_command(runs_dir / 'RUN', row)}")
        lines += ["", f"Each seed's mean over the pool: {per_seed_line(result)}."]
        by_task = by_task_line(result)
        if by_task:
            lines += ["", f"Each distinct task of the pool (mean over seeds): {by_task}."]
        others = other_metrics_line(result)
        if others:
            lines += ["", f"{others[0].upper()}{others[1:]}."]
        if row.note:
            lines += ["", row.note]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------------------
# The generated blocks


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def block_span(text: str, name: str, path: Path) -> tuple[int, int]:
    """Where block ``name``'s content lies in ``text`` (between its two markers)."""
    begin, end = markers(name)
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise RunInputError(
            f"{path} needs one {begin} and, after it, one {end} around the generated block"
        )
    return text.index(begin) + len(begin), text.index(end)


def replace_block(text: str, name: str, content: str, path: Path) -> str:
    start, stop = block_span(text, name, path)
    return f"{text[:start]}\n{content}\n{text[stop:]}"


def block_difference(text: str, name: str, content: str, path: Path) -> str | None:
    """None when block ``name`` of ``text`` holds ``content``; else one line saying where
    the two first differ."""
    start, stop = block_span(text, name, path)
    have = text[start:stop].strip("\n").splitlines()
    want = content.splitlines()
    if have == want:
        return None
    line = next(
        (i for i, (a, b) in enumerate(zip(have, want)) if a != b), min(len(have), len(want))
    )
    old = have[line] if line < len(have) else "(end of block)"
    new = want[line] if line < len(want) else "(end of block)"
    return (
        f"{path}: block {name} differs from the runs at its line {line + 1}: "
        f"{old[:80]!r} is now {new[:80]!r}; run `metarl results --write`"
    )
