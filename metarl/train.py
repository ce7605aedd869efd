"""``python -m metarl.train``: parse -> config -> build -> loop. No algorithm maths here.

Examples::

    python -m metarl.train --env halfcheetah-vel
    python -m metarl.train --config experiments/maml_trpo_halfcheetah_dir.yaml --seed 1
    python -m metarl.train --list-envs
    python -m metarl.train --resume runs/halfcheetah-vel-maml-trpo-20261122-101500

Exit codes: 0 done (or stopped cleanly by Ctrl-C / SIGTERM after a checkpoint),
2 bad input (one line on stderr; ``--debug`` for the traceback), 130 a second Ctrl-C.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from metarl import registry
from metarl.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
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
from metarl.logger import RunLogger
from metarl.seeding import derive_rng, derive_seed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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


def build_run(config: Config, run_dir: Path) -> Run:
    """Make the env pools, sampler, policy and learner for ``config`` (no training)."""
    from metarl.algos import build_learner, build_policy
    from metarl.sampling import make_sampler

    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    device = resolve_device(config.device)
    family = registry.resolve(config.env)
    horizon = config.horizon or family.horizon
    probe_env = registry.make_env(config.env, horizon=horizon, **config.env_kwargs)
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
    """First Ctrl-C / SIGTERM: stop after this iteration. Second Ctrl-C: stop now."""

    def __init__(self) -> None:
        self.requested = False

    def __enter__(self) -> StopRequest:
        self._old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in self._old:
            signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        print(
            f"\n{signal.Signals(signum).name}: finishing this iteration, then writing a "
            "checkpoint (Ctrl-C again to stop at once).",
            file=sys.stderr,
            flush=True,
        )

    def __exit__(self, *exc) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)


def meta_test(run: Run, logger: RunLogger, iteration: int) -> float:
    """Adapt on every held-out task; log ``test/`` means and the probe tasks' own curves."""
    cfg = run.config
    per_task = run.learner.meta_test(
        list(run.pools.test),
        adapt_steps=cfg.eval_adapt_steps,
        episodes_per_task=cfg.episodes_per_task,
        batch_key=("test", iteration),
    )  # [K + 1, T]
    scalars = {f"test/return_step_{k}": float(per_task[k].mean()) for k in range(per_task.shape[0])}
    for i in range(min(cfg.n_probe_tasks, per_task.shape[1])):
        for k in range(per_task.shape[0]):
            scalars[f"probe/task_{i}/return_step_{k}"] = float(per_task[k, i])
    logger.scalars(scalars, iteration)
    return float(per_task[-1].mean())


def checkpoint_state(run: Run, iteration: int, env_steps: int, best: float) -> dict:
    return {
        "iteration": iteration,
        "env_steps": env_steps,
        "best_test_return": best,
        "config": run.config.to_dict(),
        "learner": run.learner.state_dict(),
        "torch_rng": torch.get_rng_state(),
    }


def train(
    run: Run, *, start_iteration: int = 0, env_steps: int = 0, best: float = float("-inf")
) -> int:
    """The training loop. Returns the process exit code."""
    cfg = run.config
    logger = RunLogger(run.run_dir, purge_step=start_iteration if start_iteration else None)
    logger.probe_layout(min(cfg.n_probe_tasks, cfg.test_pool_size), cfg.eval_adapt_steps)
    iteration = start_iteration - 1
    try:
        with StopRequest() as stop:
            for iteration in range(start_iteration, cfg.iterations):
                start = time.perf_counter()
                result = run.learner.train_iteration(
                    iteration_tasks(cfg, run.pools, iteration), iteration
                )
                seconds = time.perf_counter() - start
                env_steps += result.env_steps
                scalars = {
                    f"adapt/return_step_{k}": r for k, r in enumerate(result.returns_per_step)
                }
                scalars.update(result.scalars)
                scalars.update({f"time/{k}": v for k, v in result.times.items()})
                scalars.update(
                    {
                        "time/iteration": seconds,
                        "perf/env_steps": env_steps,
                        "perf/env_steps_per_s": result.env_steps / seconds,
                    }
                )
                logger.scalars(scalars, iteration)
                print(
                    _progress_line(iteration, cfg.iterations, env_steps, result, seconds),
                    flush=True,
                )
                last = iteration == cfg.iterations - 1
                if cfg.eval_every and ((iteration + 1) % cfg.eval_every == 0 or last):
                    test_return = meta_test(run, logger, iteration)
                    print(
                        f"  meta-test on {len(run.pools.test)} held-out tasks: "
                        f"return after {cfg.eval_adapt_steps} steps {test_return:.2f}",
                        flush=True,
                    )
                    if test_return > best:
                        best = test_return
                        save_best(run.run_dir, checkpoint_state(run, iteration, env_steps, best))
                logger.flush()
                if (iteration + 1) % cfg.checkpoint_every == 0 or last or stop.requested:
                    save_checkpoint(
                        run.run_dir,
                        checkpoint_state(run, iteration, env_steps, best),
                        keep=cfg.keep_checkpoints,
                    )
                if stop.requested and not last:
                    print(
                        f"Stopped after iteration {iteration + 1}. Resume with:\n"
                        f"  python -m metarl.train --resume {run.run_dir}",
                        flush=True,
                    )
                    return 0
    except KeyboardInterrupt:
        print(
            f"\nInterrupted. The last checkpoint in {run.run_dir / 'checkpoints'} is intact; "
            f"resume with: python -m metarl.train --resume {run.run_dir}",
            file=sys.stderr,
        )
        return 130
    finally:
        logger.close()
        run.sampler.close()
    print(f"Done: {cfg.iterations} iterations, {env_steps} env steps. Run directory: {run.run_dir}")
    return 0


def _progress_line(iteration: int, total: int, env_steps: int, result, seconds: float) -> str:
    returns = " -> ".join(f"{r:.1f}" for r in result.returns_per_step)
    kl = result.scalars.get("trpo/kl", result.scalars.get("ppo/approx_kl"))
    kl_text = f" | kl {kl:.4f}" if kl is not None else ""
    return (
        f"iter {iteration + 1}/{total} | steps {env_steps} | return {returns}{kl_text} | "
        f"{seconds:.1f} s | {result.env_steps / seconds:.0f} steps/s"
    )


def new_run_dir(config: Config) -> Path:
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
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


IDENTITY_KEYS = ("env", "algo", "hidden_sizes", "activation", "seed")


def resume(run_dir: Path, overrides: dict | None = None) -> int:
    """Continue ``run_dir`` from its latest checkpoint; ``overrides`` may extend the budget etc."""
    state = load_checkpoint(latest_checkpoint(run_dir))
    saved = build_config(state["config"])
    config = build_config({**state["config"], **(overrides or {})})
    for key in IDENTITY_KEYS:
        if getattr(config, key) != getattr(saved, key):
            raise CheckpointError(
                f"checkpoint in {str(run_dir)!r} is of {key}={getattr(saved, key)!r}, "
                f"not {getattr(config, key)!r}; start a new run instead of --resume"
            )
    run = build_run(config, run_dir)
    try:
        run.learner.load_state_dict(state["learner"])
    except (RuntimeError, KeyError, ValueError) as exc:
        run.sampler.close()
        raise CheckpointError(
            f"checkpoint in {str(run_dir)!r} does not match the "
            f"{config.algo} policy on {config.env}: {exc}"
        ) from exc
    torch.set_rng_state(state["torch_rng"])
    save_config(config, run_dir / "config.yaml")
    start = state["iteration"] + 1
    print(f"Resuming {run_dir} at iteration {start + 1}/{config.iterations}", flush=True)
    return train(
        run, start_iteration=start, env_steps=state["env_steps"], best=state["best_test_return"]
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.list_envs:
            print(format_family_table())
            return 0
        if args.resume:
            return resume(Path(args.resume), config_overrides(args))
        base = load_yaml(args.config) if args.config else {}
        config = build_config(config_overrides(args), base)
        registry.resolve(config.env)  # unknown names fail before anything is built
        run_dir = new_run_dir(config)
        save_config(config, run_dir / "config.yaml")
        print(f"metarl: {config.algo} on {config.env}, run directory {run_dir}", flush=True)
        return train(build_run(config, run_dir))
    except (ConfigError, registry.UnknownEnvError, CheckpointError) as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
