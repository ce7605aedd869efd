"""Algorithms by name: adding one is a module with an ``ALGORITHM`` entry plus one line here.

Each module named in :data:`ALGORITHMS` defines ``ALGORITHM``, an
:class:`~metarl.algos.base.Algorithm`: its config key groups, how to build its
policy and its learner, and its own cross-key checks. ``--algo``'s choices, a
run's config keys (:mod:`metarl.configure`) and ``--help``'s flag groups all come
from here. Modules are imported on first use, so importing this one is cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from metarl.algos.base import Algorithm, MetaLearner

if TYPE_CHECKING:
    import torch

    from metarl.config import Config
    from metarl.sampling import Sampler

ALGORITHMS: dict[str, str] = {
    "maml-trpo": "metarl.algos.maml_trpo",
    "maml-ppo": "metarl.algos.maml_ppo",
    "rl2": "metarl.algos.rl2",
    "reptile": "metarl.algos.reptile",
    "meta-sgd": "metarl.algos.meta_sgd",
    "meta-lstm": "metarl.algos.meta_lstm",
    "pearl": "metarl.algos.pearl",
    "varibad": "metarl.algos.varibad",
}
"""``--algo`` name -> the module that defines its ``ALGORITHM``."""


def algorithm(name: str) -> Algorithm:
    """The registry entry of ``name`` (a KeyError for an unknown name)."""
    entry = importlib.import_module(ALGORITHMS[name]).ALGORITHM
    if entry.name != name:
        raise RuntimeError(f"{ALGORITHMS[name]}.ALGORITHM is named {entry.name!r}, not {name!r}")
    return entry


def algorithms() -> list[Algorithm]:
    """Every registered algorithm, in registry order."""
    return [algorithm(name) for name in ALGORITHMS]


def build_policy(config: Config, obs_dim: int, act_dim: int) -> Any:
    """The policy ``config.algo`` trains, initialised from the torch RNG."""
    return algorithm(config.algo).build_policy(config, obs_dim, act_dim)


def build_learner(
    config: Config, policy: Any, sampler: Sampler, device: torch.device
) -> MetaLearner:
    """The meta-learner ``config.algo`` names, training ``policy`` on ``sampler``'s data."""
    return algorithm(config.algo).build_learner(config, policy, sampler, device)
