"""Meta-learners: the protocol (:mod:`.base`), the registry (:mod:`.registry`), one module each.

=============  ==========================================================
module         what
=============  ==========================================================
``base``       ``MetaLearner`` protocol, ``IterationResult``, ``AdaptationCurve``,
               ``Algorithm``
``registry``   ``--algo`` name -> module; ``build_policy``, ``build_learner``
``maml``       the MAML inner loop both MAML variants share
``maml_trpo``  MAML-TRPO;  ``maml_ppo``: MAML-PPO;  ``rl2``: RL2
``ppo``        the PPO keys MAML-PPO and RL2 share
=============  ==========================================================
"""

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
