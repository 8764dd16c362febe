"""Small readable deep-RL algorithms and environments for the classic-RL chapters.

- ``rlbook.rl.a2c``             -- vectorised advantage actor-critic (A2C) with GAE and a
  Gaussian-logits-then-softmax ("simplex") action head, for gymnasium-style vector envs
- ``rlbook.rl.nets``            -- actor-critic networks (a generic MLP, an asset-wise EIIE net)
- ``rlbook.rl.envs.portfolio``  -- Jiang et al.'s portfolio simulator, synthetic markets,
  log-return and running-Sharpe rewards

The environments follow the gymnasium API without importing gymnasium:
``reset(seed=None) -> (obs, info)`` and
``step(action) -> (obs, reward, terminated, truncated, info)``; a vector environment
returns arrays with a leading ``num_envs`` axis and resets finished episodes itself.
"""
