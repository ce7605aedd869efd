"""Per-task replay buffers for PEARL (numpy, fixed capacity per task, float32).

Every task of the training pool that has been collected on gets a *slot*; all
slots live in one array per field, ``[slots, capacity, dim]``, so a meta-batch
of tasks is sampled with one fancy-indexing gather (no Python loop over tasks).
A slot is a ring buffer: once full, new transitions overwrite the oldest.
PEARL keeps two such sets: the RL buffers (SAC's minibatches) and the encoder
buffers (the context the encoder sees, refilled each iteration).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

FIELDS = ("obs", "actions", "rewards", "next_obs", "terminals")


class TaskReplay:
    """Transitions ``(s, a, r, s', terminal)`` per task; see the module docstring.

    Shapes: ``obs``, ``next_obs`` ``[S, C, D]``; ``actions`` ``[S, C, A]``;
    ``rewards``, ``terminals`` ``[S, C]`` (float32), with ``S`` slots of capacity ``C``.
    """

    def __init__(self, obs_dim: int, act_dim: int, capacity: int) -> None:
        self.obs_dim, self.act_dim, self.capacity = int(obs_dim), int(act_dim), int(capacity)
        self.tasks: list[Hashable] = []  # slot -> task
        self.slot_of: dict[Hashable, int] = {}
        self.top = np.zeros(0, np.int64)  # next write position per slot
        self.size = np.zeros(0, np.int64)  # filled transitions per slot
        self.data = {name: np.zeros((0, self.capacity, *self._dims(name)), np.float32)
                     for name in FIELDS}  # fmt: skip

    def _dims(self, name: str) -> tuple[int, ...]:
        return {"obs": (self.obs_dim,), "next_obs": (self.obs_dim,),
                "actions": (self.act_dim,)}.get(name, ())  # fmt: skip

    def __contains__(self, task: Hashable) -> bool:
        return task in self.slot_of

    def __len__(self) -> int:
        return len(self.tasks)

    def slot(self, task: Hashable) -> int:
        """The slot of ``task``, allocated (arrays grown by doubling) on first use."""
        if task in self.slot_of:
            return self.slot_of[task]
        n = len(self.tasks)
        if n == self.top.shape[0]:
            grow = max(1, n)
            for name, arr in self.data.items():
                extra = np.zeros((grow, *arr.shape[1:]), np.float32)
                self.data[name] = np.concatenate([arr, extra])
            self.top = np.concatenate([self.top, np.zeros(grow, np.int64)])
            self.size = np.concatenate([self.size, np.zeros(grow, np.int64)])
        self.slot_of[task] = n
        self.tasks.append(task)
        return n

    def add(self, task: Hashable, **fields: np.ndarray) -> None:
        """Append ``N`` transitions of ``task`` (each field ``[N, ...]``), wrapping at capacity."""
        s = self.slot(task)
        n = len(fields["rewards"])
        keep = min(n, self.capacity)  # more than the capacity at once: only the last ones stay
        pos = (self.top[s] + np.arange(n - keep, n)) % self.capacity
        for name in FIELDS:
            self.data[name][s, pos] = np.asarray(fields[name], np.float32)[n - keep :]
        self.top[s] = (self.top[s] + n) % self.capacity
        self.size[s] = min(self.size[s] + n, self.capacity)

    def clear(self, task: Hashable) -> None:
        """Forget ``task``'s transitions (PEARL refreshes the encoder buffers each iteration)."""
        if task in self.slot_of:
            s = self.slot_of[task]
            self.top[s] = self.size[s] = 0

    def sample(self, slots: np.ndarray, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``n`` transitions drawn uniformly with replacement from each slot: ``[T, n, ...]``."""
        sizes = self.size[slots]
        if (sizes == 0).any():
            raise ValueError(f"sample: slot(s) {slots[sizes == 0].tolist()} hold no transitions")
        idx = (rng.random((len(slots), n)) * sizes[:, None]).astype(np.int64)
        rows = np.asarray(slots)[:, None]
        return {name: arr[rows, idx] for name, arr in self.data.items()}

    def slots(self, tasks: Sequence[Hashable]) -> np.ndarray:
        return np.array([self.slot_of[t] for t in tasks], np.int64)

    @property
    def transitions(self) -> int:
        return int(self.size.sum())

    # -- checkpoints -----------------------------------------------------------------
    def state_dict(self) -> dict:
        """Only the filled part of each slot (float32), in its ring layout, with ``top``."""
        n = len(self.tasks)
        return {
            "capacity": self.capacity,
            "tasks": list(self.tasks),
            "top": self.top[:n].copy(),
            "size": self.size[:n].copy(),
            "data": {
                name: [arr[s, : self.size[s]].copy() for s in range(n)]
                for name, arr in self.data.items()
            },  # fmt: skip
        }

    def load_state_dict(self, state: dict) -> None:
        if int(state["capacity"]) != self.capacity:
            raise ValueError(
                f"replay capacity {state['capacity']} in the checkpoint, {self.capacity} here"
            )
        self.__init__(self.obs_dim, self.act_dim, self.capacity)
        for s, task in enumerate(state["tasks"]):
            self.slot(task)
            size = int(state["size"][s])
            for name in FIELDS:
                self.data[name][s, :size] = state["data"][name][s]
            self.top[s], self.size[s] = int(state["top"][s]), size
