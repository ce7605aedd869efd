"""``python -m metarl.evaluate RUN_DIR``: meta-test a trained run on held-out tasks.

Loads the latest checkpoint of the run (or ``--checkpoint best`` / a path, or a slim
checkpoint of ``metarl export``), adapts on each task of the family's benchmark test
pool (:func:`metarl.envs.base.benchmark_pool`: the same tasks for every algorithm, pool
size and seed; ``--tasks test`` or ``train`` for the run's own pools), and writes into
the run directory (file names: :mod:`metarl.eval_output`):

* ``eval/<name>.csv`` and ``eval/<name>.json``: return per adaptation step,
  mean and standard deviation over tasks, plus every task's own returns (the
  JSON also names each task, and for a pool that repeats tasks, such as
  halfcheetah-dir's draws of two directions, the mean curve of each distinct
  task: a meta-policy that adapts well to one task and poorly to another shows
  there, not in the overall mean), and the mean of those curves with each
  distinct task weighted equally (a pool of 8 backward and 12 forward draws
  then reads as the balanced family it samples from); the JSON also records the
  command, the metarl version and every argument;
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

An evaluation is never overwritten: its name holds every argument that changes its
numbers, and when its files exist already the command prints one line naming them
and exits with code 0 without evaluating (the result asked for is there; ``--force``
evaluates again and replaces them). A film is checked the same way, on its own.
Bad flags are one line on stderr and exit code 2, before anything is written.

What a unit of adaptation is comes from the learner (its ``adaptation_unit``):
for MAML a policy-gradient step, for RL2 an episode of the trial. On the benchmark
pool every learner averages the same ``E`` episodes per task per unit (``E``: the run's
``episodes_per_task`` or ``--episodes``): a step learner samples ``E`` episodes per step,
an episode learner (RL2, PEARL) runs ``E`` trials of ``--adapt-steps + 1`` episodes, so
each task gets ``E * (adapt_steps + 1)`` evaluation episodes whatever the algorithm. On
the run's own pools an episode learner keeps its older budget, ``E // (adapt_steps + 1)``
trials (at least one).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from metarl import registry
from metarl.algos.base import AdaptationCurve, ShowsAdaptation, extension
from metarl.checkpoint import CheckpointError, load_checkpoint, newest_evaluable
from metarl.cli import OneLineErrorParser, add_run_and_checkpoint, run_command
from metarl.config import restore_device, run_keys
from metarl.configure import restored_config
from metarl.envs.base import task_groups
from metarl.eval_output import (
    balanced_curve,
    by_distinct_task,
    eval_stem,
    existing,
    exists_line,
    format_table,
    info_columns,
    metarl_paths,
    provenance,
    summarise,
    task_as_json,
    write_outputs,
)
from metarl.options import ConfigError
from metarl.sampling.backends import BACKENDS
from metarl.video.film import Film
from metarl.video.layout import parse_size, task_label
from metarl.video.output import log_film, write_film
from metarl.video.playback import shoot
from metarl.video.render_env import open_render_env, require_extra
from metarl.video.tasks import check_task_ids, spread_tasks

__all__ = [  # what scripts and tests import from here (the writers live in eval_output)
    "balanced_curve", "build_parser", "by_distinct_task", "checkpoint_path", "evaluate",
    "info_columns", "main", "summarise", "task_as_json", "write_outputs",
]  # fmt: skip

PROG = "python -m metarl.evaluate"
UNIT_NAMES = {"step": ("adaptation step", "step"), "episode": ("episode", "ep")}
"""A learner's adaptation unit -> its name in the JSON and plot, and the table's column."""
POOLS = ("benchmark", "test", "train")
"""The pools ``--tasks`` names: the family's benchmark test pool, the run's own two."""
DEFAULT_SEED = 12345
DEFAULT_CELL = "128"
ADAPT_STEPS = {"metarl": 3, "metaworld": 1}
"""``--adapt-steps`` left out, per ``--protocol`` (Meta-World's ``adaptation_steps`` default)."""
PROTOCOL_DEFAULTS = {"protocol_evals": 10, "protocol_envs": 20, "protocol_eval_episodes": 3,
                     "protocol_tasks_per_class": 40}  # fmt: skip
"""Meta-World's protocol flags -> their defaults: metalearning_evaluation's num_evals and
evaluation_episodes, make_ml_envs's meta_batch_size (tests/test_metaworld_protocol.py reads
them from Meta-World's signatures), and 40 test tasks per class (Meta-World's own None, all
50, cannot be split over 20 sub-envs; 40 is what the Meta-World 3 baselines of
rainx0r/metaworld-algorithms use)."""
PROTOCOL_ARGUMENTS = {"protocol_evals": "num_evals", "protocol_envs": "meta_batch_size",
                      "protocol_eval_episodes": "evaluation_episodes",
                      "protocol_tasks_per_class": "total_tasks_per_cls"}  # fmt: skip
"""Meta-World's protocol flags -> the argument of Meta-World's they set."""
PROTOCOL_PARTS = {"protocol_evals": "evals", "protocol_envs": "envs",
                  "protocol_eval_episodes": "evep", "protocol_tasks_per_class": "tpc"}  # fmt: skip
"""Meta-World's protocol flags -> their part of the file name, when not the default."""


# -- flags ----------------------------------------------------------------------------------


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an int ``>= minimum``; anything else is a one-line usage error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below the minimum {minimum}")
        return value

    return parse


def cell_size(text: str) -> tuple[int, int]:
    """An argparse type: ``WxH`` or ``N`` pixels -> ``(height, width)`` (:func:`parse_size`)."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class EvaluateParser(OneLineErrorParser):
    """evaluate's parser: ``--adapt-steps`` left out takes its ``--protocol``'s default."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed, extra = super().parse_known_args(args, namespace)
        if getattr(parsed, "adapt_steps", 0) is None:
            parsed.adapt_steps = ADAPT_STEPS[parsed.protocol]
        return parsed, extra


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = EvaluateParser(
        prog=prog,
        description="Meta-test a run: adapt on held-out tasks, print and save the returns.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_run_and_checkpoint(parser)
    parser.add_argument(
        "--adapt-steps",
        type=at_least(0),
        default=None,
        help="adaptation steps (RL2: episodes - 1); default 3, with --protocol metaworld "
        "Meta-World's adaptation_steps (1)",
    )
    parser.add_argument(
        "--tasks",
        choices=POOLS,
        default="benchmark",
        help="task pool: the family's fixed benchmark test pool, or the run's own test or "
        "train pool",
    )
    parser.add_argument(
        "--n-tasks", type=at_least(0), default=0, help="first N tasks of the pool; 0 = all"
    )
    parser.add_argument(
        "--episodes",
        type=at_least(0),
        default=0,
        help="episodes per task per step; 0 = the run's value (--protocol metaworld: "
        "adaptation_episodes; 0 = what the learner was trained to adapt from: MAML-family "
        "the run's episodes_per_task (an inner step's data), RL2 its episodes per trial - 1 "
        "(the scored episode is then the last of a trained trial), PEARL its prior + "
        "posterior episodes per iteration (its encoder's context))",
    )
    parser.add_argument(
        "--workers", type=at_least(-1), default=-1, help="rollout workers (-1 = per core)"
    )
    parser.add_argument(
        "--sampler", choices=tuple(BACKENDS), help="rollout backend; default: the run's"
    )
    parser.add_argument(
        "--ray-address", help="with --sampler ray: the cluster to join; default: the run's"
    )
    parser.add_argument(
        "--seed", type=at_least(0), default=DEFAULT_SEED, help="seed of the evaluation rollouts"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="evaluate again and replace the files of the same evaluation, if written before",
    )
    protocol = parser.add_argument_group(
        "Meta-World's own protocol (needs metarl[metaworld])",
        "--protocol metaworld scores the run with metaworld.evaluation.metalearning_evaluation",
    )
    protocol.add_argument("--protocol", choices=("metarl", "metaworld"), default="metarl",
                          help="whose meta-test to run")  # fmt: skip
    protocol.add_argument("--protocol-evals", type=at_least(1),
                          default=PROTOCOL_DEFAULTS["protocol_evals"],
                          help="rounds of test tasks (Meta-World's num_evals)")  # fmt: skip
    protocol.add_argument("--protocol-envs", type=at_least(1),
                          default=PROTOCOL_DEFAULTS["protocol_envs"],
                          help="test sub-envs, make_ml_envs_test's meta_batch_size "
                          "(ML10/ML45: a multiple of 5)")  # fmt: skip
    protocol.add_argument("--protocol-eval-episodes", type=at_least(1),
                          default=PROTOCOL_DEFAULTS["protocol_eval_episodes"],
                          help="evaluation episodes scored per class per round: the first "
                          "to end (Meta-World's evaluation_episodes)")  # fmt: skip
    protocol.add_argument("--protocol-tasks-per-class", type=at_least(0),
                          default=PROTOCOL_DEFAULTS["protocol_tasks_per_class"],
                          help="test tasks per class split over the sub-envs "
                          "(total_tasks_per_cls; 0 = all 50)")  # fmt: skip
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
    which = video.add_mutually_exclusive_group()
    which.add_argument(
        "--video-tasks",
        type=at_least(1),
        metavar="N",
        help="N tasks of the pool that span the family (metarl.video.tasks.spread_tasks); "
        "default: the run's n_probe_tasks",
    )
    which.add_argument(
        "--video-task-ids",
        type=at_least(0),
        nargs="+",
        metavar="I",
        help="these tasks of the pool (0-based indices, each once), one row each, in this order",
    )
    video.add_argument(
        "--video-steps",
        type=at_least(0),
        metavar="K",
        help="adaptation steps (RL2: episodes - 1); default: --adapt-steps",
    )
    video.add_argument(
        "--video-size",
        type=cell_size,
        default=DEFAULT_CELL,
        metavar="WxH",
        help="cell size in pixels, WIDTHxHEIGHT or one number",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    return parser


def check_flags(args: argparse.Namespace) -> None:
    """Flags that do nothing in this combination: a ConfigError naming the flag."""
    filming = args.video or args.sheet
    film_flags = {
        "--video-tasks": args.video_tasks,
        "--video-task-ids": getattr(args, "video_task_ids", None),
        "--video-steps": args.video_steps,
    }
    for flag, given in film_flags.items():
        if given is not None and not filming:
            shown = " ".join(map(str, given)) if isinstance(given, list) else given
            raise ConfigError(f"{flag} {shown} needs --video or --sheet")
    if args.protocol != "metaworld":
        return
    ignored = {
        "--tasks train": args.tasks == "train",
        f"--n-tasks {args.n_tasks}": args.n_tasks != 0,
        "--video": args.video,
        "--sheet": args.sheet,
    }
    for flag, given in ignored.items():
        if given:
            raise ConfigError(
                f"{flag} does not apply to --protocol metaworld "
                "(it meta-tests on Meta-World's own test envs)"
            )
    if args.adapt_steps < 1:
        raise ConfigError(
            f"--adapt-steps: {args.adapt_steps} must be >= 1 with --protocol metaworld"
        )


def checkpoint_path(run_dir: Path, which: str) -> Path:
    """The checkpoint ``--checkpoint`` names: ``latest``, ``best``, a file, or a file's name
    in ``run_dir/checkpoints``; a CheckpointError naming the flag if there is none."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise CheckpointError(f"run directory {str(run_dir)!r} is not a directory")
    try:
        if which == "latest":
            return newest_evaluable(run_dir)
        if not run_dir.is_dir():
            raise CheckpointError(f"run directory {str(run_dir)!r} does not exist")
        if which == "best":
            best = run_dir / "checkpoints" / "best.pt"
            if not best.is_file():
                raise CheckpointError(
                    f"--checkpoint best: {str(best)!r} does not exist (the run has not "
                    "meta-tested yet: eval_every is 0 or larger than its iterations)"
                )
            return best
        for path in (Path(which), run_dir / "checkpoints" / which):
            if path.is_file():
                return path
    except PermissionError as exc:
        raise CheckpointError(f"run directory {str(run_dir)!r} is unreadable: {exc}") from exc
    raise CheckpointError(
        f"--checkpoint: {which!r} is not 'latest', 'best', a checkpoint file or the name of "
        f"one in {str(run_dir / 'checkpoints')!r}"
    )


def check_counts(args: argparse.Namespace, pool_size: int) -> None:
    """``--n-tasks`` and ``--video-tasks`` within the pool of ``pool_size`` tasks."""
    for flag, value in (("--n-tasks", args.n_tasks), ("--video-tasks", args.video_tasks)):
        if value is not None and value > pool_size:
            raise ConfigError(
                f"{flag}: {value} is more than the {pool_size} tasks of the {args.tasks} pool"
            )


# -- the run: the only calls into metarl.configure and metarl.run -----------------------------


def eval_config(state: dict, args: argparse.Namespace):
    """The checkpoint's config with the evaluation's system flags (workers, sampler); a
    run trained on CUDA runs on CPU where there is no CUDA (:func:`restore_device`)."""
    overrides = {"workers": args.workers, "seed": state["config"]["seed"],
                 "device": restore_device(state["config"].get("device", "auto"))}  # fmt: skip
    if args.sampler is not None:  # a run trained on a Ray cluster can be evaluated locally
        overrides["sampler"] = args.sampler
        overrides |= {key: "" for spec in BACKENDS.values() for key in spec.options
                      if key in run_keys()}  # fmt: skip
    if args.ray_address is not None:
        overrides["ray_address"] = args.ray_address
    return restored_config(state["config"], overrides)


def restore(state: dict, config, run_dir: Path):
    """The run of ``state`` built from ``config``: pools, sampler (close it), learner."""
    from metarl.run import restore_run

    return restore_run(state, config, run_dir)


def benchmark(config):
    """The family's benchmark test pool (:func:`metarl.run.benchmark_for`)."""
    from metarl.run import benchmark_for

    return benchmark_for(config)


def pool_size(config, pool: str) -> int:
    """How many tasks the pool ``pool`` (one of :data:`POOLS`) holds."""
    if pool == "benchmark":
        return len(benchmark(config).tasks)
    return config.test_pool_size if pool == "test" else config.train_pool_size


def pool_tasks(run, pool: str) -> list:
    """The tasks of the pool ``pool`` of ``run``, in their fixed order."""
    if pool == "benchmark":
        return list(benchmark(run.config).tasks)
    return list(run.pools.test if pool == "test" else run.pools.train)


def pool_record(config, pool: str, n_tasks: int) -> dict:
    """What the JSON records of the pool: its name and size, and for the benchmark pool
    its version and seed (:meth:`~metarl.envs.base.BenchmarkPool.record`)."""
    if pool == "benchmark":
        return {"name": pool, **benchmark(config).record(), "evaluated": n_tasks}
    return {"name": pool, "size": pool_size(config, pool), "evaluated": n_tasks}


# -- names ----------------------------------------------------------------------------------


def episodes(args: argparse.Namespace, config) -> int:
    """Episodes per task per step: ``--episodes``, or the run's."""
    return args.episodes or config.episodes_per_task


def meta_test_episodes(args: argparse.Namespace, config, unit: str) -> int:
    """``episodes_per_task`` for ``meta_test``: :func:`episodes` for a step learner; on the
    benchmark pool, for an episode learner, that many trials of ``adapt_steps + 1``
    episodes (it reads the argument as episodes in all, ``// (adapt_steps + 1)`` trials),
    so every learner averages the same episodes per task per unit there."""
    if args.tasks == "benchmark" and unit == "episode":
        return episodes(args, config) * (args.adapt_steps + 1)
    return episodes(args, config)


def common_variants(args: argparse.Namespace, config) -> list[tuple[str, Any]]:
    """The name parts every evaluation shares: episodes per step and seed, when not default."""
    parts: list[tuple[str, Any]] = []
    if episodes(args, config) != config.episodes_per_task:
        parts.append(("ep", episodes(args, config)))
    if args.seed != DEFAULT_SEED:
        parts.append(("seed", args.seed))
    return parts


def eval_name(args: argparse.Namespace, config, iteration: int) -> str:
    """The name of this evaluation's files (:mod:`metarl.eval_output`)."""
    parts: list[tuple[str, Any]] = []
    if args.protocol == "metarl" and 0 < args.n_tasks < pool_size(config, args.tasks):
        parts.append(("n", args.n_tasks))
    if args.protocol == "metarl":
        parts += common_variants(args, config)
    else:  # its episodes default to the learner's trained value: named whenever given
        parts += [("ep", args.episodes)] if args.episodes else []
        parts += [("seed", args.seed)] if args.seed != DEFAULT_SEED else []
        parts += [(PROTOCOL_PARTS[flag], getattr(args, flag)) for flag, default
                  in PROTOCOL_DEFAULTS.items() if getattr(args, flag) != default]  # fmt: skip
    # Meta-World's protocol runs on the benchmark's own test envs, whatever --tasks says
    pool = "test" if args.protocol == "metaworld" else args.tasks
    return eval_stem(pool, iteration, args.adapt_steps, args.protocol, parts)


def film_settings(args: argparse.Namespace, config) -> tuple[int, int]:
    """How many tasks are filmed and the adaptation steps; ``--video-task-ids`` checked
    against the pool (each an index of it, none twice)."""
    if args.video_task_ids is not None:
        try:
            ids = check_task_ids(args.video_task_ids, pool_size(config, args.tasks))
        except ValueError as exc:
            raise ConfigError(f"--video-task-ids: {exc} of the {args.tasks} pool") from None
        return len(ids), args.adapt_steps if args.video_steps is None else args.video_steps
    n_tasks = config.n_probe_tasks if args.video_tasks is None else args.video_tasks
    n_tasks = min(n_tasks, pool_size(config, args.tasks))
    if n_tasks < 1:
        raise ConfigError(f"--video-tasks: the run's n_probe_tasks is {n_tasks}; pass N >= 1")
    return n_tasks, args.adapt_steps if args.video_steps is None else args.video_steps


def film_name(args: argparse.Namespace, config, iteration: int) -> str:
    """The name of this film's files: the default film's is ``<pool>_iter<N>_steps<K>``."""
    n_tasks, steps = film_settings(args, config)
    parts: list[tuple[str, Any]] = []
    if args.video_task_ids is not None:
        parts.append(("ids", "-".join(map(str, args.video_task_ids))))
    elif n_tasks != min(config.n_probe_tasks, pool_size(config, args.tasks)):
        parts.append(("n", n_tasks))
    parts += common_variants(args, config)
    if args.video_size != parse_size(DEFAULT_CELL):
        height, width = args.video_size
        parts.append(("px", f"{width}x{height}"))
    return eval_stem(args.tasks, iteration, steps, None, parts)


def film_main_file(args: argparse.Namespace, out_dir: Path, name: str) -> Path:
    """The file that says a film was written: the grid MP4, or the sheet with ``--sheet``."""
    return out_dir / (f"{name}_video_grid.mp4" if args.video else f"{name}_sheet.png")


# -- video ----------------------------------------------------------------------------------


def film_tasks(args: argparse.Namespace, config, pool: list) -> dict[int, Any]:
    """The filmed tasks, pool index -> task, one row each in this order: ``--video-task-ids``
    as given, or ``N`` tasks that span the family (:func:`spread_tasks`)."""
    n_tasks, _ = film_settings(args, config)
    return {i: pool[i] for i in args.video_task_ids or spread_tasks(pool, n_tasks)}


def open_video(args: argparse.Namespace, run, pool: list):
    """Everything a film needs, checked before the evaluation so a bad setup fails fast:
    the learner's support, the extra (unless ``--sheet`` alone) and a renderer.

    Returns ``(env, tasks, steps)``, ``tasks`` as :func:`film_tasks` gives them.
    """
    extension(run.learner, ShowsAdaptation, purpose="--video/--sheet")
    if args.video:
        require_extra()
    _, steps = film_settings(args, run.config)
    tasks = film_tasks(args, run.config, pool)
    env = open_render_env(
        run.config.env,
        horizon=run.horizon,
        env_kwargs=run.config.env_kwargs,
        cell=args.video_size,
        probe_task=next(iter(tasks.values())),
    )
    return env, tasks, steps


def shoot_film(args: argparse.Namespace, run, env, chosen: dict, steps: int) -> Film:
    """Render ``chosen`` (pool index -> task, :func:`film_tasks`) with the learner's adapted
    policies, adapted as the evaluation adapts (same episodes per task and batch key, so the
    same episodes for the same tasks); each row's title names the task and its pool index."""
    tasks = list(chosen.values())
    runs = extension(run.learner, ShowsAdaptation, purpose="--video").adapted_actors(
        tasks,
        adapt_steps=steps,
        episodes_per_task=episodes(args, run.config),
        batch_key=("evaluate", args.seed),
    )
    titles = [f"{args.tasks} task {i}: {task_label(task)}" for i, task in chosen.items()]
    return shoot(
        env,
        tasks,
        runs,
        unit=run.learner.adaptation_unit,
        horizon=run.horizon,
        seed=args.seed,
        cell=args.video_size,
        titles=titles,
    )


def write_video(args: argparse.Namespace, run_dir: Path, name: str, film: Film, iteration: int):
    """The film's files, and with ``--video`` its GIF in TensorBoard; prints what it wrote."""
    written = write_film(film, run_dir / "eval", name, sheet_only=not args.video)
    for path in written:
        print(f"wrote {path}")
    if args.video:
        tag = f"video/{args.tasks}_adaptation"
        gif = next(path for path in written if path.suffix == ".gif")
        log_film(run_dir, tag, film, gif.read_bytes(), iteration)
        print(f"wrote TensorBoard images {tag} (animated) and {tag}_final to {run_dir}")


# -- the command ----------------------------------------------------------------------------


def evaluate(args: argparse.Namespace, flags: list[str] | None = None) -> int:
    """The command: check, name, skip what exists, evaluate, write. Returns the exit code.

    ``flags``: the arguments parsed into ``args``, for the record (default ``sys.argv[1:]``).
    """
    flags = list(sys.argv[1:] if flags is None else flags)
    check_flags(args)
    run_dir = Path(args.run_dir)
    path = checkpoint_path(run_dir, args.checkpoint)
    state = load_checkpoint(path)
    config = eval_config(state, args)
    # the run's family first, so a missing one is named as this run's, not the pool's
    registry.resolve_recorded(config.env, config.family, owner=f"run {str(run_dir)!r}")
    check_counts(args, pool_size(config, args.tasks))
    iteration = state["iteration"] + 1
    record = provenance(vars(args), flags)
    if args.protocol == "metaworld":
        return protocol_evaluation(args, state, config, path, record)
    eval_paths = metarl_paths(run_dir / "eval", eval_name(args, config, iteration))
    found = existing(eval_paths)
    do_eval = args.force or not found
    if not do_eval:
        print(exists_line(next((p for p in found if p.suffix == ".json"), found[0])))
    do_film, film_stem = False, ""
    if args.video or args.sheet:
        film_stem = film_name(args, config, iteration)
        main_file = film_main_file(args, run_dir / "eval", film_stem)
        do_film = args.force or not main_file.exists()
        if not do_film:
            print(exists_line(main_file))
    if not (do_eval or do_film):
        return 0
    run = restore(state, config, run_dir)
    shot, render_env = None, None
    try:
        pool = pool_tasks(run, args.tasks)
        check_counts(args, len(pool))
        tasks = list(pool[: args.n_tasks] if args.n_tasks else pool)
        if do_film:
            render_env, film_tasks, film_steps = open_video(args, run, pool)
        if do_eval:
            curve = run.learner.meta_test(
                tasks,
                adapt_steps=args.adapt_steps,
                episodes_per_task=meta_test_episodes(args, config, run.learner.adaptation_unit),
                batch_key=("evaluate", args.seed),
            )
        unit, column = UNIT_NAMES[run.learner.adaptation_unit]
        if render_env is not None:
            shot = shoot_film(args, run, render_env, film_tasks, film_steps)
    finally:
        run.sampler.close()
        if render_env is not None:
            render_env.close()
    if do_eval:
        meta = {
            "run_dir": str(run_dir),
            "checkpoint": str(path),
            "iteration": iteration,
            "env": config.env,
            "algo": config.algo,
            "tasks": args.tasks,
            "pool": pool_record(config, args.tasks, len(tasks)),
            "unit": unit,
        }
        print(
            f"{config.algo} on {config.env}, checkpoint {path} (iteration {iteration}), "
            f"{len(tasks)} {args.tasks} tasks"
        )
        groups = report(tasks, curve, column, meta)
        meta |= {
            "protocol": "metarl",
            "adapt_steps": args.adapt_steps,
            "episodes_per_task": episodes(args, config),
            "meta_test_episodes": meta_test_episodes(args, config, run.learner.adaptation_unit),
            "seed": args.seed,
            **record,
        }
        for written in write_outputs(run_dir / "eval", eval_paths[0].stem, curve, meta, groups):
            print(f"wrote {written}")
    if shot is not None:
        write_video(args, run_dir, film_stem, shot, iteration)
    return 0


def report(tasks: list, curve: AdaptationCurve, column: str, meta: dict) -> dict:
    """Print the evaluation's table (``column``: the unit's header) and the curves of its
    task groups and distinct tasks, adding those to ``meta`` (the JSON's head).

    Returns the task groups (:func:`~metarl.envs.base.task_groups`) when there are infos.
    """
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
    return groups


def protocol_evaluation(args: argparse.Namespace, state: dict, config, path: Path,
                        record: dict) -> int:  # fmt: skip
    """``--protocol metaworld``: Meta-World's meta-test (:mod:`metarl.metaworld_protocol`)."""
    from metarl.metaworld_protocol import check_metaworld_family, evaluate_run
    from metarl.run import make_config_env

    env = make_config_env(config)  # refuse a non-Meta-World run before its workers start
    try:
        check_metaworld_family(env.unwrapped, config.env)
    finally:
        env.close()
    run_dir = Path(args.run_dir)
    iteration = state["iteration"] + 1
    out = run_dir / "eval" / f"{eval_name(args, config, iteration)}.json"
    if out.exists() and not args.force:
        print(exists_line(out))
        return 0
    run = restore(state, config, run_dir)
    try:
        made = evaluate_run(
            run, protocol_settings(args), checkpoint=str(path), iteration=iteration, path=out,
            seed=args.seed, extra={"protocol": "metaworld", "seed": args.seed, **record},
        )  # fmt: skip
        unit = run.learner.adaptation_unit
    finally:
        run.sampler.close()
    used = made["metaworld_calls"]["metaworld.evaluation.metalearning_evaluation"]["arguments"]
    steps = used["adaptation_steps"] * (1 if unit == "step" else used["adaptation_episodes"])
    # an episode learner (RL², PEARL) is meta-tested on one trial per task, as it trained;
    # without --episodes 1 evaluate would run episodes_per_task trials of it
    trial = "" if unit == "step" else " --episodes 1"
    print(
        f"metarl's own meta-test, on all {pool_size(config, 'benchmark')} tasks of the "
        f"benchmark's test set: python -m metarl.evaluate {run_dir} --adapt-steps {steps}{trial}"
    )
    return 0


def protocol_settings(args: argparse.Namespace):
    """What ``--protocol metaworld`` passes to Meta-World, from the flags (``--episodes`` 0:
    the learner's trained value), naming the flags that changed a default."""
    from metarl.metaworld_protocol import ProtocolSettings

    flags = {
        PROTOCOL_ARGUMENTS[flag]: f"--{flag.replace('_', '-')} {getattr(args, flag)}"
        for flag, default in PROTOCOL_DEFAULTS.items()
        if getattr(args, flag) != default
    }
    if args.adapt_steps != ADAPT_STEPS["metaworld"]:
        flags["adaptation_steps"] = f"--adapt-steps {args.adapt_steps}"
    if args.episodes:
        flags["adaptation_episodes"] = f"--episodes {args.episodes}"
    return ProtocolSettings(
        num_evals=args.protocol_evals, adaptation_steps=args.adapt_steps,
        adaptation_episodes=args.episodes, evaluation_episodes=args.protocol_eval_episodes,
        n_envs=args.protocol_envs, tasks_per_class=args.protocol_tasks_per_class, flags=flags,
    )  # fmt: skip


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    flags = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(prog).parse_args(flags)
    return run_command(lambda: evaluate(args, flags), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
