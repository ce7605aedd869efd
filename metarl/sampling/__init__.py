"""Task-major vectorised rollouts on CPU -> :class:`EpisodeBatch` / :class:`TrialBatch`.

``make_sampler(name, spec=..., seed=..., workers=...)`` then
``sampler.sample(tasks, params, episodes_per_task=E, batch_key=(it, "train", 0))``
or ``sampler.sample_trials(...)``. ``backend="ray"`` (``ray_address=None |
"auto" | "HOST:PORT"``) runs the workers as Ray actors, here or on a cluster,
with the same batch (:mod:`metarl.sampling.backends` names the backends; Ray
needs ``pip install "metarl[ray]"``). Sampling is data-only: it never changes weights.

================  ============================================================
module            what
================  ============================================================
``sampler``       :class:`Sampler`: argument checks, task blocks, joining, timing
``backends``      the backend registry and protocol; ``local``, ``ray_backend``
``worker``        a persistent worker process and the request it serves
``rollout``       the lock-step rollout loop, the env pool, the actor protocol
``mujoco_batch``  the batched path: a wave's MuJoCo envs, one ``mujoco.batch`` call a step
``batch``         :class:`EpisodeBatch` and the sampler's errors
``trials``        :class:`TrialBatch` (RL2's trials)
================  ============================================================
"""

from metarl.sampling.backends import BACKENDS, Backend
from metarl.sampling.batch import (
    EpisodeBatch,
    NonFiniteEnvError,
    SamplerError,
    UnguardedMainError,
)
from metarl.sampling.rollout import noise_rng, reset_seed
from metarl.sampling.sampler import Sampler, SampleStats, make_sampler
from metarl.sampling.trials import TrialBatch

__all__ = [
    "BACKENDS",
    "Backend",
    "EpisodeBatch",
    "NonFiniteEnvError",
    "SampleStats",
    "Sampler",
    "SamplerError",
    "TrialBatch",
    "UnguardedMainError",
    "make_sampler",
    "noise_rng",
    "reset_seed",
]
