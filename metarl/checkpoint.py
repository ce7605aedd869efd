"""Checkpoints: atomic writes, the last K kept, the best by meta-test return.

A checkpoint is one ``torch.save`` dict, written by :mod:`metarl.loop`:

=====================  =========================================================
key                    what
=====================  =========================================================
``format_version``     :data:`FORMAT_VERSION`
``iteration``          the last finished iteration (0-based); resume starts after it
``env_steps``          env steps collected so far
``best_test_return``   the best meta-test return so far (``best.pt`` holds that policy)
``counters``           loop counters, e.g. rejected (non-finite) updates in total / in a row
``config``             the resolved config (a dict of every key)
``learner``            ``learner.state_dict()``: policy, optimiser (MAML-PPO's Adam), ...
``rng``                the global RNG states: torch (and CUDA), numpy, python ``random``
=====================  =========================================================

A *slim* checkpoint (``metarl export``, :func:`slim_checkpoint`) holds only what
``metarl evaluate`` and ``--video`` read: ``format_version``, ``slim: True``,
``iteration``, ``env_steps``, ``config`` and ``learner`` as the learner's slim state
(:func:`metarl.algos.base.slim_state`: no optimiser, replay buffer or RNG state).
It is named ``slim_iterNNNNNN.pt``, so ``latest`` never picks it, and ``--resume``
refuses it.

What needs no saved state: every random stream of training (each iteration's
meta-batch, the sampler's env reset seeds and action noise, the task pools) is
derived statelessly from ``(seed, iteration, task, episode, ...)`` by
:mod:`metarl.seeding`, so there is no task RNG or per-worker seed to save; and
the linear feature baseline is refit on every batch, so it has no state across
iterations. The global RNG states are saved anyway in case a plug-in env or
policy draws from them.

Each file is written to a temporary file in the same folder, fsynced and
renamed over the target (then the folder is fsynced), so a kill at any moment
leaves the previous checkpoint readable; a kill mid-write leaves only a stale
``.NAME.tmp-PID`` file, which :func:`remove_stale_temporaries` clears.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT_VERSION = 1
REQUIRED_KEYS = ("iteration", "env_steps", "config", "learner")
CONFIG_KEYS = ("env", "algo", "seed")
"""Config keys every checkpoint has saved: without them the run cannot be rebuilt."""
_PERIODIC = re.compile(r"^iter_(\d{6})\.pt$")
_SLIM = re.compile(r"^slim_iter(\d{6})\.pt$")
SLIM_KEYS = ("format_version", "slim", "iteration", "env_steps", "config", "learner")
"""Every key of a slim checkpoint."""
_TEMPORARY = re.compile(r"^\..+\.tmp-\d+$")


class CheckpointError(RuntimeError):
    """A missing, unreadable or incompatible checkpoint."""


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` via temp file + fsync + rename (crash-safe)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a write error or a second Ctrl-C: the target is untouched
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the half-written temporary files a killed run left; returns them."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if _TEMPORARY.match(p.name)]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def capture_rng_states() -> dict[str, Any]:
    """The global RNG states of this process (torch, CUDA when present, numpy, python)."""
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Set the global RNGs from :func:`capture_rng_states` (CUDA only where it exists)."""
    torch.set_rng_state(states["torch"])
    if "numpy" in states:  # absent from checkpoints written before it was saved
        np.random.set_state(states["numpy"])
    if "python" in states:
        random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        devices = min(len(states["cuda"]), torch.cuda.device_count())
        torch.cuda.set_rng_state_all(states["cuda"][:devices])


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def save_checkpoint(run_dir: Path, state: dict[str, Any], *, keep: int) -> Path:
    """Write ``iter_NNNNNN.pt`` for ``state['iteration']``; keep only the last ``keep``."""
    folder = checkpoint_dir(run_dir)
    path = folder / f"iter_{state['iteration']:06d}.pt"
    atomic_torch_save({"format_version": FORMAT_VERSION, **state}, path)
    for old in periodic_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def save_best(run_dir: Path, state: dict[str, Any]) -> Path:
    path = checkpoint_dir(run_dir) / "best.pt"
    atomic_torch_save({"format_version": FORMAT_VERSION, **state}, path)
    return path


def is_slim(state: dict[str, Any]) -> bool:
    """Whether a loaded checkpoint is a slim one (fit to evaluate, not to resume)."""
    return bool(state.get("slim", False))


def slim_checkpoint(state: dict[str, Any], learner_state: dict[str, Any]) -> dict[str, Any]:
    """The slim checkpoint of the full (or slim) checkpoint ``state``, with ``learner_state``
    (the learner's slim state) as its ``learner``: the keys :data:`SLIM_KEYS`, no others."""
    return {"format_version": FORMAT_VERSION, "slim": True, "iteration": state["iteration"],
            "env_steps": state["env_steps"], "config": state["config"],
            "learner": learner_state}  # fmt: skip


def slim_path(run_dir: Path, iteration: int) -> Path:
    """Where ``metarl export`` writes by default: ``RUN/checkpoints/slim_iterNNNNNN.pt``,
    numbered as the periodic checkpoint ``iter_NNNNNN.pt`` it comes from."""
    return checkpoint_dir(Path(run_dir)) / f"slim_iter{iteration:06d}.pt"


def _checkpoints_named(run_dir: Path, name: re.Pattern[str]) -> list[Path]:
    """The files of ``run_dir``'s checkpoint folder whose names match ``name``, oldest first
    (the names are zero-padded iteration numbers)."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if name.match(p.name))


def periodic_checkpoints(run_dir: Path) -> list[Path]:
    """The periodic checkpoints of a run, oldest first."""
    return _checkpoints_named(run_dir, _PERIODIC)


def slim_checkpoints(run_dir: Path) -> list[Path]:
    """The slim checkpoints ``metarl export`` wrote into a run, oldest first."""
    return _checkpoints_named(run_dir, _SLIM)


def newest_evaluable(run_dir: str | os.PathLike[str]) -> Path:
    """What ``evaluate`` reads by default: the newest periodic checkpoint, or, in a run that
    holds only slim ones (a committed result: the full file was too large to commit), the
    newest slim checkpoint."""
    run_dir = Path(run_dir)
    if run_dir.is_dir() and not periodic_checkpoints(run_dir):
        slim = slim_checkpoints(run_dir)
        if slim:
            return slim[-1]
    return latest_checkpoint(run_dir)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint file; a one-line :class:`CheckpointError` if it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt file
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(
            f"checkpoint {str(path)!r} is unreadable (corrupt?): {reason}"
        ) from exc
    version = state.get("format_version") if isinstance(state, dict) else None
    if _is_int(version) and version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is format v{version}, written by a newer metarl; "
            f"this one reads v{FORMAT_VERSION}: upgrade metarl to load it"
        )
    if version != FORMAT_VERSION or not _is_int(version):
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a metarl v{FORMAT_VERSION} checkpoint"
        )
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} is incomplete: it lacks {missing}")
    malformed = _malformed(state)
    if malformed:  # a hand-edited file: one line here, not a traceback deep in a command
        raise CheckpointError(f"checkpoint {str(path)!r} is malformed: {malformed}")
    return state


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _malformed(state: dict[str, Any]) -> str:
    """What is wrong with the required keys' values of a loaded checkpoint ("" if nothing):
    counts that are not ints >= 0, a config that lacks :data:`CONFIG_KEYS`, a learner
    state that is not a dict."""
    for key in ("iteration", "env_steps"):
        if not _is_int(state[key]) or state[key] < 0:
            return f"{key!r} is {state[key]!r}, not an int >= 0"
    config = state["config"]
    if not isinstance(config, dict):
        return f"'config' is a {type(config).__name__}, not a dict of config keys"
    lacking = [key for key in CONFIG_KEYS if key not in config]
    if lacking:
        return f"its config lacks {lacking}"
    if not isinstance(state["learner"], dict):
        return f"'learner' is a {type(state['learner']).__name__}, not a dict"
    return ""


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path:
    """The newest periodic checkpoint of ``run_dir``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        what = "is not a directory" if run_dir.exists() else "does not exist"
        raise CheckpointError(f"run directory {str(run_dir)!r} {what}")
    found = periodic_checkpoints(run_dir)
    if not found:
        raise CheckpointError(f"run directory {str(run_dir)!r} holds no checkpoint")
    return found[-1]


def load_latest(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Load the newest periodic checkpoint to resume from; if it is corrupt, say which
    older one exists.

    A corrupt newest checkpoint is an error, not a silent fall-back: with atomic
    writes it means the disk or a person changed the file. A full checkpoint must also
    hold the RNG states that resuming restores (``rng``, or ``torch_rng`` before it).
    """
    path = latest_checkpoint(run_dir)
    try:
        state = load_checkpoint(path)
        if not is_slim(state) and "rng" not in state and "torch_rng" not in state:
            raise CheckpointError(f"checkpoint {str(path)!r} is incomplete: it lacks ['rng']")
        return state
    except CheckpointError as exc:
        older = periodic_checkpoints(run_dir)[:-1]
        if not older:
            raise
        raise CheckpointError(
            f"{exc}; move it aside to resume from the older {older[-1].name}"
        ) from exc
