"""benchmarks/paired.py: the paired-seed check's parsing, commands and table (no training)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

PAIRED_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "paired.py"


@pytest.fixture(scope="module")
def paired():
    spec = importlib.util.spec_from_file_location("paired_benchmark", PAIRED_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_variant_values_are_parsed_as_yaml(paired):
    variant = paired.parse_variant(["quarter", "trpo_fisher_subsample=0.25", "trpo_fisher=full"])
    assert variant.name == "quarter"
    assert variant.overrides == {"trpo_fisher_subsample": 0.25, "trpo_fisher": "full"}
    with pytest.raises(SystemExit, match="expected KEY=VALUE"):
        paired.parse_variant(["bad", "trpo_fisher_subsample"])


def test_run_override_names_variant_seed_and_dir(paired):
    assert paired.parse_run_override("quarter:1=/a/b") == (("quarter", 1), Path("/a/b"))
    with pytest.raises(SystemExit, match="VARIANT:SEED=RUN_DIR"):
        paired.parse_run_override("quarter=/a/b")


def test_train_command_sets_the_variant_keys_and_resumes_a_started_run(paired, tmp_path):
    variant = paired.Variant("exact", {"trpo_fisher_subsample": 1.0})
    run_dir = tmp_path / "cfg-exact-s2"
    fresh = paired.train_command(Path("cfg.yaml"), variant, 2, 100, run_dir)
    assert fresh[1:3] == ["-m", "metarl.train"]
    joined = " ".join(fresh)
    assert "--seed 2 --iterations 100" in joined
    assert f"--logdir {tmp_path} --run-name cfg-exact-s2" in joined
    assert fresh[-2:] == ["--trpo-fisher-subsample", "1.0"]
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "iter_000049.pt").touch()
    resumed = paired.train_command(Path("cfg.yaml"), variant, 2, 100, run_dir)
    assert resumed[3:7] == ["--resume", str(run_dir), "--iterations", "100"]


def test_the_compared_checkpoint_and_its_eval_file(paired, tmp_path):
    assert paired.checkpoint_name(100) == "iter_000099.pt"  # files count iterations from 0
    path = paired.eval_file(tmp_path, 100, 1)
    assert path == tmp_path / "eval" / "benchmark_iter000100_steps1_metarl.json"


def test_table_pairs_seeds_and_reports_the_difference(paired):
    a, b = paired.Variant("exact", {}), paired.Variant("quarter", {})
    results = {
        ("exact", 0): paired.SeedResult(Path("a0"), [-100.0, -80.0], 20.0),
        ("exact", 1): paired.SeedResult(Path("a1"), [-110.0, -90.0], 22.0),
        ("quarter", 0): paired.SeedResult(Path("b0"), [-101.0, -70.0], 10.0),
        ("quarter", 1): paired.SeedResult(Path("b1"), [-109.0, -85.0], 12.0),
    }
    table = paired.paired_table([a, b], [0, 1], results)
    rows = table.splitlines()
    seed_0 = ["0", "|", "-100.00", "-80.00", "|", "-101.00", "-70.00", "|", "10.00"]
    assert rows[2].split() == seed_0
    assert rows[3].split()[-1] == "5.00"
    assert "exact after: -85.0" in table and "21.0 s per iteration" in table
    assert "quarter after: -77.5" in table and "11.0 s per iteration" in table
    assert "paired difference quarter - exact after: 7.5 [5.0, 10.0]" in table
    assert table.endswith("excludes 0: quarter is better at this budget")
