"""metarl: meta-reinforcement learning on Gymnasium task families.

Importing metarl registers the built-in families (lazily: MuJoCo is imported
only when a MuJoCo env is made). The commands are attributes too, imported (with
torch) on first use: ``metarl.train.main([...])``, ``metarl.train.run(...)``,
``metarl.evaluate.main([...])``, ``metarl.baselines.main([...])``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from metarl import envs as envs  # registers the built-in families
from metarl.registry import list_families, make_env, register_family

__version__ = "0.1.0"
__all__ = ["list_families", "make_env", "register_family", "__version__"]

COMMANDS = ("train", "evaluate", "baselines", "plot")
"""The command modules ``metarl.<name>`` gives without an import of its own."""


def __getattr__(name: str) -> ModuleType:
    """``metarl.train`` (``evaluate``, ``baselines``) after a plain ``import metarl``:
    the module is imported on first use, so ``import metarl`` stays free of torch."""
    if name in COMMANDS:
        return importlib.import_module(f"metarl.{name}")
    raise AttributeError(f"module 'metarl' has no attribute {name!r}")
