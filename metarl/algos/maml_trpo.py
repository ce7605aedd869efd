"""MAML-TRPO (Finn et al. 2017): a trust-region natural-gradient step on the meta-objective.

The surrogate is the importance-weighted return of the *adapted* policies on
their validation episodes; its gradient flows through the inner loop
(second-order unless ``first_order``). The step direction solves
``F s = g`` by conjugate gradient with ``F`` the Hessian of the mean KL between
the old and new adapted policies (Hessian-vector products, never the matrix);
it is scaled to the KL bound, then a backtracking line search keeps the first
fraction that improves the surrogate within the bound, or restores the old
parameters. As in pytorch-maml-rl's ``maml_trpo.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch

from metarl.algos.gradient_family import SGD, OuterSpec, gradient_member, replay_steps
from metarl.algos.maml import AdaptationData, MAMLInnerLoop, task_subset
from metarl.functional import batched_kl, batched_mean, diag_gaussian_kl, expand_params, masked_mean
from metarl.optim import (
    backtracking_line_search,
    conjugate_gradient,
    flat_grad,
    hvp_of_gradients,
)
from metarl.options import option
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
        4,
        "tasks per chunk of the surrogate, the KL and their Hessian-vector products, which "
        "are summed over chunks: no tensor then holds the whole meta-batch, and each "
        "product works in a chunk's smaller tensors (the same numbers to float rounding); "
        "0 = the whole meta-batch at once",
        min=0,
    )
    trpo_ls_max_backtracks: int = option(15, "line search: maximum tries", min=1)
    trpo_ls_backtrack_ratio: float = option(
        0.8, "line search: step shrink factor (0.8 as pytorch-maml-rl)", min=0.0, max=1.0
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


class TRPOUpdate:
    """The outer update of MAML-TRPO (no state of its own besides its settings)."""

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
    ) -> None:
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
        valid = task_subset(data.valid, tasks)
        train = [task_subset(batch, tasks) for batch in data.train]
        adapted = self.inner.adapted_params(train, create_graph=create_graph)
        mean = batched_mean(self.policy.spec, adapted, valid.observations)
        log_std = adapted["log_std"].unsqueeze(1)
        ratio = torch.exp(gaussian_log_prob(valid.actions, mean, log_std) - old.log_probs[tasks])
        loss = -masked_mean(ratio * valid.advantages, valid.mask).sum()
        kl = diag_gaussian_kl(old.mean[tasks], old.log_std[tasks], mean, log_std)
        return loss, masked_mean(kl, valid.mask).sum()

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

    def _fisher_kl_sum(self, data: AdaptationData, tasks: slice) -> torch.Tensor:
        """The KL of ``tasks`` whose Hessian preconditions the step (``trpo_fisher``), summed.

        ``"full"``: the exact KL through the inner loop. ``"adapted"`` writes the adapted
        policies as ``theta + const`` (the inner step held fixed), which drops the terms
        that make the exact Hessian-vector product dearer but also the inner step's
        sensitivity to ``theta``: once MAML has made that large the real KL of a step
        is hundreds of times the modelled one and the line search shrinks every step
        to a few percent. With ``fisher_stride > 1`` only every ``fisher_stride``-th task
        enters: an unbiased estimate of the same Fisher, and each Hessian-vector product
        (90% of the update) costs that many times less, because it runs through the
        inner loop of fewer tasks.
        """
        valid = task_subset(data.valid, tasks)
        old_params = {k: v[tasks] for k, v in data.old_params.items()}
        if self.fisher == "full":
            train = [task_subset(batch, tasks) for batch in data.train]
            adapted = self.inner.adapted_params(train, create_graph=True)
        else:
            meta = expand_params(self.policy.params(), valid.observations.shape[0])
            adapted = {k: meta[k] + (old_params[k] - meta[k]).detach() for k in meta}
        kl = batched_kl(self.policy.spec, old_params, adapted, valid.observations)
        return masked_mean(kl, valid.mask).sum()

    def update(self, data: AdaptationData, iteration: int = 0) -> dict[str, float]:
        """One TRPO step; ``iteration`` is unused (max_kl bounds the step, not a schedule).

        The surrogate's gradient and the Fisher's first gradients are taken chunk by
        chunk of tasks (``chunk_tasks``); the Fisher-vector product sums the chunks'.
        """
        params = self.inner.meta_parameters()
        old = OldPolicy.of(self.policy.spec, data)
        n_tasks = data.valid.observations.shape[0]
        # The exact Fisher on every task shares the surrogate's forward pass.
        shared_forward = self.fisher == "full" and self.fisher_stride == 1
        grad = torch.zeros(sum(p.numel() for p in params), device=data.valid.observations.device)
        loss = torch.zeros_like(grad[0])
        kl_grads: list[torch.Tensor] = []  # each chunk's first KL gradient, graph kept
        for tasks in self._chunks(n_tasks):
            loss_c, kl_c = self._summed_losses(data, old, tasks, create_graph=True)
            grad = grad + flat_grad(loss_c / n_tasks, params, retain_graph=shared_forward)
            loss = loss + loss_c.detach() / n_tasks
            if shared_forward:
                kl_grads.append(
                    flat_grad(kl_c / n_tasks, params, retain_graph=True, create_graph=True)
                )
        if not (torch.isfinite(loss) and torch.isfinite(grad).all()):
            return {"loss/surrogate_before": float(loss), self.rejected_key: 1.0}
        if not shared_forward:
            n_fisher = len(range(0, n_tasks, self.fisher_stride))
            for tasks in self._chunks(n_tasks, self.fisher_stride):
                kl_c = self._fisher_kl_sum(data, tasks) / n_fisher
                kl_grads.append(flat_grad(kl_c, params, retain_graph=True, create_graph=True))
        fisher_vp = hvp_of_gradients(kl_grads, params, damping=self.cg_damping)
        step_dir, fisher_step = conjugate_gradient(
            fisher_vp, grad, iters=self.cg_iters, return_product=True
        )
        # Scale so that the quadratic model of the KL equals max_kl: 0.5 s^T F s * beta^2 = max_kl.
        shs = 0.5 * torch.dot(step_dir, fisher_step)
        full_step = -step_dir * torch.sqrt(self.max_kl / shs.clamp_min(1e-12))
        del fisher_vp, kl_grads  # frees the double-backward graphs before the line search

        def evaluate() -> tuple[float, float]:
            new_loss, new_kl = self._surrogate_and_kl(data, old, create_graph=False)
            return float(new_loss), float(new_kl)

        result = backtracking_line_search(
            params,
            full_step,
            evaluate,
            old_loss=float(loss),
            max_kl=self.max_kl,
            max_backtracks=self.ls_max_backtracks,
            backtrack_ratio=self.ls_backtrack_ratio,
        )
        return {
            "loss/surrogate_before": float(loss),
            "loss/surrogate_after": result.loss,
            "trpo/kl": result.kl,
            "trpo/grad_norm": float(grad.norm()),
            "trpo/linesearch_accepted": float(result.accepted),
            "trpo/linesearch_step_fraction": result.step_fraction,
            "trpo/linesearch_tries": float(result.n_tries),
        }

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Nothing to restore (a checkpoint of an older version may hold a counter: ignored)."""


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
        chunk_tasks=options.trpo_chunk_tasks,
    )


TRPO = OuterSpec("trpo", (TRPOOptions,), replay_steps, build_trpo_update)
"""The TRPO outer update, for any gradient-family member with a differentiable rule."""

ALGORITHM = gradient_member(
    "maml-trpo",
    "MAML with a trust-region (TRPO) outer step, second order unless --inner-first-order",
    rule=SGD,
    outers=(TRPO,),
)
