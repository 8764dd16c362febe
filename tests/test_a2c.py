"""Tests of rlbook.rl.a2c and rlbook.rl.nets: GAE, log-probs, the loss, learning a bandit;
and a dry run of the portfolio chapter's full profile on a tiny local CSV."""

import numpy as np
import pytest
import torch

from rlbook.rl.a2c import (A2CConfig, a2c_loss, deterministic_policy, gae, gaussian_entropy,
                           gaussian_logprob, train_a2c)
from rlbook.rl.nets import EIIEActorCritic, MLPActorCritic


def test_gaussian_logprob_and_entropy_match_torch():
    mean, log_std = torch.randn(5, 3), torch.randn(3) * 0.3
    z = torch.randn(5, 3)
    ref = torch.distributions.Normal(mean, log_std.exp())
    torch.testing.assert_close(gaussian_logprob(z, mean, log_std), ref.log_prob(z).sum(-1))
    torch.testing.assert_close(gaussian_entropy(log_std), ref.entropy()[0].sum())


def test_gae_special_cases():
    torch.manual_seed(0)
    r, v = torch.randn(6, 2), torch.randn(6, 2)
    d = torch.zeros(6, 2)
    d[2, 0] = 1.0
    last = torch.randn(2)
    # lambda = 0: the one-step TD error
    adv0, _ = gae(r, v, d, last, gamma=0.9, lam=0.0)
    nxt = torch.cat([v[1:], last[None]])
    torch.testing.assert_close(adv0, r + 0.9 * nxt * (1 - d) - v)
    # lambda = 1: discounted return-to-go (cut at the episode end) minus the value
    _, ret1 = gae(r, v, d, last, gamma=0.9, lam=1.0)
    want = torch.zeros(6, 2)
    g = last.clone()
    for t in reversed(range(6)):
        g = r[t] + 0.9 * g * (1 - d[t])
        want[t] = g
    torch.testing.assert_close(ret1, want)


def test_a2c_loss_hand_value():
    logp = torch.tensor([-1.0, -2.0])
    adv = torch.tensor([1.0, -1.0])
    value, ret = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0])
    loss, stats = a2c_loss(logp, adv, value, ret, torch.tensor(2.0), vf_coef=0.5, ent_coef=0.1)
    # pg = -mean(-1, 2) = -0.5 ; vf = 0.5 * mean(1, 0) = 0.25 ; loss = -0.5 + 0.125 - 0.2
    assert loss.item() == pytest.approx(-0.575)
    assert stats["pg_loss"] == pytest.approx(-0.5) and stats["vf_loss"] == pytest.approx(0.25)


class SimplexBandit:
    """One-step episodes; reward w . m + noise; the best arm is 2."""

    def __init__(self, num_envs=32, means=(0.0, 0.2, 1.0, 0.0), noise=0.5):
        self.num_envs, self.m, self.noise = num_envs, np.array(means), noise
        self.obs_dim, self.action_dim = 1, len(means)

    def reset(self, seed=None, options=None):
        self.rng = np.random.default_rng(seed)
        return np.ones((self.num_envs, 1), dtype=np.float32), {}

    def step(self, action):
        r = action @ self.m + self.noise * self.rng.standard_normal(self.num_envs)
        done = np.ones(self.num_envs, dtype=bool)
        return np.ones((self.num_envs, 1), dtype=np.float32), r, done, ~done, {}


@pytest.fixture
def one_thread():
    # tiny networks: several threads only add synchronisation overhead on a busy 2-core CPU
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_a2c_learns_a_simplex_bandit(one_thread):
    torch.manual_seed(0)
    env = SimplexBandit(num_envs=64)
    net = MLPActorCritic(1, 4, hidden=16, init_log_std=0.0)
    before = [p.detach().clone() for p in net.parameters()]
    hist = train_a2c(env, net, A2CConfig(n_updates=50, n_steps=2, lr=2e-2), seed=0)
    w = deterministic_policy(net)(np.ones((1, 1), dtype=np.float32))[0]
    assert w[2] > 0.8, w
    assert np.nanmean(hist["episode_return"][-10:]) > np.nanmean(hist["episode_return"][:5]) + 0.2
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_eiie_net_shapes_and_uniform_start():
    net = EIIEActorCritic(n_assets=3, window=4, hidden=8)
    obs = torch.randn(5, 3 * 4 + 4)
    mean, value = net(obs)
    assert mean.shape == (5, 4) and value.shape == (5,)
    torch.testing.assert_close(torch.softmax(mean, -1), torch.full((5, 4), 0.25))
    lin = EIIEActorCritic(n_assets=3, window=4, hidden=0)
    assert lin(obs)[0].shape == (5, 4)


@pytest.mark.slow
def test_full_profile_dry_run_on_tiny_csv(tmp_path):
    import pandas as pd

    from rlbook.experiments.drl_portfolio_sharpe_reward import full_config, run_full

    rng = np.random.default_rng(0)
    days = pd.bdate_range("2020-01-01", periods=400)
    px = 10 * np.exp(np.cumsum(0.015 * rng.standard_normal((400, 4)), 0))
    df = pd.DataFrame(px, index=days, columns=["600009", "600029", "000338", "002027"])
    df.iloc[5, 1] = np.nan  # a gap to forward-fill
    path = tmp_path / "closes.csv"
    df.to_csv(path)
    cfg = full_config(prices_csv=str(path), n_updates=2, num_envs=4, n_steps=4, window=10,
                      episode_len=16, hidden=8, test_frac=0.2, device="cpu")
    out = run_full(cfg, seed=0)
    assert set(out["table"].index) >= {"DRL (Sharpe reward)", "DRL (log reward)", "equal weight",
                                       "risk parity", "mean-variance"}
    assert out["backtest"]["equal weight"]["log_growth"].shape == (1, 79)
    assert out["market"].names == ("600009", "600029", "000338", "002027")
