"""The benchmark's report (the timing itself is measured by `python -m rlbook.bench`, never asserted)."""

from rlbook import bench


def test_markdown_report():
    side = {"median_s": 0.05, "mean_s": 0.06, "peak_mb": 400.0, "first_reward": 0.0, "last_reward": 0.0}
    res = {"rlbook.rl_lm": side, "trl.GRPOTrainer": dict(side, median_s=0.1), "ratio": 2.0,
           "setup": {"steps": 30, "B": 8, "G": 8, "seed": 0, "warmup": 3, "python": "3.11"}}
    md = bench.markdown(res)
    assert "| `rlbook.rl_lm` | 0.050 | 0.060 | 400 |" in md
    assert "**2.00x**" in md
