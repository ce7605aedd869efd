"""TensorBoard logging with namespaced tags, and the per-task adaptation chart layout.

Tags: ``adapt/return_step_k`` (training meta-batch), ``test/return_step_k``
(held-out tasks), ``probe/task_i/return_step_k`` (one scalar per probe task),
``loss/...``, ``trpo/...``, ``ppo/...``, ``baseline/...``, ``time/...``,
``perf/...``. The custom-scalars layout groups the probe tasks so that, for
each adaptation step, every probe task is its own curve in one chart.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter


def return_tag(prefix: str, k: int, unit: str) -> str:
    """The tag of the return after the k-th unit of adaptation (k counts from 0).

    MAML (``unit="step"``): ``<prefix>/return_step_k``, k = 0 before adapting.
    RL2 (``unit="episode"``): ``<prefix>/return_episode_{k+1}``, the (k+1)-th episode of a trial.
    """
    if unit == "step":
        return f"{prefix}/return_step_{k}"
    if unit == "episode":
        return f"{prefix}/return_episode_{k + 1}"
    raise ValueError(f"unit must be 'step' or 'episode', got {unit!r}")


def adaptation_scalars(per_task: torch.Tensor, unit: str, n_probe_tasks: int) -> dict[str, float]:
    """A meta-test's tags: ``test/`` means over tasks and the first probe tasks' own values.

    Args:
        per_task: ``[K + 1, T]`` mean return of each task after each unit of adaptation.
        unit: ``"step"`` or ``"episode"`` (see :func:`return_tag`).
        n_probe_tasks: how many of the tasks, from the first, get ``probe/task_i/`` tags.
    """
    steps = range(per_task.shape[0])
    scalars = {return_tag("test", k, unit): float(per_task[k].mean()) for k in steps}
    for i in range(min(n_probe_tasks, per_task.shape[1])):
        for k in steps:
            scalars[return_tag(f"probe/task_{i}", k, unit)] = float(per_task[k, i])
    return scalars


class RunLogger:
    """A thin layer over ``SummaryWriter``: scalars by dict, one flush per iteration."""

    def __init__(self, run_dir: Path, *, purge_step: int | None = None) -> None:
        # purge_step drops events at or after it, so a resumed run has no duplicate steps.
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, float(value), step)

    def probe_layout(self, n_probe_tasks: int, adapt_steps: int, unit: str = "step") -> None:
        """Custom-scalars charts for the probe tasks (TensorBoard's *Custom Scalars* tab).

        One chart per adaptation step (or RL2 episode) with every probe task as its
        own curve, and one chart per probe task with a curve per step.
        """
        if n_probe_tasks == 0:
            return
        names = [return_tag("", k, unit).lstrip("/") for k in range(adapt_steps + 1)]
        each_task_a_curve = {name: ["Multiline", [rf"probe/task_\d+/{name}$"]] for name in names}
        each_step_a_curve = {
            f"task {i}": ["Multiline", [rf"probe/task_{i}/return_{unit}_\d+$"]]
            for i in range(n_probe_tasks)
        }
        self.writer.add_custom_scalars(
            {
                "probe tasks: one curve per task": each_task_a_curve,
                f"probe tasks: one curve per adaptation {unit}": each_step_a_curve,
            }
        )

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
