"""Meta-LSTM (Ravi & Larochelle 2017) for RL: MAML whose inner step is taken by a learned LSTM.

A gradient-family member (:mod:`metarl.algos.gradient_family`): the inner rule
:class:`MetaLSTMRule` moves each task's policy parameters with a small two-layer LSTM
applied to every coordinate (each scalar entry of each parameter) on its own. Its weights
are shared by all coordinates, which are its batch (every coordinate of every task has its
own state). The outer update, TRPO (default) or PPO (``--outer``), meta-trains the LSTM's
weights together with the policy's initial parameters, through the same replayed inner
loop as Meta-SGD's step sizes: they are more
:meth:`~metarl.algos.maml.MAMLInnerLoop.meta_parameters`.

The equations (Ravi & Larochelle, "Optimization as a Model for Few-Shot Learning", ICLR
2017, Sec. 3.1-3.2 and the two-layer meta-learner of their experiments; their code,
twitter-research/meta-learning-lstm, for what the paper leaves open), for one coordinate
at inner step ``t = 1..K``, starting from ``theta_0``, the policy's parameters (the
paper's learned initial cell state ``c_0``)::

    L_t = the task's REINFORCE loss at theta_{t-1}          (one number per task)
    g_t = d L_t / d theta_{t-1}                              (this coordinate's gradient)
    x_t = [pre(L_t), pre(g_t)]                               (4 inputs)
    pre(v) = (log|v| / p, sign v)   if |v| >= e^-p,   (-1, e^p v)   otherwise;   p = 10
    [a_i, a_f, a_g, a_o] = W [x_t, h_{t-1}] + b              (layer 1: a standard LSTM cell,
    s_t = sigm(a_f) s_{t-1} + sigm(a_i) tanh(a_g)             H hidden units, gates in
    h_t = sigm(a_o) tanh(s_t)                                 torch's order)
    f_t = sigm(w_F . [h_t, theta_{t-1}, f_{t-1}] + b_F)      (layer 2: the forget gate,
    i_t = sigm(w_I . [h_t, theta_{t-1}, i_{t-1}] + b_I)       the input gate, and the cell,
    theta_t = f_t * theta_{t-1} + i_t * (-g_t)                c_t = f_t c_{t-1} + i_t c~_t)

with ``h_0 = s_0 = 0`` and ``f_0 = i_0 = 0``. ``pre`` is the preprocessing of
Andrychowicz et al. 2016 (App. A) that Ravi & Larochelle apply to gradients and losses.
With ``f_t = 1`` and ``i_t = alpha`` the step is MAML's at ``inner_lr = alpha``; Meta-SGD's
learned per-parameter ``alpha`` is an input gate that sees nothing; ``f_t < 1`` shrinks the
parameters (a learned weight decay).

Choices where the paper leaves room, or where this differs from it:

* ``f_{t-1}`` and ``i_{t-1}`` are the previous gates' values, as in the paper's equations
  (the authors' code feeds their pre-activations).
* Meta-gradient: the LSTM's inputs ``x_t`` are constants, as in the paper (Sec. 3.2: the
  gradient through the learner's gradients and losses as inputs is dropped); the ``g_t`` of
  the cell update keeps its second-order path unless ``inner_first_order``, as MAML's does
  in this library (with ``inner_first_order`` the meta-gradient is the paper's). The
  ``theta_{t-1}`` the gates see keeps its graph, as in the paper.
* Initialisation: every LSTM weight and layer 1's bias uniform in [-0.01, 0.01] (the
  authors' code); ``b_F = meta_lstm_forget_bias`` (5, the top of the authors' U(4, 5)
  draw: ``f ~ 0.993``); ``b_I = logit(inner_lr)``, so ``i ~ inner_lr`` at the start, as
  Meta-SGD's ``alpha`` starts at ``inner_lr`` (the authors draw ``b_I`` from U(-5, -4),
  ``i ~ 0.01``, their classifier's step size).
* The paper clips the meta-gradient's norm at 0.25; here TRPO's trust region or PPO's
  clipped objective bounds the outer step.

Acting and replay run the same step (:meth:`MetaLSTMRule.step`): acting with the LSTM's
weights as constants and first-order, replay as the outer update asks. The LSTM's state is
carried from one inner step to the next in both, fresh for each task at each
``collect`` and each replay.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from metarl.algos.gradient_family import InnerLoopOptions, RuleSpec, gradient_member
from metarl.algos.maml_ppo import PPO
from metarl.algos.maml_trpo import TRPO
from metarl.functional import TaskParams, inner_gradients
from metarl.options import ConfigError, option

if TYPE_CHECKING:
    from metarl.config import Config

PREPROCESS_P = 10.0
"""``p`` of the log/sign preprocessing: Andrychowicz et al. 2016 (App. A), and Ravi &
Larochelle's code."""
N_INPUTS = 4
"""Layer 1's inputs per coordinate: the preprocessed loss (2) and gradient (2)."""


@dataclass
class MetaLSTMOptions:
    """Meta-LSTM inner rule: the coordinate-wise LSTM that takes each inner step"""

    meta_lstm_hidden_size: int = option(
        20,
        "Meta-LSTM: hidden units of the coordinate LSTM's first layer (20 as Ravi & "
        "Larochelle); its cost grows with this times the policy's parameters times the tasks",
        min=1,
    )
    meta_lstm_forget_bias: float = option(
        5.0,
        "Meta-LSTM: initial forget-gate bias: f = sigmoid(5) ~ 0.993 at the start, close to "
        "plain gradient descent (Ravi & Larochelle's code draws it from U(4, 5)); the input "
        "gate starts at inner_lr",
    )


def preprocess(v: torch.Tensor, p: float = PREPROCESS_P) -> torch.Tensor:
    """Andrychowicz et al.'s scaling of gradients and losses: ``[...] -> [..., 2]``.

    ``(log|v| / p, sign v)`` where ``|v| >= e^-p``, else ``(-1, e^p v)``: every input is of
    order one whatever the magnitude of ``v``, and its sign is kept.
    """
    threshold = math.exp(-p)
    big = v.abs() >= threshold
    log_part = torch.where(big, torch.log(v.abs().clamp_min(threshold)) / p, -torch.ones_like(v))
    sign_part = torch.where(big, torch.sign(v), v * math.exp(p))
    return torch.stack([log_part, sign_part], dim=-1)


def lstm_cell(
    x: torch.Tensor,
    hidden: torch.Tensor,
    cell: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A standard LSTM cell (layer 1), gates in torch's order (input, forget, candidate, output).

    Args:
        x: ``[..., I]`` inputs; hidden, cell: ``[..., H]``.
        weight: ``[4H, I + H]`` on ``[x, hidden]``; bias: ``[4H]``.
    Returns:
        the new ``hidden`` and ``cell``, ``[..., H]`` each.
    """
    a = torch.cat([x, hidden], dim=-1) @ weight.T + bias
    a_i, a_f, a_g, a_o = a.chunk(4, dim=-1)
    cell = torch.sigmoid(a_f) * cell + torch.sigmoid(a_i) * torch.tanh(a_g)
    return torch.sigmoid(a_o) * torch.tanh(cell), cell


def gate(
    hidden: torch.Tensor,
    theta: torch.Tensor,
    previous: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
) -> torch.Tensor:
    """Layer 2's forget or input gate: ``sigm(w . [h, theta, previous gate] + b)``.

    Args:
        hidden: ``[..., H]``; theta, previous: ``[...]``; weight: ``[H + 2]``; bias: ``[]``.
    Returns:
        ``[...]``.
    """
    features = torch.cat([hidden, theta.unsqueeze(-1), previous.unsqueeze(-1)], dim=-1)
    return torch.sigmoid(features @ weight + bias)


@dataclass
class MetaLSTMState:
    """The LSTM's state of every coordinate of every task after an inner step.

    Attributes:
        hidden, cell: layer 1's ``h`` and ``s``, ``[T, P, H]`` (P: the policy's parameter
            count; layer 2's cell is the parameters themselves).
        forget, input: layer 2's gates ``f`` and ``i``, ``[T, P]``.
    """

    hidden: torch.Tensor
    cell: torch.Tensor
    forget: torch.Tensor
    input: torch.Tensor

    @classmethod
    def initial(cls, theta: torch.Tensor, hidden_size: int) -> MetaLSTMState:
        """Zeros for the ``[T, P]`` coordinates of ``theta``: ``h_0 = s_0 = f_0 = i_0 = 0``."""
        zeros = theta.new_zeros(*theta.shape, hidden_size)
        return cls(zeros, zeros, theta.new_zeros(theta.shape), theta.new_zeros(theta.shape))

    def detached(self) -> MetaLSTMState:
        return MetaLSTMState(*(t.detach() for t in dataclasses.astuple(self)))


def logit(p: float) -> float:
    """The bias whose sigmoid is ``p`` (``0 < p < 1``)."""
    return math.log(p / (1.0 - p))


class CoordinateLSTM(nn.Module):
    """The meta-learner: the module docstring's equations, one coordinate per batch entry.

    Parameters: ``weight`` ``[4H, 4 + H]`` and ``bias`` ``[4H]`` (layer 1), ``forget_weight``
    and ``input_weight`` ``[H + 2]``, ``forget_bias`` and ``input_bias`` (scalars; layer 2).

    Args:
        hidden_size: H.
        forget_bias: ``b_F`` at the start.
        input_gate: ``i`` at the start when the weights are zero: ``b_I = logit(input_gate)``.
        weight_range: every other parameter starts uniform in ``[-weight_range,
            weight_range]`` (0.01 as the authors' code; 0 makes the step exactly
            ``sigm(b_F) theta - input_gate * g``).
    """

    def __init__(
        self, hidden_size: int, *, forget_bias: float, input_gate: float, weight_range: float = 0.01
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.weight = nn.Parameter(torch.empty(4 * hidden_size, N_INPUTS + hidden_size))
        self.bias = nn.Parameter(torch.empty(4 * hidden_size))
        self.forget_weight = nn.Parameter(torch.empty(hidden_size + 2))
        self.input_weight = nn.Parameter(torch.empty(hidden_size + 2))
        self.forget_bias = nn.Parameter(torch.tensor(float(forget_bias)))
        self.input_bias = nn.Parameter(torch.tensor(logit(input_gate)))
        with torch.no_grad():
            for w in (self.weight, self.bias, self.forget_weight, self.input_weight):
                w.uniform_(-weight_range, weight_range)

    def forward(
        self,
        theta: torch.Tensor,
        grad: torch.Tensor,
        loss: torch.Tensor,
        state: MetaLSTMState | None,
        *,
        detach_weights: bool,
    ) -> tuple[torch.Tensor, MetaLSTMState]:
        """One inner step of every coordinate.

        Args:
            theta: ``[T, P]`` parameters before the step (``theta_{t-1}``).
            grad: ``[T, P]`` their gradients ``g_t`` (with their graph for a second-order
                replay; the LSTM's inputs take them as constants).
            loss: ``[T]`` each task's inner loss ``L_t`` (a constant input).
            state: the previous step's, or ``None`` for the first step.
            detach_weights: use the LSTM's weights as constants (acting, or a replay
                without ``create_graph``).
        Returns:
            ``theta_t`` ``[T, P]`` and the new state.
        """
        w = {name: p.detach() if detach_weights else p for name, p in self.named_parameters()}
        if state is None:
            state = MetaLSTMState.initial(theta, self.hidden_size)
        losses = preprocess(loss.detach()).unsqueeze(1).expand(*theta.shape, 2)  # [T, P, 2]
        x = torch.cat([losses, preprocess(grad.detach())], dim=-1)  # [T, P, 4]
        hidden, cell = lstm_cell(x, state.hidden, state.cell, w["weight"], w["bias"])
        forget = gate(hidden, theta, state.forget, w["forget_weight"], w["forget_bias"])
        input_ = gate(hidden, theta, state.input, w["input_weight"], w["input_bias"])
        return forget * theta - input_ * grad, MetaLSTMState(hidden, cell, forget, input_)


def flatten_tasks(params: TaskParams) -> torch.Tensor:
    """``[T, ...]`` per name -> ``[T, P]``, the names in ``params``' order."""
    return torch.cat([v.reshape(v.shape[0], -1) for v in params.values()], dim=1)


def unflatten_tasks(flat: torch.Tensor, like: TaskParams) -> TaskParams:
    """``[T, P]`` -> ``like``'s names and shapes (the inverse of :func:`flatten_tasks`)."""
    pieces = flat.split([v[0].numel() for v in like.values()], dim=1)
    return {name: piece.reshape(v.shape) for (name, v), piece in zip(like.items(), pieces)}


class MetaLSTMRule:
    """Meta-LSTM's inner rule: every step, acting or replayed, is :meth:`step`."""

    def __init__(self, lstm: CoordinateLSTM) -> None:
        self.lstm = lstm
        self.last_gates: tuple[torch.Tensor, torch.Tensor] | None = None  # for stats()

    def step(
        self,
        params: TaskParams,
        loss,
        state: MetaLSTMState | None,
        *,
        first_order: bool,
        create_graph: bool,
    ) -> tuple[TaskParams, MetaLSTMState]:
        """One inner step of every task on ``loss`` (``params -> [T]`` losses).

        ``first_order``: the gradient in the cell update is a constant; ``create_graph``:
        the result is differentiable w.r.t. the LSTM's weights.
        """
        losses: list[torch.Tensor] = []  # the loss inner_gradients evaluates, kept as an input

        def recorded(p: TaskParams) -> torch.Tensor:
            losses.append(loss(p))
            return losses[-1]

        grads = inner_gradients(params, recorded, create_graph=not first_order)
        theta, state = self.lstm(flatten_tasks(params), flatten_tasks(grads), losses[0], state,
                                 detach_weights=not create_graph)  # fmt: skip
        return unflatten_tasks(theta, params), state

    def act_step(
        self, params: TaskParams, loss, state: MetaLSTMState | None
    ) -> tuple[TaskParams, MetaLSTMState]:
        """The step the sampler's next policies come from: no graph kept."""
        with torch.no_grad():  # inner_gradients enables grad for the gradient alone
            new, state = self.step(params, loss, state, first_order=True, create_graph=False)
        self.last_gates = (state.forget, state.input)
        return {k: v.requires_grad_() for k, v in new.items()}, state

    def replay_step(
        self,
        params: TaskParams,
        loss,
        state: MetaLSTMState | None,
        *,
        first_order: bool,
        create_graph: bool,
    ) -> tuple[TaskParams, MetaLSTMState]:
        """The same step, differentiable as the outer update asks."""
        return self.step(params, loss, state, first_order=first_order, create_graph=create_graph)

    def parameters(self) -> list[nn.Parameter]:
        return list(self.lstm.parameters())

    def stats(self) -> dict[str, float]:
        """The gate biases, and ``meta_lstm/{forget,input}_gate/{mean,min,max}`` over the
        coordinates of the last inner step taken to act (this iteration's)."""
        out = {
            "meta_lstm/forget_bias": self.lstm.forget_bias.item(),
            "meta_lstm/input_bias": self.lstm.input_bias.item(),
        }
        for name, values in zip(("forget", "input"), self.last_gates or ()):
            out[f"meta_lstm/{name}_gate/mean"] = float(values.mean())
            out[f"meta_lstm/{name}_gate/min"] = float(values.min())
            out[f"meta_lstm/{name}_gate/max"] = float(values.max())
        return out

    def state_dict(self) -> dict:
        return {"lstm": self.lstm.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.lstm.load_state_dict(state["lstm"])


def meta_lstm_rule(config: Config, policy: nn.Module, device: torch.device) -> MetaLSTMRule:
    """Meta-LSTM's rule of ``config``'s :class:`MetaLSTMOptions`, its input gate at
    ``inner_lr``."""
    options = config.group(MetaLSTMOptions)
    lstm = CoordinateLSTM(
        options.meta_lstm_hidden_size,
        forget_bias=options.meta_lstm_forget_bias,
        input_gate=config.group(InnerLoopOptions).inner_lr,
    )
    return MetaLSTMRule(lstm.to(device))


def check_input_gate(config: Config) -> None:
    """``inner_lr`` is the input gate's initial value, a sigmoid's: it must be in (0, 1)."""
    lr = config.group(InnerLoopOptions).inner_lr
    if not 0.0 < lr < 1.0:
        raise ConfigError(
            f"config key 'inner_lr': {lr!r} must be between 0 and 1 (exclusive) for "
            "meta-lstm: it is the input gate's initial value, a sigmoid's"
        )


ALGORITHM = dataclasses.replace(
    gradient_member(
        "meta-lstm",
        "Meta-LSTM: MAML whose inner step is a learned coordinate-wise LSTM (TRPO or PPO outside)",
        rule=RuleSpec(groups=(MetaLSTMOptions,), build=meta_lstm_rule),
        outers=(TRPO, PPO),
    ),
    validate=check_input_gate,
)
