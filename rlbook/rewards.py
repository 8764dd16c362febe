r"""Reward models: Bradley-Terry fits on preference pairs.

A Bradley-Terry reward model :math:`r_\phi` is trained by maximum likelihood on pairs
:math:`y_w \succ y_l`:

.. math:: \mathcal L_{BT}(\phi) = -\mathbb E\big[\log\sigma\big(r_\phi(x,y_w)-r_\phi(x,y_l)\big)\big]

(Ouyang et al. 2022, eq. 1). :func:`bt_loss` is the loss on given scores; the fits
below are the two models the book's small worlds use: a table (one score per
response) and a linear head on features.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def bt_loss(r_w: Tensor, r_l: Tensor) -> Tensor:
    """Bradley-Terry negative log-likelihood ``-mean log σ(r_w - r_l)``; ``r_w, r_l: (n,)`` → ``()``."""
    if r_w.shape != r_l.shape:
        raise ValueError(f"r_w {tuple(r_w.shape)} and r_l {tuple(r_l.shape)} differ")
    return -F.logsigmoid(r_w - r_l).mean()


def fit_bt_table(
    x: np.ndarray, yw: np.ndarray, yl: np.ndarray, X: int, Y: int,
    steps: int = 300, lr: float = 0.1, l2: float = 1e-3, seed: int = 0,
) -> np.ndarray:
    """Fit one score per (prompt, response) by full-batch Adam; returns ``(X, Y)`` scores,
    centred per prompt (BT identifies scores only up to a per-prompt constant)."""
    g = torch.Generator().manual_seed(seed)
    s = (0.01 * torch.randn(X, Y, generator=g, dtype=torch.float64)).requires_grad_(True)
    xi, wi, li = (torch.as_tensor(a, dtype=torch.long) for a in (x, yw, yl))
    opt = torch.optim.Adam([s], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = bt_loss(s[xi, wi], s[xi, li]) + l2 * (s**2).mean()
        loss.backward()
        opt.step()
    out = s.detach().numpy()
    return out - out.mean(-1, keepdims=True)


def fit_bt_linear(
    phi_w: np.ndarray, phi_l: np.ndarray, steps: int = 300, lr: float = 0.05, l2: float = 1e-3, seed: int = 0,
) -> np.ndarray:
    """Fit a linear reward ``r(x,y) = w·φ(x,y)`` on pair features ``phi_w, phi_l: (n, d)``; returns ``w: (d,)``."""
    g = torch.Generator().manual_seed(seed)
    d = phi_w.shape[-1]
    w = (0.01 * torch.randn(d, generator=g, dtype=torch.float64)).requires_grad_(True)
    a = torch.as_tensor(phi_w, dtype=torch.float64)
    b = torch.as_tensor(phi_l, dtype=torch.float64)
    opt = torch.optim.Adam([w], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = bt_loss(a @ w, b @ w) + l2 * (w**2).sum()
        loss.backward()
        opt.step()
    return w.detach().numpy()
