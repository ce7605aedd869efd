"""Policies: torch modules for the learner, numpy twins for rollout workers."""

from metarl.policies.gaussian_mlp import (
    GaussianMLPPolicy,
    MLPSpec,
    gaussian_log_prob,
    numpy_mean,
    params_to_numpy,
)

__all__ = [
    "GaussianMLPPolicy",
    "MLPSpec",
    "gaussian_log_prob",
    "numpy_mean",
    "params_to_numpy",
]
