"""The training loop: iterations, periodic meta-tests, checkpoints, signals and failures.

:func:`start_run` and :func:`resume` are what ``python -m metarl.train`` calls;
:func:`train` runs a built :class:`~metarl.run.Run` from a :class:`Progress`.
The loop speaks to the learner only through :class:`~metarl.algos.base.MetaLearner`.

What it prints goes through a display (:mod:`metarl.progress`): plain lines, one
``iter ...`` line per iteration, when stdout is not a terminal or with ``--quiet``;
on a terminal the same lines above a live status line (phase, env steps, seconds,
ETA).

Exit codes of :func:`train`: 0 done, or stopped cleanly by a first Ctrl-C /
SIGTERM after writing a checkpoint; 130 (143) when a second one stopped it at once.
It raises :class:`RunFailure` when the run cannot go on.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from metarl import registry
from metarl.algos.base import AdaptationCurve, IterationResult, attach_progress
from metarl.checkpoint import (
    capture_rng_states,
    load_latest,
    periodic_checkpoints,
    remove_stale_temporaries,
    restore_rng_states,
    save_best,
    save_checkpoint,
)
from metarl.config import Config, ConfigError, save_config
from metarl.logger import (
    RunLogger,
    WandbLog,
    adaptation_scalars,
    curve_scalars,
    import_wandb,
    info_scalars,
)
from metarl.progress import PLAIN, PlainDisplay, make_display, wants_live
from metarl.run import (
    Run,
    build_run,
    first_line,
    iteration_tasks,
    restore_run,
    resumed_config,
    run_dir_name,
)
from metarl.sampling import SamplerError

# A second signal this soon after the first is the same stop delivered twice: timeout(1) and
# batch schedulers signal the process and then its whole group, so the trainer hears one
# request twice within milliseconds. No person presses Ctrl-C twice that fast.
REPEAT_WINDOW_S = 0.5


class StopRequest:
    """First Ctrl-C / SIGTERM: stop after this iteration. A second one: stop now.

    The second signal raises ``KeyboardInterrupt`` wherever the loop is; the
    checkpoint writes are atomic, so the last checkpoint stays intact. One that
    comes within ``REPEAT_WINDOW_S`` of the first is the first one repeated, and
    is ignored. ``clock``: seconds, monotonic (a test's fake clock).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.requested = False
        self.signum = 0
        self._clock = clock
        self._first_at = 0.0

    def __enter__(self) -> StopRequest:
        self._old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in self._old:
            signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        if self.requested:
            if self._clock() - self._first_at < REPEAT_WINDOW_S:
                return
            raise KeyboardInterrupt
        self.requested, self.signum, self._first_at = True, signum, self._clock()
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


def meta_test(run: Run, logger: RunLogger, iteration: int) -> AdaptationCurve:
    """Adapt on every held-out task; log ``test/`` means (returns, then any per-episode
    infos, per task group too) and the probe tasks' own returns. Returns the curve."""
    cfg = run.config
    tasks = list(run.pools.test)
    curve = run.learner.meta_test(
        tasks,
        adapt_steps=cfg.eval_adapt_steps,
        episodes_per_task=cfg.episodes_per_task,
        batch_key=("test", iteration),
    )  # [K + 1, T] each
    unit = run.learner.adaptation_unit
    scalars = adaptation_scalars(curve.returns, unit, cfg.n_probe_tasks)
    scalars.update(info_scalars(curve.infos, unit, tasks))
    logger.scalars(scalars, iteration)
    return curve


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


def train_step(
    run: Run,
    logger: RunLogger,
    progress: Progress,
    iteration: int,
    display: PlainDisplay = PLAIN,
) -> None:
    """One meta-iteration: train, count a rejected update, log, print the progress line."""
    start = time.perf_counter()
    tasks = iteration_tasks(run.config, run.pools, iteration)
    result = run.learner.train_iteration(tasks, iteration)
    seconds = time.perf_counter() - start
    progress.env_steps += result.env_steps
    progress.count_update(result.rejected)
    unit = run.learner.adaptation_unit
    scalars = curve_scalars("adapt", {"return": result.returns_per_step}, unit)
    scalars.update(curve_scalars("adapt", result.infos_per_step, unit))
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
    display.print(progress_line(iteration, run.config.iterations, progress, result, seconds))
    if result.rejected:
        display.print(
            f"  update of iteration {iteration + 1} rejected: non-finite loss or gradient, "
            f"parameters unchanged ({progress.rejected_in_a_row} in a row, "
            f"{progress.rejected_total} in total)",
            err=True,
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


def evaluate_step(
    run: Run,
    logger: RunLogger,
    progress: Progress,
    iteration: int,
    display: PlainDisplay = PLAIN,
) -> None:
    """Meta-test every ``eval_every`` iterations (and at the end); keep ``best.pt``."""
    cfg = run.config
    last = iteration == cfg.iterations - 1
    if not cfg.eval_every or not ((iteration + 1) % cfg.eval_every == 0 or last):
        return
    display.phase("meta-testing")
    curve = meta_test(run, logger, iteration)
    test_return = float(curve.returns[-1].mean())
    infos = "".join(f", {key} {float(v[-1].mean()):.2f}" for key, v in curve.infos.items())
    display.print(
        f"  meta-test on {len(run.pools.test)} held-out tasks: "
        f"return after {cfg.eval_adapt_steps} steps {test_return:.2f}{infos}"
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


def train(
    run: Run,
    progress: Progress | None = None,
    *,
    live: bool = False,
    console=None,
    wandb_project: str | None = None,
) -> int:
    """The training loop, from ``progress`` (a resumed run's counters). Returns the exit code.

    ``live``: show the live status line (see :func:`metarl.progress.wants_live`);
    ``console``: the ``rich`` console it draws on (default stdout);
    ``wandb_project``: also log the scalars to this W&B project (:class:`WandbLog`).
    Raises :class:`RunFailure` when the run cannot go on: a sampler error (an env
    returned a non-finite value, a worker died) or too many rejected updates.
    """
    cfg = run.config
    progress = progress or Progress()
    wandb = None
    if wandb_project:
        resumed = progress.next_iteration > 0
        try:
            wandb = WandbLog(wandb_project, run.run_dir, cfg.to_dict(), resumed=resumed)
        except BaseException:
            run.sampler.close()
            raise
    # purge_step drops any events a killed run logged after its last checkpoint.
    logger = RunLogger(run.run_dir, purge_step=progress.next_iteration or None, wandb=wandb)
    logger.probe_layout(
        min(cfg.n_probe_tasks, cfg.test_pool_size),
        cfg.eval_adapt_steps,
        run.learner.adaptation_unit,
    )
    logger.config_text(cfg.to_dict(), progress.next_iteration)
    stop = StopRequest()
    display = make_display(cfg.iterations, live=live, console=console)
    attach_progress(run.learner, display)
    try:
        # The display closes (its status line erased) before an except clause prints.
        with stop, display:
            display.print(
                f"metarl: starting iteration {progress.next_iteration + 1}/{cfg.iterations}"
            )
            for iteration in range(progress.next_iteration, cfg.iterations):
                display.start_iteration(iteration)
                train_step(run, logger, progress, iteration, display)
                stop_if_rejecting(run, progress, iteration)
                evaluate_step(run, logger, progress, iteration, display)
                logger.flush()
                progress.next_iteration = iteration + 1
                stopping = stop.requested  # read once: a signal from here on waits for the next
                last = iteration == cfg.iterations - 1
                if (iteration + 1) % cfg.checkpoint_every == 0 or last or stopping:
                    display.phase("checkpointing")
                    state = checkpoint_state(run, progress, iteration)
                    save_checkpoint(run.run_dir, state, keep=cfg.keep_checkpoints)
                    logger.hparams(cfg.to_dict(), iteration, final=last)
                display.end_iteration()
                if stopping and not last:
                    display.print(
                        f"Stopped after iteration {iteration + 1}. Resume with:\n"
                        f"  python -m metarl.train --resume {run.run_dir}"
                    )
                    return 0
    except KeyboardInterrupt:
        print(f"\nInterrupted. {resume_hint(run.run_dir)}", file=sys.stderr, flush=True)
        return 128 + (stop.signum or signal.SIGINT)
    except SamplerError as exc:
        message = first_line(exc)
        if stop.requested:  # e.g. SIGTERM sent to the whole process group
            message += " (after a stop signal: it probably reached the rollout workers too)"
        raise RunFailure(message, resume_hint(run.run_dir)) from exc
    finally:
        attach_progress(run.learner)  # back to the no-op: the display is closed
        logger.close()
        run.sampler.close()
    print(
        f"Done: {cfg.iterations} iterations, {progress.env_steps} env steps. "
        f"Run directory: {run.run_dir}"
    )
    return 0


def progress_line(
    iteration: int, total: int, progress: Progress, result: IterationResult, seconds: float
) -> str:
    """The one line printed per iteration (scripts and tests read this exact format).

    A family with ``episode_info_keys`` adds `` | success 0.10 -> 0.35`` per key after the
    returns; without keys the line is as it always was.
    """
    returns = " -> ".join(f"{r:.1f}" for r in result.returns_per_step)
    infos = "".join(
        f" | {key} " + " -> ".join(f"{v:.2f}" for v in values)
        for key, values in result.infos_per_step.items()
    )
    kl_text = f" | kl {result.kl:.4f}" if result.kl is not None else ""
    return (
        f"iter {iteration + 1}/{total} | steps {progress.env_steps} | return {returns}{infos}"
        f"{kl_text} | {seconds:.1f} s | {result.env_steps / max(seconds, 1e-9):.0f} steps/s"
    )


def new_run_dir(config: Config) -> Path:
    """The run directory of a new run (created by the caller once the run is built)."""
    run_dir = run_dir_name(config, config.algo)
    blocked = next((p for p in (run_dir, *run_dir.parents) if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise ConfigError(
            f"config key 'logdir': {str(blocked)!r} is a file, so run directory "
            f"{str(run_dir)!r} cannot be made there; choose another --logdir"
        )
    if (run_dir / "checkpoints").exists():
        raise ConfigError(
            f"config key 'run_name': run directory {str(run_dir)!r} already holds a "
            f"run; resume it with --resume {run_dir} or choose another name"
        )
    return run_dir


def building_line(config: Config, *, cpu_count: int | None = None) -> str:
    """What is being built, printed first: starting workers and MuJoCo can take a minute.

    ``cpu_count``: what ``workers: -1`` means here (default: this machine's cores).
    """
    if config.workers == 0:
        workers = "sampling in-process"
    elif config.sampler == "ray":
        count = "" if config.workers < 0 else f"{config.workers} "
        workers = f"starting {count}rollout workers on Ray"
    else:
        n = config.workers if config.workers > 0 else cpu_count or os.cpu_count() or 1
        workers = f"starting {n} rollout worker{'s' if n != 1 else ''}"
    return f"metarl: {config.algo} on {config.env}: {workers}, building the policy..."


def start_run(
    config: Config,
    *,
    quiet: bool = False,
    wandb_project: str | None = None,
    run_dir: Path | None = None,
) -> int:
    """Build a new run, then create its directory and train (bad input leaves no directory).

    ``quiet``: plain lines only, even on a terminal (``--quiet``). ``wandb_project``:
    also log to W&B (``--wandb-project``; not a config key, as it changes no result).
    ``run_dir``: the run directory, as :func:`new_run_dir` gave it (default: made here).
    """
    # unknown names fail before anything is built; a copied config.yaml brings its family
    spec = registry.resolve_recorded(config.env, config.family, owner="the config")
    # the family's fixed constructor arguments (Meta-World's reward version) go on record,
    # and where the family came from, so that evaluate and --resume find it from the run
    config.env_kwargs = {**spec.kwargs, **config.env_kwargs}
    config.family = registry.family_record(spec)
    if wandb_project:
        import_wandb()  # not installed: one line, before anything is built
    run_dir = run_dir or new_run_dir(config)
    print(building_line(config), flush=True)
    run = build_run(config, run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")
    except BaseException:
        run.sampler.close()
        raise
    print(f"metarl: {config.algo} on {config.env}, run directory {run_dir}", flush=True)
    return train(run, live=wants_live(quiet), wandb_project=wandb_project)


def resume(
    run_dir: Path,
    overrides: dict | None = None,
    *,
    quiet: bool = False,
    wandb_project: str | None = None,
) -> int:
    """Continue ``run_dir`` from its latest checkpoint; ``overrides`` may extend the budget etc.

    ``quiet`` and ``wandb_project`` as in :func:`start_run`.
    """
    if wandb_project:
        import_wandb()
    state = load_latest(run_dir)
    config = resumed_config(state, run_dir, overrides or {})
    print(building_line(config), flush=True)
    run = restore_run(state, config, run_dir)
    if not config.family:  # a run from before families were recorded: record it from now on
        config.family = registry.family_record(registry.resolve(config.env))
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
    return train(run, progress, live=wants_live(quiet), wandb_project=wandb_project)
