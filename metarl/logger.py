"""TensorBoard logging with namespaced tags, and the per-task adaptation chart layout.

Tags: ``adapt/return_step_k`` (training meta-batch), ``test/return_step_k``
(held-out tasks), ``probe/task_i/return_step_k`` (one scalar per probe task),
``loss/...``, ``trpo/...``, ``ppo/...``, ``baseline/...``, ``time/...``,
``perf/...``. A family with ``episode_info_keys`` adds ``adapt/<key>_step_k`` and
``test/<key>_step_k`` (``success``: the fraction of episodes that succeeded), and,
for tasks with a ``group``, ``test/<key>_step_k/<group>``. The custom-scalars
layout groups the probe tasks so that, for each adaptation step, every probe task
is its own curve in one chart.

The same scalars go to ``progress.csv`` in the run directory (:class:`CsvLog`),
one row per step, for those who plot with pandas as from garage or rllab, and,
opt-in, to Weights & Biases (:class:`WandbLog`, ``--wandb-project``).

A run also logs its resolved config as a Markdown table under the text tag
``config`` (TensorBoard's *Text* tab) when it starts or resumes, and its
hyperparameters with its meta-test metrics to the *HParams* tab
(:meth:`RunLogger.hparams`), in its own event files, so one run is one row there.
"""

from __future__ import annotations

import csv
import io
import json
import numbers
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.tensorboard import SummaryWriter

from metarl.envs.base import task_groups
from metarl.options import ConfigError


def metric_tag(prefix: str, metric: str, k: int, unit: str) -> str:
    """The tag of ``metric`` (``return``, ``success``...) after the k-th unit of adaptation.

    MAML (``unit="step"``): ``<prefix>/<metric>_step_k``, k = 0 before adapting.
    RL2 (``unit="episode"``): ``<prefix>/<metric>_episode_{k+1}``, the (k+1)-th episode
    of a trial.
    """
    if unit == "step":
        return f"{prefix}/{metric}_step_{k}"
    if unit == "episode":
        return f"{prefix}/{metric}_episode_{k + 1}"
    raise ValueError(f"unit must be 'step' or 'episode', got {unit!r}")


def return_tag(prefix: str, k: int, unit: str) -> str:
    """The tag of the return after the k-th unit of adaptation (see :func:`metric_tag`)."""
    return metric_tag(prefix, "return", k, unit)


def curve_scalars(prefix: str, curves: Mapping[str, Sequence[float]], unit: str) -> dict:
    """``<prefix>/<metric>_step_k`` for each metric's value after k = 0..K units.

    Args:
        curves: metric -> ``[K + 1]`` values, e.g. an iteration's ``infos_per_step``.
    """
    return {
        metric_tag(prefix, metric, k, unit): float(value)
        for metric, values in curves.items()
        for k, value in enumerate(values)
    }


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


def info_scalars(infos: Mapping[str, torch.Tensor], unit: str, tasks: Sequence) -> dict:
    """A meta-test's per-episode info tags: ``test/<key>_step_k``, the mean over tasks,
    and, when every task has a string ``group``, ``test/<key>_step_k/<group>``, the mean
    over that group's tasks (Meta-World ML10/ML45: one per environment).

    Args:
        infos: key -> ``[K + 1, T]``, as :class:`~metarl.algos.base.AdaptationCurve` holds.
        unit: ``"step"`` or ``"episode"`` (see :func:`metric_tag`).
        tasks: the ``T`` tasks, in the order of the columns.
    """
    groups = task_groups(tasks)
    scalars: dict[str, float] = {}
    for key, per_task in infos.items():
        for k in range(per_task.shape[0]):
            tag = metric_tag("test", key, k, unit)
            scalars[tag] = float(per_task[k].mean())
            for group, columns in groups.items():
                scalars[f"{tag}/{group}"] = float(per_task[k, columns].mean())
    return scalars


HPARAM_METRIC = re.compile(r"test/[^/]+_(step|episode)_\d+")
"""The tags the HParams tab shows as metrics: a meta-test's mean after each unit of
adaptation (``test/return_step_k``, ``test/success_episode_k``...), not per group or probe."""


def hparam_value(value: Any) -> float | int | str:
    """A config value as an HParams value: a number as it is, anything else as text (a
    bool ``True``, a list ``[100, 100]``, a dict as JSON, None ``None``), so every key
    can be listed and filtered."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return value
    if isinstance(value, (list, tuple)):
        return str(list(value))
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def run_hparams(
    config: Mapping[str, Any], last: Mapping[str, float]
) -> tuple[dict[str, float | int | str], dict[str, float]]:
    """The HParams record of a run: its hyperparameters and its metrics.

    Args:
        config: the resolved config, key -> value (``Config.to_dict()``).
        last: tag -> the last value logged (:meth:`CsvLog.last_values`).
    Returns:
        ``(hparams, metrics)``: every config key with :func:`hparam_value` of its value,
        and each :data:`HPARAM_METRIC` tag of ``last`` with its value, in ``last``'s order.
    """
    hparams = {key: hparam_value(value) for key, value in config.items()}
    metrics = {tag: float(v) for tag, v in last.items() if HPARAM_METRIC.fullmatch(tag)}
    return hparams, metrics


def config_markdown(config: Mapping[str, Any]) -> str:
    """The config as a Markdown table, one ``| key | `value` |`` row per key (a non-empty
    string as it is, anything else as JSON), for TensorBoard's *Text* tab."""
    lines = ["| key | value |", "|---|---|"]
    for key, value in config.items():
        text = value if isinstance(value, str) and value else json.dumps(value, default=str)
        text = text.replace("|", "\\|")
        lines.append(f"| {key} | `{text}` |")
    return "\n".join(lines)


CSV_NAME = "progress.csv"
STEP_COLUMN = "iteration"


def csv_cell(value: float) -> str:
    """A value as the CSV holds it: an int as itself, a float at full precision (``repr``)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    return repr(float(value))


class CsvLog:
    """``progress.csv``: one row per step (the 0-based iteration, TensorBoard's step).

    Columns: ``iteration``, then every tag in the order it first appeared. A tag that
    appears late (``test/...`` at the first meta-test, a counter that is only logged
    once it is non-zero) adds a column, and the file is then rewritten whole with the
    new header; a row without a value for a column has an empty cell. Otherwise a
    flush appends the new rows. Every write is atomic (temporary file, rename), so a
    kill leaves the previous file.

    ``purge_step``: drop the rows at or after it first (a resumed run starts there),
    as ``SummaryWriter``'s ``purge_step`` drops the events, so the file keeps exactly
    one row per step.
    """

    def __init__(self, path: Path, *, purge_step: int | None = None) -> None:
        self.path = Path(path)
        self.columns: list[str] = [STEP_COLUMN]
        self.rows: dict[int, dict[str, str]] = {}  # step -> column -> cell
        self._written_columns: list[str] = []
        self._written_steps: set[int] = set()
        self._dirty: set[int] = set()
        if self.path.is_file():
            self._load(purge_step)

    def _load(self, purge_step: int | None) -> None:
        with self.path.open(newline="") as f:
            reader = csv.DictReader(f)
            self.columns = list(reader.fieldnames or [STEP_COLUMN])
            for row in reader:
                step = int(row[STEP_COLUMN])
                if purge_step is None or step < purge_step:
                    self.rows[step] = {k: v for k, v in row.items() if v not in ("", None)}
        self._written_columns = list(self.columns)
        self._written_steps = set(self.rows)
        if purge_step is not None:
            self._rewrite()  # the purged rows go now, not at the next flush

    def last_values(self) -> dict[str, float]:
        """Each column's value in the latest row that has one, in column order (no step)."""
        last: dict[str, float] = {}
        for step in sorted(self.rows):
            last.update({tag: float(cell) for tag, cell in self.rows[step].items()})
        return {tag: last[tag] for tag in self.columns if tag in last and tag != STEP_COLUMN}

    def add(self, values: Mapping[str, float], step: int) -> None:
        """Put ``values`` into the row of ``step`` (merged with what it already has)."""
        row = self.rows.setdefault(step, {STEP_COLUMN: str(step)})
        for tag, value in values.items():
            if tag not in row and tag not in self.columns:
                self.columns.append(tag)
            row[tag] = csv_cell(value)
        self._dirty.add(step)

    def flush(self) -> None:
        """Write the rows added since the last flush: appended, or the file rewritten."""
        if not self._dirty:
            return
        last_written = max(self._written_steps, default=-1)
        appendable = (
            self.columns == self._written_columns
            and self.path.is_file()
            and min(self._dirty) > last_written
        )
        if appendable:
            with self.path.open("a", newline="") as f:
                self._writer(f).writerows(self.rows[s] for s in sorted(self._dirty))
            self._written_steps |= self._dirty
            self._dirty.clear()
        else:
            self._rewrite()

    def _writer(self, f) -> csv.DictWriter:
        return csv.DictWriter(f, fieldnames=self.columns, restval="", lineterminator="\n")

    def _rewrite(self) -> None:
        buffer = io.StringIO()
        writer = self._writer(buffer)
        writer.writeheader()
        writer.writerows(self.rows[s] for s in sorted(self.rows))
        temporary = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        temporary.write_text(buffer.getvalue())
        os.replace(temporary, self.path)
        self._written_columns = list(self.columns)
        self._written_steps = set(self.rows)
        self._dirty.clear()


def import_wandb() -> Any:
    """The ``wandb`` module, imported only when asked for; a :class:`ConfigError` without it."""
    try:
        import wandb
    except ImportError as exc:
        raise ConfigError(
            '--wandb-project: wandb is not installed; pip install "metarl[wandb]"'
        ) from exc
    return wandb


class WandbLog:
    """A Weights & Biases run that gets the same scalars at the same steps (opt-in).

    One W&B run per process: a resumed run starts a new W&B run in the same
    ``group`` (the run directory's name), since W&B cannot drop steps as
    ``purge_step`` does. Its files go under ``<run_dir>/wandb``. W&B's console
    capture is off: it would wrap stdout under the live display. Set
    ``WANDB_MODE=offline`` to log without an account or a network (``wandb sync``
    uploads later).
    """

    def __init__(
        self, project: str, run_dir: Path, config: Mapping[str, Any], *, resumed: bool
    ) -> None:
        wandb = import_wandb()
        run_dir = Path(run_dir)
        try:
            self.run = wandb.init(
                project=project,
                name=run_dir.name,
                group=run_dir.name,
                job_type="resume" if resumed else "train",
                dir=str(run_dir),
                config=dict(config),
                settings=wandb.Settings(console="off"),
            )
        except Exception as exc:  # no account, no network: the user's setup, one line
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConfigError(
                f"--wandb-project: wandb could not start ({first}); "
                "WANDB_MODE=offline logs without an account or a network"
            ) from exc

    def add(self, values: Mapping[str, float], step: int) -> None:
        # commit=False: the meta-test's scalars join the same step; W&B commits a step
        # when a later one is logged, or at finish.
        self.run.log({tag: float(v) for tag, v in values.items()}, step=step, commit=False)

    def close(self) -> None:
        self.run.finish()


class RunLogger:
    """Scalars by dict to TensorBoard and ``progress.csv`` (and W&B), one flush per iteration.

    ``wandb``: a :class:`WandbLog` (or anything with ``add(values, step)`` and
    ``close()``) that gets every scalar too.
    """

    def __init__(self, run_dir: Path, *, purge_step: int | None = None, wandb: Any = None) -> None:
        # purge_step drops events (and CSV rows) at or after it, so a resumed run has
        # no duplicate steps.
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)
        self.csv = CsvLog(Path(run_dir) / CSV_NAME, purge_step=purge_step)
        self.last = self.csv.last_values()  # tag -> last value; a resumed run's from the CSV
        self.wandb = wandb

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, float(value), step)
            self.last[tag] = float(value)
        self.csv.add(values, step)
        if self.wandb is not None:
            self.wandb.add(values, step)

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

    def config_text(self, config: Mapping[str, Any], step: int) -> None:
        """The resolved config as text tag ``config`` at ``step`` (:func:`config_markdown`)."""
        self.writer.add_text("config", config_markdown(config), step)

    def hparams(self, config: Mapping[str, Any], step: int, *, final: bool = False) -> bool:
        """Log the run's hyperparameters and metrics (:func:`run_hparams`) to the HParams tab.

        The three summaries of ``torch.utils.tensorboard.summary.hparams`` go into the
        run's own event file (not a sub-run as ``add_hparams`` makes), so the run is one
        row; the tab reads each metric's value from the run's scalars. TensorBoard keeps
        the first record a run wrote, so none is written before a meta-test has logged
        a metric, unless ``final`` (the run ends without one). Returns whether it wrote.
        """
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        values, metrics = run_hparams(config, self.last)
        if not metrics and not final:
            return False
        for summary in hparams_summaries(values, metrics):
            self.writer.file_writer.add_summary(summary, step)
        return True

    def flush(self) -> None:
        self.writer.flush()
        self.csv.flush()

    def close(self) -> None:
        self.writer.close()
        self.csv.flush()
        if self.wandb is not None:
            self.wandb.close()
