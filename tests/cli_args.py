"""Shrunk command lines shared by the CLI tests, cut to what one algorithm reads."""

from __future__ import annotations

import re

from metarl.config import run_keys
from metarl.configure import key_readers

EPISODE_TABLE = re.compile(
    r"^\s+ep\s+mean return\s+std$\n((?:\s+\d+\s+-?[\d.]+\s+[\d.]+\n)+)", re.M
)
"""evaluate's printed table for episode learners: a header, then one row per episode."""


def episode_rows(stdout: str) -> list[int]:
    """The episode numbers of evaluate's printed table (``[]`` when there is none)."""
    match = EPISODE_TABLE.search(stdout)
    return [int(line.split()[0]) for line in match.group(1).splitlines()] if match else []


def args_for(algo: str, args: list[str]) -> list[str]:
    """``args`` (``--flag value ...`` pairs) without the flags ``algo`` does not read, so
    one list of size knobs serves every algorithm (a foreign key is refused)."""
    out: list[str] = []
    keep = True
    for arg in args:
        if arg.startswith("--"):
            key = arg[2:].replace("-", "_")
            keep = key in run_keys() or algo in key_readers(key) or not key_readers(key)
        if keep:
            out.append(arg)
    return out
