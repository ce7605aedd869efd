"""Does a cheaper setting learn as well? Variants trained on the same seeds, compared in pairs.

Every default that trades exactness for speed is decided by this check (docs/benchmarks.md):
each variant is one config override of the same YAML; each is trained on the same seeds, so
seed s of variant A and seed s of variant B see the same task draws, the same initial policy
and the same test tasks; and each final policy is meta-tested by ``metarl evaluate`` on the
family's benchmark pool (the same 40 tasks and the same evaluation episodes for every run).
The table shows each seed's return before and after adapting under each variant, the paired
difference (B - A, after adapting) per seed, and its mean with a 95% bootstrap CI
(:func:`metarl.stats.summarize_seeds`, the project's one statistics function).

    # the MAML-TRPO exact Fisher against the quarter-task one, 3 seeds, 100 iterations:
    python benchmarks/paired.py --config experiments/maml_trpo_halfcheetah_vel.yaml \\
        --variant exact trpo_fisher_subsample=1.0 --variant quarter trpo_fisher_subsample=0.25 \\
        --seeds 0 1 2 --iterations 100 --logdir experiments/results/paired

    # only print the training commands (to queue them elsewhere), or only report:
    python benchmarks/paired.py ... --plan
    python benchmarks/paired.py ... --no-train

Run directories are ``LOGDIR/PREFIX-VARIANT-sSEED`` (PREFIX defaults to the config's stem).
A finished run is reused; an unfinished one is resumed (``metarl train --resume``). An
existing run trained elsewhere with the same settings can stand in for a (variant, seed)
with ``--run VARIANT:SEED=RUN_DIR`` (for example a longer results run's checkpoint at the
same iteration). Trainings run one after another: two at once would each run at half speed.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from metarl.eval_output import eval_stem
from metarl.stats import format_ci, summarize_seeds


@dataclass(frozen=True)
class Variant:
    """One arm of the comparison: a name and the config keys it overrides."""

    name: str
    overrides: dict[str, object]


@dataclass(frozen=True)
class SeedResult:
    """One (variant, seed) run's benchmark-pool meta-test at the compared iteration.

    ``curve[k]`` is the mean over the pool's tasks after ``k`` adaptation units
    (``curve[0]`` = before adapting); ``seconds_per_iteration`` is the run's mean
    ``time/iteration`` from progress.csv (None when the file has no such column).
    """

    run_dir: Path
    curve: list[float]
    seconds_per_iteration: float | None


def parse_variant(words: list[str]) -> Variant:
    """``["exact", "trpo_fisher_subsample=1.0"]`` -> Variant("exact", {...: 1.0})."""
    name, *assignments = words
    overrides: dict[str, object] = {}
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or not key:
            raise SystemExit(f"--variant {name}: expected KEY=VALUE, got {assignment!r}")
        overrides[key] = yaml.safe_load(value)
    return Variant(name, overrides)


def parse_run_override(text: str) -> tuple[tuple[str, int], Path]:
    """``"quarter:1=/path/run"`` -> (("quarter", 1), Path("/path/run"))."""
    target, sep, path = text.partition("=")
    variant, colon, seed = target.partition(":")
    if not (sep and colon and seed.isdigit()):
        raise SystemExit(f"--run: expected VARIANT:SEED=RUN_DIR, got {text!r}")
    return (variant, int(seed)), Path(path)


def checkpoint_name(iterations: int) -> str:
    """The checkpoint written after ``iterations`` iterations (files count from 0)."""
    return f"iter_{iterations - 1:06d}.pt"


def train_command(config: Path, variant: Variant, seed: int, iterations: int, run_dir: Path):
    """The ``metarl train`` argv that trains (or resumes) one (variant, seed) run."""
    base = [sys.executable, "-m", "metarl.train"]
    if (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").glob("iter_*.pt")):
        return [*base, "--resume", str(run_dir), "--iterations", str(iterations), "--quiet"]
    flags = []
    for key, value in variant.overrides.items():
        flags += [f"--{key.replace('_', '-')}", str(value)]
    return [
        *base, "--config", str(config), "--seed", str(seed), "--iterations", str(iterations),
        "--logdir", str(run_dir.parent), "--run-name", run_dir.name,
        "--keep-checkpoints", "100", "--quiet", *flags,
    ]  # fmt: skip


def evaluate_command(run_dir: Path, iterations: int, adapt_steps: int, workers: int):
    """The ``metarl evaluate`` argv that meta-tests the run at ``iterations`` on the benchmark."""
    return [
        sys.executable, "-m", "metarl.evaluate", str(run_dir),
        "--checkpoint", checkpoint_name(iterations), "--adapt-steps", str(adapt_steps),
        "--workers", str(workers),
    ]  # fmt: skip


def eval_file(run_dir: Path, iterations: int, adapt_steps: int) -> Path:
    """Where ``metarl evaluate`` writes that meta-test on the benchmark pool."""
    return run_dir / "eval" / f"{eval_stem('benchmark', iterations, adapt_steps, 'metarl')}.json"


def read_curve(path: Path) -> list[float]:
    """The pool-mean return after 0..K adaptation units of one eval JSON."""
    summary = json.loads(path.read_text())["summary"]
    return [float(row["mean"]) for row in sorted(summary, key=lambda row: row["step"])]


def mean_seconds_per_iteration(run_dir: Path, iterations: int) -> float | None:
    """Mean ``time/iteration`` over the run's first ``iterations`` rows of progress.csv."""
    path = run_dir / "progress.csv"
    if not path.is_file():
        return None
    with path.open() as handle:
        rows = [row for row in csv.DictReader(handle) if int(row["iteration"]) < iterations]
    times = [float(row["time/iteration"]) for row in rows if row.get("time/iteration")]
    return sum(times) / len(times) if times else None


def run(argv: list[str], dry: bool) -> None:
    """Print ``argv`` as a shell line and run it unless ``dry`` (a failure stops the check)."""
    print("$ " + shlex.join(argv), flush=True)
    if not dry:
        subprocess.run(argv, check=True)


def paired_table(variants: list[Variant], seeds: list[int], results: dict) -> str:
    """The comparison as text: per seed, each variant's before/after and B - A after."""
    first, second = variants
    header = (
        f"{'seed':>4} | {first.name + ' before':>16} {first.name + ' after':>16} | "
        f"{second.name + ' before':>16} {second.name + ' after':>16} | {'B - A after':>12}"
    )
    lines = [header, "-" * len(header)]
    differences = []
    for seed in seeds:
        a, b = results[first.name, seed], results[second.name, seed]
        difference = b.curve[-1] - a.curve[-1]
        differences.append(difference)
        lines.append(
            f"{seed:>4} | {a.curve[0]:>16.2f} {a.curve[-1]:>16.2f} | "
            f"{b.curve[0]:>16.2f} {b.curve[-1]:>16.2f} | {difference:>12.2f}"
        )
    for variant in variants:
        after = summarize_seeds([results[variant.name, s].curve[-1] for s in seeds])
        seconds = [results[variant.name, s].seconds_per_iteration for s in seeds]
        timing = (
            f", {sum(seconds) / len(seconds):.1f} s per iteration (mean over seeds)"
            if all(value is not None for value in seconds)
            else ""
        )
        lines.append(f"{variant.name} after: {format_ci(after)}{timing}")
    paired = summarize_seeds(differences)
    lines.append(f"paired difference {second.name} - {first.name} after: {format_ci(paired)}")
    inside = paired.ci_low <= 0.0 <= paired.ci_high
    lines.append(
        "the 95% CI of the difference contains 0: no difference shown at this budget"
        if inside
        else f"the 95% CI of the difference excludes 0: {second.name} is "
        f"{'better' if paired.mean > 0 else 'worse'} at this budget"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--config", type=Path, required=True, help="the YAML both variants start from"
    )
    parser.add_argument(
        "--variant", nargs="+", action="append", required=True, metavar="NAME KEY=VALUE",
        help="a variant: its name, then the config keys it sets (give exactly two)",
    )  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="run seeds")
    parser.add_argument("--iterations", type=int, default=100, help="iterations per run")
    parser.add_argument("--adapt-steps", type=int, default=1, help="adaptation units to test")
    parser.add_argument("--logdir", type=Path, default=Path("runs/paired"), help="runs' parent")
    parser.add_argument("--prefix", help="run-name prefix (default: the config's stem)")
    parser.add_argument(
        "--run", action="append", default=[], metavar="VARIANT:SEED=RUN_DIR",
        help="use an existing run for one (variant, seed)",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, default=-1, help="evaluate's rollout workers")
    parser.add_argument("--plan", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--no-train", action="store_true", help="evaluate and report only")
    args = parser.parse_args(argv)

    variants = [parse_variant(words) for words in args.variant]
    if len(variants) != 2 or variants[0].name == variants[1].name:
        parser.error("give exactly two --variant options with different names")
    if not args.config.is_file():
        parser.error(f"--config {args.config}: no such file")
    if args.iterations < 1 or args.adapt_steps < 0:
        parser.error("--iterations must be >= 1 and --adapt-steps >= 0")
    prefix = args.prefix or args.config.stem
    overrides = dict(parse_run_override(text) for text in args.run)

    results: dict[tuple[str, int], SeedResult] = {}
    for variant in variants:
        for seed in args.seeds:
            run_dir = overrides.get(
                (variant.name, seed), args.logdir / f"{prefix}-{variant.name}-s{seed}"
            )
            checkpoint = run_dir / "checkpoints" / checkpoint_name(args.iterations)
            if not checkpoint.is_file():
                command = train_command(args.config, variant, seed, args.iterations, run_dir)
                if args.no_train:
                    raise SystemExit(
                        f"{checkpoint} is missing; train it with: {shlex.join(command)}"
                    )
                run(command, args.plan)
            if not eval_file(run_dir, args.iterations, args.adapt_steps).is_file():
                run(
                    evaluate_command(run_dir, args.iterations, args.adapt_steps, args.workers),
                    args.plan,
                )
            if not args.plan:
                results[variant.name, seed] = SeedResult(
                    run_dir,
                    read_curve(eval_file(run_dir, args.iterations, args.adapt_steps)),
                    mean_seconds_per_iteration(run_dir, args.iterations),
                )
    if args.plan:
        return
    print(
        f"\n{args.config.name}, {args.iterations} iterations, seeds {args.seeds}; benchmark-pool "
        f"return before and after {args.adapt_steps} adaptation unit(s)"
    )
    print(paired_table(variants, args.seeds, results))


if __name__ == "__main__":
    main()
