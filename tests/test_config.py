"""Config: defaults < YAML < CLI, validation naming the key, every experiment file valid."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from metarl.config import (
    ALGOS,
    Config,
    ConfigError,
    add_config_arguments,
    build_config,
    config_overrides,
    load_yaml,
    save_config,
)

EXPERIMENTS = sorted((Path(__file__).parents[1] / "experiments").glob("*.yaml"))


def test_defaults_are_the_maml_paper_locomotion_settings():
    c = Config()
    assert (c.meta_batch_size, c.episodes_per_task, c.inner_steps, c.inner_lr) == (40, 20, 1, 0.1)
    assert (c.max_kl, c.cg_iters, c.discount, c.gae_lambda) == (0.01, 10, 0.99, 1.0)
    assert c.hidden_sizes == (100, 100) and c.activation == "relu"


def test_cli_overrides_yaml_overrides_defaults(tmp_path):
    (tmp_path / "c.yaml").write_text("inner_lr: 0.5\nmeta_batch_size: 7\nhidden-sizes: [8, 8]\n")
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    args = parser.parse_args(["--inner-lr", "0.2", "--first-order"])
    config = build_config(config_overrides(args), load_yaml(tmp_path / "c.yaml"))
    assert config.inner_lr == 0.2 and config.meta_batch_size == 7
    assert config.hidden_sizes == (8, 8) and config.first_order is True
    assert config.max_kl == 0.01  # untouched default


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"inner_lrr": 1}, "unknown config key 'inner_lrr'"),
        ({"algo": "maml"}, "'algo': 'maml' is not one of: maml-trpo, maml-ppo, rl2"),
        ({"gae_lambda": 2}, "'gae_lambda': 2.0 is above the maximum 1.0"),
        ({"iterations": 2.5}, "'iterations': 2.5 is not a valid int"),
        ({"first_order": "perhaps"}, "'first_order': 'perhaps' is not a valid bool"),
        ({"hidden_sizes": [0]}, "'hidden_sizes'"),
        ({"trpo_fisher": "exact"}, "'trpo_fisher': 'exact' is not one of"),
        ({"weight_init": "he"}, "'weight_init': 'he' is not one of: torch, xavier"),
        ({"algo": "rl2", "weight_init": "xavier"}, "'weight_init': 'xavier' applies to"),
    ],
)
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_config(overrides)


def test_saved_config_round_trips(tmp_path):
    config = build_config({"env": "point-nav", "hidden_sizes": [4, 5], "seed": 3})
    save_config(config, tmp_path / "config.yaml")
    assert build_config(yaml.safe_load((tmp_path / "config.yaml").read_text())) == config


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_every_experiment_file_is_a_valid_config_with_comments(path):
    config = build_config(load_yaml(path))
    assert config.env and config.algo
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    assert all("#" in line for line in lines), f"{path.name}: every key needs a comment"


def test_there_are_experiments_for_each_algorithm():
    algos = {build_config(load_yaml(p)).algo for p in EXPERIMENTS}
    assert algos == set(ALGOS)
