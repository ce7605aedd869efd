"""``evaluate --protocol metaworld``: Meta-World's defaults, what the JSON records, PEARL's and
RL²'s agents on tiny ml1 runs, the success rate against a count of the episodes themselves,
and the sampler's Meta-World episodes against Meta-World's own env.

Needs the extra (``pip install "metarl[metaworld]"``); CI runs it in its second environment.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_args import args_for

pytest.importorskip("metaworld", reason="the metaworld extra is not installed")
pytestmark = pytest.mark.metaworld

import metaworld  # noqa: E402
from metarl.envs.metaworld import METAWORLD_BENCHMARK_SEED, benchmark_tasks  # noqa: E402
from metaworld.evaluation import metalearning_evaluation  # noqa: E402
from test_sampler import assert_batches_equal  # noqa: E402

from metarl import cli  # noqa: E402
from metarl import evaluate as evaluate_cli  # noqa: E402
from metarl.metaworld_protocol import (  # noqa: E402
    ProtocolSettings,
    env_arguments,
    evaluation_arguments,
    make_protocol_agent,
    protocol_envs,
    run_protocol,
)
from metarl.options import ConfigError  # noqa: E402
from metarl.registry import make_env  # noqa: E402

ROOT = Path(__file__).parents[1]
TINY = [
    "--env", "ml1-reach", "--iterations", "1", "--meta-batch-size", "2",
    "--episodes-per-task", "1", "--horizon", "15", "--workers", "0", "--train-pool-size", "4",
    "--test-pool-size", "2", "--n-probe-tasks", "0", "--eval-every", "0",
    "--checkpoint-every", "1", "--device", "cpu", "--quiet",
    "--rl2-hidden-size", "8", "--rl2-episodes-per-trial", "2", "--rl2-trials-per-task", "1",
    "--rl2-minibatches", "1",
    "--pearl-hidden-sizes", "8", "--pearl-encoder-hidden-sizes", "8", "--pearl-batch-size", "8",
    "--pearl-embedding-batch", "8", "--pearl-meta-batch", "2", "--pearl-gradient-steps", "2",
    "--pearl-initial-episodes", "1", "--pearl-prior-episodes", "1",
    "--pearl-posterior-episodes", "0", "--pearl-extra-posterior-episodes", "0",
]  # fmt: skip
PROTOCOL_TINY = ["--protocol-evals", "1", "--protocol-envs", "2", "--protocol-tasks-per-class",
                 "2", "--protocol-eval-episodes", "2"]  # fmt: skip
"""The flags that shrink the protocol: what the JSON must name as changed, and why."""
CHANGED = {"num_evals": "--protocol-evals 1", "evaluation_episodes": "--protocol-eval-episodes 2",
           "meta_batch_size": "--protocol-envs 2",
           "total_tasks_per_cls": "--protocol-tasks-per-class 2"}  # fmt: skip
REACH_CHECKPOINT = ROOT / "experiments/results/ml1reach-trpo-s0/checkpoints/iter_000029.pt"
"""MAML-TRPO on ml1-reach, 30 iterations (committed): adapted, it succeeds on some goals."""


def signature_defaults(function) -> dict:
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty}  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One-iteration ml1-reach runs of RL² and PEARL, every size knob shrunk."""
    logdir = tmp_path_factory.mktemp("mw")
    for algo in ("rl2", "pearl"):
        argv = ["train", *args_for(algo, TINY), "--algo", algo, "--logdir", str(logdir)]
        assert cli.main([*argv, "--run-name", algo]) == 0
    return {algo: logdir / algo for algo in ("rl2", "pearl")}


# -- defaults ----------------------------------------------------------------------------------
def settings_of(*flags: str) -> ProtocolSettings:
    args = evaluate_cli.build_parser().parse_args(["RUN", "--protocol", "metaworld", *flags])
    evaluate_cli.check_flags(args)
    return evaluate_cli.protocol_settings(args)


class Untrained:
    """An agent that states no trained adaptation (Meta-World's default applies)."""

    trained = None


def test_the_default_protocol_arguments_are_metaworlds():
    settings = settings_of()
    arguments, reasons = evaluation_arguments(settings, Untrained())
    assert arguments == signature_defaults(metalearning_evaluation) and reasons == {}
    family = make_env("ml1-reach").unwrapped
    family.benchmark_seed = 7
    env = env_arguments(family, n_envs=settings.n_envs, tasks_per_class=settings.tasks_per_class,
                        horizon=500, reward_in_observation=False)  # fmt: skip
    made = signature_defaults(metaworld.make_ml_envs)
    assert env["meta_batch_size"] == made["meta_batch_size"] == 20
    assert env["max_episode_steps"] is None and env["reward_function_version"] == "v2"
    # the one departure: Meta-World's None (all 50 tasks) fails its own split over 20 sub-envs
    assert made["total_tasks_per_cls"] is None and env["total_tasks_per_cls"] == 40
    with pytest.raises(AssertionError, match="Invalid division of subtasks"):
        metaworld.make_ml_envs_test("reach-v3", seed=0, meta_batch_size=20)
    family.close()


def test_flags_change_only_their_own_arguments_and_are_named_as_the_reason():
    settings = settings_of("--protocol-evals", "4", "--adapt-steps", "2", "--episodes", "3")
    arguments, reasons = evaluation_arguments(settings, Untrained())
    defaults = signature_defaults(metalearning_evaluation)
    assert arguments == {**defaults, "num_evals": 4, "adaptation_steps": 2,
                         "adaptation_episodes": 3}  # fmt: skip
    assert reasons == {"num_evals": "--protocol-evals 4", "adaptation_steps": "--adapt-steps 2",
                       "adaptation_episodes": "--episodes 3"}  # fmt: skip
    # metarl's own meta-test keeps its default of 3 steps
    args = evaluate_cli.build_parser().parse_args(["RUN"])
    assert args.adapt_steps == 3


def test_a_split_metaworld_would_refuse_is_one_line():
    family = make_env("ml10").unwrapped
    family.benchmark_seed = 7
    with pytest.raises(ConfigError, match="not a multiple of the 5 test classes"):
        env_arguments(family, n_envs=12, tasks_per_class=40, horizon=500,
                      reward_in_observation=False)  # fmt: skip
    with pytest.raises(ConfigError, match="cannot be split evenly over 3 sub-envs"):
        env_arguments(family, n_envs=15, tasks_per_class=40, horizon=500,
                      reward_in_observation=False)  # fmt: skip
    family.close()


# -- the command on tiny runs of RL² and PEARL ----------------------------------------------------
@pytest.mark.parametrize("algo", ["rl2", "pearl"])
def test_protocol_on_a_tiny_run_records_every_argument_and_why_it_differs(runs, algo, capsys):
    run_dir = runs[algo]
    argv = ["evaluate", str(run_dir), "--protocol", "metaworld", "--workers", "0", *PROTOCOL_TINY]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    (path,) = (run_dir / "eval").glob("*_metaworld*.json")
    record = json.loads(path.read_text())
    assert 0.0 <= record["success_rate"] <= 1.0 and set(record["success_per_class"]) == {"reach-v3"}
    calls = record["metaworld_calls"]
    protocol = calls["metaworld.evaluation.metalearning_evaluation"]
    defaults = signature_defaults(metalearning_evaluation)
    assert protocol["metaworld_defaults"] == defaults
    # trained: RL²'s trials of 2 episodes -> 1 adaptation episode; PEARL's 1 prior episode
    assert protocol["arguments"] == {**defaults, "num_evals": 1, "evaluation_episodes": 2,
                                     "adaptation_episodes": 1}  # fmt: skip
    assert protocol["differ"]["adaptation_episodes"].startswith("trained: ")
    envs = calls["metaworld.make_ml_envs_test"]
    recurrent = {"recurrent_info_in_obs": True, "normalize_reward_in_recurrent_info": False}
    config_seed = envs["arguments"]["seed"]
    assert envs["arguments"] == {
        "name": "reach-v3", "seed": config_seed, "meta_batch_size": 2, "total_tasks_per_cls": 2,
        "max_episode_steps": 15, "reward_function_version": "v2",
        **(recurrent if algo == "rl2" else {}),
    }  # fmt: skip
    for call in (protocol, envs):  # every difference is named, by its flag where one set it
        for name, why in call["differ"].items():
            assert why == CHANGED.get(name, why) and why != "unexplained", (name, why)
        assert set(CHANGED) & set(call["arguments"]) <= set(call["differ"])
    assert "metarl's own meta-test, on all 50 tasks of the benchmark's test set" in out
    # one trial per task, as trained: 1 adaptation episode, then the scored one
    own = f"python -m metarl.evaluate {run_dir} --adapt-steps 1 --episodes 1"
    assert out.rstrip().endswith(own)


def test_default_evaluate_of_an_ml1_run_meta_tests_all_50_test_goals(runs, monkeypatch):
    """``metarl evaluate RUN`` hands the learner's meta-test every task of the benchmark's
    test set, in its order (the meta-test itself is replaced: 50 tasks' envs take long)."""
    from metarl.algos.base import AdaptationCurve
    from metarl.algos.rl2 import RL2

    seen: list = []

    def meta_test(self, tasks, *, adapt_steps, episodes_per_task, batch_key):
        seen.append(list(tasks))
        zeros = torch.zeros(adapt_steps + 1, len(tasks))
        return AdaptationCurve(zeros, {"success": zeros})

    monkeypatch.setattr(RL2, "meta_test", meta_test)
    run_dir = runs["rl2"]
    assert cli.main(["evaluate", str(run_dir), "--workers", "0"]) == 0
    _, test = benchmark_tasks("ML1", "reach-v3", METAWORLD_BENCHMARK_SEED)
    assert len(test) == 50 and seen == [list(test)]
    (path,) = (run_dir / "eval").glob("benchmark_*.json")
    record = json.loads(path.read_text())
    assert record["pool"]["evaluated"] == 50 and len(record["per_task"]) == 50


def test_a_learner_without_the_extension_is_one_line_and_exit_2(runs, monkeypatch, capsys):
    from metarl.algos.pearl import PEARL

    monkeypatch.delattr(PEARL, "metaworld_agent")
    argv = ["evaluate", str(runs["pearl"]), "--protocol", "metaworld", "--workers", "0",
            "--force", *PROTOCOL_TINY]  # fmt: skip
    capsys.readouterr()
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == (
        "error: --protocol metaworld is not available for pearl: its learner does not provide "
        "the MetaWorldAgentMaker extension (see metarl/algos/base.py)\n"
    )


# -- the adapters against metarl's meta-test and against the episodes themselves ----------------
class Recorder:
    """Forwards every call to ``agent``; logs rounds, phases and the adaptation rewards."""

    def __init__(self, agent, log: list) -> None:
        self.agent, self.log = agent, log
        self.adapt_returns: list[np.ndarray] = []
        self.eval_z: list[torch.Tensor] = []

    def init(self):
        self.log.append("round")
        self.adapt_returns.append(0.0)
        self.agent.init()

    def adapt_action(self, obs):
        return self.agent.adapt_action(obs)

    def step(self, timestep):
        self.adapt_returns[-1] = self.adapt_returns[-1] + np.asarray(timestep.reward, np.float32)
        self.agent.step(timestep)

    def adapt(self):
        self.log.append("evaluation")
        self.agent.adapt()

    def eval_action(self, obs):
        action = self.agent.eval_action(obs)
        if len(self.eval_z) < len(self.adapt_returns) and hasattr(self.agent, "z"):
            self.eval_z.append(self.agent.z.clone())  # PEARL's z of the first eval step
        return action

    def reset(self, mask):
        self.agent.reset(mask)


def logged_envs(envs, log: list):
    """``envs`` whose sub-envs log ``(index, success, reward, ended)`` per step, in order."""
    for i, env in enumerate(envs.envs):
        step = env.step

        def logged(action, i=i, step=step):
            out = step(action)
            log.append((i, float(out[4]["success"]), float(out[1]), bool(out[2] or out[3])))
            return out

        env.step = logged
    return envs


def count_by_hand(log: list, evaluation_episodes: int) -> tuple[float, float, list]:
    """Meta-World's scoring redone from the log: per round, the first X evaluation episodes
    to end (by step, then sub-env index), success if any step succeeded; the mean over rounds
    of their success rate and of their mean return, and every round's (success, return)."""
    rounds: list[list] = []
    phase, running = "", {}
    for entry in log:
        if entry in ("round", "evaluation"):
            phase, running = entry, {}
            rounds += [[]] if entry == "round" else []
            continue
        i, success, reward, ended = entry
        if phase != "evaluation":
            continue
        best, total = running.get(i, (0.0, 0.0))
        running[i] = (max(best, success), total + reward)
        if ended:
            rounds[-1].append(running.pop(i))
    scored = [episodes[:evaluation_episodes] for episodes in rounds]
    rate = float(np.mean([sum(s for s, _ in eps) / evaluation_episodes for eps in scored]))
    mean_return = float(np.mean([np.mean([r for _, r in eps]) for eps in scored]))
    return rate, mean_return, rounds


def test_protocol_success_rate_is_the_first_episodes_to_end_counted_by_hand(tmp_path):
    from metarl.checkpoint import load_checkpoint
    from metarl.configure import restored_config
    from metarl.run import build_task_pools, make_config_env, restore_run

    state = load_checkpoint(REACH_CHECKPOINT)
    config = restored_config(state["config"], {"workers": 0, "horizon": 100})
    run = restore_run(state, config, tmp_path)
    family = make_config_env(config).unwrapped
    build_task_pools(config, family)
    log: list = []
    envs = logged_envs(protocol_envs(family, n_envs=4, tasks_per_class=4, horizon=100,
                                     reward_in_observation=False), log)  # fmt: skip
    # a batch key whose noise gives successes and failures both (asserted below)
    agent = make_protocol_agent(run.learner, n_envs=4, horizon=100, seed=run.sampler.seed,
                                batch_key=("d",), low=-np.ones(4), high=np.ones(4))  # fmt: skip
    arguments = {"num_evals": 2, "adaptation_steps": 1, "adaptation_episodes": 1,
                 "evaluation_episodes": 3}  # fmt: skip
    official = run_protocol(Recorder(agent, log), envs, arguments)
    rate, mean_return, rounds = count_by_hand(log, 3)
    outcomes = {s for episodes in rounds for s, _ in episodes[:3]}
    assert outcomes == {0.0, 1.0}, rounds  # the case has successes and failures both
    assert official.success_rate == pytest.approx(rate, abs=1e-12)
    assert official.success_per_class == {"reach-v3": pytest.approx(rate, abs=1e-12)}
    assert official.mean_return == pytest.approx(mean_return, rel=1e-6)
    run.sampler.close()
    envs.close()
    family.close()


def test_pearls_agent_acts_and_infers_as_its_meta_test(runs, tmp_path):
    """Round 0's adaptation episode is meta_test's episode 1 (prior z, same noise), and the
    evaluation's z is the posterior over it, drawn from meta_test's generator."""
    from metarl.algos.pearl import context_of, episode_transitions, pad_contexts
    from metarl.checkpoint import latest_checkpoint, load_checkpoint
    from metarl.configure import restored_config
    from metarl.policies.tanh_gaussian import actor_params
    from metarl.run import build_task_pools, make_config_env, restore_run

    state = load_checkpoint(latest_checkpoint(runs["pearl"]))
    config = restored_config(state["config"], {"workers": 0})
    run = restore_run(state, config, tmp_path)
    learner = run.learner
    family = make_config_env(config).unwrapped
    build_task_pools(config, family)
    envs = protocol_envs(family, n_envs=2, tasks_per_class=2, horizon=15,
                         reward_in_observation=False)  # fmt: skip
    key = ("pearl-test",)
    agent = make_protocol_agent(learner, n_envs=2, horizon=15, seed=run.sampler.seed,
                                batch_key=key, low=-np.ones(4), high=np.ones(4))  # fmt: skip
    recorder = Recorder(agent, [])
    run_protocol(recorder, envs, {"num_evals": 1, "adaptation_steps": 1,
                                  "adaptation_episodes": 1, "evaluation_episodes": 2})  # fmt: skip
    # meta_test's first two calls on the sub-envs' tasks, by hand
    tasks = list(benchmark_tasks("ML1", "reach-v3", family.benchmark_seed)[1][:2])
    generator = learner.meta_test_generator((*key, 0))
    prior = learner.prior_z(2, generator)
    batch = run.sampler.sample(tasks, actor_params(learner.policy, prior), episodes_per_task=1,
                               batch_key=(*key, 0, "pearl", 0))  # fmt: skip
    np.testing.assert_allclose(recorder.adapt_returns[0], batch.returns[:, 0].numpy(), rtol=1e-6)
    # each episode's last transition is left out: its next observation never reaches the agent
    contexts = [
        [context_of({k: torch.from_numpy(v[:-1]) for k, v in t.items()})]
        for t in episode_transitions(batch)
    ]
    posterior = learner.posterior_z(*pad_contexts(contexts), generator=generator)
    assert torch.equal(recorder.eval_z[0], posterior)
    assert not torch.equal(posterior, prior)
    run.sampler.close()
    envs.close()
    family.close()


# -- the sampler on Meta-World ----------------------------------------------------------------
def test_the_samplers_metaworld_episodes_are_metaworlds_own_env_stepped_by_hand():
    """The fast path (the family stepped unwrapped) equals the wrapped path for the same seeds,
    and both equal Meta-World's own env of the benchmark's own task, stepped in a plain loop."""
    from metarl.policies import GaussianMLPPolicy, MLPSpec, params_to_numpy
    from metarl.sampling import make_sampler

    spec = MLPSpec(39, 4, (8,))
    torch.manual_seed(0)
    params = params_to_numpy(GaussianMLPPolicy(spec).params())
    _, test = benchmark_tasks("ML1", "reach-v3", 11)
    tasks, kwargs = list(test[:2]), dict(episodes_per_task=2, batch_key=(5,))
    with (
        make_sampler("ml1-reach", spec=spec, seed=1, workers=0, horizon=20) as fast,
        make_sampler("ml1-reach", spec=spec, seed=1, workers=0, horizon=20, fast=False) as slow,
    ):
        assert fast.fast_path and not slow.fast_path
        batch, wrapped = fast.sample(tasks, params, **kwargs), slow.sample(tasks, params, **kwargs)
    assert_batches_equal(batch, wrapped)
    assert torch.equal(batch.episode_infos["success"], wrapped.episode_infos["success"])
    bench = metaworld.ML1("reach-v3", seed=11)
    env = bench.test_classes["reach-v3"](reward_function_version="v2")
    for ti, ei in ((0, 0), (1, 1)):
        env.set_task(bench.test_tasks[ti])
        obs, _ = env.reset()
        success = 0.0
        for t in range(20):
            np.testing.assert_array_equal(batch.observations[ti, ei, t].numpy(),
                                          obs.astype(np.float32))  # fmt: skip
            obs, reward, _, _, info = env.step(np.clip(batch.actions[ti, ei, t].numpy(), -1, 1))
            assert batch.rewards[ti, ei, t].item() == np.float32(reward)
            success = max(success, float(info["success"]))
        assert batch.episode_infos["success"][ti, ei].item() == success
    env.close()
