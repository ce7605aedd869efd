"""Returns, advantages and the linear feature baseline: pure tensor maths.

Every function takes padded batches laid out ``[..., T]`` (time last) with a
``mask`` of the same shape: 1.0 on real steps, 0.0 on the padding after an
episode's end. Padding never contributes to a result and every output is 0 on
padding, so callers can sum over time without re-masking.

Conventions follow pytorch-maml-rl (``maml_rl/episode.py``,
``maml_rl/baseline.py``) and rllab's ``LinearFeatureBaseline``: an episode ends
at the horizon or when it terminates, and the value after its last real step
is 0 (no bootstrapping).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "LinearFeatureBaseline",
    "discount_cumsum",
    "explained_variance",
    "gae_advantages",
    "normalize_advantages",
]


def _check_same_shape(**tensors: Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"expected tensors of one shape [..., T], got {shapes}")


def _zero_padding(x: Tensor, mask: Tensor) -> Tensor:
    """``x`` with padding set to 0 (a select, so NaN on padding cannot leak through)."""
    return torch.where(mask > 0, x, torch.zeros_like(x))


def _reverse_scan(x: Tensor, mask: Tensor, decay: float) -> Tensor:
    """``y_t = mask_t * (x_t + decay * y_{t+1})`` with ``y_T = 0``, over the last axis.

    Multiplying by the mask at every step both zeroes the padding and stops
    anything after an episode's end from leaking back into it.
    """
    out = torch.zeros_like(x)
    running = torch.zeros_like(x[..., 0])
    for t in range(x.shape[-1] - 1, -1, -1):
        running = mask[..., t] * (x[..., t] + decay * running)
        out[..., t] = running
    return out


def discount_cumsum(rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """Discounted reward-to-go ``G_t = sum_{k >= t} gamma^(k-t) r_k`` over real steps.

    Args:
        rewards: ``[..., T]``; values on padding are ignored.
        mask: ``[..., T]``, 1.0 on real steps, 0.0 on padding after the end.
        gamma: discount factor.
    Returns:
        ``[..., T]`` reward-to-go, 0 on padding.
    """
    _check_same_shape(rewards=rewards, mask=mask)
    mask = mask.to(rewards.dtype)
    # where, not a product: padding may hold junk (an autoreset's reward, even NaN).
    return _reverse_scan(_zero_padding(rewards, mask), mask, gamma)


def gae_advantages(
    rewards: Tensor,
    values: Tensor,
    mask: Tensor,
    gamma: float,
    lam: float,
    terminated: Tensor | None = None,
) -> Tensor:
    """Generalised advantage estimates (Schulman et al. 2016) without bootstrapping.

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` with ``V`` taken as 0 after the last
    real step, and ``A_t = sum_{k >= t} (gamma * lam)^(k-t) delta_k`` over real
    steps. ``lam = 1`` gives ``G_t - V_t``; ``lam = 0`` gives the one-step TD
    residual.

    Args:
        rewards: ``[..., T]``.
        values: ``[..., T]`` baseline prediction for each step (padding ignored).
        mask: ``[..., T]``, 1.0 on real steps, 0.0 on padding after the end.
        gamma: discount factor.
        lam: GAE lambda.
        terminated: optional ``[..., T]`` flags, 1.0 where the episode terminated.
            Accepted for API symmetry with samplers that record it; under the
            no-bootstrap convention used here a terminated episode and one cut at
            the horizon are treated alike (the value after the last real step is 0
            either way), so it changes nothing. Only its shape is checked.
    Returns:
        ``[..., T]`` advantages, 0 on padding.
    """
    _check_same_shape(rewards=rewards, values=values, mask=mask)
    if terminated is not None:
        _check_same_shape(rewards=rewards, terminated=terminated)
    mask = mask.to(rewards.dtype)
    rewards = _zero_padding(rewards, mask)
    values = _zero_padding(values.to(rewards.dtype), mask)
    # V_{t+1}: shift left and append the 0 value after the horizon; masking above
    # already made it 0 after each episode's last real step.
    next_values = torch.cat([values[..., 1:], torch.zeros_like(values[..., :1])], dim=-1)
    deltas = (rewards + gamma * next_values - values) * mask
    return _reverse_scan(deltas, mask, gamma * lam)


def _masked_moments(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(count, mean, population variance) of ``x`` over the steps where ``mask`` is 1."""
    mask = mask.to(x.dtype)
    count = mask.sum()
    mean = _zero_padding(x, mask).sum() / count.clamp_min(1.0)
    var = _zero_padding((x - mean).pow(2), mask).sum() / count.clamp_min(1.0)
    return count, mean, var


def explained_variance(predicted: Tensor, target: Tensor, mask: Tensor) -> float:
    """``1 - Var[target - predicted] / Var[target]`` over real steps.

    1 for a perfect prediction, 0 for predicting the mean, negative when worse
    than the mean. When the target does not vary over the real steps (or there
    are none) the ratio is undefined and 0.0 is returned: a constant target
    gives the baseline nothing to explain. "Does not vary" means a variance at
    most 1e-12 of the target's mean square, so rounding in the mean of a
    constant does not produce a huge negative value.

    Args:
        predicted, target, mask: ``[...]`` of one shape.
    """
    _check_same_shape(predicted=predicted, target=target, mask=mask)
    # float64 so the two variances are not lost to cancellation on large returns.
    predicted = predicted.detach().double()
    target = target.detach().double()
    mask = mask.detach().double()
    count, _, var_target = _masked_moments(target, mask)
    if count.item() == 0:
        return 0.0
    second_moment = _zero_padding(target.pow(2), mask).sum() / count
    if var_target.item() <= 1e-12 * second_moment.item():
        return 0.0
    _, _, var_residual = _masked_moments(target - predicted, mask)
    return float(1.0 - var_residual / var_target)


def normalize_advantages(adv: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """Shift and scale ``adv`` to mean 0, std 1 over real steps; 0 on padding.

    Uses the population std (as pytorch-maml-rl's ``weighted_normalize``); ``eps``
    keeps a constant batch finite (it maps to 0).

    Args:
        adv: ``[...]``.
        mask: ``[...]``, 1.0 on real steps.
    Returns:
        ``[...]``, same dtype as ``adv``.
    """
    _check_same_shape(adv=adv, mask=mask)
    mask = mask.to(adv.dtype)
    _, mean, var = _masked_moments(adv, mask)
    return _zero_padding((adv - mean) / (var.sqrt() + eps), mask)


class LinearFeatureBaseline:
    """rllab's linear feature baseline, as used by the MAML paper.

    Per step the features are ``[clip(o, -10, 10), clip(o, -10, 10)^2, s, s^2,
    s^3, 1]`` with ``o`` the observation and ``s = t / 100`` for the step index
    ``t`` within the episode (the rows of the ``[N, T]`` layout start at t = 0).
    The weights are a ridge-regularised least-squares fit of the returns on the
    real steps. The fit is done in float64 without autograd; it is fast (a
    ``(2D+4) x (2D+4)`` solve) and is refit for every batch of episodes.

    Shapes: N episodes, T steps (padded), D observation size.
    """

    def __init__(self, reg_coeff: float = 1e-5) -> None:
        if not reg_coeff > 0:
            raise ValueError(f"reg_coeff must be > 0 so the fit is solvable, got {reg_coeff}")
        self.reg_coeff = float(reg_coeff)
        self.weights: Tensor | None = None

    @staticmethod
    def features(observations: Tensor) -> Tensor:
        """``[N, T, D]`` -> ``[N, T, 2D + 4]`` float64 features (see the class docstring)."""
        if observations.dim() != 3:
            raise ValueError(f"observations must be [N, T, D], got {tuple(observations.shape)}")
        obs = observations.detach().double().clamp(-10.0, 10.0)
        n, t_len, _ = obs.shape
        s = torch.arange(t_len, dtype=torch.float64, device=obs.device) / 100.0
        s = s.view(1, t_len, 1).expand(n, t_len, 1)
        return torch.cat([obs, obs.pow(2), s, s.pow(2), s.pow(3), torch.ones_like(s)], dim=-1)

    def fit(self, observations: Tensor, returns: Tensor, mask: Tensor) -> None:
        """Fit the weights to ``returns`` on the real steps.

        Args:
            observations: ``[N, T, D]``.
            returns: ``[N, T]`` targets (usually :func:`discount_cumsum`).
            mask: ``[N, T]``, 1.0 on real steps.
        Raises:
            ValueError: on mismatched shapes, or non-finite observations or
                returns on real steps (a NaN there would poison every weight).
        """
        if returns.shape != mask.shape or observations.shape[:2] != returns.shape:
            raise ValueError(
                "expected observations [N, T, D] with returns and mask [N, T], got "
                f"{tuple(observations.shape)}, {tuple(returns.shape)}, {tuple(mask.shape)}"
            )
        real = mask.detach().bool()
        feats = self.features(observations)[real]  # [M, F], real steps only
        targets = returns.detach().double()[real]  # [M]
        if not (torch.isfinite(feats).all() and torch.isfinite(targets).all()):
            raise ValueError(
                "LinearFeatureBaseline.fit got non-finite observations or returns on real "
                "steps; check the environment and the reward scale upstream"
            )
        gram = feats.T @ feats  # [F, F]
        rhs = feats.T @ targets  # [F]
        eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        reg = self.reg_coeff
        # rllab's retry: a larger ridge if the solve fails. With finite inputs and a
        # positive ridge the system is SPD in float64, so the first try almost always works.
        for _ in range(5):
            try:
                weights = torch.linalg.solve(gram + reg * eye, rhs)
            except torch.linalg.LinAlgError:
                weights = None
            if weights is not None and torch.isfinite(weights).all():
                self.weights = weights
                return
            reg *= 10.0
        raise RuntimeError(
            f"LinearFeatureBaseline.fit found no finite solution up to reg_coeff={reg / 10:g}"
        )

    def predict(self, observations: Tensor, mask: Tensor) -> Tensor:
        """Baseline values ``[N, T]`` in the observations' dtype; 0 on padding.

        Before the first :meth:`fit` (weights ``None``) this is all zeros, so
        advantages fall back to plain returns.
        """
        if observations.shape[:2] != mask.shape:
            raise ValueError(
                f"expected observations [N, T, D] and mask [N, T], got "
                f"{tuple(observations.shape)}, {tuple(mask.shape)}"
            )
        out_dtype = observations.dtype if observations.is_floating_point() else torch.float32
        if self.weights is None:
            return torch.zeros(mask.shape, dtype=out_dtype, device=observations.device)
        feats = self.features(observations)
        if feats.shape[-1] != self.weights.shape[0]:
            raise ValueError(
                f"baseline was fit on {(self.weights.shape[0] - 4) // 2}-dim observations, "
                f"got {observations.shape[-1]}"
            )
        values = feats @ self.weights.to(feats.device)
        return (values * mask.detach().double()).to(out_dtype)

    def state_dict(self) -> dict[str, object]:
        """``{"reg_coeff": float, "weights": Tensor [2D + 4] float64 or None}``."""
        weights = None if self.weights is None else self.weights.clone()
        return {"reg_coeff": self.reg_coeff, "weights": weights}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore what :meth:`state_dict` returned."""
        weights = state["weights"]
        if weights is not None and not isinstance(weights, Tensor):
            raise TypeError(f"weights must be a Tensor or None, got {type(weights).__name__}")
        self.reg_coeff = float(state["reg_coeff"])  # type: ignore[arg-type]
        self.weights = None if weights is None else weights.detach().double().clone()
