"""Checkpoints: atomic writes, the last K kept, the best by meta-test return.

A checkpoint is one ``torch.save`` dict (see :func:`save_checkpoint`). It is
written to a temporary file in the same folder, fsynced and renamed over the
target, so a kill at any moment leaves the previous checkpoint readable.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 1
_PERIODIC = re.compile(r"^iter_(\d{6})\.pt$")


class CheckpointError(RuntimeError):
    """A missing, unreadable or incompatible checkpoint."""


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` via temp file + fsync + rename (crash-safe)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


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


def periodic_checkpoints(run_dir: Path) -> list[Path]:
    """The periodic checkpoints of a run, oldest first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _PERIODIC.match(p.name))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint file; clear errors when it is missing or corrupt."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise CheckpointError(f"checkpoint {str(path)!r} is unreadable (corrupt?): {exc}") from exc
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a metarl v{FORMAT_VERSION} checkpoint"
        )
    return state


def latest_checkpoint(run_dir: Path) -> Path:
    """The newest periodic checkpoint of ``run_dir``."""
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {str(run_dir)!r} does not exist")
    found = periodic_checkpoints(run_dir)
    if not found:
        raise CheckpointError(f"run directory {str(run_dir)!r} holds no checkpoint")
    return found[-1]
