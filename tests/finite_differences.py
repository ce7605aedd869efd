"""Central finite differences, the independent reference of the exact-number tests."""

from __future__ import annotations

import numpy as np


def fd_gradient(f, theta: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """``d f / d theta`` by central differences: ``[P]`` for a scalar ``f`` of ``theta [P]``."""
    out = np.zeros_like(theta)
    for j in range(theta.size):
        e = np.zeros_like(theta)
        e[j] = h
        out[j] = (f(theta + e) - f(theta - e)) / (2 * h)
    return out
