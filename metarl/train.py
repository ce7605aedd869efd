"""``python -m metarl.train``: parse -> config -> build -> loop. No algorithm maths here.

Examples::

    python -m metarl.train --env halfcheetah-vel
    python -m metarl.train --config experiments/maml_trpo_halfcheetah_dir.yaml --seed 1
    python -m metarl.train --list-envs
    python -m metarl.train --resume runs/halfcheetah-vel-maml-trpo-20261122-101500

Exit codes:

* 0: done, or stopped cleanly by a first Ctrl-C / SIGTERM after writing a checkpoint;
* 1: the run failed and cannot go on (an env returned a non-finite observation or
  reward, a rollout worker died, ``max_consecutive_rejections`` non-finite updates
  in a row); the last checkpoint is intact and the message says how to resume;
* 2: bad input: an unknown env, algorithm or key, a bad value, a missing or invalid
  YAML file, a missing, corrupt or incompatible checkpoint for ``--resume``,
  ``--device cuda`` without CUDA. One line on stderr; ``--debug`` shows the traceback;
* 130 (143): a second Ctrl-C (SIGTERM) stopped the run at once; the last checkpoint
  is intact.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch

from metarl import registry
from metarl.checkpoint import (
    CheckpointError,
    capture_rng_states,
    load_latest,
    periodic_checkpoints,
    remove_stale_temporaries,
    restore_rng_states,
    save_best,
    save_checkpoint,
)
from metarl.config import (
    Config,
    ConfigError,
    add_config_arguments,
    build_config,
    config_overrides,
    load_yaml,
    save_config,
)
from metarl.envs.base import TaskPools, make_task_pools
from metarl.logger import RunLogger, return_tag
from metarl.sampling import SamplerError
from metarl.seeding import derive_rng, derive_seed


class _OneLineErrorParser(argparse.ArgumentParser):
    """Bad flags give one line (not the whole usage) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (python -m metarl.train --help lists the flags)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrorParser(
        prog="python -m metarl.train",
        description="Meta-train a policy on a task family (MAML-TRPO, MAML-PPO or RL2).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", help="YAML file of config keys (CLI flags override it)")
    parser.add_argument("--list-envs", action="store_true", help="list the task families and exit")
    parser.add_argument(
        "--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    add_config_arguments(parser)
    return parser


def format_family_table() -> str:
    specs = registry.list_families()
    rows = [("name", "gymnasium id", "varies", "horizon", "summary")]
    rows += [(s.name, s.gym_id, s.varies, str(s.horizon), s.summary) for s in specs]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4] for r in rows]
    return "\n".join(lines)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "config key 'device': 'cuda' was asked for but CUDA is not available; "
            "use --device cpu or --device auto"
        )
    return torch.device(name)


@dataclass
class Run:
    """Everything a training loop needs, built from a config."""

    config: Config
    run_dir: Path
    pools: TaskPools
    horizon: int
    sampler: object
    learner: object
    device: torch.device


def config_horizon(config: Config) -> int:
    """The episode length ``config`` runs at: its ``horizon``, or the family's default if 0."""
    return config.horizon or registry.resolve(config.env).horizon


def make_config_env(config: Config):
    """One env of ``config``'s family at :func:`config_horizon`, with its ``env_kwargs``.

    Bad ``env_kwargs`` are bad input: a :class:`ConfigError` that names the key.
    """
    try:
        return registry.make_env(config.env, horizon=config_horizon(config), **config.env_kwargs)
    except TypeError as exc:
        raise ConfigError(
            f"config key 'env_kwargs': {config.env_kwargs!r} is not accepted by "
            f"{config.env!r}: {_first_line(exc)}"
        ) from exc


def build_run(config: Config, run_dir: Path) -> Run:
    """Make the env pools, sampler, policy and learner for ``config`` (no training)."""
    from metarl.algos import build_learner, build_policy
    from metarl.sampling import make_sampler

    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    device = resolve_device(config.device)
    horizon = config_horizon(config)
    probe_env = make_config_env(config)
    try:
        pools = make_task_pools(
            probe_env,
            n_train=config.train_pool_size,
            n_test=config.test_pool_size,
            seed=derive_seed(config.seed, "task-pools"),
        )
        obs_dim = int(np.prod(probe_env.observation_space.shape))
        act_dim = int(np.prod(probe_env.action_space.shape))
    finally:
        probe_env.close()
    torch.manual_seed(derive_seed(config.seed, "policy-init"))
    policy = build_policy(config, obs_dim, act_dim).to(device)
    sampler = make_sampler(
        config.env,
        spec=policy.spec,
        seed=derive_seed(config.seed, "sampler"),
        workers=None if config.workers < 0 else config.workers,
        horizon=horizon,
        env_kwargs=config.env_kwargs,
        backend=config.sampler,
        ray_address=config.ray_address or None,
    )
    learner = build_learner(config, policy, sampler, device)
    return Run(config, run_dir, pools, horizon, sampler, learner, device)


def iteration_tasks(config: Config, pools: TaskPools, iteration: int) -> list:
    """The meta-batch of iteration ``iteration``: a function of (seed, iteration) alone."""
    rng = derive_rng(config.seed, "meta-batch", iteration)
    replace = config.meta_batch_size > len(pools.train)
    idx = rng.choice(len(pools.train), size=config.meta_batch_size, replace=replace)
    return [pools.train[i] for i in idx]


class StopRequest:
    """First Ctrl-C / SIGTERM: stop after this iteration. A second one: stop now.

    The second signal raises ``KeyboardInterrupt`` wherever the loop is; the
    checkpoint writes are atomic, so the last checkpoint stays intact.
    """

    def __init__(self) -> None:
        self.requested = False
        self.signum = 0

    def __enter__(self) -> StopRequest:
        self._old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in self._old:
            signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        second = self.requested
        self.requested, self.signum = True, signum
        if second:
            raise KeyboardInterrupt
        print(
            f"\n{signal.Signals(signum).name}: finishing this iteration, then writing a "
            "checkpoint (Ctrl-C again to stop at once).",
            file=sys.stderr,
            flush=True,
        )

    def __exit__(self, *exc) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)


class RunFailure(RuntimeError):
    """The run cannot go on (not bad input): exit code 1, the last checkpoint intact.

    ``hint`` says which checkpoint is intact and how to resume from it.
    """

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


REJECTED_SUFFIX = "/rejected_nonfinite"
"""A learner reports an update it rejected (non-finite loss or gradient, parameters
left as they were) with a scalar ``<namespace>/rejected_nonfinite`` > 0."""


@dataclass
class Progress:
    """The loop's counters; saved in every checkpoint so a resumed run continues them."""

    next_iteration: int = 0
    env_steps: int = 0
    best_test_return: float = float("-inf")
    rejected_total: int = 0
    rejected_in_a_row: int = 0

    def count_update(self, rejected: bool) -> None:
        self.rejected_total += int(rejected)
        self.rejected_in_a_row = self.rejected_in_a_row + 1 if rejected else 0


def meta_test(run: Run, logger: RunLogger, iteration: int) -> float:
    """Adapt on every held-out task; log ``test/`` means and the probe tasks' own curves."""
    cfg = run.config
    per_task = run.learner.meta_test(
        list(run.pools.test),
        adapt_steps=cfg.eval_adapt_steps,
        episodes_per_task=cfg.episodes_per_task,
        batch_key=("test", iteration),
    )  # [K + 1, T]
    unit = run.learner.adaptation_unit
    scalars = {return_tag("test", k, unit): float(per_task[k].mean()) for k in range(len(per_task))}
    for i in range(min(cfg.n_probe_tasks, per_task.shape[1])):
        for k in range(per_task.shape[0]):
            scalars[return_tag(f"probe/task_{i}", k, unit)] = float(per_task[k, i])
    logger.scalars(scalars, iteration)
    return float(per_task[-1].mean())


def checkpoint_state(run: Run, progress: Progress, iteration: int) -> dict:
    """What a checkpoint holds (see :mod:`metarl.checkpoint` for why this is everything)."""
    return {
        "iteration": iteration,
        "env_steps": progress.env_steps,
        "best_test_return": progress.best_test_return,
        "counters": {
            "rejected_total": progress.rejected_total,
            "rejected_in_a_row": progress.rejected_in_a_row,
        },
        "config": run.config.to_dict(),
        "learner": run.learner.state_dict(),
        "rng": capture_rng_states(),
    }


def progress_from_checkpoint(state: dict) -> Progress:
    counters = state.get("counters", {})
    return Progress(
        next_iteration=state["iteration"] + 1,
        env_steps=state["env_steps"],
        best_test_return=state.get("best_test_return", float("-inf")),
        rejected_total=counters.get("rejected_total", 0),
        rejected_in_a_row=counters.get("rejected_in_a_row", 0),
    )


def train_step(run: Run, logger: RunLogger, progress: Progress, iteration: int) -> None:
    """One meta-iteration: train, count a rejected update, log, print the progress line."""
    start = time.perf_counter()
    tasks = iteration_tasks(run.config, run.pools, iteration)
    result = run.learner.train_iteration(tasks, iteration)
    seconds = time.perf_counter() - start
    progress.env_steps += result.env_steps
    rejected = any(k.endswith(REJECTED_SUFFIX) and v > 0 for k, v in result.scalars.items())
    progress.count_update(rejected)
    unit = run.learner.adaptation_unit
    scalars = {return_tag("adapt", k, unit): r for k, r in enumerate(result.returns_per_step)}
    scalars.update(result.scalars)
    scalars.update({f"time/{k}": v for k, v in result.times.items()})
    scalars.update(
        {
            "time/iteration": seconds,
            "perf/env_steps": progress.env_steps,
            "perf/env_steps_per_s": result.env_steps / max(seconds, 1e-9),
            "update/rejected_nonfinite": progress.rejected_total,
        }
    )
    logger.scalars(scalars, iteration)
    print(_progress_line(iteration, run.config.iterations, progress, result, seconds), flush=True)
    if rejected:
        print(
            f"  update of iteration {iteration + 1} rejected: non-finite loss or gradient, "
            f"parameters unchanged ({progress.rejected_in_a_row} in a row, "
            f"{progress.rejected_total} in total)",
            file=sys.stderr,
            flush=True,
        )


def stop_if_rejecting(run: Run, progress: Progress, iteration: int) -> None:
    """Raise :class:`RunFailure` after ``max_consecutive_rejections`` rejected updates in a row."""
    limit = run.config.max_consecutive_rejections
    if progress.rejected_in_a_row < limit:
        return
    first = iteration + 2 - progress.rejected_in_a_row
    raise RunFailure(
        f"the updates of iterations {first}..{iteration + 1} ({limit} in a row, "
        f"max_consecutive_rejections) were all rejected because the loss or gradient was "
        "not finite; lower inner_lr / max_kl / ppo_lr or check the env's rewards",
        resume_hint(run.run_dir),
    )


def evaluate_step(run: Run, logger: RunLogger, progress: Progress, iteration: int) -> None:
    """Meta-test every ``eval_every`` iterations (and at the end); keep ``best.pt``."""
    cfg = run.config
    last = iteration == cfg.iterations - 1
    if not cfg.eval_every or not ((iteration + 1) % cfg.eval_every == 0 or last):
        return
    test_return = meta_test(run, logger, iteration)
    print(
        f"  meta-test on {len(run.pools.test)} held-out tasks: "
        f"return after {cfg.eval_adapt_steps} steps {test_return:.2f}",
        flush=True,
    )
    if test_return > progress.best_test_return:
        progress.best_test_return = test_return
        save_best(run.run_dir, checkpoint_state(run, progress, iteration))


def resume_hint(run_dir: Path) -> str:
    """Which checkpoint of ``run_dir`` is intact, and the command that resumes from it."""
    found = periodic_checkpoints(run_dir)
    if not found:
        return f"No checkpoint of {run_dir} was written yet; there is nothing to resume."
    return (
        f"The last checkpoint ({found[-1]}) is intact; resume with: "
        f"python -m metarl.train --resume {run_dir}"
    )


def train(run: Run, progress: Progress | None = None) -> int:
    """The training loop, from ``progress`` (a resumed run's counters). Returns the exit code.

    Raises :class:`RunFailure` when the run cannot go on: a sampler error (an env
    returned a non-finite value, a worker died) or too many rejected updates.
    """
    cfg = run.config
    progress = progress or Progress()
    # purge_step drops any events a killed run logged after its last checkpoint.
    logger = RunLogger(run.run_dir, purge_step=progress.next_iteration or None)
    logger.probe_layout(
        min(cfg.n_probe_tasks, cfg.test_pool_size),
        cfg.eval_adapt_steps,
        run.learner.adaptation_unit,
    )
    stop = StopRequest()
    try:
        with stop:
            for iteration in range(progress.next_iteration, cfg.iterations):
                train_step(run, logger, progress, iteration)
                stop_if_rejecting(run, progress, iteration)
                evaluate_step(run, logger, progress, iteration)
                logger.flush()
                progress.next_iteration = iteration + 1
                stopping = stop.requested  # read once: a signal from here on waits for the next
                last = iteration == cfg.iterations - 1
                if (iteration + 1) % cfg.checkpoint_every == 0 or last or stopping:
                    state = checkpoint_state(run, progress, iteration)
                    save_checkpoint(run.run_dir, state, keep=cfg.keep_checkpoints)
                if stopping and not last:
                    print(
                        f"Stopped after iteration {iteration + 1}. Resume with:\n"
                        f"  python -m metarl.train --resume {run.run_dir}",
                        flush=True,
                    )
                    return 0
    except KeyboardInterrupt:
        print(f"\nInterrupted. {resume_hint(run.run_dir)}", file=sys.stderr, flush=True)
        return 128 + (stop.signum or signal.SIGINT)
    except SamplerError as exc:
        message = _first_line(exc)
        if stop.requested:  # e.g. SIGTERM sent to the whole process group
            message += " (after a stop signal: it probably reached the rollout workers too)"
        raise RunFailure(message, resume_hint(run.run_dir)) from exc
    finally:
        logger.close()
        run.sampler.close()
    print(
        f"Done: {cfg.iterations} iterations, {progress.env_steps} env steps. "
        f"Run directory: {run.run_dir}"
    )
    return 0


def _first_line(exc: BaseException) -> str:
    """The message without the traceback text a worker error carries (``--debug`` shows it)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _progress_line(iteration: int, total: int, progress: Progress, result, seconds: float) -> str:
    returns = " -> ".join(f"{r:.1f}" for r in result.returns_per_step)
    kl = result.scalars.get("trpo/kl", result.scalars.get("ppo/approx_kl"))
    kl_text = f" | kl {kl:.4f}" if kl is not None else ""
    return (
        f"iter {iteration + 1}/{total} | steps {progress.env_steps} | return {returns}{kl_text} | "
        f"{seconds:.1f} s | {result.env_steps / max(seconds, 1e-9):.0f} steps/s"
    )


def new_run_dir(config: Config) -> Path:
    """The run directory of a new run (created by the caller once the run is built)."""
    name = config.run_name or (
        f"{config.env.replace('/', '_').replace(':', '_')}-{config.algo}-"
        f"{time.strftime('%Y%m%d-%H%M%S')}"
    )
    run_dir = Path(config.logdir) / name
    if (run_dir / "checkpoints").exists():
        raise ConfigError(
            f"config key 'run_name': run directory {str(run_dir)!r} already holds a "
            f"run; resume it with --resume {run_dir} or choose another name"
        )
    return run_dir


def start_run(config: Config) -> int:
    """Build a new run, then create its directory and train (bad input leaves no directory)."""
    registry.resolve(config.env)  # unknown names fail before anything is built
    run_dir = new_run_dir(config)
    run = build_run(config, run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")
    except BaseException:
        run.sampler.close()
        raise
    print(f"metarl: {config.algo} on {config.env}, run directory {run_dir}", flush=True)
    return train(run)


IDENTITY_KEYS = (
    "env",
    "env_kwargs",
    "algo",
    "hidden_sizes",
    "activation",
    "weight_init",
    "seed",
)
"""Config keys a resumed run may not change: they define what the checkpoint is of."""


def resumed_config(state: dict, run_dir: Path, overrides: dict) -> Config:
    """The checkpoint's config with ``overrides``; a CheckpointError if they change its identity."""
    saved = build_config(state["config"])
    config = build_config({**state["config"], **overrides})
    for key in IDENTITY_KEYS:
        if getattr(config, key) != getattr(saved, key):
            raise CheckpointError(
                f"checkpoint in {str(run_dir)!r} is of {key}={getattr(saved, key)!r}, "
                f"not {getattr(config, key)!r}; start a new run instead of --resume"
            )
    return config


def restore_run(state: dict, config: Config, run_dir: Path) -> Run:
    """:func:`build_run` of ``config`` with the checkpoint ``state``'s learner loaded into it.

    A :class:`CheckpointError` (the sampler closed) if the saved weights do not fit the
    policy ``config`` builds. Shared by ``--resume``, :mod:`metarl.evaluate` and scripts.
    """
    run = build_run(config, run_dir)
    try:
        run.learner.load_state_dict(state["learner"])
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        run.sampler.close()
        raise CheckpointError(
            f"checkpoint in {str(run_dir)!r} does not match the "
            f"{config.algo} policy on {config.env}: {_first_line(exc)}"
        ) from exc
    return run


def resume(run_dir: Path, overrides: dict | None = None) -> int:
    """Continue ``run_dir`` from its latest checkpoint; ``overrides`` may extend the budget etc."""
    state = load_latest(run_dir)
    config = resumed_config(state, run_dir, overrides or {})
    run = restore_run(state, config, run_dir)
    progress = progress_from_checkpoint(state)
    if progress.next_iteration >= config.iterations:
        run.sampler.close()
        print(
            f"{run_dir} has already run its {config.iterations} iterations; "
            "pass --iterations N (more) to train it further",
            flush=True,
        )
        return 0
    restore_rng_states(state.get("rng") or {"torch": state["torch_rng"]})
    remove_stale_temporaries(run_dir)
    save_config(config, run_dir / "config.yaml")
    print(
        f"Resuming {run_dir} at iteration {progress.next_iteration + 1}/{config.iterations}",
        flush=True,
    )
    return train(run, progress)


def main(argv: list[str] | None = None) -> int:
    """The CLI; returns the exit code (see the module docstring)."""
    args = build_parser().parse_args(argv)
    try:
        if args.list_envs:
            print(format_family_table())
            return 0
        base = load_yaml(args.config) if args.config else {}
        if args.resume:
            return resume(Path(args.resume), {**base, **config_overrides(args)})
        return start_run(build_config(config_overrides(args), base))
    except (ConfigError, registry.UnknownEnvError, CheckpointError) as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (RunFailure, SamplerError) as exc:
        if args.debug:
            raise
        print(f"error: {_first_line(exc)}", file=sys.stderr)
        if isinstance(exc, RunFailure):
            print(exc.hint, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nInterrupted before training started.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
