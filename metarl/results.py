"""``metarl results``: README's results table and docs/results.md's, from the runs.

Reads the manifest (``experiments/results.yaml``, :mod:`metarl.results_manifest`) and,
for every run of every row, its evaluation on the family's benchmark pool
(``eval/benchmark_iter<N>_steps<K>_metarl.json``, written by
``python -m metarl.evaluate RUN --adapt-steps K``; a row marked ``pool: test`` reads the
run's own test pool instead). A seed's score after k units of adaptation is its mean over
the pool; a row's cell is :func:`metarl.stats.summarize_seeds` over its seeds (the mean,
its 95% percentile bootstrap CI with the fixed bootstrap seed, the IQM from 5 seeds on),
written by :func:`metarl.stats.format_ci`.

Without flags it prints the tables. ``--write`` rewrites the generated blocks (between
``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``) of README.md (``results``: the
headline rows) and docs/results.md (``results:exploration``, ``results:commands``,
``results:figures``) and draws one figure per headline family into ``--figures`` (default:
the docs page's folder). ``--check`` writes nothing and exits 1, with one line per block,
when a block's text differs from what the runs give (the figures are not compared: a PNG
differs between matplotlib versions).

The runs are read by :mod:`metarl.results_runs`, the text made by
:mod:`metarl.results_tables` and the figures by :mod:`metarl.results_figures`.

A run without the evaluation its row needs is one line naming the ``evaluate`` command
to run, exit code 2; so is a bad manifest.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from metarl.cli import OneLineErrorParser, run_command
from metarl.results_figures import figures_block, write_figures
from metarl.results_manifest import Manifest, load_manifest
from metarl.results_runs import RowResult, read_results
from metarl.results_tables import (
    block_difference,
    commands_block,
    exploration_table,
    headline_table,
    replace_block,
)
from metarl.run_files import RunInputError

PROG = "python -m metarl.results"
MANIFEST = Path("experiments/results.yaml")
README = Path("README.md")
DOCS = Path("docs/results.md")
README_BLOCK = "results"
DOCS_BLOCKS = ("results:exploration", "results:commands", "results:figures")


@dataclass(frozen=True)
class Generated:
    """Every generated block, by file."""

    readme: dict[str, str]
    docs: dict[str, str]


def generate(
    results: Sequence[RowResult], manifest: Manifest, readme: Path, docs: Path, figures: Path
) -> Generated:
    docs_link = os.path.relpath(docs, readme.parent).replace(os.sep, "/")
    image_dir = os.path.relpath(figures, docs.parent).replace(os.sep, "/")
    return Generated(
        readme={README_BLOCK: headline_table(results, docs_link)},
        docs={
            "results:exploration": exploration_table(results),
            "results:commands": commands_block(results, manifest.runs_dir),
            "results:figures": figures_block(results, image_dir),
        },
    )


def differences(generated: Generated, readme: Path, docs: Path) -> list[str]:
    found = []
    for path, blocks in ((readme, generated.readme), (docs, generated.docs)):
        text = read_text(path)
        for name, content in blocks.items():
            line = block_difference(text, name, content, path)
            if line is not None:
                found.append(line)
    return found


def write_blocks(generated: Generated, readme: Path, docs: Path) -> list[Path]:
    written = []
    for path, blocks in ((readme, generated.readme), (docs, generated.docs)):
        text = original = read_text(path)
        for name, content in blocks.items():
            text = replace_block(text, name, content, path)
        if text != original:
            path.write_text(text)
            written.append(path)
    return written


def read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise RunInputError(f"cannot read {path}: {exc.strerror or exc}") from None


# ---------------------------------------------------------------------------------------
# Command


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog=prog,
        description=(
            "The results tables from the manifest and the runs' benchmark-pool evaluations: "
            "print them, --write them into README.md and docs/results.md (and draw the "
            "figures), or --check that those files hold them."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--manifest", type=Path, default=MANIFEST, help="the rows and runs")
    parser.add_argument("--readme", type=Path, default=README, help="holds the headline block")
    parser.add_argument("--docs", type=Path, default=DOCS, help="holds the other blocks")
    parser.add_argument(
        "--figures", type=Path, default=None, metavar="DIR",
        help="draw one figure per headline family into DIR (with --write: --docs's folder)",
    )  # fmt: skip
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the generated blocks")
    mode.add_argument(
        "--check", action="store_true", help="exit 1 if a generated block is out of date"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    return parser


def results(args: argparse.Namespace) -> int:
    manifest = load_manifest(args.manifest)
    figures = args.figures or args.docs.parent  # docs/ by default
    if args.figures is not None and not args.figures.is_dir():
        raise RunInputError(f"--figures {args.figures}: no such folder")
    rows = read_results(manifest)
    generated = generate(rows, manifest, args.readme, args.docs, figures)
    if args.check:
        found = differences(generated, args.readme, args.docs)
        for line in found:
            print(line, file=sys.stderr)
        return 1 if found else 0
    if args.write:
        for path in write_blocks(generated, args.readme, args.docs):
            print(f"wrote {path}")
    else:
        print(generated.readme[README_BLOCK])
        print()
        print(generated.docs["results:exploration"])
    if args.write or args.figures is not None:
        for path in write_figures(rows, figures):
            print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(list(sys.argv[1:] if argv is None else argv))
    return run_command(lambda: results(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
