"""``metarl plot RUN [RUN ...] --out FILE.png``: compare runs, seeds summarised.

Runs are grouped by config keys (default: ``algo`` and ``env``); the seeds of a group
become their mean with a 95% percentile bootstrap band (:func:`metarl.stats.summarize_curves`;
a group of one seed is a line without a band). Up to three panels:

``adaptation``
    the metric (mean over the eval pool's tasks) against the adaptation step (gradient
    learners, k = 0..K) or episode of the trial (RL2, PEARL, k = 1..K), from each run's
    ``eval/*.json`` (written by ``metarl evaluate``): the one with the largest
    ``iteration`` (then the most adaptation units) among those of ``--eval-pool``, chosen
    by content, whatever the file's name; JSON files without a ``summary`` (the
    Meta-World protocol's) are not eval outputs and are passed over.
``steps``
    the learning curve: the last adaptation unit's ``test/<metric>_...`` column of
    ``progress.csv`` against the env steps so far (log scale);
``time``
    the same against wall-clock hours (the sum of ``time/iteration``).

A run without the file a panel needs (an older run without ``progress.csv`` or
``eval/``) is left out of that panel, with a one-line note on stderr. Where the seeds
of a group were meta-tested at different x values (wall-clock time always differs),
each seed's curve is interpolated linearly onto the union of their x values inside
the range they all cover, and the band is taken there.

The numbers come from :func:`metarl.plot_data.plot_data` (a ``PlotData``, no
matplotlib; the run files are read by :mod:`metarl.run_files`); :func:`render` draws
them. Bad input (no run matched, a directory without
``config.yaml``, an unknown key, metric, panel or pool, a bad ``--out``) is one line
on stderr and exit code 2, and nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from metarl.cli import OneLineErrorParser, run_command
from metarl.plot_data import (
    CONFIDENCE,
    PANELS,
    PlotData,
    parse_group_by,
    parse_panels,
    plot_data,
    steps_text,
)
from metarl.run_files import RunInputError, expand_runs, read_run

PROG = "python -m metarl.plot"
SUFFIXES = (".png", ".svg")
DPI = 150
OKABE_ITO = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow, last: faint on white
)
"""Okabe and Ito's colour-blind-safe palette; past 8 groups the line style changes."""
LINE_STYLES = ("-", "--", ":", "-.")


def check_out(out: str) -> Path:
    path = Path(out)
    if path.suffix.lower() not in SUFFIXES:
        raise RunInputError(f"--out {out}: the file must end in .png or .svg")
    if not path.parent.is_dir():
        raise RunInputError(f"--out {out}: the folder {path.parent} does not exist")
    return path


# ---------------------------------------------------------------------------------------
# Drawing


def default_title(data: PlotData) -> str:
    where = data.envs[0] if len(data.envs) == 1 else ", ".join(data.envs)
    return f"{where}: meta-test {data.metric}"


def render(data: PlotData, *, title: str | None = None):
    """A matplotlib ``Figure`` of ``data`` (Agg canvas; pyplot is not used)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator

    n = len(data.panels)
    fig = Figure(figsize=(5.2 * n, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n, squeeze=False)[0]
    styles = [
        {"color": OKABE_ITO[i % len(OKABE_ITO)], "linestyle": LINE_STYLES[i // len(OKABE_ITO) % 4]}
        for i in range(len(data.groups))
    ]
    for ax, panel in zip(axes, data.panels):
        for group, style in zip(data.groups, styles):
            curve = group.panels.get(panel)
            if curve is None:
                continue
            few = curve.x.size <= 25
            ax.plot(
                curve.x, curve.mean, linewidth=2, marker="o" if few else None, markersize=4,
                label=group.legend_label, **style,
            )  # fmt: skip
            if curve.n_seeds > 1:
                ax.fill_between(
                    curve.x, curve.low, curve.high, color=style["color"], alpha=0.2, linewidth=0
                )
        if panel == "steps":
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(steps_text))
            ax.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
            ax.xaxis.set_minor_formatter(FuncFormatter(steps_text))
        if panel == "adaptation":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(data.xlabels[panel], fontsize=11)
        ax.set_ylabel(data.ylabels[panel], fontsize=11)
        ax.set_title(data.titles[panel], fontsize=12)
        ax.grid(True, alpha=0.3)
    handles = [Line2D([], [], linewidth=2, **style) for style in styles]
    fig.legend(
        handles,
        [group.legend_label for group in data.groups],
        loc="outside lower center",
        ncols=min(len(data.groups), 3 if n > 1 else 1),
        frameon=False,
        fontsize=10,
        title=f"line: mean over seeds; band: {CONFIDENCE:.0%} bootstrap CI of the mean",
        title_fontsize=9,
    )
    fig.suptitle(title or default_title(data), fontsize=14)
    return fig


# ---------------------------------------------------------------------------------------
# Command


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog=prog,
        description=(
            "Compare runs: per group of runs (default: algo and env), the mean over seeds "
            "and a 95% bootstrap band of the adaptation curve (eval/*.json) and of the "
            "meta-test return against env steps and wall-clock hours (progress.csv)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "runs", nargs="+", metavar="RUN_OR_GLOB", help="run directories or quoted globs"
    )
    parser.add_argument("--out", required=True, help="the figure: FILE.png (150 dpi) or FILE.svg")
    parser.add_argument(
        "--group-by",
        action="append",
        metavar="KEY",
        help="config key(s) that define a group, repeatable or comma-separated (default: algo,env)",
    )
    parser.add_argument(
        "--metric", default="return", help="return, or a family's per-episode key (success)"
    )
    parser.add_argument("--panels", default=",".join(PANELS), help="which panels, in order")
    parser.add_argument(
        "--eval-pool", default=None, help="only eval files of this task pool (test, train)"
    )
    parser.add_argument("--title", default=None, help="the figure's title")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    return parser


def plot(args: argparse.Namespace) -> int:
    out = check_out(args.out)
    panels = parse_panels(args.panels)
    group_by = parse_group_by(args.group_by)
    runs = [read_run(path) for path in expand_runs(args.runs)]
    data = plot_data(
        runs, metric=args.metric, group_by=group_by, panels=panels, eval_pool=args.eval_pool
    )
    for note in data.notes:
        print(f"note: {note}", file=sys.stderr)
    fig = render(data, title=args.title)
    fig.savefig(out, dpi=DPI)
    groups = "; ".join(group.legend_label for group in data.groups)
    print(f"wrote {out} ({', '.join(data.panels)}): {groups}")
    return 0


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    return run_command(lambda: plot(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
