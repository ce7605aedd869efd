"""The figures of ``metarl results``: one per headline family, two panels.

Left, **adaptation**: every benchmark-pool row of the family (headline and exploration
alike, each labelled with its seeds; an algorithm with several rows names each by its
budget, or its row id), the return against the unit of adaptation, the
mean over seeds with its 95% bootstrap band (:func:`metarl.stats.summarize_curves`). A
gradient-family row is drawn at k = 0..K (gradient steps), an RL2 or PEARL row at the
same positions for its episodes 1..K + 1, so "before" and "episode 1" share a column.

Right, **learning curve**: the return after each row's last unit against env steps (log
scale). From the row's benchmark-pool evaluations at several iterations where every seed
has them (``eval/benchmark_iter<N>_steps<K>_metarl.json`` for two or more N); otherwise
from the in-training meta-test (``test/return_*`` of ``progress.csv`` or the events), which
is on each run's own test pool, not the benchmark pool: the legend says which, row by row.

:func:`family_figures` computes the numbers (no matplotlib); :func:`render` draws them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metarl.plot_data import on_common_grid, summarise
from metarl.results_runs import RowResult
from metarl.results_tables import budget_cell
from metarl.run_files import Series, env_steps_so_far, learning_series, progress_metrics

DPI = 120
BENCHMARK_SOURCE = "benchmark pool"
TRAINING_SOURCE = "in-training meta-test, own test pool"


@dataclass(frozen=True)
class Line:
    """One row's line in one panel: x, the mean over seeds and its band. ``name`` (the
    row's, :func:`line_names`) picks its colour; ``label`` is its legend entry."""

    name: str
    label: str
    x: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n_seeds: int


@dataclass(frozen=True)
class FamilyFigure:
    family: str
    adaptation: tuple[Line, ...]
    learning: tuple[Line, ...]
    sources: tuple[str, ...]  # the learning lines' sources, in order
    notes: tuple[str, ...]

    @property
    def file_name(self) -> str:
        return f"results-{self.family}.png"


def seeds_text(n: int) -> str:
    return f"{n} seed{'' if n == 1 else 's'}"


def line_names(rows: Sequence[RowResult]) -> list[str]:
    """Each row's name in a figure's legend, one colour per name: its algorithm; where the
    algorithm has other rows in the figure, also its env steps per run (ML1 push's short
    budget runs beside its 2 M ones), or its row id where those match too."""
    budgets = [budget_cell(None, [seed.env_steps for seed in r.seeds]) for r in rows]
    names = []
    for result, budget in zip(rows, budgets):
        same = [b for r, b in zip(rows, budgets) if r.row.algorithm == result.row.algorithm]
        name = result.row.algorithm
        if len(same) > 1:
            name += f", {result.row.id if same.count(budget) > 1 else budget}"
        names.append(name)
    return names


def adaptation_line(result: RowResult, name: str) -> Line:
    curves = [seed.curves["return"] for seed in result.seeds]
    units = min(len(c) for c in curves)
    per_seed = np.array([c[:units] for c in curves])
    curve = summarise(np.arange(units), per_seed, [str(s.run) for s in result.seeds])
    what = f"episodes 1-{units}" if result.unit == "episode" else f"steps 0-{units - 1}"
    label = f"{name} ({seeds_text(len(curves))}, {what})"
    return Line(name, label, curve.x, curve.mean, curve.low, curve.high, curve.n_seeds)


def benchmark_series(result: RowResult) -> list[Series] | None:
    """Each seed's benchmark-pool return after the last unit against its env steps, when
    every seed has such evaluations at two or more iterations; else None."""
    series = []
    for seed in result.seeds:
        steps = env_steps_so_far(list(seed.training)) if seed.training else None
        if steps is None:
            return None
        at = {int(row["iteration"]): s for row, s in zip(seed.training, steps)}
        points = sorted(
            (at[e.iteration - 1], e.metrics["return"][-1])
            for e in seed.benchmark_evals
            if e.iteration - 1 in at
        )
        if len(points) < 2:
            return None
        x, y = (np.array(v, dtype=float) for v in zip(*points))
        series.append(Series(x, y))
    return series


def training_series(result: RowResult) -> tuple[list[Series], str] | None:
    """Each seed's in-training meta-test after its last unit against env steps, and the
    unit's words; None when a seed has none."""
    found = []
    for seed in result.seeds:
        columns = progress_metrics(list(seed.training)).get("return")
        if columns is None:
            return None
        found.append(columns)
    units = {unit for unit, _ in found}
    if len(units) != 1:
        return None
    unit = units.pop()
    k = min(max(ks) for _, ks in found)
    series = []
    for seed in result.seeds:
        rows = list(seed.training)
        s = learning_series(rows, f"test/return_{unit}_{k}", env_steps_so_far(rows))
        if s is None:
            return None
        series.append(s)
    words = f"episode {k}" if unit == "episode" else f"after {k} step{'' if k == 1 else 's'}"
    return series, words


def learning_line(result: RowResult, name: str, notes: list[str]) -> tuple[Line, str] | None:
    """The row's learning curve and its source, or None (with a note)."""
    head = f"{name} ({seeds_text(len(result.seeds))}"
    series = benchmark_series(result)
    if series is not None:
        source, label = BENCHMARK_SOURCE, f"{head}, {BENCHMARK_SOURCE})"
    else:
        found = training_series(result)
        if found is None:
            notes.append(f"{result.row.id}: no in-training meta-test to draw a learning curve")
            return None
        series, words = found
        source, label = TRAINING_SOURCE, f"{head}; {words}, own test pool)"
    common = on_common_grid(series)
    if common is None:
        notes.append(f"{result.row.id}: the seeds' env steps do not overlap: no learning curve")
        return None
    curve = summarise(*common, [str(s.run) for s in result.seeds])
    line = Line(name, label, curve.x, curve.mean, curve.low, curve.high, curve.n_seeds)
    return line, source


def headline_families(results: Sequence[RowResult]) -> list[str]:
    """Families with a headline row, in the manifest's order."""
    return list(dict.fromkeys(r.row.family for r in results if r.row.headline))


def family_figures(results: Sequence[RowResult]) -> list[FamilyFigure]:
    """One :class:`FamilyFigure` per headline family, over its benchmark-pool rows."""
    figures = []
    for family in headline_families(results):
        rows = [r for r in results if r.row.family == family and r.row.pool == "benchmark"]
        names = line_names(rows)
        notes: list[str] = []
        learning = [
            found
            for r, name in zip(rows, names)
            if (found := learning_line(r, name, notes)) is not None
        ]
        figures.append(
            FamilyFigure(
                family=family,
                adaptation=tuple(adaptation_line(r, name) for r, name in zip(rows, names)),
                learning=tuple(line for line, _ in learning),
                sources=tuple(source for _, source in learning),
                notes=tuple(notes),
            )
        )
    return figures


def caption(figure: FamilyFigure) -> str:
    """What the figure shows, said under it in docs/results.md."""
    sources = set(figure.sources)
    if sources == {BENCHMARK_SOURCE}:
        learning = "the benchmark-pool return after the last unit at each evaluated iteration"
    elif sources == {TRAINING_SOURCE}:
        learning = (
            "the in-training meta-test after the last unit, on each run's own test pool "
            "(no benchmark-pool evaluations of earlier iterations are committed)"
        )
    else:
        learning = (
            "the benchmark-pool return at evaluated iterations where every seed has them, "
            "else the in-training meta-test on each run's own test pool (the legend says which)"
        )
    notes = "".join(f" {note[0].upper()}{note[1:]}." for note in figure.notes)
    return (
        f"{figure.family}. Left: the return on the benchmark pool against the unit of "
        f"adaptation (gradient steps 0-3, or episodes 1-4 of a trial at the same positions). "
        f"Right: {learning}, against env steps. Lines: the mean over seeds; bands: the 95% "
        f"bootstrap CI of the mean.{notes}"
    )


def figures_block(results: Sequence[RowResult], image_dir: str) -> str:
    """docs/results.md's figures: each image and its caption."""
    parts = []
    for figure in family_figures(results):
        path = f"{image_dir}/{figure.file_name}" if image_dir not in ("", ".") else figure.file_name
        parts.append(
            f"![{figure.family}: adaptation and learning curves]({path})\n\n{caption(figure)}"
        )
    return "\n\n".join(parts) if parts else "(no headline family yet)"


# ---------------------------------------------------------------------------------------
# Drawing


def render(figure: FamilyFigure):
    """A matplotlib ``Figure`` of one family (Agg canvas; pyplot is not used)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator

    from metarl.plot import LINE_STYLES, OKABE_ITO
    from metarl.plot_data import steps_text

    fig = Figure(figsize=(12.0, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    adaptation, learning = fig.subplots(1, 2)
    names = list(dict.fromkeys(line.name for line in figure.adaptation))
    style = {
        name: {"color": OKABE_ITO[i % len(OKABE_ITO)],
               "linestyle": LINE_STYLES[i // len(OKABE_ITO) % len(LINE_STYLES)]}
        for i, name in enumerate(names)
    }  # fmt: skip
    for ax, lines in ((adaptation, figure.adaptation), (learning, figure.learning)):
        for line in lines:
            s = style.get(line.name, {"color": "#000000", "linestyle": "-"})
            few = line.x.size <= 25
            ax.plot(line.x, line.mean, linewidth=2, marker="o" if few else None, markersize=4,
                    label=line.label, **s)  # fmt: skip
            if line.n_seeds > 1:
                ax.fill_between(line.x, line.low, line.high, color=s["color"], alpha=0.2,
                                linewidth=0)  # fmt: skip
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, frameon=False)
    units = max((line.x.size for line in figure.adaptation), default=1)
    adaptation.set_xticks(range(units))
    adaptation.set_xticklabels([f"step {k}\nep. {k + 1}" for k in range(units)])
    adaptation.set_xlabel("gradient steps (MAML family) / episode of the trial (RL², PEARL)")
    adaptation.set_ylabel("return, mean over the benchmark pool")
    adaptation.set_title("Adaptation on the benchmark pool (final checkpoints)", fontsize=11)
    learning.set_xscale("log")
    learning.xaxis.set_major_formatter(FuncFormatter(steps_text))
    learning.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
    learning.xaxis.set_minor_formatter(FuncFormatter(steps_text))
    learning.set_xlabel("env steps (log scale)")
    learning.set_ylabel("return after the last unit of adaptation")
    sources = set(figure.sources)
    where = "; ".join(sorted(sources)) if sources else "no data"
    learning.set_title(f"Learning curve ({where})", fontsize=11)
    fig.suptitle(f"{figure.family}: mean over seeds, 95% bootstrap CI band", fontsize=13)
    return fig


def write_figures(results: Sequence[RowResult], out: Path) -> list[Path]:
    """Draw every headline family's figure into ``out``; the paths written."""
    written = []
    for figure in family_figures(results):
        path = out / figure.file_name
        render(figure).savefig(path, dpi=DPI, metadata={"Software": None})
        written.append(path)
    return written
