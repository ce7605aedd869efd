"""VariBAD's VAE buffer: the most recent whole trials, first in first out.

The VAE learns from trials of recent policies, not only the current one (the
reference's ``size_vae_buffer``, counted in trajectories). Every trial of an
iteration is added; when full, the oldest are overwritten. A minibatch is drawn
without replacement (the reference's ``get_batch``) by *age order* (index 0 is the
oldest trial held), so a buffer rebuilt from :meth:`TrialBuffer.state_dict`, which
stores the trials oldest first, draws exactly the same trials for the same draws.

Shapes: ``C`` trials of capacity, ``L`` steps each (the run's episodes per trial x
horizon), ``D`` obs dims, ``A`` action dims.
"""

from __future__ import annotations

import torch

from metarl.algos.varibad_vae import Trials

FIELDS = ("observations", "actions", "rewards", "dones", "lengths")


class TrialBuffer:
    """Up to ``capacity`` trials: observations ``[C, L, D]``, actions ``[C, L, A]``,
    rewards, dones ``[C, L]`` (float32), lengths ``[C]`` (int64); allocated on the first add."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"TrialBuffer: capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.data: dict[str, torch.Tensor] = {}
        self.top = 0  # the next slot written
        self.size = 0  # trials held

    def __len__(self) -> int:
        return self.size

    def _allocate(self, like: dict[str, torch.Tensor]) -> None:
        self.data = {name: torch.zeros((self.capacity, *v.shape[1:]), dtype=v.dtype)
                     for name, v in like.items()}  # fmt: skip

    def add(self, trials: dict[str, torch.Tensor]) -> None:
        """Append ``N`` trials (each field ``[N, ...]``, the layout above), oldest first."""
        trials = {name: trials[name].detach().cpu() for name in FIELDS}
        trials["dones"] = trials["dones"].float()
        if not self.data:
            self._allocate(trials)
        elif trials["rewards"].shape[1:] != self.data["rewards"].shape[1:]:
            raise ValueError(
                f"TrialBuffer holds trials of {self.data['rewards'].shape[1]} steps; got "
                f"{trials['rewards'].shape[1]} (episodes per trial or horizon changed)"
            )
        n = trials["rewards"].shape[0]
        keep = min(n, self.capacity)  # more than the capacity at once: only the last ones stay
        slots = (self.top + torch.arange(n - keep, n)) % self.capacity
        for name in FIELDS:
            self.data[name][slots] = trials[name][n - keep :]
        self.top = (self.top + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def _slots(self, ages: torch.Tensor) -> torch.Tensor:
        """Slot of the trial of each age (0 = the oldest held)."""
        return (self.top - self.size + ages) % self.capacity

    def sample(self, n: int, generator: torch.Generator, device: torch.device) -> Trials:
        """``min(n, size)`` distinct trials, uniformly, on ``device``."""
        if self.size == 0:
            raise ValueError("TrialBuffer.sample: the buffer is empty")
        ages = torch.randperm(self.size, generator=generator)[: min(n, self.size)]
        slots = self._slots(ages)
        return Trials(**{name: self.data[name][slots].to(device) for name in FIELDS})

    def state_dict(self) -> dict:
        """The trials held, oldest first (float32; lengths int64)."""
        slots = self._slots(torch.arange(self.size))
        return {"trials": {name: v[slots].clone() for name, v in self.data.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Refill from :meth:`state_dict` (a smaller capacity keeps the newest trials)."""
        self.data, self.top, self.size = {}, 0, 0
        trials = state["trials"]
        if trials and trials["rewards"].shape[0] > 0:
            self.add(trials)
