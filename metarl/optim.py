"""Second-order optimisation pieces for TRPO-style updates: pure functions.

Flat gradients, Hessian-vector products (through a differentiable inner
update, as MAML-TRPO needs), conjugate gradient and a backtracking line search
that restores the old parameters exactly when no step is accepted.
Follows pytorch-maml-rl (``maml_rl/utils/optimization.py``,
``maml_rl/metalearners/maml_trpo.py``).

All vectors are flat 1-D tensors laid out like
``torch.nn.utils.parameters_to_vector(params)``: each parameter flattened, in
the order given, concatenated.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn.utils import parameters_to_vector

__all__ = [
    "ClippedSurrogate",
    "apply_scheduled_lr",
    "LineSearchResult",
    "backtracking_line_search",
    "batched_line_search",
    "clipped_surrogate",
    "conjugate_gradient",
    "flat_grad",
    "gauss_newton_product",
    "hessian_product",
    "hvp_of_gradients",
    "make_hvp",
    "past_kl_target",
    "scheduled_lr",
    "set_learning_rate",
    "sum_of_products",
]


def scheduled_lr(base_lr: float, iteration: int, anneal_iterations: int) -> float:
    """The Adam learning rate of (0-based) ``iteration``: ``base_lr``, or annealed linearly.

    With ``anneal_iterations = N > 0`` it is cleanrl's ``anneal_lr``: ``base_lr`` at
    iteration 0, falling by ``base_lr / N`` an iteration to ``base_lr / N`` at the last
    (iteration N - 1), floored there should a run go past N. ``0`` = constant. A
    function of the iteration alone, so a resumed run continues the schedule.
    """
    if anneal_iterations <= 0:
        return base_lr
    return base_lr * max(1.0 - iteration / anneal_iterations, 1.0 / anneal_iterations)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate (after ``load_state_dict`` too, which
    would otherwise bring back the checkpoint's)."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def apply_scheduled_lr(
    optimizer: torch.optim.Optimizer, base_lr: float, iteration: int, anneal_iterations: int
) -> float:
    """Set ``optimizer``'s rate to :func:`scheduled_lr` of ``iteration``; returns that rate."""
    lr = scheduled_lr(base_lr, iteration, anneal_iterations)
    set_learning_rate(optimizer, lr)
    return lr


def past_kl_target(approx_kl: float, target_kl: float) -> bool:
    """PPO early stopping, stable-baselines3's rule: stop once the approximate KL to the
    sampling policy exceeds 1.5 x the target; a target of 0 never stops."""
    return target_kl > 0 and approx_kl > 1.5 * target_kl


@dataclass(frozen=True)
class ClippedSurrogate:
    """PPO's clipped objective and its diagnostics, per step (each shaped like the input).

    The caller reduces them over its own layout (per task, or over the whole batch).
    """

    objective: Tensor  # min(r * A, clip(r, 1 - eps, 1 + eps) * A): to maximise
    approx_kl: Tensor  # (r - 1) - log r >= 0: Schulman's low-variance KL(old || new) estimator
    clipped: Tensor  # 1.0 where |r - 1| > eps (the clip fraction's indicator), no gradient


def clipped_surrogate(log_ratio: Tensor, advantages: Tensor, clip: float) -> ClippedSurrogate:
    """PPO's clipped surrogate from ``log_ratio = log pi_new(a|s) - log pi_old(a|s)``.

    Shared by MAML-PPO (its ratio is of the adapted policies) and RL2, so the two
    report ``ppo/approx_kl`` and ``ppo/clip_fraction`` by one definition.
    """
    ratio = torch.exp(log_ratio)
    bounded = torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    with torch.no_grad():
        approx_kl = (ratio - 1) - log_ratio
        clipped = ((ratio - 1).abs() > clip).to(ratio.dtype)
    return ClippedSurrogate(
        objective=torch.min(ratio * advantages, bounded * advantages),
        approx_kl=approx_kl,
        clipped=clipped,
    )


def _flatten(grads: Sequence[Tensor | None], params: Sequence[Tensor]) -> Tensor:
    """Concatenate flattened grads; a ``None`` (param unused) becomes zeros."""
    return torch.cat(
        [
            (torch.zeros_like(p) if g is None else g).reshape(-1)
            for g, p in zip(grads, params, strict=True)
        ]
    )


def flat_grad(
    output: Tensor,
    params: Sequence[Tensor],
    *,
    retain_graph: bool = False,
    create_graph: bool = False,
) -> Tensor:
    """Gradient of the scalar ``output`` w.r.t. ``params`` as one flat vector.

    Parameters that do not affect ``output`` get zeros.

    Returns:
        ``[sum(p.numel() for p in params)]``.
    """
    params = list(params)
    grads = torch.autograd.grad(
        output,
        params,
        retain_graph=retain_graph,
        create_graph=create_graph,
        allow_unused=True,
    )
    return _flatten(grads, params)


def make_hvp(
    scalar: Tensor, params: Sequence[Tensor], damping: float = 0.0
) -> Callable[[Tensor], Tensor]:
    """Return ``v -> (H + damping * I) v`` for ``H`` the Hessian of ``scalar`` w.r.t. ``params``.

    The first gradient is taken once here with ``create_graph=True``; each call
    differentiates ``grad . v`` once more (``retain_graph=True``, so the returned
    function can be called many times, e.g. by :func:`conjugate_gradient`). The
    graph of ``scalar`` may run through a differentiable inner update, e.g. the
    KL of a policy adapted with ``create_graph=True`` in MAML-TRPO.

    Args:
        scalar: 0-d tensor depending on ``params``.
        params: tensors requiring grad.
        damping: added multiple of the identity (keeps CG well posed).
    Returns:
        A function from a flat ``[P]`` vector to a detached flat ``[P]`` vector.
    """
    params = list(params)
    grad = flat_grad(scalar, params, retain_graph=True, create_graph=True)
    return hvp_of_gradients([grad], params, damping)


def hvp_of_gradients(
    grads: Sequence[Tensor], params: Sequence[Tensor], damping: float = 0.0
) -> Callable[[Tensor], Tensor]:
    """``v -> sum_i H_i v + damping * v`` for ``grads[i]`` the flat gradient (taken with
    ``create_graph=True``) of a scalar ``s_i`` whose Hessian is ``H_i``.

    The Hessian of a sum of per-chunk terms (the KL of a few tasks each) is the sum
    of theirs: each product differentiates one chunk's graph, whose tensors hold only
    that chunk's tasks (see MAML-TRPO's ``trpo_chunk_tasks``).

    Returns:
        A function from a flat ``[P]`` vector to a detached flat ``[P]`` vector.
    """
    params = list(params)

    def hvp(v: Tensor) -> Tensor:
        # v is data, not something to differentiate through: detach it so CG
        # iterates do not grow the graph.
        v = v.detach().to(grads[0].dtype)
        total = damping * v
        for grad in grads:
            grad_v = torch.dot(grad, v)
            if grad_v.requires_grad:
                total = total + flat_grad(grad_v, params, retain_graph=True).detach()
            # else: that gradient does not depend on params (at most linear): H_i = 0
        return total

    return hvp


def gauss_newton_product(
    outputs: Sequence[Tensor],
    params: Sequence[Tensor],
    output_hvp: Callable[[list[Tensor]], list[Tensor]],
) -> Callable[[Tensor], Tensor]:
    """``v -> J^T H J v``: the Gauss-Newton product of a scalar ``f(outputs(params))``.

    ``J`` is the Jacobian of ``outputs`` w.r.t. ``params`` (their graph must be alive;
    it is kept), ``H = output_hvp`` the Hessian of ``f`` in the outputs' space. Where
    ``f``'s gradient in the outputs is zero, e.g. a KL at its minimum (TRPO's KL at the
    step's start point), this is the exact Hessian of ``f(outputs(params))``: the
    dropped term ``sum_i df/do_i * Hess(o_i)`` vanishes, and with it the third
    derivatives a double backward through a differentiable inner step takes.

    ``J v`` comes by the double-backward trick, with nothing recomputed: ``J^T u`` is
    built once for a dummy ``u`` (``create_graph``; it is linear in ``u``) and each
    product differentiates ``(J^T u) . v`` w.r.t. ``u``. Then ``H`` applies in the
    outputs' small space, and one backward through the outputs' graph gives
    ``J^T (H J v)``. (``torch.func.jvp`` would recompute the forward every product.)

    Args:
        outputs: tensors computed from ``params`` (e.g. action means ``[T, N, A]``
            and log-stds ``[T, A]``).
        params: tensors requiring grad, in the layout of the flat vectors.
        output_hvp: ``[d_out for each output] -> [H d_out for each output]``.
    Returns:
        A function from a flat ``[P]`` vector to a detached flat ``[P]`` vector.
    """
    params, outputs = list(params), list(outputs)
    dummies = [torch.zeros_like(o, requires_grad=True) for o in outputs]
    transposed = torch.autograd.grad(
        outputs, params, dummies, retain_graph=True, create_graph=True, allow_unused=True
    )
    jt_u = _flatten(transposed, params)  # J^T u: linear in the dummies

    def product(v: Tensor) -> Tensor:
        v = v.detach().to(jt_u.dtype)
        if not jt_u.requires_grad:  # the outputs do not depend on params
            return torch.zeros_like(v)
        jv = torch.autograd.grad(torch.dot(jt_u, v), dummies, retain_graph=True,
                                 allow_unused=True)  # fmt: skip
        jv = [torch.zeros_like(o) if d is None else d for d, o in zip(jv, outputs, strict=True)]
        back = torch.autograd.grad(
            outputs, params, output_hvp(jv), retain_graph=True, allow_unused=True
        )
        return _flatten(back, params).detach()

    return product


def hessian_product(
    fn: Callable[..., Tensor], at: Sequence[Tensor]
) -> Callable[[list[Tensor]], list[Tensor]]:
    """``[t_i] -> [sum_j d2 fn / d at_i d at_j  t_j]``: the Hessian of the scalar
    ``fn(*at)`` at the (detached) points ``at``, applied to tangents of their shapes.

    Meant for a small space, e.g. a KL as a function of a policy's outputs (the
    ``H`` of :func:`gauss_newton_product`): the gradient is taken once with
    ``create_graph``, each call is one more backward through that small graph.
    """
    points = [a.detach().requires_grad_() for a in at]
    with torch.enable_grad():
        grads = torch.autograd.grad(fn(*points), points, create_graph=True)

    def product(tangents: list[Tensor]) -> list[Tensor]:
        out = torch.autograd.grad(grads, points, tangents, retain_graph=True, allow_unused=True)
        return [torch.zeros_like(p) if o is None else o for o, p in zip(out, points, strict=True)]

    return product


def sum_of_products(
    products: Sequence[Callable[[Tensor], Tensor]], damping: float = 0.0
) -> Callable[[Tensor], Tensor]:
    """``v -> sum_i A_i v + damping * v``: e.g. the Gauss-Newton products of chunks of tasks."""

    def product(v: Tensor) -> Tensor:
        v = v.detach()
        total = damping * v
        for one in products:
            total = total + one(v)
        return total

    return product


def conjugate_gradient(
    matvec: Callable[[Tensor], Tensor],
    b: Tensor,
    iters: int = 10,
    residual_tol: float = 1e-10,
    *,
    return_product: bool = False,
    x0: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Approximately solve ``A x = b`` for a symmetric positive-definite ``A``.

    Starts from ``x = 0`` and stops after ``iters`` matvecs or once the squared
    residual norm ``r . r`` falls below ``residual_tol``. If a search direction
    shows non-positive curvature (``p . A p <= 0``, which rounding can cause for
    an undamped Fisher), it stops and returns the current iterate, which is
    still a descent direction for the quadratic model.

    On a GPU the loop never reads a value back to the host: it runs all ``iters``
    products and freezes the iterate once stopped (``torch.where``), so no CUDA
    sync waits inside it. On the CPU a read costs nothing and it stops early.

    Args:
        matvec: ``v -> A v`` on flat ``[P]`` tensors.
        b: ``[P]``.
        return_product: also return ``A x``, accumulated from the matvecs CG makes
            anyway (``A x = sum_i alpha_i A p_i``), so a caller needing ``x . A x``
            (TRPO's step scale) saves one more product.
        x0: a warm start (e.g. the previous TRPO step's direction): CG starts from
            ``c x0`` with ``c = max(0, x0.b / x0.A x0)``, the best multiple for the
            quadratic model, so never worse than ``x = 0``. That costs one matvec,
            counted in ``iters``.
    Returns:
        ``x`` ``[P]``, detached, dtype of ``b``; with ``return_product``, ``(x, A x)``.
    """
    b = b.detach()
    x = torch.zeros_like(b)
    ax = torch.zeros_like(b)
    if x0 is not None and iters > 0:
        x0 = x0.detach().to(b)
        a_x0 = matvec(x0).detach()
        curvature, along = torch.dot(x0, a_x0), torch.dot(x0, b)
        usable = (curvature > 0) & torch.isfinite(curvature) & torch.isfinite(along)
        scale = torch.where(usable, (along / curvature).clamp_min(0.0), torch.zeros_like(along))
        x, ax = scale * x0, scale * a_x0
        iters -= 1
    r = b - ax
    p = r.clone()
    rdotr = torch.dot(r, r)
    active = rdotr >= residual_tol  # a 0-d bool tensor: no host read
    read_back = b.device.type == "cpu"
    for _ in range(iters):
        if read_back and not bool(active):
            break
        z = matvec(p).detach()
        pz = torch.dot(p, z)
        active = active & (pz > 0) & torch.isfinite(pz)
        alpha = torch.where(active, rdotr / pz, torch.zeros_like(pz))
        x = x + alpha * p
        ax = ax + alpha * z
        r = r - alpha * z
        new_rdotr = torch.dot(r, r)
        p = torch.where(active, r + (new_rdotr / rdotr) * p, p)
        rdotr = torch.where(active, new_rdotr, rdotr)
        active = active & (rdotr >= residual_tol)
    return (x, ax) if return_product else x


@dataclass(frozen=True)
class LineSearchResult:
    """Outcome of :func:`backtracking_line_search`.

    Attributes:
        accepted: whether a step was accepted (else the old parameters are back).
        step_fraction: ``backtrack_ratio ** k`` of the accepted step; 0.0 if rejected.
        n_tries: how many times ``evaluate`` was called.
        loss: loss at the accepted step, or ``old_loss`` if rejected.
        kl: KL at the accepted step, or 0.0 if rejected.
    """

    accepted: bool
    step_fraction: float
    n_tries: int
    loss: float
    kl: float


def _write_flat(vec: Tensor, params: Sequence[Tensor]) -> None:
    """Copy slices of ``vec`` into ``params`` in place (same storage, same objects).

    In-place ``copy_`` rather than ``vector_to_parameters``, which rebinds each
    ``param.data`` to a view of ``vec``: here every parameter keeps its own
    storage, so anything holding it (an optimiser's state, a shared module)
    sees the update, and restoring the saved vector is bitwise exact.
    """
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            p.copy_(vec[offset : offset + n].view_as(p))
            offset += n


def backtracking_line_search(
    params: Sequence[torch.nn.Parameter],
    full_step: Tensor,
    evaluate: Callable[[], tuple[float, float]],
    *,
    old_loss: float,
    max_kl: float,
    max_backtracks: int = 15,
    backtrack_ratio: float = 0.5,
) -> LineSearchResult:
    """Try ``params_old + backtrack_ratio**k * full_step`` for k = 0 .. max_backtracks-1.

    The parameters are changed in place before each call to ``evaluate()``,
    which returns ``(loss, kl)`` for the current parameters (it may use autograd,
    e.g. to adapt in MAML-TRPO; it is not run under ``no_grad``). The first try
    with ``loss < old_loss``, ``kl <= max_kl`` and both finite is kept. If none
    is, the old parameters are restored bitwise and ``accepted`` is False.

    Args:
        params: the parameters to update, in the layout of ``full_step``.
        full_step: ``[P]`` flat step (e.g. the scaled natural gradient).
        evaluate: returns ``(loss, kl)`` as floats (0-d tensors are accepted).
        old_loss: loss at the old parameters.
        max_kl: trust-region size.
        max_backtracks: number of tries (>= 1).
        backtrack_ratio: step shrink factor in (0, 1).
    """
    params = list(params)
    n_params = sum(p.numel() for p in params)
    if full_step.dim() != 1 or full_step.numel() != n_params:
        raise ValueError(
            f"full_step must be a flat vector of {n_params} entries, got {tuple(full_step.shape)}"
        )
    if max_backtracks < 1:
        raise ValueError(f"max_backtracks must be >= 1, got {max_backtracks}")
    if not 0.0 < backtrack_ratio < 1.0:
        raise ValueError(f"backtrack_ratio must be in (0, 1), got {backtrack_ratio}")

    old = parameters_to_vector(params).detach().clone()
    step = full_step.detach().to(old)
    for k in range(max_backtracks):
        fraction = backtrack_ratio**k
        _write_flat(old + fraction * step, params)
        loss, kl = (float(v) for v in evaluate())
        if math.isfinite(loss) and math.isfinite(kl) and loss < old_loss and kl <= max_kl:
            return LineSearchResult(
                accepted=True, step_fraction=fraction, n_tries=k + 1, loss=loss, kl=kl
            )
    _write_flat(old, params)
    return LineSearchResult(
        accepted=False,
        step_fraction=0.0,
        n_tries=max_backtracks,
        loss=float(old_loss),
        kl=0.0,
    )


def batched_line_search(
    params: Sequence[torch.nn.Parameter],
    full_step: Tensor,
    evaluate_many: Callable[[Tensor], tuple[Tensor, Tensor]],
    *,
    old_loss: float,
    max_kl: float,
    max_backtracks: int = 15,
    backtrack_ratio: float = 0.5,
    batch: int = 4,
) -> LineSearchResult:
    """:func:`backtracking_line_search` scoring ``batch`` step sizes per call.

    ``evaluate_many(candidates)`` gets ``[B, P]`` parameter vectors, row ``i`` being
    ``params_old + backtrack_ratio**k * full_step`` for the next ``B`` values of ``k``
    (the last call may have fewer), and returns ``(losses [B], kls [B])``; the
    parameters themselves are not changed while it runs. Each call's results are read
    back once (one host sync on a GPU). The first acceptable candidate in the order of
    ``k`` is kept, by the sequential search's test, so both accept the same step when
    their evaluations agree. ``n_tries`` is that candidate's ``k + 1`` (as sequentially),
    though up to ``batch - 1`` more were scored. None acceptable: the old parameters
    stay, bitwise.
    """
    params = list(params)
    n_params = sum(p.numel() for p in params)
    if full_step.dim() != 1 or full_step.numel() != n_params:
        raise ValueError(
            f"full_step must be a flat vector of {n_params} entries, got {tuple(full_step.shape)}"
        )
    if max_backtracks < 1 or batch < 1:
        raise ValueError(f"max_backtracks and batch must be >= 1, got {max_backtracks}, {batch}")
    if not 0.0 < backtrack_ratio < 1.0:
        raise ValueError(f"backtrack_ratio must be in (0, 1), got {backtrack_ratio}")

    old = parameters_to_vector(params).detach().clone()
    step = full_step.detach().to(old)
    for first in range(0, max_backtracks, batch):
        ks = range(first, min(first + batch, max_backtracks))
        # The same expression per row as the sequential search writes: the same bits.
        candidates = torch.stack([old + backtrack_ratio**k * step for k in ks])
        losses, kls = evaluate_many(candidates)
        values = torch.stack([losses.detach(), kls.detach()]).tolist()  # the one read
        for k, loss, kl in zip(ks, *values, strict=True):
            if math.isfinite(loss) and math.isfinite(kl) and loss < old_loss and kl <= max_kl:
                _write_flat(candidates[k - first], params)
                return LineSearchResult(
                    accepted=True,
                    step_fraction=backtrack_ratio**k,
                    n_tries=k + 1,
                    loss=loss,
                    kl=kl,
                )
    return LineSearchResult(
        accepted=False, step_fraction=0.0, n_tries=max_backtracks, loss=float(old_loss), kl=0.0
    )
