r"""Exact small worlds: a tree-structured token MDP and exact soft value iteration.

The token-level MDP of "From r to Q*" (Rafailov, Hejna, Park, Finn 2024, arXiv 2404.12358,
Sec. 3): a state is the prompt plus the tokens generated so far, an action is the next
token, transitions are deterministic (append the token), and every response has the same
length ``T`` (the horizon). With a vocabulary of ``V`` tokens each prompt is the root of a
complete ``V``-ary tree of depth ``T``: ``S = (V^T - 1)/(V - 1)`` internal states and
``N = V^T`` complete responses. Everything (``Q*``, ``V*``, ``π*``, KL divergences,
expected rewards) is computed exactly, by enumeration, in float64.

Indexing (shared by every function here):

- internal state ``s`` at depth ``d`` (``d`` tokens generated) whose prefix, read as a
  base-``V`` number with the first token most significant, is ``c``:
  ``s = offset(d) + c`` with ``offset(d) = (V^d - 1)/(V - 1)``; the root is ``s = 0``;
- its child after token ``a`` is ``offset(d+1) + c·V + a``;
- response ``n ∈ [0, V^T)`` is the base-``V`` number of its ``T`` tokens; it visits the
  states ``path_states[n] : (T,)`` and takes the actions ``path_actions[n] : (T,)``.

Tabular policies are arrays of per-token log-probabilities ``logp: (P, S, V)`` (``P``
prompts). Functions accept numpy arrays; :func:`token_logprobs` also takes torch tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


def _logsumexp(x: np.ndarray, axis: int = -1, keepdims: bool = False) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    out = m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))
    return out if keepdims else np.squeeze(out, axis=axis)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-softmax over the last axis (the vocabulary): tabular logits → log-policy."""
    return logits - _logsumexp(logits, axis=-1, keepdims=True)


@dataclass(frozen=True)
class TokenTree:
    """The shape of a complete ``vocab``-ary tree of depth ``horizon`` and its indices."""

    vocab: int
    """``V``: tokens per step"""
    horizon: int
    """``T``: tokens per response"""

    def offset(self, d: int) -> int:
        """Index of the first internal state at depth ``d``."""
        return (self.vocab**d - 1) // (self.vocab - 1)

    @property
    def n_states(self) -> int:
        """``S``: internal (non-terminal) states, depths ``0..T-1``."""
        return self.offset(self.horizon)

    @property
    def n_responses(self) -> int:
        """``N = V^T`` complete responses."""
        return self.vocab**self.horizon

    def depth_slice(self, d: int) -> slice:
        """The internal states at depth ``d`` (``V^d`` of them, in prefix order)."""
        return slice(self.offset(d), self.offset(d + 1))

    @cached_property
    def path_actions(self) -> np.ndarray:
        """``(N, T)`` int: the tokens of every response, in response-index order."""
        n = np.arange(self.n_responses)
        pw = self.vocab ** np.arange(self.horizon - 1, -1, -1)
        return (n[:, None] // pw[None, :]) % self.vocab

    @cached_property
    def path_states(self) -> np.ndarray:
        """``(N, T)`` int: the internal state each response is in before its ``t``-th token."""
        n = np.arange(self.n_responses)
        t = np.arange(self.horizon)
        offs = np.array([self.offset(d) for d in range(self.horizon)])
        return offs[None, :] + n[:, None] // (self.vocab ** (self.horizon - t))[None, :]

    @cached_property
    def depth(self) -> np.ndarray:
        """``(S,)`` int: the depth of every internal state."""
        return np.concatenate([np.full(self.vocab**d, d) for d in range(self.horizon)])

    def response_index(self, tokens: np.ndarray) -> np.ndarray:
        """``tokens: (..., T)`` → ``(...)`` response indices (inverse of ``path_actions``)."""
        pw = self.vocab ** np.arange(self.horizon - 1, -1, -1)
        return (np.asarray(tokens) * pw).sum(-1)


@dataclass(frozen=True)
class TreeTokenMDP:
    r"""A token MDP per prompt: reference policy and dense reward on a complete token tree.

    The KL-regularised objective (token form, "From r to Q*" Sec. 3) is
    :math:`\max_\pi \mathbb{E}_\pi\big[\sum_t r(s_t,a_t) + \beta\log\pi_{ref}(a_t|s_t)\big]
    + \beta\,\mathcal H(\pi)`, i.e. reward minus :math:`\beta\,\mathrm{KL}(\pi\|\pi_{ref})`.
    """

    tree: TokenTree
    """the tree shape: vocabulary ``V`` and horizon ``T``"""
    beta: float
    """``β``: KL strength (the DPO β)"""
    logp_ref: np.ndarray
    """``(P, S, V)`` log π_ref(a|s), each row normalised"""
    reward: np.ndarray
    """``(P, S, V)`` dense reward r(s, a)"""
    target: np.ndarray | None = None
    """``(P, T)`` the hidden target token of each position (rewarded), when built by :func:`make_tree_mdp`"""
    error: np.ndarray | None = None
    """``(P, T)`` the error token of each position (penalised), when built by :func:`make_tree_mdp`"""

    @property
    def n_prompts(self) -> int:
        return self.logp_ref.shape[0]

    def returns(self) -> np.ndarray:
        """``(P, N)``: the true return ``R(y) = Σ_t r(s_t, a_t)`` of every response."""
        return sequence_logprobs(self.reward, self.tree)

    def n_errors(self, responses: np.ndarray, prompts: np.ndarray) -> np.ndarray:
        """``(B,)``: how many error tokens each response (index ``(B,)``) of prompt ``(B,)`` holds."""
        toks = self.tree.path_actions[responses]  # (B, T)
        return (toks == self.error[prompts]).sum(-1)


def make_tree_mdp(
    rng: np.random.Generator,
    n_prompts: int = 8,
    vocab: int = 4,
    horizon: int = 4,
    beta: float = 0.5,
    ref_logit_std: float = 0.7,
    target_bonus: float = 0.5,
    error_penalty: float = 2.0,
) -> TreeTokenMDP:
    """A random :class:`TreeTokenMDP`: π_ref logits ~ N(0, ``ref_logit_std``²) per (prompt, state, token).

    Reward: ``+target_bonus`` for the hidden target token of each position and
    ``-error_penalty`` for one designated error token per position (different from the
    target), 0 otherwise; it depends on the position and the token, not on the prefix.
    """
    tree = TokenTree(vocab, horizon)
    logits = rng.normal(0.0, ref_logit_std, size=(n_prompts, tree.n_states, vocab))
    target = rng.integers(0, vocab, size=(n_prompts, horizon))
    error = (target + rng.integers(1, vocab, size=(n_prompts, horizon))) % vocab
    d = tree.depth  # (S,)
    a = np.arange(vocab)
    tgt = target[:, d][:, :, None] == a[None, None, :]  # (P, S, V)
    err = error[:, d][:, :, None] == a[None, None, :]
    reward = target_bonus * tgt - error_penalty * err
    return TreeTokenMDP(tree, float(beta), log_softmax(logits), reward.astype(float), target, error)


@dataclass(frozen=True)
class SoftSolution:
    """The exact solution of the KL-regularised token MDP."""

    Q: np.ndarray
    """``(P, S, V)`` Q*(s, a) (includes the β log π_ref(a|s) term, as in the paper)"""
    V: np.ndarray
    """``(P, S)`` V*(s); V* of terminal states is 0"""
    logp: np.ndarray
    """``(P, S, V)`` log π*(a|s) = (Q*(s, a) - V*(s))/β"""
    V_next: np.ndarray
    """``(P, S, V)`` V*(s') of the state reached by token a from s (0 if terminal)"""


def soft_value_iteration(mdp: TreeTokenMDP) -> SoftSolution:
    r"""Exact backward soft value iteration on the token tree ("From r to Q*", Sec. 3-4).

    .. math::
       Q^*(s_t,a_t) = r(s_t,a_t) + \beta\log\pi_{ref}(a_t|s_t) + V^*(s_{t+1}),\qquad
       V^*(s_t) = \beta\log\sum_a e^{Q^*(s_t,a)/\beta},\qquad
       \pi^*(a_t|s_t) = e^{(Q^*(s_t,a_t)-V^*(s_t))/\beta}

    with :math:`V^*(s_T)=0` at the terminal states. One sweep from depth ``T-1`` to 0 is
    exact (the tree has no cycles). Shapes: see :class:`SoftSolution`.
    """
    tree, beta = mdp.tree, mdp.beta
    P, S, V = mdp.logp_ref.shape
    Q = np.zeros((P, S, V))
    Vs = np.zeros((P, S))
    V_next = np.zeros((P, S, V))
    for d in range(tree.horizon - 1, -1, -1):
        sl = tree.depth_slice(d)
        if d < tree.horizon - 1:
            # children of the V^d states at depth d: (P, V^d, V), in child-index order
            V_next[:, sl, :] = Vs[:, tree.depth_slice(d + 1)].reshape(P, V**d, V)
        Q[:, sl, :] = mdp.reward[:, sl, :] + beta * mdp.logp_ref[:, sl, :] + V_next[:, sl, :]
        Vs[:, sl] = beta * _logsumexp(Q[:, sl, :] / beta, axis=-1)
    logp = (Q - Vs[:, :, None]) / beta
    return SoftSolution(Q=Q, V=Vs, logp=logp, V_next=V_next)


def token_logprobs(logp, prompts, states, actions):
    """Per-token log-probs of given paths: ``logp[prompts, states, actions]``.

    ``logp: (P, S, V)`` (numpy or torch), ``prompts: (B,)``, ``states, actions: (B, T)``
    → ``(B, T)``. With ``states = tree.path_states[y]`` and ``actions = tree.path_actions[y]``
    it gives :math:`\\log\\pi(a_t|s_t)` along responses ``y: (B,)``.
    """
    return logp[prompts[:, None], states, actions]


def sequence_logprobs(logp, tree: TokenTree):
    """``logp: (P, S, V)`` → ``(P, N)``: :math:`\\log\\pi(y)=\\sum_t\\log\\pi(a_t|s_t)` for every response.

    Also turns a dense reward ``(P, S, V)`` into the return of every response. Works on
    numpy arrays and torch tensors.
    """
    st, ac = tree.path_states, tree.path_actions
    if not isinstance(logp, np.ndarray):
        import torch

        st, ac = torch.as_tensor(st), torch.as_tensor(ac)
    return logp[:, st, ac].sum(-1)


def optimal_sequence_logprobs(mdp: TreeTokenMDP) -> np.ndarray:
    r"""``(P, N)``: the sequence-level closed form :math:`\log\pi^*(y)=\log\pi_{ref}(y)+R(y)/\beta-\log Z`.

    This is the bandit (DPO paper) solution of the same KL-regularised problem; it equals
    the token-level :func:`soft_value_iteration` policy, and :math:`\beta\log Z = V^*(s_0)`.
    """
    s = sequence_logprobs(mdp.logp_ref, mdp.tree) + mdp.returns() / mdp.beta
    return s - _logsumexp(s, axis=-1, keepdims=True)


def token_logp_from_sequences(seq_logp: np.ndarray, tree: TokenTree) -> np.ndarray:
    r"""Marginalise a distribution over whole responses into its token conditionals.

    :math:`\pi(a|s)=\sum_{y\supset s\,a}\pi(y)\,/\sum_{y\supset s}\pi(y)`: ``seq_logp: (P, N)``
    → ``(P, S, V)``. Exact; costs a sum over all ``V^{T-d}`` continuations of every state,
    which is what a bandit ("one arm per response") parametrisation needs to read
    per-token quantities. States of probability 0 get ``-inf``/``nan`` entries.
    """
    P = seq_logp.shape[0]
    V, T = tree.vocab, tree.horizon
    out = np.zeros((P, tree.n_states, V))
    for d in range(T):
        # log mass of every prefix of length d+1, grouped by its parent: (P, V^d, V)
        child = _logsumexp(seq_logp.reshape(P, V ** (d + 1), V ** (T - d - 1)), axis=-1)
        child = child.reshape(P, V**d, V)
        out[:, tree.depth_slice(d), :] = child - _logsumexp(child, axis=-1, keepdims=True)
    return out


def state_visitation(logp: np.ndarray, tree: TokenTree) -> np.ndarray:
    """``(P, S)``: the probability that a response of the policy ``logp: (P, S, V)`` passes through each state."""
    P = logp.shape[0]
    V = tree.vocab
    d = np.zeros((P, tree.n_states))
    d[:, 0] = 1.0
    for k in range(tree.horizon - 1):
        sl, nx = tree.depth_slice(k), tree.depth_slice(k + 1)
        d[:, nx] = (d[:, sl, None] * np.exp(logp[:, sl, :])).reshape(P, V ** (k + 1))
    return d


def kl_sequences(logp_p: np.ndarray, logp_q: np.ndarray) -> np.ndarray:
    """``(P,)``: KL(p‖q) = Σ_y p(y) (log p(y) − log q(y)) from two ``(P, N)`` sequence log-prob tables."""
    return (np.exp(logp_p) * (logp_p - logp_q)).sum(-1)


def sample_responses(logp: np.ndarray, prompts: np.ndarray, tree: TokenTree, rng: np.random.Generator) -> np.ndarray:
    """Sample one response per prompt autoregressively at temperature 1.

    ``logp: (P, S, V)``, ``prompts: (B,)`` → response indices ``(B,)`` (their tokens are
    ``tree.path_actions[...]``). Token by token: draw ``a_t ~ π(·|s_t)``, move to the child.
    """
    B = len(prompts)
    V = tree.vocab
    code = np.zeros(B, dtype=np.int64)
    for d in range(tree.horizon):
        s = tree.offset(d) + code
        cdf = np.cumsum(np.exp(logp[prompts, s, :]), axis=-1)  # (B, V)
        u = rng.random((B, 1)) * cdf[:, -1:]
        a = np.minimum((u > cdf).sum(-1), V - 1)
        code = code * V + a
    return code


def beam_search(logp: np.ndarray, prompt: int, tree: TokenTree, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Likelihood beam search on a tabular autoregressive policy.

    Keeps the ``width`` most likely prefixes (by summed log-prob) at every depth. Returns
    ``(responses: (k,), seq_logp: (k,))`` for the final beams, best first (``k ≤ width``);
    ``width = 1`` is greedy decoding, ``width = V^T`` exact likelihood maximisation.
    """
    if width < 1:
        raise ValueError(f"beam width must be >= 1, got {width}")
    V = tree.vocab
    codes = np.zeros(1, dtype=np.int64)
    scores = np.zeros(1)
    for d in range(tree.horizon):
        s = tree.offset(d) + codes
        cand = scores[:, None] + logp[prompt, s, :]  # (k, V)
        cand_codes = codes[:, None] * V + np.arange(V)[None, :]
        flat, fcodes = cand.ravel(), cand_codes.ravel()
        order = np.lexsort((fcodes, -flat))[:width]  # ties broken by the smaller prefix
        codes, scores = fcodes[order], flat[order]
    return codes, scores
