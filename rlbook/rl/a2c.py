"""A small, readable, vectorised advantage actor-critic (A2C) with a simplex action head.

Algorithm (Mnih et al. 2016, synchronous variant; GAE from Schulman et al. 2016):

1. run ``num_envs`` environments for ``n_steps`` steps with the current policy;
2. advantages by GAE, ``delta_t = r_t + gamma V(s_{t+1}) (1 - d_t) - V(s_t)``,
   ``A_t = delta_t + gamma lambda (1 - d_t) A_{t+1}``, returns ``R_t = A_t + V(s_t)``;
3. one gradient step on ``L = -mean(logp * A_norm) + c_v mean((V - R)^2) / 2 - c_e H``.

Simplex actions (portfolio weights) use the head of the paper's official code: a Gaussian
over logits ``z ~ N(mu(s), diag(sigma^2))`` (SB3 ``PPO('MlpPolicy')`` on a Box action), then
``w = softmax(z)`` (the official ``SoftmaxActions`` wrapper). The log-probability is that of
``z``; the deterministic (evaluation) action is ``softmax(mu(s))``.

Environments follow the gymnasium vector API: ``reset(seed) -> (obs (E, D), info)``,
``step(actions (E, A)) -> (obs, reward (E,), terminated (E,), truncated (E,), info)`` with
automatic reset; ``env.num_envs``, ``env.obs_dim``, ``env.action_dim``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rlbook.config import check


@dataclass
class A2CConfig:
    """Hyper-parameters of :func:`train_a2c`."""

    n_updates: int = 300
    """number of gradient steps (each on ``num_envs * n_steps`` transitions)"""
    n_steps: int = 16
    """rollout length per environment between updates"""
    gamma: float = 1.0
    """discount; 1 for the finite-horizon portfolio episodes (the objective is a sum over T steps)"""
    gae_lambda: float = 0.95
    """GAE's lambda (SB3's default)"""
    lr: float = 3e-3
    """Adam learning rate"""
    vf_coef: float = 0.5
    """weight of the critic's squared error"""
    ent_coef: float = 0.0
    """weight of the entropy bonus"""
    max_grad_norm: float = 0.5
    """gradient clipping (SB3's default)"""
    normalize_advantages: bool = True
    """standardise the advantages of each batch"""

    def __post_init__(self):
        check(self.n_updates >= 1 and self.n_steps >= 1, "n_updates and n_steps must be >= 1")
        check(0.0 <= self.gamma <= 1.0 and 0.0 <= self.gae_lambda <= 1.0, "gamma, gae_lambda in [0, 1]")
        check(self.lr > 0, "lr must be > 0")


def gaussian_logprob(z: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """``log N(z; mean, diag(exp(log_std))^2)`` summed over the action axis: ``(B, A) -> (B,)``."""
    var = torch.exp(2 * log_std)
    return (-((z - mean) ** 2) / (2 * var) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def gaussian_entropy(log_std: torch.Tensor) -> torch.Tensor:
    """Entropy of the diagonal Gaussian, ``sum_a (log_std_a + 0.5 log(2 pi e))``: ``(A,) -> ()``."""
    return (log_std + 0.5 * math.log(2 * math.pi * math.e)).sum()


def gae(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, last_value: torch.Tensor,
        gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16).

    ``rewards, values, dones: (T, E)`` (``dones[t]``: the episode ended at step t, so
    ``V(s_{t+1})`` is not bootstrapped), ``last_value: (E,)`` = ``V(s_T)``.
    Returns ``adv: (T, E)`` and ``returns = adv + values: (T, E)``.
    """
    T = rewards.shape[0]
    adv = torch.zeros_like(rewards)
    next_adv = torch.zeros_like(last_value)
    next_value = last_value
    for t in reversed(range(T)):
        live = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_value * live - values[t]
        next_adv = delta + gamma * lam * live * next_adv
        adv[t] = next_adv
        next_value = values[t]
    return adv, adv + values


def a2c_loss(logp: torch.Tensor, adv: torch.Tensor, value: torch.Tensor, returns: torch.Tensor,
             entropy: torch.Tensor, vf_coef: float, ent_coef: float) -> tuple[torch.Tensor, dict]:
    """``L = -mean(logp * adv) + vf_coef * mean((value - returns)^2) / 2 - ent_coef * entropy``.

    ``logp, adv, value, returns: (B,)`` (``adv`` and ``returns`` carry no gradient),
    ``entropy: ()`` -> ``loss: ()`` and a dict of the three terms.
    """
    pg = -(logp * adv.detach()).mean()
    vf = 0.5 * ((value - returns.detach()) ** 2).mean()
    loss = pg + vf_coef * vf - ent_coef * entropy
    return loss, {"pg_loss": pg.item(), "vf_loss": vf.item(), "entropy": entropy.item()}


def deterministic_policy(net: nn.Module, device: str = "cpu"):
    """``obs (E, D) numpy -> softmax(mu(obs)) (E, A) numpy``: the evaluation action."""

    @torch.no_grad()
    def act(obs: np.ndarray) -> np.ndarray:
        mean, _ = net(torch.as_tensor(obs, dtype=torch.float32, device=device))
        w = torch.softmax(mean.double(), dim=-1).cpu().numpy()
        return w / w.sum(-1, keepdims=True)

    return act


def train_a2c(env, net: nn.Module, cfg: A2CConfig, seed: int = 0, device: str = "cpu") -> dict:
    """Train ``net`` (``obs -> (mean logits, value)``, with a ``log_std`` parameter) on ``env``.

    Returns a history dict: ``episode_return`` (mean undiscounted return of the episodes
    that ended in each update, NaN if none), ``pg_loss``, ``vf_loss``, ``entropy`` per update.
    """
    gen = torch.Generator(device=device).manual_seed(seed)
    net.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    obs, _ = env.reset(seed=seed)
    E = env.num_envs
    running = np.zeros(E)  # undiscounted return of the episode in progress
    hist = {k: [] for k in ("episode_return", "pg_loss", "vf_loss", "entropy")}
    for _ in range(cfg.n_updates):
        obs_buf, z_buf, rew_buf, done_buf = [], [], [], []
        finished = []
        for _ in range(cfg.n_steps):
            o = torch.as_tensor(obs, dtype=torch.float32, device=device)
            with torch.no_grad():
                mean, _ = net(o)
                z = mean + torch.exp(net.log_std) * torch.randn(mean.shape, generator=gen, device=device)
            w = torch.softmax(z.double(), dim=-1).cpu().numpy()
            obs, r, term, trunc, _ = env.step(w / w.sum(-1, keepdims=True))
            done = np.logical_or(term, trunc)
            running += r
            finished.extend(running[done].tolist())
            running[done] = 0.0
            obs_buf.append(o)
            z_buf.append(z)
            rew_buf.append(torch.as_tensor(r, dtype=torch.float32, device=device))
            done_buf.append(torch.as_tensor(done, dtype=torch.float32, device=device))
        O = torch.stack(obs_buf)  # (T, E, D)
        Z = torch.stack(z_buf)  # (T, E, A)
        mean, value = net(O.reshape(-1, O.shape[-1]))  # (T*E, A), (T*E,)
        with torch.no_grad():
            _, last_value = net(torch.as_tensor(obs, dtype=torch.float32, device=device))
        adv, ret = gae(torch.stack(rew_buf), value.detach().reshape(-1, E), torch.stack(done_buf),
                       last_value, cfg.gamma, cfg.gae_lambda)
        adv, ret = adv.reshape(-1), ret.reshape(-1)
        if cfg.normalize_advantages:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        logp = gaussian_logprob(Z.reshape(-1, Z.shape[-1]), mean, net.log_std)
        loss, stats = a2c_loss(logp, adv, value, ret, gaussian_entropy(net.log_std),
                               cfg.vf_coef, cfg.ent_coef)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), cfg.max_grad_norm)
        opt.step()
        hist["episode_return"].append(float(np.mean(finished)) if finished else float("nan"))
        for k, v in stats.items():
            hist[k].append(v)
    return {k: np.asarray(v) for k, v in hist.items()}
