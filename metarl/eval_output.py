"""What ``python -m metarl.evaluate`` writes: the file names, the record of how an
evaluation was made, the printed table and the CSV, JSON and PNG.

File names, in ``RUN_DIR/eval/``::

    <pool>_iter<NNNNNN>_steps<K>_<protocol>[_<variant>...].{csv,json,png}

``pool`` is ``benchmark`` (the family's fixed test pool, the default), ``test`` or
``train`` (the run's own pools), ``NNNNNN`` the checkpoint's iteration (iterations
done), ``K`` the adaptation steps (RL2: episodes - 1), ``protocol`` ``metarl`` or
``metaworld`` (that one writes the JSON only), then one part per argument that changes
the numbers and differs from its default, in this order: ``n<N>`` (the first N tasks of
the pool), ``ep<E>`` (episodes per task per step, when not the run's), ``seed<S>``,
and for Meta-World's protocol ``evals<R>``, ``envs<M>``, ``evep<X>``. A film has no
protocol part and its own variants (``n<N>`` filmed tasks, ``px<W>x<H>`` cell size),
e.g. ``test_iter000224_steps1_video_grid.mp4``. So the names sort by pool, then
iteration, then steps, and two evaluations that may differ never share a name.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.metadata
import json
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from metarl.algos.base import AdaptationCurve

PROTOCOLS = ("metarl", "metaworld")
METARL_SUFFIXES = ("csv", "json", "png")
"""The files of a ``metarl``-protocol evaluation, in the order they are written."""


def eval_stem(
    pool: str,
    iteration: int,
    steps: int,
    protocol: str | None,
    variants: Sequence[tuple[str, Any]] = (),
) -> str:
    """The name of an evaluation's files without the suffix (module docstring).

    Args:
        pool: ``"benchmark"``, ``"test"`` or ``"train"``.
        iteration: the checkpoint's iterations done.
        steps: adaptation steps. protocol: one of :data:`PROTOCOLS`, or None for a film.
        variants: ``(part, value)`` pairs, each written ``_<part><value>``, in order.
    Returns:
        e.g. ``"test_iter000224_steps3_metarl_ep10"``.
    """
    return f"{pool}_iter{iteration:06d}_{eval_stem_tail(steps, protocol, variants)}"


def eval_stem_tail(
    steps: int, protocol: str | None, variants: Sequence[tuple[str, Any]] = ()
) -> str:
    """The part of :func:`eval_stem` after the pool and iteration, e.g.
    ``"steps3_metarl_ep10"``: what every iteration's evaluation of one kind ends with."""
    parts = [f"steps{steps}"]
    if protocol is not None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        parts.append(protocol)
    parts += [f"{part}{value}" for part, value in variants]
    return "_".join(parts)


def metarl_paths(out_dir: Path, stem: str) -> list[Path]:
    """The CSV, JSON and PNG a ``metarl``-protocol evaluation named ``stem`` writes."""
    return [Path(out_dir) / f"{stem}.{suffix}" for suffix in METARL_SUFFIXES]


def existing(paths: Sequence[Path]) -> list[Path]:
    """Those of ``paths`` that exist."""
    return [path for path in paths if path.exists()]


def exists_line(path: Path) -> str:
    """What the command prints instead of replacing an evaluation's file."""
    return f"{path} exists (this evaluation was written before); --force replaces it"


def metarl_version() -> str:
    """The installed distribution's version, else the package's ``__version__``."""
    try:
        return importlib.metadata.version("metarl")
    except importlib.metadata.PackageNotFoundError:
        import metarl

        return metarl.__version__


def shell_command(argv: Sequence[str]) -> str:
    """``argv`` quoted for a shell; run as ``python -m MODULE`` (``argv[0]`` is then the
    module's file), it reads ``python -m MODULE ...``."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and argv and argv[0].endswith(".py"):
        module = spec.name.removesuffix(".__main__")
        return shlex.join(["python", "-m", module, *argv[1:]])
    return shlex.join(argv)


def provenance(arguments: Mapping[str, Any], flags: Sequence[str]) -> dict[str, Any]:
    """How an evaluation was made, for its JSON.

    Args:
        arguments: every parsed argument, defaults included (``vars(args)``).
        flags: the arguments the parser was given (``sys.argv[1:]`` from a shell).
    Returns:
        ``{"command": {"argv", "shell", "flags"}, "metarl_version", "arguments"}``:
        ``argv`` is the process's ``sys.argv``, ``shell`` the same as a shell command
        (:func:`shell_command`).
    """
    argv = [str(part) for part in sys.argv]
    return {
        "command": {"argv": argv, "shell": shell_command(argv), "flags": list(flags)},
        "metarl_version": metarl_version(),
        "arguments": dict(arguments),
    }


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
