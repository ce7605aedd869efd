"""The seams: the learner protocol and registry, key groups, and the import graph of metarl/."""

from __future__ import annotations

import ast
import copy
import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from metarl.algos.base import (
    Algorithm,
    IterationResult,
    MetaWorldAgentMaker,
    MissingExtension,
    ReportsProgress,
    ShowsAdaptation,
    extension,
)
from metarl.algos.registry import ALGORITHMS, algorithms
from metarl.config import run_keys
from metarl.configure import all_groups, build_config, key_readers, titled_groups
from metarl.run import build_run

ROOT = Path(__file__).parents[1]
CLI_MODULES = {"metarl.train", "metarl.evaluate", "metarl.baselines", "metarl.cli", "metarl.plot",
               "metarl.export", "metarl.results"}  # fmt: skip


def module_imports() -> dict[str, set[str]]:
    """Each metarl module -> the metarl modules it imports at module level.

    Imports under ``if TYPE_CHECKING:`` are included: a circle among them is still a
    circle for a type checker and for the reader. Imports inside functions (deferred
    on purpose, e.g. of an optional extra) are left out.
    """
    graph: dict[str, set[str]] = {}
    for path in [*(ROOT / "metarl").rglob("*.py"), *(ROOT / "envs").rglob("*.py")]:
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[0] == "envs":
            parts = ["metarl", *parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        tree = ast.parse(path.read_text())
        found: set[str] = set()
        for node in tree.body:  # top level only, TYPE_CHECKING blocks included
            for sub in ast.walk(node) if not isinstance(node, ast.FunctionDef) else ():
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    break
                if isinstance(sub, ast.ImportFrom) and (sub.module or "").startswith("metarl"):
                    found.add(sub.module)
                elif isinstance(sub, ast.Import):
                    found.update(a.name for a in sub.names if a.name.startswith("metarl"))
        graph[name] = found
    return graph


def test_no_import_circle_in_metarl():
    graph = module_imports()

    def parents(module: str) -> list[str]:  # importing a.b.c imports a and a.b first
        pieces = module.split(".")
        return [".".join(pieces[:i]) for i in range(1, len(pieces))]

    edges = {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(edges.get(module, ())):
            if dep in parents(module):  # a package's __init__ runs before its modules
                continue
            if state.get(dep) == 1:
                raise AssertionError(" -> ".join([*path, module, dep]))
            if dep not in state:
                visit(dep, [*path, module])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [])


def test_no_library_module_imports_a_command_line_module():
    for module, deps in module_imports().items():
        if module in CLI_MODULES:
            continue
        assert not deps & CLI_MODULES, f"{module} imports {deps & CLI_MODULES}"


def test_every_registered_algorithm_is_an_algorithm_with_its_own_keys():
    assert tuple(ALGORITHMS)[:3] == ("maml-trpo", "maml-ppo", "rl2")
    run_level = set(run_keys())
    declared: dict[str, object] = {}
    for group in all_groups():
        for f in dataclasses.fields(group):
            assert f.name not in run_level, f.name
            # a key in two groups (init_log_std: the MLP's and the GRU's) must mean the same
            if f.name in declared:
                assert declared[f.name] == (f.default, f.type), f.name
            declared[f.name] = (f.default, f.type)
    for entry in algorithms():
        assert isinstance(entry, Algorithm) and entry.name in ALGORITHMS
        assert entry.policy_group in entry.groups(None)
        for group in entry.groups(None):
            prefix = {f.name.split("_")[0] for f in dataclasses.fields(group)}
            assert len(prefix) == 1 or group is entry.policy_group, (group, prefix)
    titles = [title for title, _ in titled_groups()]
    assert "inner loop (maml-trpo, maml-ppo, reptile, meta-sgd, meta-lstm)" in titles
    assert "PPO update (maml-ppo, rl2, meta-sgd, meta-lstm, varibad)" in titles


def test_help_lists_each_algorithms_flags_under_its_group():
    result = subprocess.run([sys.executable, "-m", "metarl.train", "--help"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0
    text = result.stdout
    trpo = text.index("TRPO outer update (maml-trpo, meta-sgd, meta-lstm):")
    assert text.index("--trpo-max-kl", trpo) < text.index("PPO update (maml-ppo, rl2, meta-sgd,")
    rl2 = text.index("RL2 (rl2):")
    assert rl2 > trpo and "--rl2-gae-lambda" in text[rl2:]
    assert "--max-kl" not in text  # old names parse, but --help shows the current ones


def test_a_learner_without_an_extension_gets_one_line():
    class Bare:
        name = "bare"

    for capability in (ShowsAdaptation, MetaWorldAgentMaker):
        with pytest.raises(MissingExtension) as err:
            extension(Bare(), capability, purpose="--video")
        assert str(err.value) == (
            f"--video is not available for bare: its learner does not provide the "
            f"{capability.__name__} extension (see metarl/algos/base.py)"
        )


def test_no_learner_is_inspected_by_attribute_outside_the_extension_helper():
    for path in (ROOT / "metarl").rglob("*.py"):
        if path == ROOT / "metarl" / "algos" / "base.py":  # the helper itself
            continue
        text = path.read_text()
        for needle in ("hasattr(learner", "getattr(learner", "hasattr(run.learner",
                       "getattr(run.learner", "hasattr(actor", "getattr(actor"):  # fmt: skip
            assert needle not in text, f"{path}: {needle}"


EXTENSIONS = {  # what each learner provides today
    "maml-trpo": {ReportsProgress, ShowsAdaptation, MetaWorldAgentMaker},
    "maml-ppo": {ReportsProgress, ShowsAdaptation, MetaWorldAgentMaker},
    "reptile": {ReportsProgress, ShowsAdaptation, MetaWorldAgentMaker},
    "meta-sgd": {ReportsProgress, ShowsAdaptation, MetaWorldAgentMaker},
    "meta-lstm": {ReportsProgress, ShowsAdaptation, MetaWorldAgentMaker},
    "rl2": {ReportsProgress, ShowsAdaptation, MetaWorldAgentMaker},
    "pearl": {MetaWorldAgentMaker},
    "varibad": {ReportsProgress, ShowsAdaptation, MetaWorldAgentMaker},
}


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_each_learner_follows_the_protocol(name, tmp_path):
    sizes = {"hidden_sizes": [4], "rl2_hidden_size": 4, "pearl_hidden_sizes": [4]}
    sizes = {k: v for k, v in sizes.items() if name in key_readers(k)}
    config = build_config({"env": "point-nav", "algo": name, "meta_batch_size": 2,
                           "episodes_per_task": 2, "horizon": 5, "workers": 0,
                           "train_pool_size": 4, "test_pool_size": 2, "device": "cpu",
                           **sizes})  # fmt: skip
    run = build_run(config, tmp_path)
    try:
        learner = run.learner
        assert learner.name == name and learner.adaptation_unit in ("step", "episode")
        result = learner.train_iteration(list(run.pools.train[:2]), 0)
        assert isinstance(result, IterationResult) and result.rejected is False
        assert result.env_steps > 0
        assert (result.kl is None) == (name == "reptile")  # Reptile's step has no trust region
        provided = {c for c in (ReportsProgress, ShowsAdaptation, MetaWorldAgentMaker)
                    if isinstance(learner, c)}  # fmt: skip
        assert provided == EXTENSIONS[name]
        curve = learner.meta_test(list(run.pools.test), adapt_steps=1, episodes_per_task=2,
                                  batch_key=("test", 0))  # fmt: skip
        assert curve.returns.shape == (2, 2) and torch.isfinite(curve.returns).all()
        assert curve.infos == {} and result.infos_per_step == {}  # point-nav declares no keys
        # a state round trip restores what training changed, tensor by tensor
        saved = copy.deepcopy(learner.state_dict())
        learner.train_iteration(list(run.pools.train[2:4]), 1)
        assert not tensors_equal(learner.state_dict(), saved)
        learner.load_state_dict(copy.deepcopy(saved))
        assert tensors_equal(learner.state_dict(), saved)
    finally:
        run.sampler.close()


def tensors_equal(a, b) -> bool:
    """Two nested state dicts hold the same keys and equal tensors (and equal other values)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(tensors_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(tensors_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, float) and a != a:  # nan
        return b != b
    return a == b


def test_the_metarl_command_runs_each_subcommand(tmp_path):
    def metarl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "metarl.cli", *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    listing = metarl("envs")
    assert listing.returncode == 0 and "halfcheetah-vel" in listing.stdout
    bad = metarl("train", "--env", "no-such-env")
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown env 'no-such-env'")
    flag = metarl("evaluate", "--bogus")
    assert flag.returncode == 2 and "(metarl evaluate --help lists the flags)" in flag.stderr
    unknown = metarl("fly")
    assert unknown.returncode == 2 and "unknown command 'fly'" in unknown.stderr
    assert metarl("baselines", "--help").returncode == 0
