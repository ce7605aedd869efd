"""Config: defaults < algorithm defaults < YAML < CLI, per-algorithm key groups, renamed keys,
validation naming the key, every experiment file valid."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from metarl.algos.gradient_family import InnerLoopOptions, ReplayOptions
from metarl.algos.maml_trpo import TRPOOptions
from metarl.algos.registry import ALGORITHMS
from metarl.config import Config, ConfigError, load_yaml, run_keys, save_config
from metarl.configure import (
    add_config_arguments,
    build_config,
    config_overrides,
    key_readers,
    restored_config,
)
from metarl.policies.gaussian_mlp import MLPPolicyOptions

MANIFEST = "results.yaml"
"""experiments/results.yaml is the results manifest (tests/test_results.py), not a run config."""
EXPERIMENTS = sorted(
    path
    for path in (Path(__file__).parents[1] / "experiments").glob("*.yaml")
    if path.name != MANIFEST
)

# One key of another algorithm's group for each algorithm, and who reads it.
FOREIGN = {
    "maml-trpo": ("ppo_lr", "maml-ppo, rl2, meta-sgd, meta-lstm, varibad"),
    "maml-ppo": ("trpo_max_kl", "maml-trpo, meta-sgd, meta-lstm"),
    "rl2": ("trpo_max_kl", "maml-trpo, meta-sgd, meta-lstm"),
    "reptile": ("inner_steps", "maml-trpo, maml-ppo, meta-sgd, meta-lstm"),
    "meta-sgd": ("reptile_outer_lr", "reptile"),
    "meta-lstm": ("reptile_outer_lr", "reptile"),
    "pearl": ("hidden_sizes", "maml-trpo, maml-ppo, reptile, meta-sgd, meta-lstm"),
    "varibad": ("pearl_lr", "pearl"),
}


def test_defaults_are_the_maml_paper_locomotion_settings():
    c = build_config({})
    inner, replay = c.group(InnerLoopOptions), c.group(ReplayOptions)
    trpo, policy = c.group(TRPOOptions), c.group(MLPPolicyOptions)
    assert (c.meta_batch_size, c.episodes_per_task, replay.inner_steps, inner.inner_lr) == (
        40, 20, 1, 0.1,
    )  # fmt: skip
    assert (trpo.trpo_max_kl, trpo.trpo_cg_iters, c.discount, inner.inner_gae_lambda) == (
        0.01, 10, 0.99, 1.0,
    )  # fmt: skip
    assert policy.hidden_sizes == (100, 100) and policy.activation == "relu"


def test_cli_overrides_yaml_overrides_defaults(tmp_path):
    (tmp_path / "c.yaml").write_text("inner_lr: 0.5\nmeta_batch_size: 7\nhidden-sizes: [8, 8]\n")
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    args = parser.parse_args(["--inner-lr", "0.2", "--inner-first-order"])
    config = build_config(config_overrides(args), load_yaml(tmp_path / "c.yaml"))
    assert config.group(InnerLoopOptions).inner_lr == 0.2 and config.meta_batch_size == 7
    assert config.group(MLPPolicyOptions).hidden_sizes == (8, 8)
    assert config.group(ReplayOptions).inner_first_order is True
    assert config.group(TRPOOptions).trpo_max_kl == 0.01  # untouched default


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"inner_lrr": 1}, "unknown config key 'inner_lrr'"),
        ({"algo": "maml"}, "'algo': 'maml' is not one of: maml-trpo, maml-ppo, rl2"),
        ({"inner_gae_lambda": 2}, "'inner_gae_lambda': 2.0 is above the maximum 1.0"),
        ({"iterations": 2.5}, "'iterations': 2.5 is not a valid int"),
        ({"inner_first_order": "perhaps"}, "'inner_first_order': 'perhaps' is not a valid bool"),
        ({"hidden_sizes": [0]}, "'hidden_sizes': [0] must be one or more sizes >= 1"),
        ({"hidden_sizes": []}, "'hidden_sizes': [] must be one or more sizes >= 1"),
        ({"trpo_fisher": "exact"}, "'trpo_fisher': 'exact' is not one of"),
        ({"weight_init": "he"}, "'weight_init': 'he' is not one of: torch, xavier"),
        ({"algo": "maml-trpo", "outer": "ppo"}, "'outer': 'ppo' is not an outer update of maml"),
        ({"algo": "reptile", "outer": "trpo"}, "(it takes: reptile)"),
        ({"max_kl": 0.1, "trpo_max_kl": 0.2}, "'max_kl' is the old name of 'trpo_max_kl'"),
    ],
)
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):  # fmt: skip
        build_config(overrides)


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_a_key_of_another_algorithm_is_refused_in_one_line_naming_its_readers(algo):
    key, readers = FOREIGN[algo]
    with pytest.raises(ConfigError) as err:
        build_config({"algo": algo, key: 1})
    message = str(err.value)
    assert message == f"config key '{key}' is not read by {algo}; it is read by: {readers}"
    assert "\n" not in message
    assert key_readers(key) == readers.split(", ")


def test_keys_of_an_outer_update_the_member_did_not_choose_are_refused():
    build_config({"algo": "meta-sgd", "outer": "ppo", "ppo_lr": 0.01})
    with pytest.raises(ConfigError, match="'trpo_max_kl' is not read by meta-sgd with outer 'ppo'"):
        build_config({"algo": "meta-sgd", "outer": "ppo", "trpo_max_kl": 0.01})


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_a_saved_config_holds_only_the_runs_keys_and_round_trips(algo, tmp_path):
    config = build_config({"algo": algo, "env": "point-nav", "seed": 3})
    save_config(config, tmp_path / "config.yaml")
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    readable = set(run_keys())
    for group in config.groups:
        readable |= set(group.__dataclass_fields__)
    assert set(saved) == readable
    for foreign_key, _ in FOREIGN.values():  # nobody else's keys
        if foreign_key not in readable:
            assert foreign_key not in saved
    assert build_config(saved) == config


def test_old_key_names_still_work_with_a_one_line_notice(capsys):
    import metarl.configure

    metarl.configure._noticed.clear()
    config = build_config({"max_kl": 0.05, "first_order": True, "gae_lambda": 0.9})
    assert config.group(TRPOOptions).trpo_max_kl == 0.05
    assert config.group(ReplayOptions).inner_first_order is True
    assert config.group(InnerLoopOptions).inner_gae_lambda == 0.9
    err = capsys.readouterr().err.splitlines()
    assert "metarl: config key 'max_kl' is now 'trpo_max_kl' (the old name still works)" in err
    assert len(err) == 3
    meta_sgd = build_config({"algo": "meta-sgd", "meta_sgd_outer": "ppo"})
    assert meta_sgd.to_dict()["outer"] == "ppo"


def test_old_flag_names_still_parse():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    args = parser.parse_args(["--max-kl", "0.03", "--first-order"])
    config = build_config(config_overrides(args))
    assert config.group(TRPOOptions).trpo_max_kl == 0.03
    assert config.group(ReplayOptions).inner_first_order is True


def test_a_saved_config_of_the_old_flat_format_is_read_with_other_algorithms_keys_dropped():
    old = {**{k: v for k, v in Config().to_dict().items()}, "algo": "rl2", "max_kl": 0.01,
           "weight_init": "torch", "reptile_inner_steps": 3, "rl2_hidden_size": 32,
           "meta_sgd_outer": "trpo", "first_order": False}  # fmt: skip
    config = restored_config(old, {"iterations": 7})
    assert config.iterations == 7 and config.to_dict()["rl2_hidden_size"] == 32
    assert "max_kl" not in config.to_dict() and "trpo_max_kl" not in config.to_dict()
    with pytest.raises(ConfigError, match="'trpo_max_kl' is not read by rl2"):
        restored_config(old, {"trpo_max_kl": 0.1})


def test_each_member_of_the_gradient_family_defaults_to_its_own_outer_update():
    outer = {a: build_config({"algo": a}).to_dict().get("outer") for a in ALGORITHMS}
    assert outer == {"maml-trpo": "trpo", "maml-ppo": "ppo", "rl2": None, "reptile": "reptile",
                     "meta-sgd": "trpo", "meta-lstm": "trpo", "pearl": None,
                     "varibad": None}  # fmt: skip


def test_importing_the_config_imports_no_algorithm_module():
    code = (
        "import sys, metarl.config; "
        "print(sorted(m for m in sys.modules if m.startswith('metarl.algos')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_every_experiment_file_is_a_valid_config_with_comments(path):
    config = build_config(load_yaml(path))
    assert config.env and config.algo
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    assert all("#" in line for line in lines), f"{path.name}: every key needs a comment"


def test_there_are_experiments_for_each_algorithm():
    algos = {build_config(load_yaml(p)).algo for p in EXPERIMENTS}
    assert algos == set(ALGORITHMS)
