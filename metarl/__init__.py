"""metarl: meta-reinforcement learning on Gymnasium task families.

Importing metarl registers the built-in families (lazily: MuJoCo is imported
only when a MuJoCo env is made).
"""

from metarl import envs as envs  # registers the built-in families
from metarl.registry import list_families, make_env, register_family

__version__ = "0.1.0"
__all__ = ["list_families", "make_env", "register_family", "__version__"]
