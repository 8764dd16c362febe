r"""SFT as implicit-reward learning, and its f-divergence variants (Wang et al. 2025, arXiv 2507.00018).

The paper treats demonstrations as samples of the optimum of a regularised RL problem,
:math:`\max_\pi \mathbb{E}_\pi[r]-\beta D_f(\pi\|\pi_{ref})`, and learns the reward by
inverse RL: :math:`\max_r\{\mathbb{E}_{\pi_E}[r]-\max_\pi(\mathbb{E}_\pi[r]-\beta D_f(\pi\|\pi_{ref}))\}`.
Parametrising the reward by its own optimal policy (the "implicit reward") and substituting,
the objective becomes a function of the policy alone,

.. math:: J_f(\pi)=\beta\Big(\mathbb{E}_{y\sim\pi_E}\big[f'(u)\big]-\mathbb{E}_{y\sim\pi_{ref}}\big[f^*(f'(u))\big]\Big),
          \qquad u=\frac{\pi(y|x)}{\pi_{ref}(y|x)},\quad f^*(f'(u))=u\,f'(u)-f(u),

the variational lower bound of :math:`\beta D_f(\pi_E\|\pi_{ref})`, tight at :math:`\pi=\pi_E`.
For the KL divergence (:math:`f(u)=u\log u`) the reference term is the constant
:math:`\mathbb{E}_{\pi_{ref}}[u]=1`, and :math:`J_{KL}=\beta\,\mathbb{E}_{\pi_E}[\log\pi-\log\pi_{ref}]`:
SFT, with nothing that anchors :math:`\pi` to :math:`\pi_{ref}`. For other :math:`f` the reference
term survives.

The chapter's derivation is a reconstruction of the paper's Sec. 3-4 from its abstract and
the catalog; the specific f-divergences below (Pearson :math:`\chi^2`, squared Hellinger) are
this book's choices, not necessarily the paper's. Losses are the *negated* objectives (to minimise).

Shapes: ``logratio_demo: (N,)`` sequence log-ratios :math:`\log\pi(y|x)-\log\pi_{ref}(y|x)` of the
demonstrations; ``logratio_ref: (M, K)`` log-ratios of ``K`` responses of ``M`` prompts drawn from
(or enumerated under) :math:`\pi_{ref}`, with weights ``w_ref: (M, K)`` that sum to 1 along ``K``
(``1/K`` for Monte-Carlo samples, :math:`\pi_{ref}(y|x)` for enumeration).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check(logratio_demo: Tensor, logratio_ref: Tensor | None = None, w_ref: Tensor | None = None) -> None:
    if logratio_demo.dim() != 1:
        raise ValueError(f"logratio_demo must be (N,), got {tuple(logratio_demo.shape)}")
    if logratio_ref is not None:
        if logratio_ref.dim() != 2 or w_ref is None or w_ref.shape != logratio_ref.shape:
            raise ValueError("logratio_ref and w_ref must both be (M, K)")


def implicit_reward_sft_loss(logp_demo: Tensor, logp_ref_demo: Tensor, beta: float) -> Tensor:
    r"""Negated implicit-reward (inverse-RL) objective with the KL regulariser, :math:`-J_{KL}(\pi)`.

    .. math:: -J_{KL}(\pi)=-\beta\,\mathbb{E}_{(x,y)\sim\pi_E}\Big[\log\frac{\pi(y|x)}{\pi_{ref}(y|x)}\Big]

    (the bilevel objective after substituting :math:`r=\beta\log\frac{\pi}{\pi_{ref}}+\beta\log Z`; the
    :math:`\log Z` terms cancel). Its gradient is :math:`\beta` times the SFT (NLL) gradient:
    :math:`\log\pi_{ref}` does not depend on :math:`\pi`. ``logp_demo, logp_ref_demo: (N,)`` → ``()``.
    """
    _check(logp_demo)
    if logp_ref_demo.shape != logp_demo.shape:
        raise ValueError("logp_demo and logp_ref_demo must have the same shape (N,)")
    return -beta * (logp_demo - logp_ref_demo).mean()


def fdiv_kl_sft_loss(logratio_demo: Tensor, logratio_ref: Tensor, w_ref: Tensor, beta: float) -> Tensor:
    r""":math:`-J_f` for the KL divergence, :math:`f(u)=u\log u`, with the reference term kept explicitly.

    .. math:: f'(u)=\log u+1,\qquad f^*(f'(u))=u,\qquad
              -J_{KL}=-\beta\big(\mathbb{E}_{\pi_E}[\log u+1]-\mathbb{E}_{\pi_{ref}}[u]\big)

    With exact reference weights :math:`\mathbb{E}_{\pi_{ref}}[u]=\sum_y\pi(y|x)=1`, so this equals
    :func:`implicit_reward_sft_loss` (a unit test checks it).
    """
    _check(logratio_demo, logratio_ref, w_ref)
    return -beta * ((logratio_demo + 1).mean() - (w_ref * logratio_ref.exp()).sum(-1).mean())


def chi2_sft_loss(logratio_demo: Tensor, logratio_ref: Tensor, w_ref: Tensor, beta: float) -> Tensor:
    r""":math:`-J_f` for the Pearson :math:`\chi^2` divergence, :math:`f(u)=(u-1)^2`.

    .. math:: f'(u)=2(u-1),\qquad f^*(f'(u))=u^2-1,\qquad
              -J_{\chi^2}=-\beta\big(2\,\mathbb{E}_{\pi_E}[u]-\mathbb{E}_{\pi_{ref}}[u^2]-1\big)

    The reference term :math:`\mathbb{E}_{\pi_{ref}}[u^2]=1+\chi^2(\pi\|\pi_{ref})` penalises moving away
    from :math:`\pi_{ref}`. Maximised at :math:`\pi=\pi_E` with value :math:`\beta\chi^2(\pi_E\|\pi_{ref})`.
    """
    _check(logratio_demo, logratio_ref, w_ref)
    u_demo = logratio_demo.exp()
    return -beta * (2 * u_demo.mean() - (w_ref * (2 * logratio_ref).exp()).sum(-1).mean() - 1)


def hellinger_sft_loss(logratio_demo: Tensor, logratio_ref: Tensor, w_ref: Tensor, beta: float) -> Tensor:
    r""":math:`-J_f` for the squared Hellinger distance, :math:`f(u)=(\sqrt u-1)^2`.

    .. math:: f'(u)=1-u^{-1/2},\qquad f^*(f'(u))=\sqrt u-1,\qquad
              -J_{H^2}=-\beta\big(2-\mathbb{E}_{\pi_E}[u^{-1/2}]-\mathbb{E}_{\pi_{ref}}[u^{1/2}]\big)

    Maximised at :math:`\pi=\pi_E` with value :math:`\beta H^2(\pi_E,\pi_{ref})`.
    """
    _check(logratio_demo, logratio_ref, w_ref)
    return -beta * (
        2 - (-0.5 * logratio_demo).exp().mean() - (w_ref * (0.5 * logratio_ref).exp()).sum(-1).mean()
    )


def f_divergence(p: Tensor, q: Tensor, kind: str) -> Tensor:
    r""":math:`D_f(p\|q)=\sum_y q\,f(p/q)` along the last axis, for ``kind`` in ``kl``, ``chi2``, ``hellinger``
    (a reference for the tests and the notebook; ``p, q: (..., Y)`` → ``(...)``)."""
    u = p / q
    fs = {
        "kl": lambda u: torch.where(u > 0, u * torch.log(u.clamp_min(1e-300)), torch.zeros_like(u)),
        "chi2": lambda u: (u - 1) ** 2,
        "hellinger": lambda u: (u.sqrt() - 1) ** 2,
    }
    if kind not in fs:
        raise ValueError(f"unknown f-divergence {kind!r}: choose kl, chi2 or hellinger")
    return (q * fs[kind](u)).sum(-1)
