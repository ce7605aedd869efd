"""VariBAD's VAE: the decoders and the ELBO over whole trials (Zintgraf et al. 2020, eq. 4-5).

For a trial of ``L`` steps the encoder gives beliefs ``b_0 .. b_{L-1}`` (``b_0`` the
prior, ``b_t`` after ``t`` transitions; :class:`~metarl.policies.belief.BeliefEncoder`).
Every belief decodes the *whole* trial, past and future: with one sample
``m_t ~ b_t`` (reparameterised), the reward decoder predicts each ``r_j`` from
``(m_t, s_j, a_j)``, and the loss is the squared error (the reference's deterministic
decoder: a unit-variance Gaussian log-likelihood up to its constant). The optional state
decoder predicts ``s_{j+1}`` from the same inputs (mean squared error over the state's
dimensions), on steps whose next state the trial recorded (not an episode's last). The
KL term of ELBO_t is ``KL(b_t || b_{t-1})``, with ``N(0, I)`` before ``b_0``.

Per trial the loss is ``reward_coef * sum_t sum_j (r_hat - r)^2 + state_coef * sum_t
sum_j mse + kl_weight * sum_t KL_t`` (the reference sums ELBO and reconstruction terms:
``vae_avg_elbo_terms`` and ``vae_avg_reconstruction_terms`` are False), averaged over the
trials of the minibatch. (The reference averages the reconstruction over trials but
*sums* the KL over them, so its KL weight counts ``vae_batch_num_trajs`` times; the
experiment configs carry that factor in ``varibad_kl_weight`` and say so.)

Subsampling (the reference's ``vae_subsample_elbos`` / ``_decodes``, for long trials):
``n_elbos`` beliefs and ``n_decodes`` steps per trial drawn uniformly with replacement
among its real steps; the decoded steps are shared by the trial's drawn beliefs (the
reference draws them per belief), so the decoders evaluate every (belief, step) pair of
an ``[N, T, J]`` grid at once (:class:`PairDecoder`).

Shapes: ``N`` trials, ``L`` steps each, ``T`` beliefs and ``J`` decoded steps per trial,
``Z`` latent dims, ``D`` obs dims, ``A`` action dims.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from metarl.policies.belief import BeliefEncoder
from metarl.policies.recurrent import rl2_inputs


class PairDecoder(nn.Module):
    """``(m, s, a) -> out``: for every belief sample of a trial and every step of it.

    The reference's reward decoder (models/decoder.py with ``input_prev_state`` and
    ``input_action``): ReLU embeddings of state and action, concatenated with ``m``, then
    ReLU layers and a linear output. The first layer over the concatenation is computed as
    its latent part plus its (state, action) part, so each part is computed once per row,
    not once per (belief, step) pair: the same function, ``T + J`` instead of ``T * J`` rows.
    """

    def __init__(self, latent_dim: int, obs_dim: int, act_dim: int, *, embed_sizes: tuple[int, int],
                 hidden_sizes: tuple[int, ...], out_dim: int) -> None:  # fmt: skip
        super().__init__()
        es, ea = embed_sizes
        self.state_embed = nn.Linear(obs_dim, es)
        self.action_embed = nn.Linear(act_dim, ea)
        self.latent_in = nn.Linear(latent_dim, hidden_sizes[0], bias=False)
        self.pair_in = nn.Linear(es + ea, hidden_sizes[0])
        sizes = list(hidden_sizes)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = nn.Linear(sizes[-1], out_dim)

    def forward(self, latent: torch.Tensor, obs: torch.Tensor, actions: torch.Tensor):
        """``latent [N, T, Z]``, ``obs [N, J, D]``, ``actions [N, J, A]`` -> ``[N, T, J, out]``."""
        e = torch.cat([torch.relu(self.state_embed(obs)), torch.relu(self.action_embed(actions))],
                      dim=-1)  # fmt: skip
        h = torch.relu(self.latent_in(latent)[:, :, None] + self.pair_in(e)[:, None, :])
        for layer in self.hidden:
            h = torch.relu(layer(h))
        return self.out(h)


# -- the ELBO's terms: pure functions ---------------------------------------------------------
def gaussian_kl(mean_q: torch.Tensor, logvar_q: torch.Tensor, mean_p: torch.Tensor,
                logvar_p: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """``KL(N(mean_q, e^logvar_q) || N(mean_p, e^logvar_p))`` of diagonal Gaussians,
    summed over the last axis: ``[..., Z] -> [...]``."""
    return 0.5 * (logvar_p - logvar_q - 1.0 + (logvar_q - logvar_p).exp()
                  + (mean_q - mean_p).pow(2) / logvar_p.exp()).sum(-1)  # fmt: skip


def belief_kls(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Each belief's KL to the one before it, ``N(0, I)`` before the first:
    ``[N, L, Z] -> [N, L]``, entry t = ``KL(b_t || b_{t-1})``."""
    before_mean = torch.cat([torch.zeros_like(mean[:, :1]), mean[:, :-1]], dim=1)
    before_logvar = torch.cat([torch.zeros_like(logvar[:, :1]), logvar[:, :-1]], dim=1)
    return gaussian_kl(mean, logvar, before_mean, before_logvar)


def reconstruction(predicted: torch.Tensor, target: torch.Tensor, belief_mask: torch.Tensor,
                   step_mask: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """Squared error summed over beliefs and decoded steps, per trial: ``[N]``.

    Args:
        predicted: ``[N, T, J, K]`` (K = 1 for rewards, D for states; averaged over K).
        target: ``[N, J, K]``.
        belief_mask: ``[N, T]``, 1 for a belief that counts. step_mask: ``[N, J]`` likewise.
    """
    error = (predicted - target[:, None]).pow(2).mean(-1)
    return (error * belief_mask[:, :, None] * step_mask[:, None, :]).sum(dim=(1, 2))


def pick(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows of each trial: ``x [N, L, ...]``, ``index [N, K]`` -> ``[N, K, ...]``."""
    return x[torch.arange(x.shape[0], device=x.device)[:, None], index]


def draw_steps(lengths: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` steps per trial, uniform with replacement below its length: ``[N] -> [N, n]``."""
    u = torch.rand(lengths.shape[0], n, generator=generator)
    return (u * lengths[:, None].cpu().to(u.dtype)).long()


@dataclass
class Trials:
    """A minibatch of whole trials for the VAE (on one device).

    observations ``[N, L, D]``, actions ``[N, L, A]``, rewards ``[N, L]``, dones ``[N, L]``
    (float, 1 where an episode of the trial ended), lengths ``[N]`` (int64, real steps).
    """

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor
    lengths: torch.Tensor

    def inputs(self) -> torch.Tensor:
        """The encoder's rows ``[N, L, D + A + 2]``."""
        return rl2_inputs(self.observations, self.actions, self.rewards, self.dones)

    def mask(self) -> torch.Tensor:
        """``[N, L]``: 1 on real steps."""
        steps = torch.arange(self.rewards.shape[1], device=self.rewards.device)
        return (steps[None] < self.lengths[:, None]).to(self.rewards.dtype)

    def next_state_mask(self) -> torch.Tensor:
        """``[N, L]``: 1 where step j's next state is ``observations[j + 1]`` (a real step
        that did not end an episode; the last step of an episode has no recorded next state)."""
        mask = self.mask() * (1.0 - self.dones)
        return torch.cat([mask[:, :-1] * self.mask()[:, 1:], torch.zeros_like(mask[:, :1])], 1)


@dataclass
class ELBOTerms:
    """Per trial ``[N]``: the summed reward and state reconstruction errors (``state`` is
    zeros without a state decoder) and the summed KL terms."""

    reward: torch.Tensor
    state: torch.Tensor
    kl: torch.Tensor


def elbo_terms(
    encoder: BeliefEncoder,
    reward_decoder: PairDecoder,
    state_decoder: PairDecoder | None,
    trials: Trials,
    *,
    generator: torch.Generator,
    n_elbos: int = 0,
    n_decodes: int = 0,
    bptt_chunk: int = 0,
) -> ELBOTerms:
    """The ELBO's terms of ``trials`` (see the module docstring); ``n_elbos``/``n_decodes``
    of 0 take every belief / step. Random draws (which beliefs and steps, the latent
    samples) come from ``generator`` (CPU), so a resumed run draws the same."""
    mean, logvar = encoder(trials.inputs(), bptt_chunk=bptt_chunk)
    kls = belief_kls(mean, logvar)  # [N, L]
    mask = trials.mask()
    n, length = mask.shape
    device = mask.device
    if n_elbos > 0:
        beliefs = draw_steps(trials.lengths, n_elbos, generator).to(device)
        belief_mask = torch.ones(beliefs.shape, device=device)
    else:
        beliefs, belief_mask = torch.arange(length, device=device).expand(n, length), mask
    if n_decodes > 0:
        steps = draw_steps(trials.lengths, n_decodes, generator).to(device)
        step_mask = torch.ones(steps.shape, device=device)
    else:
        steps, step_mask = torch.arange(length, device=device).expand(n, length), mask
    mean_t, logvar_t = pick(mean, beliefs), pick(logvar, beliefs)
    noise = torch.randn(mean_t.shape, generator=generator).to(device)
    latent = mean_t + (0.5 * logvar_t).exp() * noise
    obs, actions = pick(trials.observations, steps), pick(trials.actions, steps)
    reward = reconstruction(
        reward_decoder(latent, obs, actions),
        pick(trials.rewards, steps)[..., None],
        belief_mask,
        step_mask,
    )
    if state_decoder is not None:
        next_obs = torch.cat([trials.observations[:, 1:], trials.observations[:, -1:]], dim=1)
        state_mask = step_mask * pick(trials.next_state_mask(), steps)
        state = reconstruction(state_decoder(latent, obs, actions), pick(next_obs, steps),
                               belief_mask, state_mask)  # fmt: skip
    else:
        state = torch.zeros_like(reward)
    kl = (pick(kls, beliefs) * belief_mask).sum(-1)
    return ELBOTerms(reward=reward, state=state, kl=kl)
