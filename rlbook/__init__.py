"""rlbook: the helper package of the RL Paper Book.

Every reusable piece of code of the book lives here, once; a notebook is a thin
narrative driver that calls into it. Modules (import them explicitly, e.g.
``from rlbook import losses``):

- ``rlbook.runtime``  -- ``setup(profile, seed)``: seeds, threads, device, determinism
- ``rlbook.config``   -- turn a notebook's flat parameters into a checked dataclass
- ``rlbook.claims``   -- state a paper's claim and check it by machine
- ``rlbook.losses``   -- one small pure function per objective
- ``rlbook.mdp``      -- exact small worlds (token-tree MDP, soft value iteration)
- ``rlbook.tasks``    -- verifiable text tasks with ``verify()``
- ``rlbook.models``   -- character tokenizer, tiny causal LMs, the base-policy zoo
- ``rlbook.rollout``  -- sampling, per-token log-probs, groups, pass@k
- ``rlbook.rl``       -- small readable deep-RL algorithms and environments
- ``rlbook.plots``    -- the house style of every figure
- ``rlbook.cli``      -- ``rlbook list|run|build|ledger``
"""

from rlbook.runtime import PROFILES, Runtime, setup

__all__ = ["PROFILES", "Runtime", "setup"]
__version__ = "0.1.0"
