"""Meta-learners: the protocol and its extensions (:mod:`.base`), the registry
(:mod:`.registry`, the list of algorithms and their modules), one module per algorithm."""

from metarl.algos.base import AdaptationCurve, Algorithm, IterationResult, MetaLearner
from metarl.algos.registry import ALGORITHMS, algorithm, build_learner, build_policy

__all__ = [
    "ALGORITHMS",
    "AdaptationCurve",
    "Algorithm",
    "IterationResult",
    "MetaLearner",
    "algorithm",
    "build_learner",
    "build_policy",
]
