"""metarl results: README's and docs/results.md's tables are the generator's output; a tiny
manifest over hand-written runs gives a table written out here in full; a missing eval
file or a bad manifest is one line and exit 2; each row's train command rebuilds its
runs' configs."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from metarl import cli
from metarl import results as results_cli
from metarl import train as train_cli
from metarl.config import load_yaml
from metarl.configure import build_config, config_overrides
from metarl.plot_data import NOT_SETTINGS
from metarl.registry import resolve
from metarl.results_figures import BENCHMARK_SOURCE, TRAINING_SOURCE, family_figures, line_names
from metarl.results_manifest import load_manifest
from metarl.results_runs import read_results
from metarl.run_files import load_config
from metarl.stats import summarize_curves

ROOT = Path(__file__).resolve().parents[1]

# Three seeds of MAML-TRPO: at each k the seeds' three distinct values give the CI
# [min, max] (a resample of three seeds is all-min or all-max with chance 1/27 > 2.5%).
MAML = {0: [-10.0, 10.0, 20.0], 1: [-20.0, 20.0, 40.0], 2: [-30.0, 30.0, 60.0]}
# Five seeds of RL2: one seed reads 10 at episode 2. Mean 2.0; the IQM drops it (0.0); a
# resample holds no 10 with chance 0.8^5 = 33% (low 0.0) and three or more of five 10s
# with chance 5.8% but four or more with 0.67%, so the 97.5th percentile is 30 / 5 = 6.0.
RL2 = {s: [-5.0, 10.0 if s == 4 else 0.0] for s in range(5)}
PEARL = {0: [0.25, 0.5, 0.125]}  # one seed, small values: two decimals, no interval
SECONDS_PER_ITERATION = {0: 60.0, 1: 120.0, 2: 180.0, 3: 60.0, 4: 60.0}

EXPECTED_README = """\
| algorithm | family | settings | seeds | before / after k are | budget (one run) | before | after 1 | after 2 | after 3 | train time (mean over seeds) | commands |
|---|---|---|---|---|---|---|---|---|---|---|---|
| MAML-TRPO | point-nav | tiny | 3 | steps 0-2 | 2 it, 2,000 steps | -20.0 [-30.0, -10.0] | 20.0 [10.0, 30.0] | 40.0 [20.0, 60.0] |  | 4 min (progress.csv) | [pn-maml](docs/results.md#pn-maml) |
| RL² | point-nav | five seeds | 5 | episodes 1-2 | 2 it, 2,000 steps | -5.0 [-5.0, -5.0]; IQM -5.0 | 2.0 [0.0, 6.0]; IQM 0.0 |  |  | 3 min (progress.csv) | [pn-rl2](docs/results.md#pn-rl2) |"""  # noqa: E501
EXPECTED_EXPLORATION = """\
| algorithm | family | settings | seeds | before / after k are | budget (one run) | before | after 1 | after 2 | after 3 | train time (mean over seeds) | commands |
|---|---|---|---|---|---|---|---|---|---|---|---|
| PEARL | point-nav | one seed | 1 | episodes 1-3 | 2 it, 2,000 steps | 0.25 | 0.50 | 0.12 |  | 2 min (progress.csv) | [pn-pearl](#pn-pearl) |"""  # noqa: E501


def write_run(root: Path, name: str, seed: int, means, unit: str, *, iterations=2) -> Path:
    """A run directory as metarl train and evaluate leave it: config.yaml, progress.csv
    (two iterations, an in-training meta-test at the second) and the benchmark eval."""
    run = root / name
    (run / "eval").mkdir(parents=True)
    (run / "config.yaml").write_text(f"env: point-nav\nalgo: x\nseed: {seed}\n")
    column = "test/return_step_1" if unit == "step" else "test/return_episode_2"
    lines = [f"iteration,time/iteration,perf/env_steps,{column}"]
    for i in range(iterations):
        test = repr(float(means[-1]) - 1.0) if i == iterations - 1 else ""
        lines.append(f"{i},{SECONDS_PER_ITERATION[seed]},{1000 * (i + 1)},{test}")
    (run / "progress.csv").write_text("\n".join(lines) + "\n")
    k = len(means) - 1
    report = {
        "iteration": iterations,
        "env": "point-nav",
        "tasks": "benchmark",
        "pool": {"name": "benchmark", "version": "v1", "seed": 1, "size": 2, "evaluated": 2},
        "unit": "adaptation step" if unit == "step" else "episode",
        "summary": [{"step": j, "mean": m, "std": 1.0} for j, m in enumerate(means)],
        "per_task": [[m - 1 for m in means], [m + 1 for m in means]],
    }
    path = run / "eval" / f"benchmark_iter{iterations:06d}_steps{k}_metarl.json"
    path.write_text(json.dumps(report))
    return run


def row(id_, algorithm, settings, runs, adapt_steps, **extra) -> dict:
    return {"id": id_, "algorithm": algorithm, "family": "point-nav",
            "config": "experiments/maml_trpo_point_nav.yaml", "settings": settings,
            "iterations": 2, "adapt_steps": adapt_steps, "runs": runs, **extra}  # fmt: skip


@pytest.fixture
def tiny(tmp_path) -> dict[str, Path]:
    """A manifest of three rows over hand-written runs, and a README and docs page with
    empty generated blocks."""
    runs = tmp_path / "runs"
    for seed, means in MAML.items():
        write_run(runs, f"maml-s{seed}", seed, means, "step")
    for seed, means in RL2.items():
        write_run(runs, f"rl2-s{seed}", seed, means, "episode")
    write_run(runs, "pearl-s0", 0, PEARL[0], "episode")
    manifest = {
        "runs_dir": str(runs),
        "rows": [
            row("pn-maml", "MAML-TRPO", "tiny", [f"maml-s{s}" for s in MAML], 2),
            row("pn-rl2", "RL²", "five seeds", [f"rl2-s{s}" for s in RL2], 1),
            row("pn-pearl", "PEARL", "one seed", ["pearl-s0"], 2, note="A note."),
        ],
    }
    paths = {
        "manifest": tmp_path / "results.yaml",
        "readme": tmp_path / "README.md",
        "docs": tmp_path / "docs" / "results.md",
        "runs": runs,
    }
    paths["manifest"].write_text(yaml.safe_dump(manifest, allow_unicode=True, sort_keys=False))
    paths["readme"].write_text("# R\n\n<!-- results:begin -->\n<!-- results:end -->\n\nend\n")
    paths["docs"].parent.mkdir()
    blocks = "".join(
        f"<!-- {b}:begin -->\nold\n<!-- {b}:end -->\n\n" for b in results_cli.DOCS_BLOCKS
    )
    paths["docs"].write_text(f"# Results\n\n{blocks}")
    return paths


def run_results(paths: dict[str, Path], *flags: str) -> int:
    argv = ["results", "--manifest", str(paths["manifest"]), "--readme", str(paths["readme"]),
            "--docs", str(paths["docs"]), *flags]  # fmt: skip
    try:
        return cli.main(argv)
    except SystemExit as exc:  # argparse's own errors
        return int(exc.code)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# -- the committed tables ------------------------------------------------------------------


def test_readme_and_docs_hold_the_generated_tables(monkeypatch, capsys):
    """README's results block and docs/results.md's are what the manifest and the committed
    runs give now (after adding a run or seed: metarl results --write)."""
    monkeypatch.chdir(ROOT)
    assert cli.main(["results", "--check"]) == 0, capsys.readouterr().err


def test_each_rows_train_command_rebuilds_its_runs_configs():
    """The command the docs give for a row, with the run's seed, makes the run's config
    (keys that say where or how it ran aside; a run may stop before its config's end)."""
    manifest = load_manifest(ROOT / "experiments" / "results.yaml")
    # chunking and the Fisher-vector product's route change no maths (the same numbers to
    # rounding), and the product's default moved from double-backward to gauss-newton
    ignored = NOT_SETTINGS | {"iterations", "trpo_chunk_tasks", "trpo_hvp"}
    for entry in manifest.rows:
        if entry.kind != "train":
            continue
        for run in entry.runs:
            saved = load_config(ROOT / manifest.runs_dir / run)
            seed = str(saved["seed"])
            argv = ["--config", entry.config, *shlex.split(entry.flags), "--seed", seed]
            args = train_cli.build_parser().parse_args(argv)
            built = build_config(config_overrides(args), load_yaml(ROOT / args.config)).to_dict()
            # a run records its family's own keyword arguments with its env_kwargs
            built["env_kwargs"] = {**resolve(built["env"]).kwargs, **built["env_kwargs"]}
            differ = {k for k in set(saved) | set(built) - ignored if saved.get(k) != built.get(k)}
            assert not differ - ignored, f"{entry.id}: {run} differs in {sorted(differ - ignored)}"
            assert entry.iterations <= saved["iterations"], f"{run} never reached the budget"


# -- a tiny manifest -----------------------------------------------------------------------


def test_a_tiny_manifest_gives_the_known_tables(tiny, capsys):
    assert run_results(tiny) == 0
    printed = capsys.readouterr().out
    assert printed == f"{EXPECTED_README}\n\n{EXPECTED_EXPLORATION}\n"


def test_write_then_check_and_a_stale_cell_is_one_line_exit_1(tiny, capsys):
    assert run_results(tiny, "--write") == 0
    readme = tiny["readme"].read_text()
    assert readme == (
        f"# R\n\n<!-- results:begin -->\n{EXPECTED_README}\n<!-- results:end -->\n\nend\n"
    )
    docs = tiny["docs"].read_text()
    assert EXPECTED_EXPLORATION in docs
    train = "python -m metarl.train --config experiments/maml_trpo_point_nav.yaml --seed S"
    assert f"    {train}" in docs
    assert f"    python -m metarl.evaluate {tiny['runs'] / 'RUN'} --adapt-steps 2" in docs
    assert "seed 0 (`pearl-s0`): 0.25, 0.50, 0.12." in docs  # two decimals below 10
    assert "A note." in docs and "### pn-maml" in docs
    assert "![point-nav: adaptation and learning curves](results-point-nav.png)" in docs
    assert (tiny["docs"].parent / "results-point-nav.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert run_results(tiny, "--check") == 0

    tiny["readme"].write_text(readme.replace("20.0 [10.0, 30.0]", "20.1 [10.0, 30.0]"))
    assert run_results(tiny, "--check") == 1
    line = one_error_line(capsys)
    assert "README.md: block results differs from the runs at its line 3" in line
    assert line.endswith("run `metarl results --write`")


def test_figure_numbers_are_the_seeds_summaries(tiny):
    manifest = load_manifest(tiny["manifest"])
    (figure,) = family_figures(read_results(manifest))
    maml = figure.adaptation[0]
    mean, low, high = summarize_curves(np.array(list(MAML.values())))
    np.testing.assert_allclose([maml.mean, maml.low, maml.high], [mean, low, high])
    assert [line.label for line in figure.adaptation] == [
        "MAML-TRPO (3 seeds, steps 0-2)", "RL² (5 seeds, episodes 1-2)",
        "PEARL (1 seed, episodes 1-3)",
    ]  # fmt: skip
    # no eval of an earlier iteration: the in-training meta-test (own test pool)
    assert set(figure.sources) == {TRAINING_SOURCE}
    np.testing.assert_allclose(figure.learning[0].x, [2000.0])
    last = np.mean([means[-1] for means in MAML.values()])
    np.testing.assert_allclose(figure.learning[0].mean, [last - 1.0])  # the test column


def test_rows_of_one_algorithm_are_named_apart_by_budget_else_by_row_id():
    def result(row_id: str, algorithm: str, *steps: float | None):
        seeds = [SimpleNamespace(env_steps=s) for s in steps]
        return SimpleNamespace(row=SimpleNamespace(id=row_id, algorithm=algorithm), seeds=seeds)

    rows = [
        result("push-short", "MAML-TRPO", 500_000.0),
        result("push-2m", "MAML-TRPO", 2_000_000.0, 2_000_000.0, None),
        result("push-rl2", "RL²", 2_000_000.0),
        result("tf-a", "RL² (transformer)", 4_800_000.0),
        result("tf-b", "RL² (transformer)", 4_800_000.0),
    ]
    assert line_names(rows) == [
        "MAML-TRPO, 0.500 M steps", "MAML-TRPO, 2.00 M steps", "RL²",
        "RL² (transformer), tf-a", "RL² (transformer), tf-b",
    ]  # fmt: skip


def test_benchmark_evals_of_earlier_iterations_make_the_learning_curve(tiny):
    """Where every seed has benchmark evals at two iterations, the learning curve is theirs."""
    for seed in MAML:
        source = tiny["runs"] / f"maml-s{seed}" / "eval" / "benchmark_iter000002_steps2_metarl.json"
        report = json.loads(source.read_text())
        report["iteration"] = 1
        report["summary"][-1]["mean"] = 5.0 * (seed + 1)
        (source.parent / "benchmark_iter000001_steps2_metarl.json").write_text(json.dumps(report))
    manifest = load_manifest(tiny["manifest"])
    (figure,) = family_figures(read_results(manifest))
    assert figure.sources[0] == BENCHMARK_SOURCE and figure.sources[1] == TRAINING_SOURCE
    np.testing.assert_allclose(figure.learning[0].x, [1000.0, 2000.0])
    np.testing.assert_allclose(figure.learning[0].mean, [10.0, 40.0])  # (5+10+15)/3, (20+40+60)/3


# -- bad input -----------------------------------------------------------------------------


def test_a_missing_eval_file_names_the_evaluate_command(tiny, capsys):
    (tiny["runs"] / "rl2-s3" / "eval" / "benchmark_iter000002_steps1_metarl.json").unlink()
    assert run_results(tiny) == 2
    line = one_error_line(capsys)
    run = tiny["runs"] / "rl2-s3"
    assert line == (
        f"error: {run} has no benchmark-pool evaluation of iteration 2 with 1 adaptation "
        f"steps (eval/benchmark_iter000002_steps1_metarl.json): "
        f"run `python -m metarl.evaluate {run} --adapt-steps 1`"
    )


def test_a_row_with_episodes_reads_and_names_the_ep_evaluation(tiny, capsys):
    """``episodes: 1`` reads evaluate's ``--episodes 1`` file (``_ep1``), and the missing
    file's line gives the command with ``--episodes 1``."""
    manifest = yaml.safe_load(tiny["manifest"].read_text())
    manifest["rows"][2]["episodes"] = 1
    tiny["manifest"].write_text(yaml.safe_dump(manifest, allow_unicode=True))
    run = tiny["runs"] / "pearl-s0"
    plain = run / "eval" / "benchmark_iter000002_steps2_metarl.json"
    assert run_results(tiny) == 2
    assert one_error_line(capsys) == (
        f"error: {run} has no benchmark-pool evaluation of iteration 2 with 2 adaptation "
        f"steps (eval/benchmark_iter000002_steps2_metarl_ep1.json): "
        f"run `python -m metarl.evaluate {run} --adapt-steps 2 --episodes 1`"
    )
    report = json.loads(plain.read_text())
    report["summary"][0]["mean"] = 0.75
    plain.with_name("benchmark_iter000002_steps2_metarl_ep1.json").write_text(json.dumps(report))
    (result,) = [r for r in read_results(load_manifest(tiny["manifest"])) if r.row.id == "pn-pearl"]
    (seed,) = result.seeds
    assert seed.curves["return"] == (0.75, 0.5, 0.125)
    assert [e.path.name for e in seed.benchmark_evals] == [
        "benchmark_iter000002_steps2_metarl_ep1.json"
    ]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"seeds": [0]}, "unknown key 'seeds'"),
        ({"episodes": 0}, "episodes must be >= 1, got 0"),
        ({"iterations": "two"}, "iterations must be an integer, got 'two'"),
        ({"runs": "maml-s0"}, "runs must be a list"),
        ({"pool": "train"}, "pool must be one of benchmark, test"),
        ({"kind": "baselines"}, "a baselines row is scored on its runs' own test pool"),
        ({"id": "PN Maml"}, "id must be lower-case letters"),
        ({"runs": ["maml-s0", "maml-s0"]}, "run 'maml-s0' is listed in pn-maml and again"),
    ],
)
def test_a_bad_manifest_is_one_line_exit_2(tiny, capsys, change, message):
    manifest = yaml.safe_load(tiny["manifest"].read_text())
    manifest["rows"][0].update(change)
    tiny["manifest"].write_text(yaml.safe_dump(manifest, allow_unicode=True))
    assert run_results(tiny) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: {tiny['manifest']}") and message in line, line


def test_a_missing_key_and_a_missing_block_are_one_line(tiny, capsys):
    manifest = yaml.safe_load(tiny["manifest"].read_text())
    del manifest["rows"][1]["adapt_steps"]
    tiny["manifest"].write_text(yaml.safe_dump(manifest, allow_unicode=True))
    assert run_results(tiny) == 2
    assert "row 2 (pn-rl2): missing key 'adapt_steps'" in one_error_line(capsys)

    del manifest["rows"][1]
    tiny["manifest"].write_text(yaml.safe_dump(manifest, allow_unicode=True))
    tiny["readme"].write_text("# R\n\nno block\n")
    assert run_results(tiny, "--check") == 2
    assert "needs one <!-- results:begin -->" in one_error_line(capsys)
