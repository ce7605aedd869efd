"""Turn finished runs into README's results table and the plots under ``docs/``.

    python experiments/summarize.py runs/results --out docs

Reads every run directory under the given folder (any depth):

* metarl runs (``config.yaml`` + TensorBoard events + ``eval/*.json`` from
  ``python -m metarl.evaluate RUN_DIR --adapt-steps 3``), grouped into one
  experiment per (env, algo, settings): runs whose configs differ only in the
  seed or in how they ran (workers, device, ...) are seeds of one experiment.
  One row per experiment (named by the settings that set it apart from
  others on the same env and algo; a row per length where its seeds stopped
  at different iterations): the meta-test return
  on the held-out tasks before adapting and after each adaptation step (RL²:
  episode 1, then episodes 2, 3, ... of the trial), as the mean over seeds of
  each seed's mean over tasks, +- the standard deviation over seeds; the env
  steps and training seconds of one run (``perf/env_steps`` and the sum of
  ``time/iteration``, so periodic meta-tests are not counted);
* baselines (``results.json`` from ``python -m metarl.baselines``), one row each.

For families whose held-out pool repeats a few tasks (halfcheetah-dir's two
directions) a second table gives, per experiment row and baseline, the same cells for each
distinct task and for their balanced mean (each distinct task weighted
equally, as a family that samples them evenly would weigh them).

Writes ``<out>/<env>-<algo>[-<key>-<value>].png`` per experiment: the learning curve (the
periodic meta-test return ``test/return_*`` against iteration, mean and range
over seeds) beside the final adaptation curve, with the family's baselines as
dashed lines. Prints the table as Markdown.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from metarl.configure import restored_config
from metarl.evaluate import balanced_curve, by_distinct_task

RETURN_TAG = re.compile(r"^test/return_(step|episode)_(\d+)$")
# Config keys that say how a run ran, not what it learns: runs differing only in these
# (and the seed) are seeds of one experiment.
HOW_IT_RAN = {
    "seed", "run_name", "logdir", "workers", "sampler", "ray_address", "device",
    "torch_threads", "checkpoint_every", "keep_checkpoints", "trpo_chunk_tasks",
    "family",  # where the family's class came from (newer runs record it): env names it
}  # fmt: skip


@dataclass(frozen=True, order=True)
class Experiment:
    env: str
    algo: str
    settings: tuple[tuple[str, str], ...]  # (key, repr(value)) of every other config key


@dataclass
class SeedRun:
    """One metarl run: its final meta-test and its learning curve."""

    seed: int
    adaptation: list[float]  # final meta-test: mean over tasks, per step (or episode)
    unit: str  # "step" or "episode"
    env_steps: int
    train_seconds: float
    iterations: int
    # k -> (iterations completed, meta-test return); TensorBoard's step is the 0-based iteration
    curves: dict[int, tuple[list[int], list[float]]] = field(default_factory=dict)
    # distinct task (its JSON) -> final meta-test curve over its draws, then "balanced";
    # empty when the pool repeats no task
    by_task: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class BaselineRun:
    kind: str
    env: str
    adaptation: list[float]
    env_steps: int
    seconds: float | None
    by_task: dict[str, list[float]] = field(default_factory=dict)  # as SeedRun.by_task


def read_scalars(run_dir: Path) -> dict[str, tuple[list[int], list[float]]]:
    """Every scalar tag of a run's event files -> (steps, values) in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    scalars = {}
    for tag in accumulator.Tags()["scalars"]:
        events = sorted(accumulator.Scalars(tag), key=lambda e: e.step)
        scalars[tag] = ([e.step for e in events], [e.value for e in events])
    return scalars


def task_curves(groups: list[dict]) -> dict[str, list[float]]:
    """evaluate's ``by_distinct_task`` groups -> {task JSON: curve, ..., "balanced": curve}.

    The balanced curve is computed here, not read: JSONs written before evaluate stored it
    lack the key. Empty when the pool repeats no task.
    """
    curves = {json.dumps(g["task"], sort_keys=True): g["mean"] for g in groups}
    if groups:
        curves["balanced"] = balanced_curve(groups)
    return curves


def read_metarl_run(run_dir: Path, config: dict) -> SeedRun | None:
    # metarl's own meta-test (not Meta-World's protocol), on the benchmark pool if the
    # run was evaluated there, else on its own test pool; the latest checkpoint's
    evals = [p for p in sorted((run_dir / "eval").glob("benchmark_iter*_steps*.json"))
             if "_metaworld" not in p.name]  # fmt: skip
    evals = evals or [p for p in sorted((run_dir / "eval").glob("test_iter*_steps*.json"))
                      if "_metaworld" not in p.name]  # fmt: skip
    if not evals:
        return None
    final = json.loads(evals[-1].read_text())  # the latest checkpoint's meta-test
    scalars = read_scalars(run_dir)
    curves = {}
    for tag, (steps, values) in scalars.items():
        match = RETURN_TAG.match(tag)
        if match:
            curves[int(match.group(2))] = ([step + 1 for step in steps], values)
    return SeedRun(
        seed=int(config["seed"]),
        adaptation=[row["mean"] for row in final["summary"]],
        unit="episode" if final["unit"] == "episode" else "step",
        env_steps=int(scalars["perf/env_steps"][1][-1]),
        train_seconds=float(sum(scalars["time/iteration"][1])),
        iterations=int(final["iteration"]),
        curves=curves,
        by_task=task_curves(final.get("by_distinct_task", [])),
    )


def experiment_of(config: dict) -> Experiment:
    """A run's experiment: its env, algo and the settings its algorithm reads.

    A key added after a run was made takes its default, which is what that run used;
    keys no part of the run reads (another algorithm's) do not tell experiments apart.
    """
    resolved = restored_config(config).to_dict()  # only the keys its algorithm reads
    settings = tuple(sorted((k, repr(v)) for k, v in resolved.items() if k not in HOW_IT_RAN))
    return Experiment(config["env"], config["algo"], settings)


def distinguishing(experiment: Experiment, others: list[Experiment]) -> list[tuple[str, str]]:
    """The settings of ``experiment`` that differ from another experiment on its env and algo."""
    mine = dict(experiment.settings)
    siblings = [o for o in others if (o.env, o.algo) == (experiment.env, experiment.algo)]
    keys = {k for o in siblings if o != experiment for k, v in o.settings if mine.get(k) != v}
    return [(k, mine[k]) for k in sorted(keys) if k in mine]


def experiment_label(experiment: Experiment, others: list[Experiment]) -> str:
    extra = ", ".join(f"{k} {v}" for k, v in distinguishing(experiment, others))
    return f"{experiment.algo} on {experiment.env}" + (f" ({extra})" if extra else "")


def baseline_groups(per_task: list[dict]) -> list[dict]:
    """A baseline's ``results.json`` ``per_task`` -> evaluate's ``by_distinct_task`` groups."""
    if not per_task:
        return []
    returns = torch.tensor([task["return_step_k"] for task in per_task]).T  # [K + 1, T]
    return by_distinct_task([task["task"] for task in per_task], returns)


def collect(root: Path) -> tuple[dict[Experiment, list[SeedRun]], list[BaselineRun]]:
    experiments: dict[Experiment, list[SeedRun]] = defaultdict(list)
    baselines: list[BaselineRun] = []
    for config_path in sorted(root.rglob("config.yaml")):
        run_dir = config_path.parent
        config = yaml.safe_load(config_path.read_text())
        results = run_dir / "results.json"
        if "baseline" in config:
            if results.exists():
                data = json.loads(results.read_text())
                baselines.append(
                    BaselineRun(
                        kind=data["kind"],
                        env=config["env"],
                        adaptation=data["mean_return_step_k"],
                        env_steps=int(data["env_steps"]),
                        seconds=data.get("seconds"),
                        by_task=task_curves(baseline_groups(data.get("per_task", []))),
                    )
                )
            continue
        run = read_metarl_run(run_dir, config)
        if run is not None:
            experiments[experiment_of(config)].append(run)
    return experiments, baselines


def mean_std(columns: list[list[float]]) -> list[str]:
    """Per step: mean over seeds +- std over seeds (population), or the value for one seed."""
    values = np.array(columns)  # [seeds, steps]
    if len(values) == 1:
        return [f"{v:.1f}" for v in values[0]]
    return [f"{m:.1f} ± {s:.1f}" for m, s in zip(values.mean(0), values.std(0))]


def markdown_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def experiment_row(
    experiment: Experiment, others: list[Experiment], runs: list[SeedRun], steps: int
) -> str:
    """One table row: the mean +- std over ``runs``, seeds of one experiment of one length."""
    runs = sorted(runs, key=lambda r: r.seed)
    cells = mean_std([r.adaptation[: steps + 1] for r in runs])
    unit = "episodes 1..K" if runs[0].unit == "episode" else "steps"
    return markdown_row(
        [
            f"{experiment_label(experiment, others)}, {unit}",
            str(len(runs)),
            str(runs[0].iterations),
            *cells,
            *[""] * (steps + 1 - len(cells)),
            f"{runs[0].env_steps / 1e6:.1f} M",
            f"{np.mean([r.train_seconds for r in runs]) / 60:.0f} min",
        ]
    )


def by_length(runs: list[SeedRun]) -> list[list[SeedRun]]:
    """``runs`` grouped by iterations completed, longest first: seeds stopped at different
    iterations are not one measurement."""
    groups: dict[int, list[SeedRun]] = defaultdict(list)
    for run in runs:
        groups[run.iterations].append(run)
    return [groups[n] for n in sorted(groups, reverse=True)]


def table(experiments: dict, baselines: list[BaselineRun], steps: int) -> str:
    header = ["experiment", "seeds", "iterations", "before"]
    header += [f"after {k}" for k in range(1, steps + 1)]
    header += ["env steps (one run)", "train time (one run)"]
    lines = [markdown_row(header), "|" + "---|" * len(header)]
    for experiment, runs in sorted(experiments.items()):
        for same_length in by_length(runs):
            lines.append(experiment_row(experiment, list(experiments), same_length, steps))
    for base in sorted(baselines, key=lambda b: (b.env, b.kind)):
        cells = [f"{v:.1f}" for v in base.adaptation[: steps + 1]]
        lines.append(
            markdown_row(
                [
                    f"SB3 PPO {base.kind} on {base.env}",
                    "1",
                    "",
                    *cells,
                    *[""] * (steps + 1 - len(cells)),
                    f"{base.env_steps / 1e6:.2f} M",
                    f"{base.seconds / 60:.0f} min" if base.seconds else "?",
                ]
            )
        )
    return "\n".join(lines)


def per_task_table(experiments: dict, baselines: list[BaselineRun], steps: int) -> str:
    """Rows of each experiment (and length) and baseline whose pool repeats tasks: one per
    distinct task and one for their balanced mean, each cell the mean +- std over seeds;
    "" if there are none."""
    header = ["experiment", "seeds", "iterations", "task", "before"]
    header += [f"after {k}" for k in range(1, steps + 1)]
    lines = [markdown_row(header), "|" + "---|" * len(header)]
    for experiment, runs in sorted(experiments.items()):
        for same_length in by_length(runs):
            same_length = [r for r in same_length if r.by_task]
            if not same_length:
                continue
            label = experiment_label(experiment, list(experiments))
            for task in sorted(same_length[0].by_task):
                curves = [r.by_task[task][: steps + 1] for r in same_length if task in r.by_task]
                cells = mean_std(curves)
                lines.append(
                    markdown_row(
                        [label, str(len(curves)), str(same_length[0].iterations), task, *cells]
                    )
                )
    for base in sorted(baselines, key=lambda b: (b.env, b.kind)):
        label = f"SB3 PPO {base.kind} on {base.env}"
        for task in sorted(base.by_task):
            cells = mean_std([base.by_task[task][: steps + 1]])
            lines.append(markdown_row([label, "1", "", task, *cells]))
    return "\n".join(lines) if len(lines) > 2 else ""


def plot(
    experiment: Experiment,
    others: list[Experiment],
    runs: list[SeedRun],
    baselines: list[BaselineRun],
    out: Path,
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (learning, adaptation) = plt.subplots(1, 2, figsize=(11, 4))
    unit = runs[0].unit
    first_k = 1 if unit == "episode" else 0
    ks = sorted({k for r in runs for k in r.curves})
    for k in ks:
        its = runs[0].curves[k][0]
        values = np.array([r.curves[k][1][: len(its)] for r in runs if k in r.curves])
        label = f"{unit} {k}" if unit == "episode" else ("before" if k == 0 else f"after {k}")
        line = learning.plot(its, values.mean(0), label=label)[0]
        if len(values) > 1:
            learning.fill_between(
                its, values.min(0), values.max(0), alpha=0.2, color=line.get_color()
            )
    learning.set_xlabel("meta-iteration")
    learning.set_ylabel("meta-test return (held-out tasks)")
    learning.set_title(
        f"{experiment_label(experiment, others)}: {len(runs)} seed(s), range shaded", fontsize=9
    )
    learning.legend(fontsize=8)

    values = np.array([r.adaptation for r in runs])
    xs = np.arange(first_k, first_k + values.shape[1])
    adaptation.errorbar(
        xs,
        values.mean(0),
        yerr=values.std(0),
        marker="o",
        capsize=4,
        label=f"metarl {experiment.algo}",
    )
    for base in baselines:
        if base.env == experiment.env:
            bx = np.arange(first_k, first_k + len(base.adaptation))
            # The steps tell apart two runs of one kind (the 0.3 M and 1 M oracles).
            label = f"SB3 PPO {base.kind}, {base.env_steps / 1e6:.2f} M steps"
            adaptation.plot(bx, base.adaptation, "--", marker=".", label=label)
    adaptation.set_xlabel("episode in trial" if unit == "episode" else "adaptation step")
    adaptation.set_ylabel("return")
    adaptation.set_title("after meta-training: mean ± std over seeds")
    adaptation.legend(fontsize=8)
    fig.tight_layout()
    suffix = "".join(f"-{k}-{v}" for k, v in distinguishing(experiment, others))
    path = out / re.sub(r"[^A-Za-z0-9_.-]", "", f"{experiment.env}-{experiment.algo}{suffix}.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path, help="folder holding the run directories")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="where the PNGs go")
    parser.add_argument("--steps", type=int, default=3, help="adaptation steps in the table")
    args = parser.parse_args()
    experiments, baselines = collect(args.root)
    if not experiments and not baselines:
        raise SystemExit(f"no finished runs under {args.root}")
    args.out.mkdir(parents=True, exist_ok=True)
    for experiment, runs in sorted(experiments.items()):
        longest = by_length(runs)[0]  # the table's first row of the experiment
        print(f"wrote {plot(experiment, list(experiments), longest, baselines, args.out)}")
    print()
    print(table(experiments, baselines, args.steps))
    repeated = per_task_table(experiments, baselines, args.steps)
    if repeated:
        print()
        print(repeated)
    machine = f"{platform.machine()} {platform.processor() or ''}".strip()
    print(f"\nmachine: {machine}, Python {platform.python_version()}")


if __name__ == "__main__":
    main()
