"""Task-major vectorised rollouts on CPU -> :class:`EpisodeBatch`.

``make_sampler(name, spec=..., seed=..., workers=...)`` then
``sampler.sample(tasks, params, episodes_per_task=E, batch_key=(it, "train", 0))``.
``backend="ray"`` (``ray_address=None | "auto" | "HOST:PORT"``) runs the
workers as Ray actors, here or on a cluster, with the same batch
(:mod:`metarl.sampling.ray_backend`; needs ``pip install "metarl[ray]"``).
Sampling is data-only: it never changes weights.
"""

from metarl.sampling.batch import EpisodeBatch, NonFiniteEnvError, SamplerError
from metarl.sampling.rollout import noise_rng, reset_seed
from metarl.sampling.sampler import Backend, LocalBackend, Sampler, SampleStats, make_sampler
from metarl.sampling.trials import TrialBatch

__all__ = [
    "Backend",
    "EpisodeBatch",
    "LocalBackend",
    "NonFiniteEnvError",
    "SampleStats",
    "Sampler",
    "SamplerError",
    "TrialBatch",
    "make_sampler",
    "noise_rng",
    "reset_seed",
]
