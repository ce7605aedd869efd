"""RL2's transformer core (``rl2_core: transformer``): a causal transformer over the trial.

The policy sees, at step t of a trial, the same input as the GRU core,
``[obs_t, a_{t-1}, r_{t-1}, done_{t-1}]`` (:func:`metarl.policies.recurrent.rl2_inputs`),
but instead of folding the past into a hidden state it attends over every
earlier step of the trial (the context is the whole trial, ``L = K * horizon``
steps). Architecture, per core (``layers`` blocks, each the maths of torch's
``TransformerEncoderLayer(norm_first=True)`` with a causal mask):

    x_t = W_in input_t + b_in + PE(t)       sinusoidal positions
    x  <- x + Attn(LN1(x))                  causal self-attention, ``heads`` heads
    x  <- x + W2 relu(W1 LN2(x))            width -> 4 x width -> width
    features_t = LN(x_t)                    a final norm, as pre-LN stacks need

A Gaussian head gives the action mean (state-independent log-std, as the GRU
core); the critic is a second transformer of the same shape with a linear value
head, for the reason the GRU core has its own critic GRU (the value loss swamped
shared features on point-nav).

Positions are sinusoidal (Vaswani et al. 2017), as in TrMRL: they are defined
for any step, so a meta-test trial may be longer than the training trials
(``evaluate --adapt-steps``) and Meta-World's protocol may run its evaluation
episodes on after the adaptation ones; a learned table would stop at the
training length.

Default sizes are TrMRL's (Melo 2022, "Transformers are Meta-Reinforcement
Learners": the defaults of its Meta-World ML1 example script, d_model 32, 4 heads,
4 layers, feed-forward 128 = 4 x d_model, dropout 0), which trains on-policy with
PPO as here. AMAGO's default trajectory transformer (Grigsby et al. 2024,
``TformerTrajEncoder``) is larger (d_model 256, 8 heads, 3 layers, feed-forward
4 x d_model, dropout 0.05) and is trained off-policy on far more data; the
feed-forward ratio of 4 is common to both and is fixed here. Dropout applies only
in the PPO minibatch passes: the rollouts and the pass that computes the sampling
policy's log-probabilities and values run without it.

Rollout workers run :class:`NumpyTransformerActor`: per sub-env it keeps each
layer's keys and values of the trial so far (a KV cache), so each step costs one
forward of the new step against the cache, and the cache is emptied when a new
wave of trials starts (where the GRU actor zeroes its hidden state). Its outputs
are those of the full-sequence forward with the causal mask
(``tests/test_rl2_transformer.py`` checks both, and the reset).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from metarl.options import ConfigError, option

FF_RATIO = 4  # feed-forward width / model width (TrMRL's 128 / 32, AMAGO's 1024 / 256)
LN_EPS = 1e-5  # torch.nn.LayerNorm's default, which the numpy actor repeats


@dataclass
class TransformerOptions:
    """RL2 transformer core: its keys, read only with rl2_core: transformer (TrMRL's sizes)"""

    rl2_transformer_layers: int = option(
        4, "RL2 transformer: pre-LN blocks (TrMRL: 4)", min=1, identity=True
    )
    rl2_transformer_heads: int = option(
        4, "RL2 transformer: attention heads; must divide the width (TrMRL: 4)", min=1,
        identity=True,
    )  # fmt: skip
    rl2_transformer_width: int = option(
        32, "RL2 transformer: model width d_model; feed-forward 4 x this (TrMRL: 32)", min=1,
        identity=True,
    )  # fmt: skip
    rl2_transformer_dropout: float = option(
        0.0, "RL2 transformer: dropout in training, never when acting (TrMRL: 0)",
        min=0.0, max=0.9,
    )  # fmt: skip


def check_transformer_options(options: TransformerOptions) -> None:
    """A ConfigError unless the heads split the width evenly."""
    if options.rl2_transformer_width % options.rl2_transformer_heads:
        raise ConfigError(
            f"config key 'rl2_transformer_heads': {options.rl2_transformer_heads} does not "
            f"divide rl2_transformer_width {options.rl2_transformer_width}"
        )


@dataclass(frozen=True)
class TransformerSpec:
    """Architecture of the transformer RL2 policy; everything a worker needs besides weights."""

    obs_dim: int
    act_dim: int
    width: int = 32
    layers: int = 4
    heads: int = 4

    @property
    def input_dim(self) -> int:
        """obs, previous action, previous reward, previous done (as the GRU's)."""
        return self.obs_dim + self.act_dim + 2

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """The acting parameters' shapes (:meth:`GaussianTransformerPolicy.params`)."""
        w, f = self.width, FF_RATIO * self.width
        shapes: dict[str, tuple[int, ...]] = {
            "core.embed.weight": (w, self.input_dim),
            "core.embed.bias": (w,),
        }
        for i in range(self.layers):
            block = {"norm1.weight": (w,), "norm1.bias": (w,),
                     "attn_in.weight": (3 * w, w), "attn_in.bias": (3 * w,),
                     "attn_out.weight": (w, w), "attn_out.bias": (w,),
                     "norm2.weight": (w,), "norm2.bias": (w,),
                     "ff_in.weight": (f, w), "ff_in.bias": (f,),
                     "ff_out.weight": (w, f), "ff_out.bias": (w,)}  # fmt: skip
            shapes.update({f"core.blocks.{i}.{k}": v for k, v in block.items()})
        shapes.update({
            "core.norm.weight": (w,), "core.norm.bias": (w,),
            "mean_head.weight": (self.act_dim, w), "mean_head.bias": (self.act_dim,),
            "log_std": (self.act_dim,),
        })  # fmt: skip
        return shapes

    def make_actor(self, params: Mapping[str, np.ndarray]) -> NumpyTransformerActor:
        """The rollout actor of one shared policy (arrays with a leading axis of 1)."""
        return NumpyTransformerActor(self, params)


@functools.lru_cache(maxsize=16)
def _positions(length: int, width: int) -> np.ndarray:
    table = np.zeros((length, width + width % 2))
    pos = np.arange(length, dtype=np.float64)[:, None]
    freq = np.exp(-math.log(10000.0) * np.arange(0, width, 2, dtype=np.float64) / width)
    table[:, 0::2] = np.sin(pos * freq)
    table[:, 1::2] = np.cos(pos * freq)
    table = table[:, :width]
    table.setflags(write=False)
    return table


def sinusoidal_positions(length: int, width: int) -> np.ndarray:
    """``[length, width]`` float64: ``sin(t w_i)`` in even columns, ``cos(t w_i)`` in odd
    ones, ``w_i = 10000^(-2i / width)`` (read-only, cached)."""
    return _positions(length, width)


class CausalBlock(nn.Module):
    """One pre-LN block: ``x + Attn(LN(x))``, then ``x + FF(LN(x))``; ``[B, L, W] -> [B, L, W]``.

    The maths of ``nn.TransformerEncoderLayer(norm_first=True, activation="relu")`` with
    a causal mask (dropout on the attention weights, after the ReLU and on each residual
    branch), written out so the numpy actor can repeat it step by step.
    """

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(width, eps=LN_EPS)
        self.attn_in = nn.Linear(width, 3 * width)
        self.attn_out = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, eps=LN_EPS)
        self.ff_in = nn.Linear(width, FF_RATIO * width)
        self.ff_out = nn.Linear(FF_RATIO * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, w = x.shape
        p = self.dropout if self.training else 0.0
        q, k, v = (
            part.view(b, length, self.heads, w // self.heads).transpose(1, 2)
            for part in self.attn_in(self.norm1(x)).chunk(3, dim=-1)
        )  # each [B, heads, L, W / heads]
        attended = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        attended = attended.transpose(1, 2).reshape(b, length, w)
        x = x + F.dropout(self.attn_out(attended), p, self.training)
        hidden = F.dropout(F.relu(self.ff_in(self.norm2(x))), p, self.training)
        return x + F.dropout(self.ff_out(hidden), p, self.training)


class CausalTransformer(nn.Module):
    """Inputs ``[B, L, input_dim]`` -> features ``[B, L, width]``; step t sees steps <= t."""

    def __init__(self, spec: TransformerSpec, dropout: float) -> None:
        super().__init__()
        self.dropout = dropout
        self.embed = nn.Linear(spec.input_dim, spec.width)
        self.blocks = nn.ModuleList(
            CausalBlock(spec.width, spec.heads, dropout) for _ in range(spec.layers)
        )
        self.norm = nn.LayerNorm(spec.width, eps=LN_EPS)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        length, width = inputs.shape[1], self.embed.out_features
        positions = sinusoidal_positions(length, width)
        x = self.embed(inputs) + torch.tensor(positions, dtype=inputs.dtype, device=inputs.device)
        x = F.dropout(x, self.dropout, self.training)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class GaussianTransformerPolicy(nn.Module):
    """Transformer -> Gaussian mean (learned state-independent log-std); a second
    transformer -> value. The learner's twin of :class:`NumpyTransformerActor`."""

    def __init__(
        self, spec: TransformerSpec, *, init_log_std: float = 0.0, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.spec = spec
        self.core = CausalTransformer(spec, dropout)
        self.mean_head = nn.Linear(spec.width, spec.act_dim)
        self.value_core = CausalTransformer(spec, dropout)
        self.value_head = nn.Linear(spec.width, 1)
        self.log_std = nn.Parameter(torch.full((spec.act_dim,), float(init_log_std)))
        with torch.no_grad():  # small initial actions, as the GRU core's
            self.mean_head.weight.mul_(0.01)
            self.mean_head.bias.zero_()

    def forward(
        self, inputs: torch.Tensor, *, bptt_chunk: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run whole trials, each step attending to itself and the steps before it.

        Args:
            inputs: ``[B, L, input_dim]`` (see :func:`~metarl.policies.recurrent.rl2_inputs`).
            bptt_chunk: must be 0: truncated back-propagation is the GRU core's
                (``rl2_bptt_chunk``; the config refuses it with this core).
        Returns:
            mean ``[B, L, A]`` and value ``[B, L]``.
        """
        if bptt_chunk:
            raise ValueError("the transformer core has no truncated back-propagation")
        mean = self.mean_head(self.core(inputs))
        value = self.value_head(self.value_core(inputs)).squeeze(-1)
        return mean, value

    def params(self) -> dict[str, torch.Tensor]:
        """The acting parameters (what the sampler ships to its workers; not the critic)."""
        return {k: v for k, v in self.named_parameters() if not k.startswith("value_")}


def build_transformer_policy(
    options: TransformerOptions, obs_dim: int, act_dim: int, *, init_log_std: float
) -> GaussianTransformerPolicy:
    """The transformer RL2 policy of ``options`` (checked: the heads divide the width)."""
    check_transformer_options(options)
    spec = TransformerSpec(
        obs_dim,
        act_dim,
        width=options.rl2_transformer_width,
        layers=options.rl2_transformer_layers,
        heads=options.rl2_transformer_heads,
    )
    return GaussianTransformerPolicy(
        spec, init_log_std=init_log_std, dropout=options.rl2_transformer_dropout
    )


# -- the rollout twin (numpy) ----------------------------------------------------------------
def numpy_layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``torch.nn.LayerNorm`` over the last axis (biased variance, eps 1e-5): ``[..., W]``."""
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + LN_EPS) * weight + bias


def _linear(params: Mapping[str, np.ndarray], name: str, x: np.ndarray) -> np.ndarray:
    return x @ params[f"{name}.weight"].T + params[f"{name}.bias"]


class KVCache:
    """One layer's keys and values of the trial so far: ``[..., heads, capacity, head_dim]``
    each, the first ``length`` steps filled; the capacity doubles when full."""

    def __init__(self, lead: tuple[int, ...], heads: int, head_dim: int, capacity: int = 64):
        self.keys = np.zeros((*lead, heads, capacity, head_dim))
        self.values = np.zeros_like(self.keys)
        self.length = 0

    def append(self, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Add one step (``k``, ``v``: ``[..., heads, head_dim]``); return every step's keys
        and values so far, ``[..., heads, length, head_dim]`` each (views)."""
        if self.length == self.keys.shape[-2]:
            grow = [(0, 0)] * (self.keys.ndim - 2) + [(0, self.length), (0, 0)]
            self.keys, self.values = np.pad(self.keys, grow), np.pad(self.values, grow)
        self.keys[..., self.length, :] = k
        self.values[..., self.length, :] = v
        self.length += 1
        return self.keys[..., : self.length, :], self.values[..., : self.length, :]


def numpy_block_step(
    params: Mapping[str, np.ndarray], prefix: str, heads: int, x: np.ndarray, cache: KVCache
) -> np.ndarray:
    """:class:`CausalBlock` for one new step ``x [..., W]`` against the block's cache
    (which it extends): ``[..., W] -> [..., W]``."""
    w = x.shape[-1]
    dh = w // heads
    qkv = _linear(params, f"{prefix}.attn_in", numpy_layer_norm(
        x, params[f"{prefix}.norm1.weight"], params[f"{prefix}.norm1.bias"]))  # fmt: skip
    q, k, v = (part.reshape(*x.shape[:-1], heads, dh) for part in np.split(qkv, 3, axis=-1))
    keys, values = cache.append(k, v)  # [..., heads, t + 1, dh]
    # matmuls, not broadcast products and sums (those took 20x as long): with the softmax,
    # the step's cost, which grows with t
    scores = (keys @ q[..., None])[..., 0] / math.sqrt(dh)  # [..., heads, t + 1]
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    attended = (weights[..., None, :] @ values).reshape(x.shape)  # [..., heads, 1, dh] -> [..., W]
    x = x + _linear(params, f"{prefix}.attn_out", attended)
    normed = numpy_layer_norm(x, params[f"{prefix}.norm2.weight"], params[f"{prefix}.norm2.bias"])
    hidden = np.maximum(_linear(params, f"{prefix}.ff_in", normed), 0.0)
    return x + _linear(params, f"{prefix}.ff_out", hidden)


class NumpyTransformerActor:
    """The transformer RL2 policy in the rollout loop: a KV cache per sub-env, kept
    across the episodes of a trial and emptied when a wave of trials starts.

    At step t it sees ``[obs_t, a_{t-1}, r_{t-1}, done_{t-1}]`` (zeros at the trial
    start), exactly what :func:`~metarl.policies.recurrent.rl2_inputs` rebuilds, at
    position t of the trial. As the GRU actor, each task's sub-envs go through their
    own matrix products (``[per_task, ...]``), so a batch is the same for any number
    of workers.
    """

    def __init__(self, spec: TransformerSpec, params: Mapping[str, np.ndarray]) -> None:
        if any(np.shape(v)[0] != 1 for v in params.values()):
            raise ValueError("the RL2 actor runs one policy shared by every task (leading axis 1)")
        self.spec = spec
        self.params = {k: np.asarray(v, dtype=np.float64)[0] for k, v in params.items()}

    def start(self, t0: int, t1: int, per_task: int) -> None:
        s = self.spec
        self._shape = (t1 - t0, per_task)
        self.caches = [KVCache(self._shape, s.heads, s.head_dim) for _ in range(s.layers)]
        self._positions = sinusoidal_positions(64, s.width)  # grown as the trial goes on
        self.previous = np.zeros(((t1 - t0) * per_task, s.act_dim + 2))  # action, reward, done

    def act(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``obs [n, D]`` -> mean ``[n, A]``, log-std ``[1, A]``; extends the caches by a step."""
        tc, per_task = self._shape
        p, t = self.params, self.caches[0].length
        x = np.concatenate([obs, self.previous], axis=1).reshape(tc, per_task, -1)
        if t == len(self._positions):
            self._positions = sinusoidal_positions(2 * t, self.spec.width)
        x = _linear(p, "core.embed", x) + self._positions[t]
        for i, cache in enumerate(self.caches):
            x = numpy_block_step(p, f"core.blocks.{i}", self.spec.heads, x, cache)
        features = numpy_layer_norm(x, p["core.norm.weight"], p["core.norm.bias"])
        mean = _linear(p, "mean_head", features).reshape(tc * per_task, -1)
        return mean, p["log_std"][None, :]

    def observe(self, actions: np.ndarray, rewards: np.ndarray, dones: np.ndarray) -> None:
        a = self.spec.act_dim
        self.previous[:, :a] = actions
        self.previous[:, a] = rewards
        self.previous[:, a + 1] = dones
