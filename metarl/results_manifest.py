"""``experiments/results.yaml``: the rows of the results tables and the runs behind them.

Read by ``metarl results`` (:mod:`metarl.results`). Each row names an algorithm on a
family, the config and flags its runs were trained with, its budget and its run
directories, one per seed. A row of :data:`HEADLINE_SEEDS` runs or more on the benchmark
pool is a headline row (README); any other row is exploration (docs/results.md). Adding a
seed is one more line under the row's ``runs:``.

Bad input (no file, a key this module does not know, a missing or mistyped value, an id
or run named twice) is a :class:`ManifestError`: one line naming the file, the row and the
key, exit code 2.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metarl.options import ConfigError

HEADLINE_SEEDS = 3
"""The fewest seeds of a headline row; a row with fewer is exploration."""
POOLS = ("benchmark", "test")
"""Where a row's runs are scored: the family's benchmark pool, or (only where a run
cannot be evaluated there: an SB3 baseline keeps no model) the run's own test pool."""
KINDS = ("train", "baselines")
"""What made a row's runs: ``python -m metarl.train`` or ``python -m metarl.baselines``."""
TOP_KEYS = ("runs_dir", "rows")
ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")


class ManifestError(ConfigError):
    """A bad manifest: one line on stderr, exit code 2."""


@dataclass(frozen=True)
class Row:
    """One row of a results table.

    Attributes:
        id: a short name (``pointnav-maml-trpo``): the anchor of its commands in the docs.
        algorithm, family: as the table shows them; ``family`` is also each run's ``env``.
        config: the YAML the runs were trained from (a path from the repository root).
        settings: what sets the row apart, for the table's settings cell.
        runs: the run directories' names under ``runs_dir``, one per seed.
        adapt_steps: evaluate's ``--adapt-steps`` (RL2, PEARL: the trial's episodes - 1).
        iterations: the budget: the iteration of every run's evaluated checkpoint (None
            for a baseline, which has no iterations).
        flags: train (or baselines) flags after ``--config``, before ``--seed``.
        note: said under the row's commands in docs/results.md.
        pool: :data:`POOLS`. kind: :data:`KINDS`.
        episodes: evaluate's ``--episodes`` (None: the run's ``episodes_per_task``). Set
            where the run's value would make the evaluation needlessly long: RL² on
            Meta-World meta-tests one trial of 10 episodes in training, which evaluate's
            default reads as 10 trials.
    """

    id: str
    algorithm: str
    family: str
    config: str
    settings: str
    runs: tuple[str, ...]
    adapt_steps: int
    iterations: int | None = None
    flags: str = ""
    note: str = ""
    pool: str = "benchmark"
    kind: str = "train"
    episodes: int | None = None

    @property
    def headline(self) -> bool:
        """Shown in README: enough seeds, scored on the benchmark pool."""
        return len(self.runs) >= HEADLINE_SEEDS and self.pool == "benchmark"


@dataclass(frozen=True)
class Manifest:
    path: Path
    runs_dir: Path
    rows: tuple[Row, ...] = field(default_factory=tuple)

    def run_dir(self, run: str) -> Path:
        return self.runs_dir / run


REQUIRED = ("id", "algorithm", "family", "config", "settings", "runs", "adapt_steps")
OPTIONAL = ("iterations", "flags", "note", "pool", "kind", "episodes")
TYPES: dict[str, type | tuple[type, ...]] = {
    "id": str, "algorithm": str, "family": str, "config": str, "settings": str,
    "runs": list, "adapt_steps": int, "iterations": int, "flags": str, "note": str,
    "pool": str, "kind": str, "episodes": int,
}  # fmt: skip


def load_manifest(path: Path) -> Manifest:
    """The manifest at ``path``; its ``runs_dir`` is relative to the working directory."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"no manifest at {path}") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ManifestError(f"{path}: cannot read it: {str(exc).splitlines()[0]}") from None
    return parse_manifest(data, path)


def parse_manifest(data: Any, path: Path) -> Manifest:
    """A manifest from its YAML ``data``; ``path`` names it in errors."""
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: a manifest is a mapping with keys {', '.join(TOP_KEYS)}")
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise ManifestError(
            f"{path}: unknown key {unknown[0]!r} (a manifest has {', '.join(TOP_KEYS)})"
        )
    runs_dir, rows = data.get("runs_dir"), data.get("rows")
    if not isinstance(runs_dir, str) or not runs_dir:
        raise ManifestError(f"{path}: runs_dir must be a folder, e.g. experiments/results")
    if not isinstance(rows, list) or not rows:
        raise ManifestError(f"{path}: rows must be a list of rows")
    parsed = tuple(parse_row(row, i, path) for i, row in enumerate(rows, start=1))
    check_unique(parsed, path)
    return Manifest(path=path, runs_dir=Path(runs_dir), rows=parsed)


def parse_row(row: Any, number: int, path: Path) -> Row:
    """Row ``number`` (from 1) of the manifest, checked key by key."""
    if not isinstance(row, dict):
        raise ManifestError(f"{path}: row {number} is not a mapping of keys")
    where = f"{path}: row {number}" + (f" ({row['id']})" if isinstance(row.get("id"), str) else "")
    unknown = sorted(set(row) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise ManifestError(
            f"{where}: unknown key {unknown[0]!r} (a row has {', '.join(REQUIRED + OPTIONAL)})"
        )
    missing = [key for key in REQUIRED if key not in row]
    if missing:
        raise ManifestError(f"{where}: missing key {missing[0]!r}")
    for key, value in row.items():
        expected = TYPES[key]
        if not isinstance(value, expected) or isinstance(value, bool):
            name = {list: "a list", int: "an integer", str: "a string"}[expected]  # type: ignore[index]
            raise ManifestError(f"{where}: {key} must be {name}, got {value!r}")
    if not ID.match(row["id"]):
        raise ManifestError(f"{where}: id must be lower-case letters, digits and dashes")
    runs = row["runs"]
    if not runs or not all(isinstance(run, str) and run for run in runs):
        raise ManifestError(f"{where}: runs must list run directory names, one per seed")
    if row["adapt_steps"] < 0:
        raise ManifestError(f"{where}: adapt_steps must be >= 0, got {row['adapt_steps']}")
    if row.get("episodes", 1) < 1:
        raise ManifestError(f"{where}: episodes must be >= 1, got {row['episodes']}")
    pool, kind = row.get("pool", "benchmark"), row.get("kind", "train")
    if pool not in POOLS:
        raise ManifestError(f"{where}: pool must be one of {', '.join(POOLS)}, got {pool!r}")
    if kind not in KINDS:
        raise ManifestError(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "baselines" and pool != "test":
        raise ManifestError(
            f"{where}: a baselines row is scored on its runs' own test pool: set pool: test"
        )
    iterations = row.get("iterations")
    if kind == "train" and (iterations is None or iterations < 1):
        raise ManifestError(f"{where}: iterations must be the runs' budget, an integer >= 1")
    try:
        shlex.split(row.get("flags", ""))
    except ValueError as exc:
        raise ManifestError(f"{where}: flags cannot be split like a shell line: {exc}") from None
    return Row(
        id=row["id"],
        algorithm=row["algorithm"],
        family=row["family"],
        config=row["config"],
        settings=row["settings"],
        runs=tuple(runs),
        adapt_steps=row["adapt_steps"],
        iterations=iterations,
        flags=row.get("flags", ""),
        note=row.get("note", ""),
        pool=pool,
        kind=kind,
        episodes=row.get("episodes"),
    )


def check_unique(rows: tuple[Row, ...], path: Path) -> None:
    """No id twice, and no run in two rows or twice in one (a seed counted twice)."""
    seen_ids: set[str] = set()
    seen_runs: dict[str, str] = {}
    for row in rows:
        if row.id in seen_ids:
            raise ManifestError(f"{path}: id {row.id!r} names two rows")
        seen_ids.add(row.id)
        for run in row.runs:
            if run in seen_runs:
                raise ManifestError(
                    f"{path}: run {run!r} is listed in {seen_runs[run]} and again in {row.id}"
                )
            seen_runs[run] = row.id
