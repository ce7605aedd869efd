"""Which tasks of a pool to film: a few that span the family, not the first few drawn.

:func:`spread_tasks` reads only the tasks' fields (a task is a dataclass, or a dict):
its numbers (ints, floats, tuples of them: a direction, a velocity, a goal) place it in
a space, its strings (a character, a Meta-World class) name its kind. It works for any
family without knowing it, and is a pure function of the pool.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np


def task_fields(task: Any) -> dict[str, Any]:
    """A dataclass task's fields, a dict task's items; ``{}`` for anything else."""
    if dataclasses.is_dataclass(task) and not isinstance(task, type):
        return {f.name: getattr(task, f.name) for f in dataclasses.fields(task)}
    return dict(task) if isinstance(task, dict) else {}


def numbers(task: Any) -> np.ndarray:
    """``[D]`` float: the task's numeric fields (bools, ints, floats, arrays of them),
    flattened in field order; strings and other values are left out."""
    parts = []
    for value in task_fields(task).values():
        if isinstance(value, str):
            continue
        try:
            array = np.asarray(value)
        except ValueError:  # a ragged sequence
            continue
        if array.dtype.kind in "biuf":
            parts.append(array.astype(np.float64).reshape(-1))
    return np.concatenate(parts) if parts else np.zeros(0)


def kind(task: Any) -> tuple[str, ...]:
    """The task's string fields (``("S",)`` for a character, ``()`` for a velocity)."""
    return tuple(value for value in task_fields(task).values() if isinstance(value, str))


def _key(task: Any) -> Any:
    """What makes two tasks the same task: the task itself, or its repr if unhashable."""
    try:
        hash(task)
    except TypeError:
        return repr(task)
    return task


def first_appearances(pool: Sequence[Any]) -> list[int]:
    """``[M]`` the index of each distinct task's first appearance, in pool order."""
    seen: set = set()
    firsts = []
    for i, task in enumerate(pool):
        if _key(task) not in seen:
            seen.add(_key(task))
            firsts.append(i)
    return firsts


def by_repeat(pool: Sequence[Any]) -> list[int]:
    """``[len(pool)]`` every index, first appearances first, then second ones, ...:
    for a pool of two directions, ``+1, -1, +1, -1, ...`` while both last."""
    count: dict = {}
    rank = []
    for i, task in enumerate(pool):
        count[_key(task)] = count.get(_key(task), 0) + 1
        rank.append((count[_key(task)], i))
    return [i for _, i in sorted(rank)]


def midpoints(values: np.ndarray, q: int) -> list[int]:
    """``[q]`` positions into ``values [M]`` nearest its quantiles ``(k + 1/2) / q``:
    the middle task of each of ``q`` equal slices of the sorted values, smallest first."""
    order = np.argsort(values, kind="stable")
    m = len(values)
    return [int(order[min(int((k + 0.5) * m / q), m - 1)]) for k in range(q)]


def farthest_points(points: np.ndarray, q: int) -> list[int]:
    """``[q]`` rows of ``points [M, D]`` (each column scaled to unit spread), greedily:
    first the row farthest from the mean, then each time the row farthest from those
    already taken (ties: the earliest row)."""
    spread = points.std(axis=0)
    x = (points - points.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    picks = [int(np.argmax(np.linalg.norm(x, axis=1)))] if q > 0 else []
    nearest = np.linalg.norm(x - x[picks[0]], axis=1) if picks else np.zeros(0)
    while len(picks) < q:
        pick = int(np.argmax(np.where(np.isin(np.arange(len(x)), picks), -1.0, nearest)))
        picks.append(pick)
        nearest = np.minimum(nearest, np.linalg.norm(x - x[pick], axis=1))
    return picks


def points_of(tasks: Sequence[Any]) -> np.ndarray:
    """``[M, D]`` the tasks' :func:`numbers`; ``[M, 0]`` unless all have the same ``D``."""
    rows = [numbers(task) for task in tasks]
    if len({len(row) for row in rows}) != 1:
        return np.zeros((len(rows), 0))
    return np.stack(rows)


def spread_within(points: np.ndarray, q: int) -> list[int]:
    """``[q]`` rows of ``points [M, D]`` that span them: with no numbers the first
    ``q``; with one number :func:`midpoints`; with several :func:`farthest_points`."""
    if points.shape[1] == 0:
        return list(range(q))
    if points.shape[1] == 1:
        return midpoints(points[:, 0], q)
    return farthest_points(points, q)


def quotas(sizes: Sequence[int], n: int) -> list[int]:
    """``n`` picks dealt round the groups of ``sizes`` in turn, none beyond its size."""
    counts = [0] * len(sizes)
    while sum(counts) < min(n, sum(sizes)):
        for j, size in enumerate(sizes):
            if counts[j] < size and sum(counts) < n:
                counts[j] += 1
    return counts


def spread_tasks(pool: Sequence[Any], n: int) -> list[int]:
    """``min(n, len(pool))`` indices into ``pool`` of tasks that span the family.

    The rule, from the tasks' fields alone (:func:`numbers`, :func:`kind`):

    1. When ``n`` covers every distinct task (a finite family, whose pool repeats a few
       tasks: halfcheetah-dir's two directions), each distinct task once, in order of
       first appearance, then repeats in the same way (:func:`by_repeat`).
    2. Otherwise the distinct tasks are grouped by their string fields (sketch's
       character, Meta-World's class) and the picks go round the groups in order of
       first appearance, so as many kinds show as ``n`` allows. Within a group:
       no numeric field: the first ones; one number (a velocity, an angle): the tasks
       nearest the quantiles ``(k + 1/2) / q`` of that number, ``k < q``, smallest
       first (halfcheetah-vel's slowest and fastest slices; for two of ant-dir's angles
       in ``[0, 2 pi)``, about opposite directions); several numbers (a goal): a
       farthest-point greedy over them, each scaled to unit spread, starting from the
       task farthest from their mean (goals at opposite sides first).

    The result lists the picks in that order (round the groups, then within a group).
    """
    n = max(0, min(n, len(pool)))
    firsts = first_appearances(pool)
    if n >= len(firsts):
        return by_repeat(pool)[:n]
    groups: dict[tuple[str, ...], list[int]] = {}
    for i in firsts:
        groups.setdefault(kind(pool[i]), []).append(i)
    members = list(groups.values())
    chosen = []
    for idx, q in zip(members, quotas([len(idx) for idx in members], n)):
        picks = spread_within(points_of([pool[i] for i in idx]), q) if q else []
        chosen.append([idx[p] for p in picks])
    rounds = max(len(c) for c in chosen)
    return [c[r] for r in range(rounds) for c in chosen if r < len(c)]


def check_task_ids(ids: Sequence[int], pool_size: int) -> list[int]:
    """``ids`` as a list when each is an index into a pool of ``pool_size`` tasks and none
    repeats; otherwise a ValueError naming the first bad one."""
    for i in ids:
        if not 0 <= i < pool_size:
            raise ValueError(f"{i} is not an index of the {pool_size} tasks (0..{pool_size - 1})")
    for k, i in enumerate(ids):
        if i in ids[:k]:
            raise ValueError(f"{i} is given twice")
    return list(ids)
