r"""Inverse RL on the token tree: building a reward from demonstrations, and shaping it.

The setting of the IRL-for-LLM-post-training survey (Sun et al. 2025, arXiv 2507.13158):
generation is an MDP with deterministic transitions whose reward is *not given*; it must
be recovered from human data before (or instead of) RL. On the token tree of
:mod:`rlbook.mdp` every quantity is exact:

- **features** of a response, :func:`position_token_features`: one-hot of (position, token),
  so a linear reward :math:`r_\theta(y)=\theta^\top\phi(y)=\sum_t\theta_{t,a_t}` is a *dense*
  per-token reward;
- **maximum-entropy IRL with a reference policy** (Ziebart et al. 2008, eq. 1-2; relative
  entropy IRL, Boularias et al. 2011): demonstrations are modelled as
  :math:`p_\theta(y)\propto\pi_{ref}(y)\,e^{r_\theta(y)/\beta}` (the KL-regularised optimum
  of :math:`r_\theta`) and :math:`\theta` maximises their likelihood, whose gradient is
  :math:`\frac1\beta\big(\mathbb E_D[\phi]-\mathbb E_{p_\theta}[\phi]\big)` (feature matching,
  :func:`maxent_irl`);
- **behaviour cloning**, :func:`behaviour_cloning`: the maximum-likelihood token policy, no reward;
- **potential shaping** (Ng, Harada, Russell 1999): :math:`r'(s,a)=r(s,a)+\Phi(s')-\Phi(s)`
  leaves every KL-regularised optimal policy unchanged (:func:`shape`), so a reward is
  identifiable from behaviour only up to such a term;
- **the AIRL dense reward** (Fu, Luo, Levine 2018, Sec. 5): at the optimum of adversarial
  IRL the discriminator's :math:`f(s,a,s')=g(s,a)+h(s')-h(s)` equals
  :math:`\beta\log\frac{\pi(a|s)}{\pi_{ref}(a|s)}=r(s,a)+V(s')-V(s)` (the reward shaped by the
  soft value, :func:`airl_dense_reward`), a per-token advantage.

Shapes: ``P`` prompts, ``S`` internal states, ``V`` tokens, ``T`` horizon, ``N = V^T``
responses, ``d = T·V`` features; tabular policies are ``logp: (P, S, V)``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from rlbook import mdp as M


def position_token_features(tree: M.TokenTree) -> np.ndarray:
    """``(N, T*V)``: :math:`\\phi(y)_{t\\cdot V+a}=\\mathbb 1\\{a_t=a\\}`, one-hot of (position, token)."""
    N, T, V = tree.n_responses, tree.horizon, tree.vocab
    phi = np.zeros((N, T * V))
    phi[np.arange(N)[:, None], np.arange(T)[None, :] * V + tree.path_actions] = 1.0
    return phi


def dense_from_position_weights(theta: np.ndarray, tree: M.TokenTree) -> np.ndarray:
    r"""A per-token reward table ``(P, S, V)`` from position-token weights ``theta: (P, T*V)``.

    :math:`r_\theta(s,a)=\theta_{t(s)\cdot V+a}`, so that :math:`\sum_t r_\theta(s_t,a_t)=\theta^\top\phi(y)`.
    """
    P = theta.shape[0]
    T, V = tree.horizon, tree.vocab
    return theta.reshape(P, T, V)[:, tree.depth, :]


def sequence_policy_from_reward(seq_logp_ref: np.ndarray, R: np.ndarray, beta: float) -> np.ndarray:
    r"""``(P, N)``: :math:`\log p(y)=\log\pi_{ref}(y)+R(y)/\beta-\log Z`, the KL-regularised optimum of returns ``R: (P, N)``."""
    s = seq_logp_ref + R / beta
    m = s.max(-1, keepdims=True)
    return s - (m + np.log(np.exp(s - m).sum(-1, keepdims=True)))


def maxent_irl(
    demo_counts: np.ndarray,
    phi: np.ndarray,
    seq_logp_ref: np.ndarray,
    beta: float,
    steps: int = 300,
    lr: float = 0.1,
    l2: float = 1e-3,
) -> np.ndarray:
    r"""Maximum-entropy IRL with a reference policy and a linear reward, by exact enumeration.

    Model: :math:`p_\theta(y|x)=\pi_{ref}(y|x)\exp(\theta_x^\top\phi(y)/\beta)/Z_\theta(x)`.
    Objective (per prompt, minimised): the demonstrations' negative log-likelihood plus a small
    ridge term,

    .. math:: \mathcal L(\theta)=-\frac1n\sum_i\log p_\theta(y_i)+\ell_2\|\theta\|^2,\qquad
              \nabla_\theta\Big(-\frac1n\sum_i\log p_\theta(y_i)\Big)=-\frac1\beta\big(\mathbb E_D[\phi]-\mathbb E_{p_\theta}[\phi]\big)

    (Ziebart et al. 2008, eq. 6: the gradient is a feature-expectation mismatch). Full-batch
    Adam in float64. ``demo_counts: (P, N)`` how often each response was demonstrated,
    ``phi: (N, d)``, ``seq_logp_ref: (P, N)`` → ``theta: (P, d)`` (reward weights, in the
    units of the true reward).
    """
    cnt = torch.as_tensor(demo_counts, dtype=torch.float64)
    emp = cnt / cnt.sum(-1, keepdim=True)  # (P, N)
    F = torch.as_tensor(phi, dtype=torch.float64)  # (N, d)
    lref = torch.as_tensor(seq_logp_ref, dtype=torch.float64)
    theta = torch.zeros(cnt.shape[0], F.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=lr)
    for _ in range(steps):
        logp = torch.log_softmax(lref + theta @ F.T / beta, -1)  # (P, N)
        loss = -(emp * logp).sum(-1).mean() + l2 * (theta**2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return theta.detach().numpy()


def maxent_irl_gradient(demo_counts: np.ndarray, phi: np.ndarray, seq_logp_ref: np.ndarray, theta: np.ndarray,
                        beta: float) -> np.ndarray:
    r"""The feature-matching form of the max-ent IRL gradient, ``(P, d)``:
    :math:`\frac1\beta\big(\mathbb E_D[\phi]-\mathbb E_{p_\theta}[\phi]\big)` (the ascent direction of the log-likelihood)."""
    emp = demo_counts / demo_counts.sum(-1, keepdims=True)
    p = np.exp(sequence_policy_from_reward(seq_logp_ref, theta @ phi.T, beta))
    return (emp @ phi - p @ phi) / beta


def fit_bt_linear_per_prompt(
    phi: np.ndarray, x: np.ndarray, yw: np.ndarray, yl: np.ndarray, n_prompts: int,
    steps: int = 300, lr: float = 0.05, l2: float = 1e-3, seed: int = 0,
) -> np.ndarray:
    r"""One linear Bradley-Terry reward :math:`r_p(y)=w_p^\top\phi(y)` per prompt, all fitted in one Adam loop.

    Minimises :math:`\sum_p\big[-\operatorname{mean}_{i\in p}\log\sigma(w_p^\top(\phi(y^w_i)-\phi(y^l_i)))+\ell_2\|w_p\|^2\big]`:
    the same per-prompt objective as :func:`rlbook.rewards.fit_bt_linear` (tested equal), batched.
    ``phi: (N, d)``, ``x, yw, yl: (n,)`` → ``w: (P, d)``.
    """
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    d = phi.shape[1]
    w = (0.01 * torch.randn(n_prompts, d, generator=g, dtype=torch.float64)).requires_grad_(True)
    diff = torch.as_tensor(phi[yw] - phi[yl], dtype=torch.float64)  # (n, d)
    xi = torch.as_tensor(x, dtype=torch.long)
    cnt = torch.bincount(xi, minlength=n_prompts).clamp(min=1).to(torch.float64)
    opt = torch.optim.Adam([w], lr=lr)
    for _ in range(steps):
        nll = -F.logsigmoid((w[xi] * diff).sum(-1))  # (n,)
        per_prompt = torch.zeros(n_prompts, dtype=torch.float64).index_add(0, xi, nll) / cnt
        loss = (per_prompt + l2 * (w**2).sum(-1)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return w.detach().numpy()


def behaviour_cloning(
    tree: M.TokenTree, prompts: np.ndarray, responses: np.ndarray, n_prompts: int,
    prior: np.ndarray | None = None, alpha: float = 1.0,
) -> np.ndarray:
    r"""Behaviour cloning on a token tree: the smoothed maximum-likelihood token policy ``(P, S, V)``.

    :math:`\hat\pi(a|s)=\frac{n(s,a)+\alpha\,\pi_0(a|s)}{n(s)+\alpha}` from the demonstrations'
    token counts, with prior ``π_0 = prior`` (a ``(P, S, V)`` log-policy, e.g. π_ref) or
    uniform. ``alpha = 0`` with every state visited is the exact MLE (SFT on the demos).
    ``prompts, responses: (n,)``.
    """
    S, V = tree.n_states, tree.vocab
    counts = np.zeros((n_prompts, S, V))
    st, ac = tree.path_states[responses], tree.path_actions[responses]  # (n, T)
    np.add.at(counts, (np.repeat(prompts, tree.horizon), st.ravel(), ac.ravel()), 1.0)
    p0 = np.full((n_prompts, S, V), 1.0 / V) if prior is None else np.exp(prior)
    num = counts + alpha * p0
    return np.log(num / num.sum(-1, keepdims=True))


def shape(mdp: M.TreeTokenMDP, potential: np.ndarray) -> M.TreeTokenMDP:
    r"""The same MDP with the potential-shaped reward :math:`r'(s,a)=r(s,a)+\Phi(s')-\Phi(s)`.

    ``potential: (P, S)`` is :math:`\Phi` on the internal states (:math:`\Phi=0` at the
    leaves, so every return of a prompt shifts by the same :math:`-\Phi(s_0)`; γ = 1).
    """
    return replace(mdp, reward=mdp.reward + next_state_values(potential, mdp.tree) - potential[:, :, None])


def next_state_values(values: np.ndarray, tree: M.TokenTree) -> np.ndarray:
    """``(P, S) → (P, S, V)``: the value of the state that token ``a`` leads to from ``s`` (0 at the leaves)."""
    P, V = values.shape[0], tree.vocab
    out = np.zeros((P, tree.n_states, V))
    for d in range(tree.horizon - 1):
        out[:, tree.depth_slice(d), :] = values[:, tree.depth_slice(d + 1)].reshape(P, V**d, V)
    return out


def airl_dense_reward(mdp: M.TreeTokenMDP) -> np.ndarray:
    r"""The dense reward an optimal AIRL discriminator recovers: :math:`f(s,a)=\beta\log\frac{\pi^*(a|s)}{\pi_{ref}(a|s)}`.

    It equals :math:`r(s,a)+V^*(s')-V^*(s)` (the reward shaped by the soft value; Fu et al.
    2018, Sec. 5, with the reference policy of the KL-regularised MDP), so its reward-to-go
    from :math:`s_t` is :math:`\sum_{k\ge t}r(s_k,a_k)-V^*(s_t)`: the return minus a
    state-value baseline. ``(P, S, V)``.
    """
    sol = M.soft_value_iteration(mdp)
    return mdp.beta * (sol.logp - mdp.logp_ref)


def objective(logp: np.ndarray, mdp: M.TreeTokenMDP) -> np.ndarray:
    r"""``(P,)``: the true KL-regularised objective :math:`\mathbb E_\pi[R]-\beta\,\mathrm{KL}(\pi\|\pi_{ref})` by enumeration."""
    seq = M.sequence_logprobs(logp, mdp.tree)
    seq_ref = M.sequence_logprobs(mdp.logp_ref, mdp.tree)
    p = np.exp(seq)
    return (p * mdp.returns()).sum(-1) - mdp.beta * (p * (seq - seq_ref)).sum(-1)


def reinforce_tree(
    mdp: M.TreeTokenMDP,
    token_reward: np.ndarray,
    dense: bool,
    updates: int,
    batch: int,
    lr: float,
    seed: int,
) -> np.ndarray:
    r"""Tabular REINFORCE on the token tree from :math:`\pi_{ref}`; returns the true expected return after each update ``(updates+1, P)``.

    ``token_reward: (P, S, V)``. ``dense=False``: the learner sees only the terminal return
    :math:`R(y)=\sum_t r(s_t,a_t)` and weights every token by :math:`R(y)-\bar R` (batch mean
    per prompt as the baseline). ``dense=True``: it sees the per-token rewards and weights
    token :math:`t` by its reward-to-go :math:`\sum_{k\ge t}r(s_k,a_k)`. Loss
    :math:`-\frac{1}{PB}\sum w_{t}\log\pi_\theta(a_t|s_t)`, Adam. The *true* return
    (``mdp.returns()``) is what is logged.
    """
    tree = mdp.tree
    rng = np.random.default_rng(seed)
    z = torch.tensor(mdp.logp_ref).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    R_true = mdp.returns()  # (P, N)
    rew = torch.as_tensor(token_reward)
    P = mdp.n_prompts
    prompts = np.repeat(np.arange(P), batch)
    st_all, ac_all = torch.as_tensor(tree.path_states), torch.as_tensor(tree.path_actions)
    pr = torch.as_tensor(prompts)[:, None]

    def true_return() -> np.ndarray:
        with torch.no_grad():
            seq = M.sequence_logprobs(torch.log_softmax(z, -1), tree).numpy()
        return (np.exp(seq) * R_true).sum(-1)

    out = [true_return()]
    for _ in range(updates):
        with torch.no_grad():
            lp = torch.log_softmax(z, -1).numpy()
        y = torch.as_tensor(M.sample_responses(lp, prompts, tree, rng))
        st, ac = st_all[y], ac_all[y]  # (PB, T)
        r_tok = rew[pr, st, ac]  # (PB, T)
        if dense:
            w = torch.flip(torch.cumsum(torch.flip(r_tok, [1]), 1), [1])  # reward-to-go
        else:
            R = r_tok.sum(1).view(P, batch)
            w = (R - R.mean(1, keepdim=True)).reshape(-1, 1).expand_as(r_tok)
        logp = torch.log_softmax(z, -1)[pr, st, ac]  # (PB, T)
        loss = -(w.detach() * logp).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        out.append(true_return())
    return np.stack(out)
