"""``python -m metarl.evaluate RUN_DIR``: meta-test a trained run on held-out tasks.

Loads the latest checkpoint of the run (or ``--checkpoint best`` / a path),
adapts on each task of the run's fixed test pool (or train pool), and writes
into the run directory:

* ``eval/<name>.csv`` and ``eval/<name>.json``: return per adaptation step,
  mean and standard deviation over tasks, plus every task's own returns (the
  JSON also names each task, and for a pool that repeats tasks, such as
  halfcheetah-dir's draws of two directions, the mean curve of each distinct
  task: a meta-policy that adapts well to one task and poorly to another shows
  there, not in the overall mean), and the mean of those curves with each
  distinct task weighted equally (a pool of 8 backward and 12 forward draws
  then reads as the balanced family it samples from);
* ``eval/<name>.png``: the adaptation curve of every task and their mean;
* for a family with ``episode_info_keys`` (Meta-World's ``success``), the same for
  each key's per-episode maximum: ``<key>_mean`` and ``<key>_std`` over tasks in the
  table, CSV and JSON (plus every task's own values in the JSON), and, when every
  task has a string ``group`` (Meta-World ML10/ML45: its environment),
  ``<key>_mean/<group>`` and ``<key>_std/<group>``; one more panel per key in the
  PNG. Without keys every output is exactly as before;
* with ``--video``: MP4s, a GIF and a PNG sheet of held-out tasks played before and
  after each unit of adaptation, and the same in TensorBoard (:mod:`metarl.video`);
  with ``--sheet``, the PNG sheet alone.

What a unit of adaptation is comes from the learner (its ``adaptation_unit``):
for MAML a policy-gradient step, for RL2 an episode of the trial.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from metarl.algos.base import AdaptationCurve
from metarl.checkpoint import latest_checkpoint, load_checkpoint
from metarl.cli import OneLineErrorParser, run_command
from metarl.config import CONFIG_FIELDS, build_config
from metarl.envs.base import task_groups
from metarl.options import ConfigError
from metarl.sampling.backends import BACKENDS
from metarl.video import (
    Film,
    VideoError,
    log_film,
    open_render_env,
    parse_size,
    require_extra,
    shoot,
    task_label,
    write_film,
)

PROG = "python -m metarl.evaluate"
UNIT_NAMES = {"step": ("adaptation step", "step"), "episode": ("episode", "ep")}
"""A learner's adaptation unit -> its name in the JSON and plot, and the table's column."""


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog=prog,
        description="Meta-test a run: adapt on held-out tasks, print and save the returns.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("run_dir", help="a run directory written by metarl.train")
    parser.add_argument(
        "--checkpoint", default="latest", help="'latest', 'best' or a checkpoint file path"
    )
    parser.add_argument(
        "--adapt-steps", type=int, default=3, help="adaptation steps (RL2: episodes - 1)"
    )
    parser.add_argument("--tasks", choices=("test", "train"), default="test", help="task pool")
    parser.add_argument("--n-tasks", type=int, default=0, help="first N tasks of the pool; 0 = all")
    parser.add_argument(
        "--episodes", type=int, default=0, help="episodes per task per step; 0 = the run's value"
    )
    parser.add_argument("--workers", type=int, default=-1, help="rollout workers (-1 = per core)")
    parser.add_argument(
        "--sampler", choices=tuple(BACKENDS), help="rollout backend; default: the run's"
    )
    parser.add_argument(
        "--ray-address", help="with --sampler ray: the cluster to join; default: the run's"
    )
    parser.add_argument("--seed", type=int, default=12345, help="seed of the evaluation rollouts")
    protocol = parser.add_argument_group(
        "Meta-World's own protocol (needs metarl[metaworld])",
        "--protocol metaworld scores the run with metaworld.evaluation.metalearning_evaluation",
    )
    protocol.add_argument("--protocol", choices=("metarl", "metaworld"), default="metarl",
                          help="whose meta-test to run")  # fmt: skip
    protocol.add_argument("--protocol-evals", type=int, default=10,
                          help="rounds of test tasks (Meta-World's num_evals)")  # fmt: skip
    protocol.add_argument("--protocol-envs", type=int, default=10,
                          help="test sub-envs (ML10/ML45: a multiple of 5)")  # fmt: skip
    protocol.add_argument("--protocol-eval-episodes", type=int, default=3,
                          help="evaluation episodes per class per round")  # fmt: skip
    video = parser.add_argument_group(
        "video", 'watch it adapt (MP4 and GIF need pip install "metarl[video]")'
    )
    video.add_argument(
        "--video",
        action="store_true",
        help="render tasks before and after each unit of adaptation with the mean action: "
        "eval/*_video_grid.mp4/.gif, one *_video_task<i>.mp4 per task, *_sheet.png, TensorBoard",
    )
    video.add_argument(
        "--sheet",
        action="store_true",
        help="only the PNG sheet: every task's last frame per unit of adaptation (no extra needed)",
    )
    video.add_argument(
        "--video-tasks",
        type=int,
        metavar="N",
        help="first N tasks of the pool; default: the run's n_probe_tasks",
    )
    video.add_argument(
        "--video-steps",
        type=int,
        metavar="K",
        help="adaptation steps (RL2: episodes - 1); default: --adapt-steps",
    )
    video.add_argument(
        "--video-size",
        default="128",
        metavar="WxH",
        help="cell size in pixels, WIDTHxHEIGHT or one number",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    return parser


def checkpoint_path(run_dir: Path, which: str) -> Path:
    if which == "latest":
        return latest_checkpoint(run_dir)
    if which == "best":
        return run_dir / "checkpoints" / "best.pt"
    return Path(which)


def summarise(per_task: torch.Tensor) -> list[dict]:
    """``[K + 1, T]`` returns -> one row per step: mean and std over tasks."""
    std = per_task.std(dim=1, unbiased=False)
    return [
        {"step": k, "mean": float(per_task[k].mean()), "std": float(std[k])}
        for k in range(per_task.shape[0])
    ]


def info_columns(
    infos: Mapping[str, torch.Tensor], groups: Mapping[str, list[int]]
) -> dict[str, list[float]]:
    """The per-episode info columns of an evaluation: column name -> ``[K + 1]`` values.

    Per key, in order: ``<key>_mean`` and ``<key>_std`` over every task, then for each
    group ``<key>_mean/<group>`` and ``<key>_std/<group>`` over its tasks (population std,
    as :func:`summarise`). Empty for a family without keys.

    Args:
        infos: key -> ``[K + 1, T]`` (an :class:`~metarl.algos.base.AdaptationCurve`'s).
        groups: group -> its task indices (:func:`~metarl.envs.base.task_groups`), or ``{}``.
    """
    columns: dict[str, list[float]] = {}
    for key, per_task in infos.items():
        for suffix, idx in [("", slice(None)), *((f"/{g}", i) for g, i in groups.items())]:
            values = per_task[:, idx]
            columns[f"{key}_mean{suffix}"] = values.mean(dim=1).tolist()
            columns[f"{key}_std{suffix}"] = values.std(dim=1, unbiased=False).tolist()
    return columns


def task_as_json(task: Any) -> dict | str:
    """A task as JSON: its fields for a dataclass task, a dict as it is, else its repr."""
    if isinstance(task, dict):  # a plug-in family's task, or one read back from JSON
        return task
    return dataclasses.asdict(task) if dataclasses.is_dataclass(task) else repr(task)


def by_distinct_task(tasks: list, per_task: torch.Tensor) -> list[dict]:
    """Mean curve per distinct task, for a pool that repeats tasks; empty if none repeats.

    Args:
        tasks: the ``T`` tasks meta-tested, in the order of ``per_task``'s columns.
        per_task: ``[K + 1, T]`` returns.
    Returns:
        One ``{"task", "n_tasks", "mean"}`` per distinct task, in order of first
        appearance; ``mean`` is ``[K + 1]`` floats.
    """
    # Grouped by the task's JSON, not the task: a plug-in family's task need not be hashable.
    columns: dict[str, list[int]] = {}
    for i, task in enumerate(tasks):
        key = json.dumps(task_as_json(task), sort_keys=True, default=repr)
        columns.setdefault(key, []).append(i)
    if len(columns) == len(tasks):
        return []
    return [
        {
            "task": task_as_json(tasks[idx[0]]),
            "n_tasks": len(idx),
            "mean": per_task[:, idx].mean(dim=1).tolist(),
        }
        for idx in columns.values()
    ]


def balanced_curve(groups: list[dict]) -> list[float]:
    """Mean of the distinct tasks' curves, each weighted equally; empty if there are none.

    Args:
        groups: ``by_distinct_task``'s output, each ``mean`` ``[K + 1]`` floats.
    Returns:
        ``[K + 1]`` floats.
    """
    if not groups:
        return []
    return torch.tensor([group["mean"] for group in groups]).mean(dim=0).tolist()


def format_table(
    rows: list[dict],
    *,
    unit: str,
    keys: tuple[str, ...] = (),
    infos: Mapping[str, list[float]] | None = None,
) -> str:
    """The printed table: one row per unit of adaptation, the return's mean and std, then
    for each of ``keys`` its ``<key>_mean`` and ``<key>_std`` from :func:`info_columns`."""
    header = f"{unit:>6}  {'mean return':>12}  {'std':>9}"
    lines = [header + "".join(f"  {key:>9}  {'std':>9}" for key in keys)]
    for k, r in enumerate(rows):
        line = f"{r['step']:>6}  {r['mean']:>12.2f}  {r['std']:>9.2f}"
        for key in keys:
            line += f"  {infos[f'{key}_mean'][k]:>9.2f}  {infos[f'{key}_std'][k]:>9.2f}"
        lines.append(line)
    return "\n".join(lines)


def plot_curves(ax, per_task: torch.Tensor, mean: list[float], std: list[float], ylabel: str):
    """Every task's curve (thin) and the mean ± std over tasks on ``ax``.

    Args:
        per_task: ``[K + 1, T]``. mean, std: ``[K + 1]`` over the tasks.
    """
    steps = list(range(per_task.shape[0]))
    for i in range(per_task.shape[1]):
        ax.plot(steps, per_task[:, i].tolist(), color="tab:blue", alpha=0.25, linewidth=1)
    ax.errorbar(steps, mean, yerr=std, color="black", linewidth=2, capsize=4, label="mean ± std")
    ax.set_ylabel(ylabel)
    ax.set_xticks(steps)


def write_outputs(
    out_dir: Path,
    name: str,
    curve: AdaptationCurve,
    meta: dict,
    groups: Mapping[str, list[int]] | None = None,
) -> list[Path]:
    """CSV, JSON and PNG of the adaptation curves; returns the paths written.

    ``groups``: the task groups (:func:`~metarl.envs.base.task_groups`), for the infos'
    per-group columns. Without infos the files are what they were before infos existed.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    per_task = curve.returns
    rows = summarise(per_task)
    infos = info_columns(curve.infos, groups or {})
    csv_path, json_path, png_path = (out_dir / f"{name}.{ext}" for ext in ("csv", "json", "png"))
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        tasks = [f"task_{i}" for i in range(per_task.shape[1])]
        writer.writerow(["step", "mean", "std", *tasks, *infos])  # last: keyless CSVs unchanged
        for k, (row, values) in enumerate(zip(rows, per_task.tolist())):
            extra = [column[k] for column in infos.values()]
            writer.writerow([row["step"], row["mean"], row["std"], *values, *extra])
    summary = [
        {**row, **{name: column[k] for name, column in infos.items()}} for k, row in enumerate(rows)
    ]
    report = {**meta, "summary": summary, "per_task": per_task.T.tolist()}
    if curve.infos:
        report["per_task_infos"] = {key: v.T.tolist() for key, v in curve.infos.items()}
        report["groups"] = dict(groups or {})
    json_path.write_text(json.dumps(report, indent=2, default=repr))  # numpy scalars in tasks

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_panels = 1 + len(curve.infos)
    fig, axes = plt.subplots(1, n_panels, figsize=(6 * n_panels, 4), squeeze=False)
    ax = axes[0, 0]
    plot_curves(ax, per_task, [r["mean"] for r in rows], [r["std"] for r in rows], "return")
    ax.set_xlabel(meta["unit"])
    ax.set_title(f"{meta['env']} ({meta['algo']}): {per_task.shape[1]} {meta['tasks']} tasks")
    ax.legend()
    for ax, (key, values) in zip(axes[0, 1:], curve.infos.items()):
        mean, std = infos[f"{key}_mean"], infos[f"{key}_std"]
        plot_curves(ax, values, mean, std, f"{key} (max over each episode)")
        for group in groups or {}:
            ax.plot(infos[f"{key}_mean/{group}"], linewidth=1.5, label=group)
        ax.set_xlabel(meta["unit"])
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return [csv_path, json_path, png_path]


def video_settings(args: argparse.Namespace, config, pool: list) -> tuple[list, int, tuple]:
    """The tasks, adaptation steps and cell size ``(h, w)`` of ``--video``/``--sheet``."""
    n_tasks = config.n_probe_tasks if args.video_tasks is None else args.video_tasks
    steps = args.adapt_steps if args.video_steps is None else args.video_steps
    if n_tasks < 1 or steps < 0:
        raise ConfigError("--video-tasks must be >= 1 and --video-steps >= 0")
    try:
        cell = parse_size(args.video_size)
    except ValueError as exc:
        raise ConfigError(f"--video-size: {exc}") from exc
    return list(pool[:n_tasks]), steps, cell


def open_video(args: argparse.Namespace, run, pool: list):
    """Everything a film needs, checked before the evaluation so a bad setup fails fast:
    the learner's support, the extra (unless ``--sheet`` alone) and a renderer."""
    if not callable(getattr(run.learner, "adapted_actors", None)):
        raise VideoError(
            f"video is not supported for {run.config.algo}: its learner has no adapted_actors()"
        )
    if args.video:
        require_extra()
    tasks, steps, cell = video_settings(args, run.config, pool)
    env = open_render_env(
        run.config.env,
        horizon=run.horizon,
        env_kwargs=run.config.env_kwargs,
        cell=cell,
        probe_task=tasks[0],
    )
    return env, tasks, steps, cell


def shoot_film(args: argparse.Namespace, run, env, tasks: list, steps: int, cell: tuple) -> Film:
    """Render ``tasks`` with the learner's adapted policies, adapted as the evaluation adapts
    (same episodes per task and batch key, so the same episodes for the same tasks)."""
    runs = run.learner.adapted_actors(
        tasks,
        adapt_steps=steps,
        episodes_per_task=args.episodes or run.config.episodes_per_task,
        batch_key=("evaluate", args.seed),
    )
    titles = [f"{args.tasks} task {i}: {task_label(task)}" for i, task in enumerate(tasks)]
    return shoot(
        env,
        tasks,
        runs,
        unit=run.learner.adaptation_unit,
        horizon=run.horizon,
        seed=args.seed,
        cell=cell,
        titles=titles,
    )


def evaluate(args: argparse.Namespace) -> int:
    from metarl.run import restore_run

    run_dir = Path(args.run_dir)
    path = checkpoint_path(run_dir, args.checkpoint)
    state = load_checkpoint(path)
    overrides = {"workers": args.workers, "seed": state["config"]["seed"]}
    if args.sampler is not None:  # a run trained on a Ray cluster can be evaluated locally
        overrides["sampler"] = args.sampler
        overrides |= {key: "" for spec in BACKENDS.values() for key in spec.options
                      if key in CONFIG_FIELDS}  # fmt: skip
    if args.ray_address is not None:
        overrides["ray_address"] = args.ray_address
    config = build_config({**state["config"], **overrides})
    run = restore_run(state, config, run_dir)
    if args.protocol == "metaworld":
        return protocol_evaluation(args, run, path, state["iteration"] + 1)
    film, render_env = None, None
    try:
        pool = run.pools.test if args.tasks == "test" else run.pools.train
        tasks = list(pool[: args.n_tasks] if args.n_tasks else pool)
        if args.video or args.sheet:
            render_env, video_tasks, video_steps, cell = open_video(args, run, pool)
        curve = run.learner.meta_test(
            tasks,
            adapt_steps=args.adapt_steps,
            episodes_per_task=args.episodes or config.episodes_per_task,
            batch_key=("evaluate", args.seed),
        )
        unit, column = UNIT_NAMES[run.learner.adaptation_unit]
        if render_env is not None:
            film = shoot_film(args, run, render_env, video_tasks, video_steps, cell)
    finally:
        run.sampler.close()
        if render_env is not None:
            render_env.close()
    meta = {
        "run_dir": str(run_dir),
        "checkpoint": str(path),
        "iteration": state["iteration"] + 1,
        "env": config.env,
        "algo": config.algo,
        "tasks": args.tasks,
        "unit": unit,
    }
    name = f"{args.tasks}_iter{state['iteration'] + 1:06d}_steps{args.adapt_steps}"
    print(
        f"{config.algo} on {config.env}, checkpoint {path} (iteration {meta['iteration']}), "
        f"{len(tasks)} {args.tasks} tasks"
    )
    per_task, groups = curve.returns, task_groups(tasks) if curve.infos else {}
    infos = info_columns(curve.infos, groups)
    print(format_table(summarise(per_task), unit=column, keys=tuple(curve.infos), infos=infos))
    for key in curve.infos:
        for group, idx in groups.items():
            values = " ".join(f"{value:.2f}" for value in infos[f"{key}_mean/{group}"])
            print(f"  {key}, group {group} ({len(idx)} tasks): {values}")
    meta["task_params"] = [task_as_json(task) for task in tasks]
    meta["by_distinct_task"] = by_distinct_task(tasks, per_task)
    for group in meta["by_distinct_task"]:
        text = " ".join(f"{value:.2f}" for value in group["mean"])
        print(f"  {group['task']} ({group['n_tasks']} tasks): {text}")
    meta["balanced_mean"] = balanced_curve(meta["by_distinct_task"])
    if meta["balanced_mean"]:
        text = " ".join(f"{value:.2f}" for value in meta["balanced_mean"])
        print(f"  each distinct task weighted equally: {text}")
    for written in write_outputs(run_dir / "eval", name, curve, meta, groups):
        print(f"wrote {written}")
    if film is not None:
        film_name = f"{args.tasks}_iter{meta['iteration']:06d}_steps{video_steps}"
        written = write_film(film, run_dir / "eval", film_name, sheet_only=not args.video)
        for path in written:
            print(f"wrote {path}")
        if args.video:
            tag = f"video/{args.tasks}_adaptation"
            gif = next(path for path in written if path.suffix == ".gif")
            log_film(run_dir, tag, film, gif.read_bytes(), meta["iteration"])
            print(f"wrote TensorBoard images {tag} (animated) and {tag}_final to {run_dir}")
    return 0


def protocol_evaluation(args: argparse.Namespace, run, path: Path, iteration: int) -> int:
    """``--protocol metaworld``: Meta-World's meta-test (:mod:`metarl.metaworld_protocol`)."""
    from metarl.metaworld_protocol import evaluate_run

    for flag in ("protocol_evals", "protocol_envs", "protocol_eval_episodes", "adapt_steps"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    try:
        evaluate_run(
            run, checkpoint=str(path), iteration=iteration, out_dir=Path(args.run_dir) / "eval",
            n_envs=args.protocol_envs, tasks_per_env=2, num_evals=args.protocol_evals,
            adaptation_steps=args.adapt_steps,
            adaptation_episodes=args.episodes or run.config.episodes_per_task,
            evaluation_episodes=args.protocol_eval_episodes, seed=args.seed,
        )  # fmt: skip
    finally:
        run.sampler.close()
    return 0


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    return run_command(lambda: evaluate(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
