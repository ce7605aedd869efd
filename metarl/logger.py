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

from torch.utils.tensorboard import SummaryWriter


class RunLogger:
    """A thin layer over ``SummaryWriter``: scalars by dict, one flush per iteration."""

    def __init__(self, run_dir: Path, *, purge_step: int | None = None) -> None:
        # purge_step drops events at or after it, so a resumed run has no duplicate steps.
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, float(value), step)

    def probe_layout(self, n_probe_tasks: int, adapt_steps: int) -> None:
        """Group per-task curves: one chart per adaptation step, one curve per probe task."""
        if n_probe_tasks == 0:
            return
        by_step = {
            f"return after {k} adaptation step(s)": [
                "Multiline",
                [rf"probe/task_\d+/return_step_{k}$"],
            ]
            for k in range(adapt_steps + 1)
        }
        by_task = {
            f"task {i}: return by adaptation step": [
                "Multiline",
                [rf"probe/task_{i}/return_step_\d+$"],
            ]
            for i in range(n_probe_tasks)
        }
        self.writer.add_custom_scalars(
            {"probe tasks (per task)": by_step, "probe tasks (per step)": by_task}
        )

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
