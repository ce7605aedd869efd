"""MAML-TRPO (Finn et al. 2017): a trust-region natural-gradient step on the meta-objective.

The surrogate is the importance-weighted return of the *adapted* policies on
their validation episodes; its gradient flows through the inner loop
(second-order unless ``first_order``). The step direction solves
``F s = g`` by conjugate gradient with ``F`` the Hessian of the mean KL between
the old and new adapted policies (Hessian-vector products, never the matrix);
it is scaled to the KL bound, then a backtracking line search keeps the first
fraction that improves the surrogate within the bound, or restores the old
parameters. As in pytorch-maml-rl's ``maml_trpo.py``.

The Fisher-vector products are ``J^T H J v`` by default (``trpo_hvp gauss-newton``: no
third derivatives; at the step's start point the double backward's product to rounding,
so a default that changes no maths). Cheaper variants behind ``trpo_`` keys, off by
default: ``trpo_fisher_subsample`` (the Fisher of every k-th task: an estimate, so it is
decided by the paired-seed check), ``trpo_cg_warm_start`` (CG from the last direction)
and ``trpo_ls_batch`` (several step sizes scored per pass: one host read per pass on a
GPU).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch

from metarl.algos.gradient_family import SGD, OuterSpec, gradient_member, replay_steps
from metarl.algos.maml import AdaptationData, MAMLInnerLoop, ProcessedBatch, task_subset
from metarl.functional import (
    TaskParams,
    batched_kl,
    batched_mean,
    diag_gaussian_kl,
    expand_params,
    masked_mean,
)
from metarl.optim import (
    backtracking_line_search,
    batched_line_search,
    conjugate_gradient,
    flat_grad,
    gauss_newton_product,
    hessian_product,
    hvp_of_gradients,
    sum_of_products,
)
from metarl.options import ConfigError, option
from metarl.policies.gaussian_mlp import MLPSpec, gaussian_log_prob

if TYPE_CHECKING:
    from metarl.config import Config


@dataclass
class TRPOOptions:
    """TRPO outer update: the config keys of the trust-region step"""

    trpo_max_kl: float = option(
        0.01, "TRPO trust region: max mean KL of the adapted policies", min=0.0
    )
    trpo_cg_iters: int = option(10, "conjugate-gradient iterations", min=1)
    trpo_cg_damping: float = option(1e-5, "damping added to the Fisher-vector product", min=0.0)
    trpo_fisher: str = option(
        "full",
        "Fisher for the natural gradient: 'full' = the KL differentiated through the inner "
        "loop (as pytorch-maml-rl and learn2learn); 'adapted' = the inner step held fixed "
        "(a cheaper update, but once the meta-policy is trained its steps overshoot the KL "
        "bound and the line search keeps few of them, so it learns much more slowly)",
        choices=("adapted", "full"),
    )
    trpo_fisher_subsample: float = option(
        1.0,
        "fraction of the meta-batch's tasks (every k-th) whose KL Hessian is the Fisher: "
        "its products, most of the update's time, then run through fewer tasks' inner loops",
        min=0.01,
        max=1.0,
    )
    trpo_chunk_tasks: int = option(
        -1,
        "tasks per chunk of the surrogate, the KL and their Hessian-vector products, which "
        "are summed over chunks: no tensor then holds the whole meta-batch, and each "
        "product works in a chunk's smaller tensors (the same numbers to float rounding); "
        "0 = the whole meta-batch at once; -1 = by device: 4 on the CPU, the whole "
        "meta-batch on a GPU (there one pass over all tasks is about 9x faster than chunks)",
        min=-1,
    )
    trpo_hvp: str = option(
        "gauss-newton",
        "how conjugate gradient's Fisher-vector products are taken: 'gauss-newton' forms "
        "J^T H J v, J the Jacobian of the adapted policies' means and log-stds and H the "
        "KL's Hessian in them: the same product at the step's start point (where the KL's "
        "gradient is zero) without third derivatives through the inner step, about 0.6x "
        "the cost on the CPU; 'double-backward' differentiates the KL's gradient again (as "
        "pytorch-maml-rl; the default of runs before 2026-12-04)",
        choices=("double-backward", "gauss-newton"),
    )
    trpo_cg_warm_start: bool = option(
        False,
        "start conjugate gradient from the previous update's direction (its best multiple, "
        "which costs one of the trpo_cg_iters products), so fewer iterations may do",
    )
    trpo_ls_max_backtracks: int = option(15, "line search: maximum tries", min=1)
    trpo_ls_backtrack_ratio: float = option(
        0.8, "line search: step shrink factor (0.8 as pytorch-maml-rl)", min=0.0, max=1.0
    )
    trpo_ls_batch: int = option(
        1,
        "line search: step sizes scored together in one batched pass (1 = one at a time); "
        "it keeps the step the one-at-a-time search keeps and reads results back once per "
        "pass (a GPU's host syncs); needs an inner rule without learned parameters",
        min=1,
    )
    RENAMED = {
        "max_kl": "trpo_max_kl",
        "cg_iters": "trpo_cg_iters",
        "cg_damping": "trpo_cg_damping",
        "fisher_subsample": "trpo_fisher_subsample",
        "ls_max_backtracks": "trpo_ls_max_backtracks",
        "ls_backtrack_ratio": "trpo_ls_backtrack_ratio",
    }


class OldPolicy(NamedTuple):
    """The adapted policies that collected the validation steps (constants of the update)."""

    mean: torch.Tensor  # [T, N, A]
    log_std: torch.Tensor  # [T, 1, A]
    log_probs: torch.Tensor  # [T, N]

    @classmethod
    def of(cls, spec: MLPSpec, data: AdaptationData) -> OldPolicy:
        """The policies ``data.old_params`` evaluated on ``data.valid`` (no graph)."""
        valid = data.valid
        with torch.no_grad():
            mean = batched_mean(spec, data.old_params, valid.observations)
            log_std = data.old_params["log_std"].unsqueeze(1)
            return cls(mean, log_std, gaussian_log_prob(valid.actions, mean, log_std))

    def repeat(self, times: int) -> OldPolicy:
        """The tasks repeated ``times`` times along the task axis, as ``Tensor.repeat``."""
        return OldPolicy(*(x.repeat(times, *([1] * (x.dim() - 1))) for x in self))


class TRPOUpdate:
    """The outer update of MAML-TRPO (no state besides its settings, but for the last CG
    direction when ``cg_warm_start``)."""

    kl_key = "trpo/kl"
    rejected_key = "trpo/rejected_nonfinite"

    def __init__(
        self,
        inner: MAMLInnerLoop,
        *,
        max_kl: float,
        cg_iters: int,
        cg_damping: float,
        ls_max_backtracks: int,
        ls_backtrack_ratio: float,
        fisher: str = "full",
        fisher_subsample: float = 1.0,
        chunk_tasks: int = 0,
        hvp: str = "double-backward",
        cg_warm_start: bool = False,
        ls_batch: int = 1,
    ) -> None:
        if ls_batch > 1 and inner.rule.parameters():
            raise ConfigError(
                f"config key 'trpo_ls_batch': {ls_batch} scores candidates of the policy's "
                "parameters only; this inner rule learns parameters of its own (use 1)"
            )
        self.inner = inner
        self.policy = inner.policy
        self.max_kl = max_kl
        self.cg_iters = cg_iters
        self.cg_damping = cg_damping
        self.ls_max_backtracks = ls_max_backtracks
        self.ls_backtrack_ratio = ls_backtrack_ratio
        self.fisher = fisher
        self.fisher_stride = max(1, round(1.0 / fisher_subsample))
        self.chunk_tasks = chunk_tasks
        self.hvp = hvp
        self.cg_warm_start = cg_warm_start
        self.ls_batch = ls_batch
        self.direction: torch.Tensor | None = None  # the last CG solution (warm start)

    def _chunks(self, n_tasks: int, stride: int = 1) -> list[slice]:
        """The tasks ``0, stride, 2 stride, ...`` of the meta-batch in groups of
        ``chunk_tasks`` (all in one group when it is 0), as slices of the batch."""
        tasks = range(0, n_tasks, stride)
        size = self.chunk_tasks or len(tasks)
        return [
            slice(tasks[i], tasks[min(i + size, len(tasks)) - 1] + 1, stride)
            for i in range(0, len(tasks), size)
        ]

    def _summed_losses(
        self, data: AdaptationData, old: OldPolicy, tasks: slice, *, create_graph: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sums over ``tasks`` of each task's surrogate loss and KL(old adapted || new adapted).

        One forward of the adapted policies on the validation steps serves both. Each
        task's terms are means over its real steps; divide by the tasks for the means.
        """
        loss, kl, _ = self._summed_losses_and_outputs(data, old, tasks, create_graph=create_graph)
        return loss, kl

    def _summed_losses_and_outputs(
        self, data: AdaptationData, old: OldPolicy, tasks: slice, *, create_graph: bool
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """:meth:`_summed_losses` and the adapted policies' outputs it came from: the
        means ``[T', N, A]`` and log-stds ``[T', A]`` (what a Gauss-Newton product needs)."""
        valid = task_subset(data.valid, tasks)
        train = [task_subset(batch, tasks) for batch in data.train]
        adapted = self.inner.adapted_params(train, create_graph=create_graph)
        mean = batched_mean(self.policy.spec, adapted, valid.observations)
        loss, kl = _task_terms(valid, _old_slice(old, tasks), mean, adapted["log_std"])
        return loss.sum(), kl.sum(), (mean, adapted["log_std"])

    def _surrogate_and_kl(
        self, data: AdaptationData, old: OldPolicy, *, create_graph: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Means over the meta-batch's tasks of the surrogate loss and of the KL, chunk by
        chunk (without ``create_graph`` each chunk's graph is freed before the next)."""
        n_tasks = data.valid.observations.shape[0]
        loss = kl = torch.zeros((), device=data.valid.observations.device)
        for tasks in self._chunks(n_tasks):
            loss_c, kl_c = self._summed_losses(data, old, tasks, create_graph=create_graph)
            if not create_graph:
                loss_c, kl_c = loss_c.detach(), kl_c.detach()
            loss, kl = loss + loss_c, kl + kl_c
        return loss / n_tasks, kl / n_tasks

    def _fisher_adapted(self, data: AdaptationData, tasks: slice) -> TaskParams:
        """The adapted policies of ``tasks`` whose KL's Hessian preconditions the step.

        ``trpo_fisher "full"``: the inner loop replayed, differentiably. ``"adapted"``
        writes them as ``theta + const`` (the inner step held fixed), which drops the
        terms that make the exact Hessian-vector product dearer but also the inner
        step's sensitivity to ``theta``: once MAML has made that large the real KL of a
        step is hundreds of times the modelled one and the line search shrinks every
        step to a few percent. With ``fisher_stride > 1`` only every
        ``fisher_stride``-th task enters: an unbiased estimate of the same Fisher, and
        each Hessian-vector product (90% of the update) costs that many times less,
        because it runs through the inner loop of fewer tasks.
        """
        if self.fisher == "full":
            train = [task_subset(batch, tasks) for batch in data.train]
            return self.inner.adapted_params(train, create_graph=True)
        old_params = {k: v[tasks] for k, v in data.old_params.items()}
        meta = expand_params(self.policy.params(), data.valid.observations[tasks].shape[0])
        return {k: meta[k] + (old_params[k] - meta[k]).detach() for k in meta}

    def _fisher_kl_sum(self, data: AdaptationData, tasks: slice) -> torch.Tensor:
        """The KL of :meth:`_fisher_adapted`'s policies on ``tasks``, summed over them."""
        valid = task_subset(data.valid, tasks)
        old_params = {k: v[tasks] for k, v in data.old_params.items()}
        adapted = self._fisher_adapted(data, tasks)
        kl = batched_kl(self.policy.spec, old_params, adapted, valid.observations)
        return masked_mean(kl, valid.mask).sum()

    def update(self, data: AdaptationData, iteration: int = 0) -> dict[str, float]:
        """One TRPO step; ``iteration`` is unused (max_kl bounds the step, not a schedule).

        The surrogate's gradient and the Fisher's first gradients are taken chunk by
        chunk of tasks (``chunk_tasks``); the Fisher-vector product sums the chunks'.
        Nothing is read back to the host before the line search, whose first read
        carries the surrogate and whether it and its gradient are finite.
        """
        params = self.inner.meta_parameters()
        old = OldPolicy.of(self.policy.spec, data)
        loss, grad, finite, fisher_vp = self._gradient_and_fisher(data, old, params)
        warm = self.direction if self.cg_warm_start else None
        step_dir, fisher_step = conjugate_gradient(
            fisher_vp, grad, iters=self.cg_iters, return_product=True, x0=warm
        )
        # Scale so that the quadratic model of the KL equals max_kl: 0.5 s^T F s * beta^2 = max_kl.
        shs = 0.5 * torch.dot(step_dir, fisher_step)
        full_step = -step_dir * torch.sqrt(self.max_kl / shs.clamp_min(1e-12))
        del fisher_vp  # frees the second-order graphs before the line search

        # The one read before the line search: the surrogate, finiteness, the gradient norm.
        old_loss, is_finite, grad_norm = torch.stack(
            [loss, finite.to(loss.dtype), grad.norm()]
        ).tolist()
        if not is_finite:
            return {"loss/surrogate_before": old_loss, self.rejected_key: 1.0}
        if self.cg_warm_start:
            self.direction = step_dir.detach()
        result = self._line_search(data, old, params, full_step, old_loss)
        return {
            "loss/surrogate_before": old_loss,
            "loss/surrogate_after": result.loss,
            "trpo/kl": result.kl,
            "trpo/grad_norm": grad_norm,
            "trpo/linesearch_accepted": float(result.accepted),
            "trpo/linesearch_step_fraction": result.step_fraction,
            "trpo/linesearch_tries": float(result.n_tries),
        }

    def _gradient_and_fisher(
        self, data: AdaptationData, old: OldPolicy, params: list[torch.nn.Parameter]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        """The mean surrogate loss (0-d, detached), its flat gradient ``[P]``, whether
        both are finite (a 0-d bool tensor, not read) and ``v -> (F + damping) v``.

        With ``trpo_hvp double-backward`` each chunk keeps its KL's first gradient with
        ``create_graph`` and a product differentiates it again; with ``gauss-newton`` it
        keeps the graph of its adapted outputs and a product is ``J^T H J v``.
        """
        n_tasks = data.valid.observations.shape[0]
        # The exact Fisher on every task shares the surrogate's forward pass.
        shared_forward = self.fisher == "full" and self.fisher_stride == 1
        grad = torch.zeros(sum(p.numel() for p in params), dtype=params[0].dtype,
                           device=data.valid.observations.device)  # fmt: skip
        loss = torch.zeros_like(grad[0])
        curvature: list = []  # each chunk's part of the Fisher-vector product, graph kept
        for tasks in self._chunks(n_tasks):
            loss_c, kl_c, outputs = self._summed_losses_and_outputs(
                data, old, tasks, create_graph=True
            )
            grad = grad + flat_grad(loss_c / n_tasks, params, retain_graph=shared_forward)
            loss = loss + loss_c.detach() / n_tasks
            if shared_forward:
                if self.hvp == "double-backward":  # the KL of the same forward, as before
                    curvature.append(flat_grad(kl_c / n_tasks, params, retain_graph=True,
                                               create_graph=True))  # fmt: skip
                else:
                    share = _kl_share(task_subset(data.valid, tasks), _old_slice(old, tasks),
                                      n_tasks)  # fmt: skip
                    curvature.append(_gauss_newton(params, outputs, share))
        finite = torch.isfinite(loss) & torch.isfinite(grad).all()  # read with the loss
        if not shared_forward:
            n_fisher = len(range(0, n_tasks, self.fisher_stride))
            for tasks in self._chunks(n_tasks, self.fisher_stride):
                if self.hvp == "double-backward":
                    kl_c = self._fisher_kl_sum(data, tasks) / n_fisher
                    curvature.append(flat_grad(kl_c, params, retain_graph=True,
                                               create_graph=True))  # fmt: skip
                    continue
                adapted = self._fisher_adapted(data, tasks)
                valid = task_subset(data.valid, tasks)
                outputs = (batched_mean(self.policy.spec, adapted, valid.observations),
                           adapted["log_std"])  # fmt: skip
                share = _kl_share(valid, _old_slice(old, tasks), n_fisher)
                curvature.append(_gauss_newton(params, outputs, share))
        if self.hvp == "double-backward":
            fisher_vp = hvp_of_gradients(curvature, params, damping=self.cg_damping)
        else:
            fisher_vp = sum_of_products(curvature, damping=self.cg_damping)
        return loss, grad, finite, fisher_vp

    def _line_search(
        self,
        data: AdaptationData,
        old: OldPolicy,
        params: list[torch.nn.Parameter],
        full_step: torch.Tensor,
        old_loss: float,
    ):
        """Backtrack along ``full_step``: one step size per pass, or ``ls_batch`` at once."""
        settings = dict(old_loss=old_loss, max_kl=self.max_kl,
                        max_backtracks=self.ls_max_backtracks,
                        backtrack_ratio=self.ls_backtrack_ratio)  # fmt: skip
        if self.ls_batch > 1:
            return batched_line_search(
                params,
                full_step,
                lambda candidates: self._score_candidates(data, old, candidates),
                batch=self.ls_batch,
                **settings,
            )

        def evaluate() -> tuple[float, float]:
            new_loss, new_kl = self._surrogate_and_kl(data, old, create_graph=False)
            loss, kl = torch.stack([new_loss, new_kl]).tolist()  # one read per try
            return loss, kl

        return backtracking_line_search(params, full_step, evaluate, **settings)

    def _score_candidates(
        self, data: AdaptationData, old: OldPolicy, candidates: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean surrogate loss and KL over the meta-batch of each of ``candidates``
        (``[B, P]`` policy-parameter vectors) -> ``[B]`` each, in one pass per chunk.

        Each chunk's tasks are repeated B times along the task axis (candidate-major),
        each copy adapting from its candidate: the same sums, chunk by chunk and task by
        task, as :meth:`_surrogate_and_kl` at each candidate.
        """
        n_candidates = candidates.shape[0]
        named = _unflatten(candidates, self.policy.params())  # name -> [B, ...]
        n_tasks = data.valid.observations.shape[0]
        losses = kls = torch.zeros(n_candidates, dtype=candidates.dtype,
                                   device=candidates.device)  # fmt: skip
        for tasks in self._chunks(n_tasks):
            size = data.valid.observations[tasks].shape[0]
            start = {
                k: v.unsqueeze(1).expand(n_candidates, size, *v.shape[1:])
                .reshape(n_candidates * size, *v.shape[1:]).requires_grad_()
                for k, v in named.items()
            }  # fmt: skip
            train = [_repeat_tasks(task_subset(b, tasks), n_candidates) for b in data.train]
            valid = _repeat_tasks(task_subset(data.valid, tasks), n_candidates)
            adapted = self.inner.adapted_params(train, create_graph=False, start=start)
            with torch.no_grad():
                mean = batched_mean(self.policy.spec, adapted, valid.observations)
                old_c = _old_slice(old, tasks).repeat(n_candidates)
                loss_t, kl_t = _task_terms(valid, old_c, mean, adapted["log_std"])
            losses = losses + loss_t.view(n_candidates, size).sum(1)
            kls = kls + kl_t.view(n_candidates, size).sum(1)
        return losses / n_tasks, kls / n_tasks

    def state_dict(self) -> dict:
        """The last CG direction when warm-starting (so a resumed run starts from it)."""
        if self.cg_warm_start and self.direction is not None:
            return {"cg_direction": self.direction}
        return {}

    def load_state_dict(self, state: dict) -> None:
        """The warm start's direction, if saved (a checkpoint of an older version may hold
        a counter: ignored)."""
        direction = state.get("cg_direction")
        if self.cg_warm_start and direction is not None:
            self.direction = direction.to(self.inner.meta_parameters()[0])


def _old_slice(old: OldPolicy, tasks: slice) -> OldPolicy:
    """The old policies of ``tasks``."""
    return OldPolicy(*(x[tasks] for x in old))


def _task_kl(
    valid: ProcessedBatch, old: OldPolicy, mean: torch.Tensor, log_std: torch.Tensor
) -> torch.Tensor:
    """Each task's mean KL(old adapted || new adapted) over its real validation steps ->
    ``[T']``, from the new means ``[T', N, A]`` and log-stds ``[T', A]``."""
    kl = diag_gaussian_kl(old.mean, old.log_std, mean, log_std.unsqueeze(1))
    return masked_mean(kl, valid.mask)


def _task_terms(
    valid: ProcessedBatch, old: OldPolicy, mean: torch.Tensor, log_std: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each task's surrogate loss (minus the importance-weighted advantage, a mean over
    its real steps) and :func:`_task_kl` -> ``[T']`` each."""
    ratio = torch.exp(gaussian_log_prob(valid.actions, mean, log_std.unsqueeze(1)) - old.log_probs)
    loss = -masked_mean(ratio * valid.advantages, valid.mask)
    return loss, _task_kl(valid, old, mean, log_std)


def _kl_share(
    valid: ProcessedBatch, old: OldPolicy, n_tasks: int
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``(mean, log_std) -> `` a chunk's share of the mean KL over ``n_tasks`` tasks."""
    return lambda mean, log_std: _task_kl(valid, old, mean, log_std).sum() / n_tasks


def _gauss_newton(
    params: list[torch.nn.Parameter],
    outputs: tuple[torch.Tensor, torch.Tensor],
    kl_share: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A chunk's Fisher-vector product as ``J^T H J v`` (``trpo_hvp gauss-newton``): ``J``
    the Jacobian of its adapted ``outputs`` (means, log-stds; graph kept) w.r.t. the
    meta-parameters, ``H`` the Hessian of ``kl_share`` in those outputs."""
    return gauss_newton_product(outputs, params, hessian_product(kl_share, outputs))


def _repeat_tasks(batch: ProcessedBatch, times: int) -> ProcessedBatch:
    """``batch``'s tasks repeated ``times`` times along the task axis (copy-major)."""
    return dataclasses.replace(
        batch,
        observations=batch.observations.repeat(times, 1, 1),
        actions=batch.actions.repeat(times, 1, 1),
        mask=batch.mask.repeat(times, 1),
        advantages=batch.advantages.repeat(times, 1),
    )


def _unflatten(vectors: torch.Tensor, like: dict[str, torch.Tensor]) -> TaskParams:
    """``[B, P]`` flat vectors (``parameters_to_vector``'s layout of ``like``) -> name ->
    ``[B, *shape]``."""
    out, offset = {}, 0
    for name, p in like.items():
        out[name] = vectors[:, offset : offset + p.numel()].reshape(-1, *p.shape)
        offset += p.numel()
    return out


CPU_CHUNK_TASKS = 4
"""Tasks per chunk on the CPU when ``trpo_chunk_tasks`` is -1: small tensors stay in cache
(the chunked update is what made metarl's iteration 1.76x pytorch-maml-rl's)."""


def chunk_tasks_on(setting: int, device: torch.device) -> int:
    """The tasks per chunk that ``trpo_chunk_tasks`` = ``setting`` means on ``device``.

    -1 picks by device: chunks of :data:`CPU_CHUNK_TASKS` on the CPU; on a GPU the whole
    meta-batch (0), since there chunks only add kernel launches and host round trips:
    the paper-batch update takes 0.12 s whole against 1.12 s in chunks of 4 on an H200
    (``benchmarks/trpo_update.py --device cuda``). Any other value is kept as given.
    """
    if setting != -1:
        return setting
    return 0 if torch.device(device).type == "cuda" else CPU_CHUNK_TASKS


def build_trpo_update(config: Config, inner: MAMLInnerLoop) -> TRPOUpdate:
    """The TRPO outer update of ``config``'s :class:`TRPOOptions` around ``inner``."""
    options = config.group(TRPOOptions)
    return TRPOUpdate(
        inner,
        max_kl=options.trpo_max_kl,
        cg_iters=options.trpo_cg_iters,
        cg_damping=options.trpo_cg_damping,
        ls_max_backtracks=options.trpo_ls_max_backtracks,
        ls_backtrack_ratio=options.trpo_ls_backtrack_ratio,
        fisher=options.trpo_fisher,
        fisher_subsample=options.trpo_fisher_subsample,
        chunk_tasks=chunk_tasks_on(options.trpo_chunk_tasks, inner.device),
        hvp=options.trpo_hvp,
        cg_warm_start=options.trpo_cg_warm_start,
        ls_batch=options.trpo_ls_batch,
    )


TRPO = OuterSpec("trpo", (TRPOOptions,), replay_steps, build_trpo_update)
"""The TRPO outer update, for any gradient-family member with a differentiable rule."""

ALGORITHM = gradient_member(
    "maml-trpo",
    "MAML with a trust-region (TRPO) outer step, second order unless --inner-first-order",
    rule=SGD,
    outers=(TRPO,),
)
