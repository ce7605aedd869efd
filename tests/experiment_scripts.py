"""Import a script of ``experiments/`` (not a package) by its file name, for the tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


def load_experiment_script(name: str) -> ModuleType:
    """``experiments/<name>.py`` as a module, registered in ``sys.modules`` under ``name``
    (a dataclass defined in it looks its module up there)."""
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
