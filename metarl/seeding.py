"""One run seed derives every other seed; nothing reads a global RNG.

``derive_seed(run_seed, "sampler", iteration, task, episode)`` gives the same
integer wherever it is computed (any process, any worker count), so a random
stream depends on *what* it is for, never on which worker happened to run it.
"""

from __future__ import annotations

import zlib

import numpy as np


def _key_to_int(key: int | str) -> int:
    if isinstance(key, str):
        return zlib.crc32(key.encode())
    if key < 0:
        raise ValueError(f"seed keys must be >= 0, got {key}")
    return int(key)


def derive_seed(root: int, *keys: int | str) -> int:
    """A 32-bit seed determined by ``root`` and the path ``keys``."""
    seq = np.random.SeedSequence(entropy=int(root), spawn_key=tuple(_key_to_int(k) for k in keys))
    return int(seq.generate_state(1, dtype=np.uint32)[0])


def derive_rng(root: int, *keys: int | str) -> np.random.Generator:
    """A numpy Generator determined by ``root`` and the path ``keys``."""
    seq = np.random.SeedSequence(entropy=int(root), spawn_key=tuple(_key_to_int(k) for k in keys))
    return np.random.default_rng(seq)
