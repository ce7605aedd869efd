"""Meta-LSTM: its maths against hand-worked numbers and MAML, its CLI, and whether it learns.

* the log/sign preprocessing against numbers worked by hand (both branches);
* the LSTM's gates and step against a plain loop over coordinates written here;
* with the LSTM frozen to ``theta - lr * grad`` (zero weights, forget gate saturated at 1,
  input gate ``sigmoid(0) = 0.5``) the adapted parameters, the meta-gradient and the
  Fisher-vector product of the policy are MAML's, over two inner steps;
* the replay the outer update differentiates reproduces, with the LSTM's state carried,
  the parameters the sampler acted with;
* the CLI trains, resumes exactly and evaluates;
* (slow) it beats the same run with the outer step switched off.
"""

from __future__ import annotations

import math

import pytest
import torch

from metarl import evaluate
from metarl import train as train_cli
from metarl.algos.gradient_family import SGDRule
from metarl.algos.maml import AdaptationData, MAMLInnerLoop, reinforce_loss
from metarl.algos.maml_trpo import OldPolicy, TRPOUpdate
from metarl.algos.meta_lstm import CoordinateLSTM, MetaLSTMRule, preprocess
from metarl.algos.meta_sgd import LearnedStepRule, PerParameterStepSizes
from metarl.config import ConfigError
from metarl.configure import build_config
from metarl.functional import expand_params
from tests.test_learning import GRADIENT, Case, run_curve
from tests.test_maml import T, fake_batch, make_policy
from tests.test_reptile_meta_sgd import FakeSampler
from tests.test_train_cli import scalars


def test_preprocessing_matches_hand_worked_numbers():
    # |v| >= e^-10 ~ 4.54e-5: (log|v| / 10, sign v); below: (-1, e^10 v); e^10 = 22026.4657948
    v = torch.tensor([1.0, -(math.e**2), 0.01, 1e-5, -2e-6, 0.0], dtype=torch.float64)
    expected = torch.tensor(
        [
            [0.0, 1.0],
            [0.2, -1.0],
            [-0.4605170185988091, 1.0],  # ln 0.01 = -4.605170185988091
            [-1.0, 0.22026465794806718],
            [-1.0, -0.044052931589613436],
            [-1.0, 0.0],
        ],
        dtype=torch.float64,
    )
    assert torch.allclose(preprocess(v), expected, atol=1e-15, rtol=0)


# ------------------------------------------------------------------ the gates, by a plain loop
def sigm(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def pre(v: float) -> list[float]:
    if abs(v) >= math.exp(-10):
        return [math.log(abs(v)) / 10, math.copysign(1.0, v)]
    return [-1.0, math.exp(10) * v]


def plain_step(lstm: CoordinateLSTM, theta, grad, loss, state):
    """One step of every coordinate in plain Python: ``state[t][j] = (h, s, f, i)``."""
    W, b = lstm.weight.tolist(), lstm.bias.tolist()
    w_f, w_i = lstm.forget_weight.tolist(), lstm.input_weight.tolist()
    b_f, b_i, H = lstm.forget_bias.item(), lstm.input_bias.item(), lstm.hidden_size
    new_theta, new_state = [], []
    for t in range(len(theta)):
        row_theta, row_state = [], []
        for j in range(len(theta[t])):
            h, s, f_prev, i_prev = state[t][j]
            x = pre(loss[t]) + pre(grad[t][j]) + h
            a = [sum(W[r][c] * x[c] for c in range(len(x))) + b[r] for r in range(4 * H)]
            s = [sigm(a[H + k]) * s[k] + sigm(a[k]) * math.tanh(a[2 * H + k]) for k in range(H)]
            h = [sigm(a[3 * H + k]) * math.tanh(s[k]) for k in range(H)]
            f = sigm(sum(w_f[k] * h[k] for k in range(H)) + w_f[H] * theta[t][j]
                     + w_f[H + 1] * f_prev + b_f)  # fmt: skip
            i = sigm(sum(w_i[k] * h[k] for k in range(H)) + w_i[H] * theta[t][j]
                     + w_i[H + 1] * i_prev + b_i)  # fmt: skip
            row_theta.append(f * theta[t][j] - i * grad[t][j])
            row_state.append((h, s, f, i))
        new_theta.append(row_theta)
        new_state.append(row_state)
    return new_theta, new_state


def test_gates_and_step_match_a_plain_loop_over_coordinates():
    torch.manual_seed(3)
    lstm = CoordinateLSTM(2, forget_bias=1.5, input_gate=0.2, weight_range=0.5).double()
    theta = [[0.4, -1.2, 0.05], [2.0, 0.3, -0.7]]  # 2 tasks x 3 coordinates
    grads = [[[0.3, -2e-5, 1.7], [-0.05, 0.0, 4e-3]],  # both preprocessing branches
             [[-0.8, 0.02, 3e-6], [1.1, -0.4, 0.6]]]  # fmt: skip
    losses = [[0.8, -1e-6], [0.5, 2.5]]
    plain_state = [[([0.0, 0.0], [0.0, 0.0], 0.0, 0.0)] * 3 for _ in range(2)]
    state, ours = None, torch.tensor(theta, dtype=torch.float64)
    for grad, loss in zip(grads, losses):
        theta, plain_state = plain_step(lstm, theta, grad, loss, plain_state)
        with torch.no_grad():
            ours, state = lstm(ours, torch.tensor(grad, dtype=torch.float64),
                               torch.tensor(loss, dtype=torch.float64), state,
                               detach_weights=False)  # fmt: skip
        f = [[c[2] for c in row] for row in plain_state]
        i = [[c[3] for c in row] for row in plain_state]
        h = [[c[0] for c in row] for row in plain_state]
        s = [[c[1] for c in row] for row in plain_state]
        for mine, expected in ((state.forget, f), (state.input, i), (state.hidden, h),
                               (state.cell, s), (ours, theta)):  # fmt: skip
            assert torch.allclose(mine, torch.tensor(expected, dtype=torch.float64),
                                  atol=1e-13, rtol=0)  # fmt: skip
    # the gates are neither saturated nor constant: the case tests them
    assert 0.05 < float(state.input.min()) < float(state.input.max()) < 0.95
    assert 0.05 < float(state.forget.min()) < float(state.forget.max()) < 0.99


# ------------------------------------------------------------------ frozen: exactly MAML
def frozen_rule(policy) -> MetaLSTMRule:
    """theta - 0.5 grad: zero weights, forget gate sigmoid(40) = 1.0 in float64, input 0.5."""
    lstm = CoordinateLSTM(3, forget_bias=40.0, input_gate=0.5, weight_range=0.0).double()
    assert torch.sigmoid(lstm.forget_bias).item() == 1.0 and lstm.input_bias.item() == 0.0
    return MetaLSTMRule(lstm)


def inner_loop(policy, rule, *, steps: int = 2, sampler=None) -> MAMLInnerLoop:
    return MAMLInnerLoop(policy, sampler, rule, inner_steps=steps, first_order=False,
                         discount=0.99, gae_lambda=1.0, device=torch.device("cpu"))  # fmt: skip


def surrogate_and_kl(inner: MAMLInnerLoop, data: AdaptationData):
    """TRPO's mean surrogate and KL over the meta-batch, differentiable (second order)."""
    update = TRPOUpdate(inner, max_kl=0.01, cg_iters=5, cg_damping=1e-5, ls_max_backtracks=5,
                        ls_backtrack_ratio=0.8)  # fmt: skip
    return update._surrogate_and_kl(data, OldPolicy.of(inner.policy.spec, data), create_graph=True)


def test_the_frozen_lstm_adapts_and_meta_differentiates_exactly_as_maml():
    policy = make_policy()
    maml = inner_loop(policy, SGDRule(0.5))
    meta_lstm = inner_loop(policy, frozen_rule(policy))
    train = [fake_batch(1), fake_batch(2)]  # two inner steps: the state is carried too
    a, b = maml.adapted_params(train), meta_lstm.adapted_params(train)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-14, rtol=0), k
    data = AdaptationData(train=train, valid=fake_batch(3),
                          old_params={k: v.detach() + 0.01 for k, v in a.items()},
                          returns_per_step=[0.0] * 3, per_task_returns=torch.zeros(3, T),
                          env_steps=0)  # fmt: skip
    theta = list(policy.parameters())
    vector = [torch.randn_like(p) for p in theta]
    results = []
    for inner in (maml, meta_lstm):
        loss, kl = surrogate_and_kl(inner, data)
        meta_grad = torch.autograd.grad(loss, theta, retain_graph=True)
        kl_grad = torch.autograd.grad(kl, theta, create_graph=True)
        fisher_v = torch.autograd.grad(sum((g * v).sum() for g, v in zip(kl_grad, vector)), theta)
        results.append((meta_grad, fisher_v))
    for ours, maml_s in zip(results[1], results[0]):
        for x, y in zip(ours, maml_s):
            assert torch.allclose(x, y, atol=1e-12, rtol=0)
            assert y.abs().sum() > 0
    # the input gate's bias moves every step size at once: d/d b_I = sigm'(0) * sum of
    # Meta-SGD's d/d alpha at alpha = 0.5 everywhere (the same step)
    alpha = PerParameterStepSizes(policy, 0.5).double()
    meta_sgd = inner_loop(policy, LearnedStepRule(alpha))
    input_bias = meta_lstm.rule.lstm.input_bias
    (d_bias,) = torch.autograd.grad(surrogate_and_kl(meta_lstm, data)[0], [input_bias])
    d_alpha = torch.autograd.grad(surrogate_and_kl(meta_sgd, data)[0], list(alpha.parameters()))
    expected = 0.25 * sum(g.sum() for g in d_alpha)
    assert d_bias.item() == pytest.approx(expected.item(), rel=1e-10, abs=1e-14)
    assert abs(expected.item()) > 1e-6


# ------------------------------------------------------------------ acting and replay
def test_the_replay_reproduces_what_acted_with_the_state_carried():
    policy = make_policy().float()
    torch.manual_seed(5)
    rule = MetaLSTMRule(CoordinateLSTM(4, forget_bias=2.0, input_gate=0.3, weight_range=0.4))
    inner = inner_loop(policy, rule, sampler=FakeSampler())
    data = inner.collect([0, 1, 2], episodes_per_task=2, batch_key=(0, "train"))
    assert len(data.train) == 2 and isinstance(rule.last_gates[0], torch.Tensor)
    replayed = inner.adapted_params(data.train)
    for k, acted in data.old_params.items():
        assert torch.allclose(replayed[k], acted, atol=1e-6), k
    # the second step without the first's state: another result, so the state matters here
    params = expand_params(policy.params(), 3)
    first, _ = rule.replay_step(params, reinforce_loss(policy, data.train[0]), None,
                                first_order=False, create_graph=True)  # fmt: skip
    stateless, _ = rule.replay_step(first, reinforce_loss(policy, data.train[1]), None,
                                    first_order=False, create_graph=True)  # fmt: skip
    gap = max(float((stateless[k] - replayed[k]).detach().abs().max()) for k in replayed)
    assert gap > 1e-3
    # the LSTM's weights get a meta-gradient through the replay
    grads = torch.autograd.grad(sum(v.sum() for v in replayed.values()), rule.parameters())
    assert all(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("inner_lr", [0.0, 1.0, 1.5])
def test_an_inner_lr_outside_the_sigmoids_range_is_refused(inner_lr):
    with pytest.raises(ConfigError, match="'inner_lr': .* must be between 0 and 1"):
        build_config({"algo": "meta-lstm", "inner_lr": inner_lr})


# ------------------------------------------------------------------ the command line
TINY = ["--env", "point-nav", "--algo", "meta-lstm", "--iterations", "2",
        "--meta-batch-size", "3", "--episodes-per-task", "2", "--horizon", "10",
        "--hidden-sizes", "8", "--meta-lstm-hidden-size", "4", "--inner-steps", "2",
        "--workers", "0", "--eval-every", "2", "--eval-adapt-steps", "2",
        "--test-pool-size", "3", "--checkpoint-every", "1", "--quiet"]  # fmt: skip


@pytest.mark.parametrize(("outer", "kl"), [("trpo", "trpo/kl"), ("ppo", "ppo/clip_fraction")])
def test_cli_trains_resumes_exactly_and_evaluates(tmp_path, outer, kl):
    from metarl.checkpoint import load_checkpoint, periodic_checkpoints

    args = [*TINY, "--outer", outer, "--logdir", str(tmp_path)]
    assert train_cli.main([*args, "--run-name", "full"]) == 0
    tags = scalars(tmp_path / "full")
    for tag in ("adapt/return_step_2", "test/return_step_2", kl,
                "meta_lstm/input_gate/mean", "meta_lstm/forget_gate/min",
                "meta_lstm/input_bias"):  # fmt: skip
        assert tag in tags, tag
    # stopped after iteration 1 and resumed: the same policy and LSTM as the uninterrupted run
    assert train_cli.main([*args, "--run-name", "part", "--iterations", "1"]) == 0
    assert train_cli.main(["--resume", str(tmp_path / "part"), "--iterations", "2",
                           "--quiet"]) == 0  # fmt: skip
    full = load_checkpoint(periodic_checkpoints(tmp_path / "full")[-1])["learner"]
    part = load_checkpoint(periodic_checkpoints(tmp_path / "part")[-1])["learner"]
    start = load_checkpoint(periodic_checkpoints(tmp_path / "part")[0])["learner"]
    lstm = full["inner"]["lstm"]
    assert set(lstm) == {"weight", "bias", "forget_weight", "input_weight", "forget_bias",
                         "input_bias"}  # fmt: skip
    for k, v in full["policy"].items():
        assert torch.equal(v, part["policy"][k]), k
    for k, v in lstm.items():
        assert torch.equal(v, part["inner"]["lstm"][k]), k
        assert not torch.equal(v, start["inner"]["lstm"][k]), k  # the outer step moved it

    code = evaluate.main([str(tmp_path / "full"), "--adapt-steps", "2", "--tasks", "test",
                          "--episodes", "1", "--workers", "0"])  # fmt: skip
    assert code == 0
    assert len(list((tmp_path / "full" / "eval").glob("*.json"))) == 1


# ------------------------------------------------------------------ learning (slow)
# tests/test_learning.py's gradient-family batch (10 iterations x 6 tasks x 5 episodes x 40
# steps, a 16-16 policy), the null the same run with a zero trust region (its policy and LSTM,
# 13 tensors, never move). The margins are about half the smallest of three seeds' gaps,
# measured by benchmarks/learning_null.py with this case as its list of cases:
# s0/1/2: -15.3/-34.2 -> 18.9, -11.5/-23.8 -> 12.4, -14.1/-26.8 -> 12.8; gain 17.6, 10.4, 11.7;
# the null's own last-minus-first meta-test within +-1.8.
LEARNING = Case(
    "meta-lstm",
    (*GRADIENT, "--trpo-max-kl", "0.02"),
    ("--trpo-max-kl", "0"),
    "test/return_step_1",
    margin=6.0,
    improvement=5.0,
)


@pytest.mark.slow
def test_meta_lstm_beats_the_same_run_with_learning_switched_off(tmp_path):
    case = LEARNING
    trained = run_curve(case.argv(), tmp_path, "trained", case.tag)
    null = run_curve(case.argv(null=True), tmp_path, "null", case.tag)
    assert len(trained) == len(null) == 10, (trained, null)
    curves = f"trained {[round(v, 1) for v in trained]}, null {[round(v, 1) for v in null]}"
    assert trained[-1] > null[-1] + case.margin, f"{case.tag}: {curves}"
    assert trained[-1] > trained[0] + case.improvement, f"{case.tag}: {curves}"
