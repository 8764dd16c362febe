"""rlbook.tasks.tool_call: registry, requests, format, parser, schema check and ToolRL's rewards."""

import json

import numpy as np
import pytest

from rlbook.tasks import tool_call as tc

W = {"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}
C = {"name": "convert_currency", "parameters": {"amount": 100, "from": "USD", "to": "EUR"}}


def test_perfect_call_scores_four():
    for gold in ([W], [W, C]):
        text = tc.render(gold)
        assert tc.format_reward(text) == 1.0
        assert tc.correctness_reward(text, gold) == 3.0
        assert tc.toolrl_reward(text, gold) == 4.0
        assert tc.binary_reward(text, gold) == 1.0
        assert tc.format_dominant_reward(text, gold) == 5.0


def test_hand_computed_partial_credit():
    # gold: get_weather(city, unit); pred: right tool, right keys, one right value
    # S_max = 1 + (1 + 2) = 4; score = 1 (name) + 1 (keys) + 1 (city) = 3 -> R_c = 6 * 3 / 4 - 3 = 1.5
    pred = {"name": "get_weather", "parameters": {"city": "Paris", "unit": "fahrenheit"}}
    assert tc.correctness_reward(tc.render([pred]), [W]) == pytest.approx(1.5)
    # one key missing: key Jaccard 1/2, value 1 -> 1 + 0.5 + 1 = 2.5 -> 6 * 2.5 / 4 - 3 = 0.75
    pred = {"name": "get_weather", "parameters": {"city": "Paris"}}
    assert tc.correctness_reward(tc.render([pred]), [W]) == pytest.approx(0.75)
    # two gold calls, only the first predicted: names J = 1/2; S_max = 1 + 3 + 4 = 8;
    # score = 0.5 + (1 + 2) = 3.5 -> 6 * 3.5 / 8 - 3 = -0.375
    assert tc.correctness_reward(tc.render([W]), [W, C]) == pytest.approx(-0.375)
    c = tc.correctness_components([W, C], [W])
    assert (c["name"], c["param"], c["value"], c["s_max"]) == (0.5, 1.0, 2.0, 8.0)


def test_wrong_tool_name_gives_negative_correctness():
    pred = {"name": "translate", "parameters": {"city": "Paris", "unit": "celsius"}}
    r = tc.correctness_reward(tc.render([pred]), [W])
    assert r < 0 and r == -3.0  # no name overlap, no same-name call to align: score 0
    # with a second, right call present the score rises but stays below the perfect one
    r2 = tc.correctness_reward(tc.render([pred, W]), [W])
    assert -3.0 < r2 < 3.0


def test_removing_a_correct_value_lowers_reward():
    gold = [C]
    full = tc.toolrl_reward(tc.render(gold), gold)
    for k in C["parameters"]:
        params = {kk: v for kk, v in C["parameters"].items() if kk != k}
        less = tc.toolrl_reward(tc.render([{"name": C["name"], "parameters": params}]), gold)
        assert less < full
        wrong = dict(C["parameters"], **{k: "XXX"})
        assert tc.toolrl_reward(tc.render([{"name": C["name"], "parameters": wrong}]), gold) < full


def test_match_score_is_multiset_jaccard():
    assert tc.match_score(["a", "a", "b"], ["a", "b", "b"]) == pytest.approx(2 / 4)
    assert tc.match_score([], []) == 1.0 and tc.match_score(["a"], []) == 0.0
    assert tc.match_score(["b", "a"], ["a", "b"]) == 1.0


def test_greedy_alignment_and_order():
    # the order of calls does not change R_correct (greedy alignment by name) but breaks exact match
    text = tc.render([C, W])
    assert tc.correctness_reward(text, [W, C]) == pytest.approx(3.0)
    assert not tc.exact_match(text, [W, C]) and tc.binary_reward(text, [W, C]) == 0.0


def test_random_outputs_stay_in_range():
    import random

    rng = np.random.default_rng(0)
    seen, _ = tc.combinations()
    reqs = [tc.make_request(seen[i % len(seen)] if i % 2 else (tc.TOOL_NAMES[i % 6],), rng) for i in range(200)]
    vals = [v for vs in tc.VALUES.values() for v in vs]
    r_ = random.Random(0)
    lo, hi = 10.0, -10.0
    for i in range(10_000):
        req = reqs[i % len(reqs)]
        calls = [{"name": r_.choice(tc.TOOL_NAMES),
                  "parameters": {k: r_.choice(vals) for k in r_.sample(tc.KEYS, r_.randint(0, 3))}}
                 for _ in range(r_.randint(0, 3))]
        if r_.random() < 0.3:
            calls = [dict(c) for c in req.gold[: r_.randint(1, len(req.gold))]]
        text = tc.render(calls, think=None if r_.random() < 0.2 else "x", closed=r_.random() > 0.1)
        f, c, _ = tc.reward_parts(text, req.gold)
        r = f + c
        if i % 20 == 0:  # the parts agree with the public reward functions
            assert tc.toolrl_reward(text, req.gold) == r
            assert tc.format_dominant_reward(text, req.gold) == pytest.approx(4 * f + (c + 3) / 6)
        lo, hi = min(lo, r), max(hi, r)
        assert -3.0 <= r <= 4.0 and -3.0 <= c <= 3.0 and f in (0.0, 1.0)
    assert lo == -3.0 and hi == 4.0


def test_format_reward_follows_official_regex():
    ok = "<think>plan</think>\n<tool_call>\n" + json.dumps(W) + "\n</tool_call>"
    assert tc.format_reward(ok) == 1.0
    assert tc.format_reward(ok.replace("<think>plan</think>\n", "")) == 0.0  # no think block
    assert tc.format_reward(ok + "\nextra") == 0.0  # trailing text
    assert tc.format_reward(ok.replace("</tool_call>", "")) == 0.0
    assert tc.format_reward(ok + "<tool_call>") == 0.0  # two opening tags
    assert tc.format_reward(None) == 0.0


@pytest.mark.parametrize("text", [
    "", "<tool_call>", "<tool_call>\n{\n</tool_call>", "<tool_call>\n[1, 2]\n</tool_call>",
    "<tool_call>\n" + json.dumps([W]) + "\n</tool_call>",  # a list on one line: not the official layout
    "<tool_call>\n{\"name\": 3, \"parameters\": {}}\n</tool_call>",
    "<tool_call>\n{\"name\": \"x\", \"parameters\": [1]}\n</tool_call>",
    "<tool_call>\n" + "[" * 100_000 + "\n</tool_call>",  # deep nesting
    "<tool_call>\nNaN\n</tool_call>", "</tool_call><tool_call>", "<tool_call>\n\u0000\n</tool_call>",
    "<tool_call>\n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}\n</tool_call>",
    b"<tool_call>".decode() + "\n\ud800\n</tool_call>", 12345, None, ["<tool_call>"],
])
def test_parser_never_crashes_on_hostile_input(text):
    assert tc.parse_tool_calls(text) is None
    r = tc.toolrl_reward(text, [W]) if isinstance(text, str) else None
    assert r is None or r in (-3.0, -2.0)


def test_parser_roundtrip():
    for calls in ([W], [W, C], [{"name": "calculator", "parameters": {}}]):
        assert tc.parse_tool_calls(tc.render(calls)) == calls


def test_schema_errors():
    assert tc.schema_errors(W) == [] and tc.schema_errors(C) == []
    assert tc.schema_errors({"name": "nope", "parameters": {}}) == ["unknown tool 'nope'"]
    errs = tc.schema_errors({"name": "convert_currency", "parameters": {"amount": "100", "from": "USD", "x": 1}})
    assert "amount: expected number, got str" in errs and "unknown parameter 'x'" in errs
    assert "missing required 'to'" in errs
    assert tc.schema_errors({"name": "get_weather", "parameters": {"city": "Oslo", "unit": "kelvin"}}) == [
        "unit: 'kelvin' not in ['celsius', 'fahrenheit']"]
    assert tc.schema_errors({"name": "convert_currency", "parameters": {"amount": True, "from": "A", "to": "B"}})
    assert tc.schema_errors([1]) == ["not a call object with name and parameters"]
    assert tc.TOOLS["get_weather"].schema()["parameters"]["required"] == ["city", "unit"]


def test_requests_and_gold_calls_are_valid():
    rng = np.random.default_rng(1)
    seen, unseen = tc.combinations()
    assert len(seen) + len(unseen) == 30 and not set(seen) & set(unseen)
    for tools in seen + unseen + [(t,) for t in tc.TOOL_NAMES]:
        req = tc.make_request(tools, rng)
        assert [g["name"] for g in req.gold] == list(tools)
        for g, ptr in zip(req.gold, req.pointers):
            assert tc.schema_errors(g) == []
            for k, pos in ptr.items():
                assert req.tokens[pos] == g["parameters"][k] and pos in req.slots
        cc = req.gold[0]["parameters"]
        if tools[0] == "convert_currency":
            assert cc["from"] != cc["to"]


def test_call_parts_equals_text_path():
    rng = np.random.default_rng(2)
    req = tc.make_request(("search_flights", "set_alarm"), rng)
    for calls in (req.gold, req.gold[:1], [req.gold[1], req.gold[0]], [{"name": "translate", "parameters": {}}]):
        for think in ("", None):
            text = tc.render(calls, think=think)
            assert tc.call_parts(calls, req.gold, 1.0 if think is not None else 0.0) == tc.reward_parts(text, req.gold)


def test_official_alignment_is_greedy_not_the_best_matching():
    """Two gold calls of one tool: the greedy alignment (official) scores below the best matching."""
    w = lambda c, u: {"name": "get_weather", "parameters": {"city": c, "unit": u}}
    gold = [w("Paris", "celsius"), w("Oslo", "celsius")]
    pred = [w("Oslo", "celsius"), w("Paris", "fahrenheit")]
    c = tc.correctness_components(gold, pred)
    assert (c["name"], c["param"], c["value"], c["s_max"]) == (1.0, 2.0, 1.0, 7.0)
    assert tc.correctness_reward(tc.render(pred), gold) == pytest.approx(6 * 4 / 7 - 3)  # best matching: 6*6/7-3
