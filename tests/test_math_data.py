"""The MATH pieces shared by the RLVR full profiles."""

from rlbook import math_data


def test_split_list():
    assert math_data.split_list(" A, B,,C ") == ["A", "B", "C"]


def test_tiny_math_stand_in_loads_and_verifies(tmp_path):
    paths = math_data.save_tiny_math(tmp_path)
    train = math_data.load_math(paths["train"], "train", levels=["Level 3"])
    test = math_data.load_math(paths["eval"], "test", n=4)
    assert len(train) == 16 and len(test) == 4
    assert train[0]["answer"] == "0" and "\\boxed{}" in train[0]["prompt"]
    assert math_data.math_reward([r"so \boxed{" + a + "}" for a in test["answer"]], test["answer"]) == [1.0] * 4
