"""A run's config in TensorBoard's Text tab and its hyperparameters and meta-test metrics
in the HParams tab, read back the way a user sees them: TensorBoard's own backend,
started on loopback, queried over HTTP as its frontend queries it."""

from __future__ import annotations

import contextlib
import csv
import html
import json
import os
import re
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from metarl.logger import CsvLog, RunLogger, config_markdown, hparam_value, run_hparams

TINY = [
    "--env", "point-nav", "--iterations", "2", "--meta-batch-size", "2",
    "--episodes-per-task", "2", "--horizon", "5", "--eval-every", "1", "--workers", "0",
    "--test-pool-size", "2", "--train-pool-size", "4", "--hidden-sizes", "8", "8",
    "--eval-adapt-steps", "2", "--quiet",
]  # fmt: skip
STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


# -- the pure parts -------------------------------------------------------------------------


def test_hparams_are_every_config_key_as_a_scalar_and_metrics_the_meta_test_means():
    config = {"inner_lr": 0.1, "iterations": 500, "first_order": False, "env": "point-nav",
              "hidden_sizes": [100, 100], "env_kwargs": {"b": 1, "a": [0, 2]},
              "ray_address": "", "maybe": None}  # fmt: skip
    last = {
        "adapt/return_step_0": 1.0,
        "test/return_step_0": -3.5,
        "test/return_step_1": -2.0,
        "test/success_step_1": 0.25,
        "test/success_step_1/reach-v3": 0.5,  # a group's mean: not a metric
        "probe/task_0/return_step_1": 9.0,
        "test/return_episode_4": -1.0,
        "loss/surrogate_before": 0.0,
    }
    hparams, metrics = run_hparams(config, last)
    assert hparams == {
        "inner_lr": 0.1, "iterations": 500, "first_order": "False", "env": "point-nav",
        "hidden_sizes": "[100, 100]", "env_kwargs": '{"a": [0, 2], "b": 1}',
        "ray_address": "", "maybe": "None",
    }  # fmt: skip
    assert metrics == {
        "test/return_step_0": -3.5,
        "test/return_step_1": -2.0,
        "test/success_step_1": 0.25,
        "test/return_episode_4": -1.0,
    }
    assert hparam_value((8, 8)) == "[8, 8]" and hparam_value(True) == "True"


def test_config_markdown_is_a_table_row_per_key():
    text = config_markdown({"env": "point-nav", "run_name": "", "sizes": [8, 8], "x": "a|b"})
    assert text.splitlines() == [
        "| key | value |",
        "|---|---|",
        "| env | `point-nav` |",
        '| run_name | `""` |',
        "| sizes | `[8, 8]` |",
        "| x | `a\\|b` |",
    ]


def test_the_last_values_of_a_resumed_run_come_from_its_csv(tmp_path):
    log = CsvLog(tmp_path / "progress.csv")
    log.add({"adapt/return_step_0": 1.0}, 0)
    log.add({"adapt/return_step_0": 2.0, "test/return_step_0": -5.0}, 1)
    log.add({"adapt/return_step_0": 3.0}, 2)
    log.flush()
    resumed = CsvLog(tmp_path / "progress.csv", purge_step=2)
    assert resumed.last_values() == {"adapt/return_step_0": 2.0, "test/return_step_0": -5.0}


def hparams_tags(run_dir: Path) -> set[str]:
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag for tag in acc.summary_metadata if tag.startswith("_hparams_/")}


def test_no_hparams_record_before_a_metric_unless_the_run_ends(tmp_path):
    logger = RunLogger(tmp_path / "a")
    assert logger.hparams({"seed": 0}, 0) is False  # TensorBoard would keep it, metric-less
    logger.scalars({"test/return_step_0": -1.0}, 1)
    assert logger.hparams({"seed": 0}, 1) is True
    logger.close()
    assert hparams_tags(tmp_path / "a") == {
        "_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"
    }  # fmt: skip
    logger = RunLogger(tmp_path / "b")
    assert logger.hparams({"seed": 0}, 0, final=True) is True
    logger.close()
    assert "_hparams_/session_start_info" in hparams_tags(tmp_path / "b")


# -- a real run, read back by TensorBoard ---------------------------------------------------


@contextlib.contextmanager
def tensorboard(logdir: Path) -> Iterator[str]:
    """TensorBoard's backend on 127.0.0.1 and a free port, the data loaded once before it
    serves; yields its URL and stops it on exit."""
    from tensorboard import program

    board = program.TensorBoard()
    board.configure(argv=[None, "--logdir", str(logdir), "--host", "127.0.0.1", "--port", "0",
                          "--load_fast", "false", "--reload_interval", "0",
                          "--reload_task", "blocking"])  # fmt: skip
    server = board._make_server()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.get_url().rstrip("/")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def request(url: str, body: dict | None = None):
    """GET ``url``, or POST ``body`` as JSON as the frontend does; the JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    headers = {} if body is None else {"Content-Type": "application/json"}
    with urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=30) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """The CLI's run with every size knob shrunk, meta-testing every iteration."""
    logdir = tmp_path_factory.mktemp("runs")
    result = subprocess.run(
        [sys.executable, "-m", "metarl.train", *TINY, "--logdir", str(logdir), "--run-name", "r"],
        cwd=logdir, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return logdir / "r"


def last_row(run_dir: Path) -> dict[str, str]:
    with (run_dir / "progress.csv").open(newline="") as f:
        return list(csv.DictReader(f))[-1]


def test_tensorboard_lists_the_run_by_its_config_with_its_last_meta_test(tiny_run):
    config = yaml.safe_load((tiny_run / "config.yaml").read_text())
    metrics = [f"test/return_step_{k}" for k in range(3)]
    with tensorboard(tiny_run.parent) as url:
        experiment = request(f"{url}/data/plugin/hparams/experiment", {"experimentName": ""})
        groups = request(
            f"{url}/data/plugin/hparams/session_groups",
            {"experimentName": "", "allowedStatuses": STATUSES, "colParams": [],
             "startIndex": 0, "sliceSize": 100},
        )  # fmt: skip
    assert {info["name"] for info in experiment["hparamInfos"]} == set(config)
    assert [info["name"]["tag"] for info in experiment["metricInfos"]] == metrics
    (group,) = groups["sessionGroups"]
    assert group["name"] == "r" and [s["name"] for s in group["sessions"]] == ["r"]
    for key, value in config.items():
        shown = group["hparams"][key]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            assert shown == pytest.approx(value), key
        else:
            assert shown == hparam_value(value), key
    row = last_row(tiny_run)  # iteration 1's meta-test, the last one
    values = {m["name"]["tag"]: m for m in group["metricValues"]}
    assert set(values) == set(metrics)
    for tag in metrics:
        assert values[tag]["value"] == pytest.approx(float(row[tag]), rel=1e-6), tag
        assert values[tag]["trainingStep"] == 1


def test_tensorboard_shows_the_config_as_a_table(tiny_run):
    config = yaml.safe_load((tiny_run / "config.yaml").read_text())
    with tensorboard(tiny_run.parent) as url:
        tags = request(f"{url}/data/plugin/text/tags")
        texts = request(f"{url}/data/plugin/text/text?run=r&tag=config/text_summary")
    assert tags == {"r": ["config/text_summary"]}
    (text,) = texts  # written once, at the start
    assert text["step"] == 0
    assert "<th>key</th>" in text["text"] and "<th>value</th>" in text["text"]
    cells = re.findall(r"<td>([^<]*)</td>\s*<td><code>([^<]*)</code></td>", text["text"])
    shown = {key: html.unescape(value) for key, value in cells}
    assert list(shown) == list(config)
    for key, value in config.items():
        assert shown[key] == (value if isinstance(value, str) and value else json.dumps(value))
