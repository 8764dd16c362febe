r"""Toy JSON function calling with ToolRL's rewards (Qian et al. 2025, arXiv 2504.13958).

A registry of six tools with typed parameter schemas (:data:`TOOLS`), natural-language
requests generated from templates with slot values (:func:`make_request`), their gold calls,
the text format of the paper (official ``rlla.py``)::

    <think>...</think>
    <tool_call>
    {"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}
    {"name": "translate", "parameters": {"text": "good morning", "target_lang": "German"}}
    </tool_call>

(one JSON object per line, as in the official data and reward; a JSON *list* on one line is
not a valid call block there and is not here), a parser that never raises
(:func:`parse_tool_calls`), a schema check (:func:`schema_errors`) and three rewards:

- :func:`toolrl_reward` -- the paper's :math:`R=R_{format}+R_{correct}\in[-3,4]` (Sec. 3.3);
- :func:`binary_reward` -- sparse answer matching, 1 iff the format is valid and the calls
  equal the gold calls, else 0;
- :func:`format_dominant_reward` -- the same two components with the scales swapped,
  :math:`4R_{format}+(R_{correct}+3)/6\in[0,5]`: format dominates correctness.

The correctness reward was checked line by line against the official reward module
``verl/utils/reward_score/rlla.py`` of qiancheng0/ToolRL (read from the forks
neruzZ-JPG/ToolRL and WingchunSiu/ToolRL, whose ``compute_tool_call_reward``,
``match_score``, ``customize_format_reward_func`` and ``customize_correctness_reward_tool``
are identical; the official repository itself is not in the search index). Details the
catalog's reconstruction does not state and that we keep:

- the name score is a *multiset* Jaccard index (``Counter``), and two equal lists score 1;
- the alignment is *greedy* in gold order (each gold call takes the best unused predicted
  call with the same name, by key Jaccard + value matches; a candidate must score > 0),
  not a maximum over all matchings;
- a prediction equal to the gold list short-circuits to :math:`+3`; anything that does not
  parse (missing tags, a line that is not a JSON object with ``name`` and ``parameters``)
  gets :math:`-3`; values are compared with Python ``==`` (so ``1 == 1.0`` but ``"1" != 1``).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

# ---------------------------------------------------------------------------------
# the registry
# ---------------------------------------------------------------------------------
JSON_TYPES = {"string": str, "number": (int, float), "boolean": bool}


@dataclass(frozen=True)
class Param:
    """One typed parameter of a tool."""

    name: str
    """the key in the call's ``parameters`` object"""
    type: str
    """JSON type: ``string``, ``number`` or ``boolean``"""
    pool: str
    """the value pool (:data:`VALUES`) a request draws this slot from"""
    enum: tuple = ()
    """allowed values (empty: any value of the type)"""
    required: bool = True
    """whether a call must set it"""


@dataclass(frozen=True)
class Tool:
    """A tool: a name and its typed parameters (a JSON-schema-like signature)."""

    name: str
    params: tuple[Param, ...]
    description: str = ""

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def schema(self) -> dict:
        """The tool as an OpenAI/ToolACE-style function schema (what the full profile shows the model)."""
        props = {}
        for p in self.params:
            props[p.name] = {"type": p.type, **({"enum": list(p.enum)} if p.enum else {})}
        return {"name": self.name, "description": self.description,
                "parameters": {"type": "object", "properties": props,
                               "required": [p.name for p in self.params if p.required]}}


VALUES: dict[str, tuple] = {
    "city": ("Paris", "Tokyo", "Lima", "Cairo", "Oslo", "Delhi", "Quito", "Perth"),
    "unit": ("celsius", "fahrenheit"),
    "amount": (5, 12, 40, 75, 100, 250, 600, 1000),
    "currency": ("USD", "EUR", "JPY", "GBP", "INR", "CHF"),
    "date": ("2025-03-01", "2025-04-12", "2025-05-20", "2025-06-08", "2025-07-30"),
    "time": ("06:30", "07:00", "08:15", "09:45", "21:00"),
    "label": ("gym", "work", "meds", "school", "call mom"),
    "text": ("good morning", "thank you", "where is the station", "see you soon", "how much"),
    "lang": ("German", "French", "Spanish", "Japanese", "Hindi"),
    "expression": ("2+3*4", "17*23", "(5+7)/3", "2**10", "99-45"),
}
"""slot values by pool (numbers are JSON numbers, the rest strings)"""

TOOLS: dict[str, Tool] = {t.name: t for t in (
    Tool("get_weather", (Param("city", "string", "city"), Param("unit", "string", "unit", enum=VALUES["unit"])),
         "Current weather in a city."),
    Tool("convert_currency", (Param("amount", "number", "amount"), Param("from", "string", "currency"),
                              Param("to", "string", "currency")), "Convert an amount between currencies."),
    Tool("search_flights", (Param("origin", "string", "city"), Param("destination", "string", "city"),
                            Param("date", "string", "date")), "Search flights on a date."),
    Tool("set_alarm", (Param("time", "string", "time"), Param("label", "string", "label")), "Set an alarm."),
    Tool("translate", (Param("text", "string", "text"), Param("target_lang", "string", "lang")),
         "Translate a text."),
    Tool("calculator", (Param("expression", "string", "expression"),), "Evaluate an arithmetic expression."),
)}
"""the six tools of the toy (catalog), by name"""

TOOL_NAMES: tuple[str, ...] = tuple(TOOLS)
KEYS: tuple[str, ...] = tuple(dict.fromkeys(k for t in TOOLS.values() for k in t.keys))
"""every parameter name of the registry (13), the key vocabulary of the toy policy"""

TEMPLATES: dict[str, tuple[str, ...]] = {
    "get_weather": ("what is the weather in {city} in {unit}", "{unit} forecast for {city} please"),
    "convert_currency": ("convert {amount} {from} to {to}", "how many {to} is {amount} {from}"),
    "search_flights": ("find flights from {origin} to {destination} on {date}",
                       "on {date} fly to {destination} from {origin}"),
    "set_alarm": ("set an alarm at {time} for {label}", "wake me for {label} at {time}"),
    "translate": ("translate {text} into {target_lang}", "say {text} in {target_lang}"),
    "calculator": ("calculate {expression}", "what is {expression}"),
}
"""request templates, two per tool, with different slot orders (so copying needs the context words)"""

JOINER = "and then"
"""the words between the segments of a two-tool request"""


# ---------------------------------------------------------------------------------
# requests
# ---------------------------------------------------------------------------------
@dataclass
class Request:
    """A user request: its tokens, which tokens are slot values, and the gold calls."""

    tokens: list
    """words and slot values (a value is one token, possibly with spaces or a number)"""
    slots: list
    """indices into ``tokens`` that hold slot values (the positions a pointer may copy)"""
    gold: list
    """gold calls, ``[{"name": ..., "parameters": {...}}, ...]`` in request order"""
    tools: tuple = field(default=())
    """the tool names, in order (the request's "combination")"""
    pointers: list = field(default_factory=list)
    """per gold call, ``{key: index into tokens}`` of the slot that holds its value"""

    @property
    def text(self) -> str:
        return " ".join(str(t) for t in self.tokens)


def make_request(tools: tuple[str, ...], rng: np.random.Generator) -> Request:
    """A request for the calls ``tools`` (1 or more names), one template per tool, values drawn from the pools.

    Two parameters of one call that share a pool (``from``/``to``, ``origin``/``destination``)
    get distinct values.
    """
    tokens, slots, gold, pointers = [], [], [], []
    for i, name in enumerate(tools):
        tool = TOOLS[name]
        if i:
            tokens += JOINER.split()
        params, used = {}, {}
        for p in tool.params:
            pool = [v for v in VALUES[p.pool] if v not in used.get(p.pool, ())]
            v = pool[int(rng.integers(len(pool)))]
            used.setdefault(p.pool, []).append(v)
            params[p.name] = v
        tmpl = TEMPLATES[name][int(rng.integers(len(TEMPLATES[name])))]
        ptr = {}
        for w in tmpl.split():
            if w.startswith("{") and w.endswith("}"):
                ptr[w[1:-1]] = len(tokens)
                slots.append(len(tokens))
                tokens.append(params[w[1:-1]])
            else:
                tokens.append(w)
        gold.append({"name": name, "parameters": params})
        pointers.append({k: ptr[k] for k in params})
    return Request(tokens, slots, gold, tuple(tools), pointers)


def combinations(n_heldout: int = 10, seed: int = 0) -> tuple[list, list]:
    """Two-tool combinations (ordered pairs of distinct tools, 30 of them) split into seen and unseen.

    The split is fixed by ``seed`` and keeps every tool in both positions among the seen pairs.
    Returns ``(seen, unseen)`` lists of name tuples.
    """
    pairs = [(a, b) for a in TOOL_NAMES for b in TOOL_NAMES if a != b]
    rng = np.random.default_rng([seed, 2504])
    for _ in range(1000):
        perm = rng.permutation(len(pairs))
        unseen = [pairs[i] for i in perm[:n_heldout]]
        seen = [pairs[i] for i in perm[n_heldout:]]
        if all(any(p[0] == t for p in seen) and any(p[1] == t for p in seen) for t in TOOL_NAMES):
            return seen, unseen
    raise RuntimeError("no valid split")  # pragma: no cover


# ---------------------------------------------------------------------------------
# text format, parser, schema check
# ---------------------------------------------------------------------------------
def render(calls: list, think: str | None = "", closed: bool = True) -> str:
    """The response text: ``<think>think</think>\\n<tool_call>\\n{call}\\n...\\n</tool_call>``.

    ``think=None`` omits the think block (a format error); ``closed=False`` omits the closing
    tag (what a truncated generation looks like). Each call is one JSON line
    (``json.dumps``, keys in insertion order).
    """
    body = "\n".join(json.dumps(c, ensure_ascii=False) for c in calls)
    head = "" if think is None else f"<think>{think}</think>\n"
    return f"{head}<tool_call>\n{body}\n" + ("</tool_call>" if closed else "")


_FORMAT_TOOL = re.compile(r"^<think>.*?</think>\n<tool_call>\n.*?\n</tool_call>$", re.DOTALL)


def format_reward(text: str) -> float:
    r""":math:`R_{format}\in\{0,1\}` for a gold answer that is a tool call (paper eq. 2; official regex).

    1 iff ``text`` matches ``^<think>.*?</think>\n<tool_call>\n.*?\n</tool_call>$`` and has exactly one
    ``<tool_call>`` and one ``</tool_call>`` (``customize_format_reward_func``, the branch for gold
    answers with ``<tool_call>`` and no ``<response>``).
    """
    if not isinstance(text, str):
        return 0.0
    ok = _FORMAT_TOOL.search(text) is not None and text.count("<tool_call>") == 1 and text.count("</tool_call>") == 1
    return 1.0 if ok else 0.0


def parse_tool_calls(text) -> list | None:
    """The calls inside ``<tool_call>...</tool_call>``, one JSON object per line, or ``None``.

    Mirrors the official reward's parsing (split at the first tags, strip, split lines,
    ``json.loads`` each) and then requires what its scorer reads: every line a JSON object with a
    ``name`` and an object ``parameters`` (we also require the name to be a string; the official scorer
    would score a numeric name as a non-matching one, a case no policy here produces). Never raises:
    anything else (missing tags, broken JSON, a list, huge nesting) gives ``None``, which the rewards
    score like the official ``except`` branch (:math:`R_{correct}=-3`).
    """
    try:
        if not isinstance(text, str) or "<tool_call>" not in text or "</tool_call>" not in text:
            return None
        inner = text.split("<tool_call>")[1].split("</tool_call>")[0].strip()
        calls = []
        for line in inner.split("\n"):
            c = json.loads(line)
            if not (isinstance(c, dict) and isinstance(c.get("name"), str) and isinstance(c.get("parameters"), dict)):
                return None
            calls.append(c)
        return calls
    except (ValueError, RecursionError, IndexError, TypeError):
        return None


def schema_errors(call, tools: dict | None = None) -> list[str]:
    """What is wrong with one call against the registry (empty list: it is valid).

    Checks: the call is an object with ``name`` and ``parameters``; the tool exists; no unknown
    key; every required key present; every value of its JSON type (``bool`` is not a number)
    and in its ``enum`` if any.
    """
    tools = TOOLS if tools is None else tools
    if not isinstance(call, dict) or not isinstance(call.get("parameters"), dict) or "name" not in call:
        return ["not a call object with name and parameters"]
    tool = tools.get(call["name"]) if isinstance(call["name"], str) else None
    if tool is None:
        return [f"unknown tool {call['name']!r}"]
    errs, spec = [], {p.name: p for p in tool.params}
    for k, v in call["parameters"].items():
        p = spec.get(k)
        if p is None:
            errs.append(f"unknown parameter {k!r}")
            continue
        typ = JSON_TYPES[p.type]
        if isinstance(v, bool) and p.type != "boolean" or not isinstance(v, typ):
            errs.append(f"{k}: expected {p.type}, got {type(v).__name__}")
        elif p.enum and v not in p.enum:
            errs.append(f"{k}: {v!r} not in {list(p.enum)}")
    errs += [f"missing required {p.name!r}" for p in tool.params if p.required and p.name not in call["parameters"]]
    return errs


# ---------------------------------------------------------------------------------
# the rewards
# ---------------------------------------------------------------------------------
def match_score(a: list, b: list) -> float:
    r"""Multiset Jaccard index :math:`|A\cap B|/|A\cup B|` of two lists (official ``match_score``).

    Equal lists score 1 (also two empty ones); otherwise an empty list scores 0.
    """
    if a == b:
        return 1.0
    if not a or not b:
        return 0.0
    ca, cb = Counter(a), Counter(b)
    inter = sum(min(ca[k], cb[k]) for k in ca.keys() & cb.keys())
    union = len(a) + len(b) - inter
    return inter / union if union > 0 else 0.0


def correctness_components(gold: list, pred: list) -> dict:
    r"""The raw matching scores of ``pred`` against ``gold`` (both lists of call dicts).

    .. math:: r_{name}=J(N_G,N_P),\quad
              r_{param}=\sum_{j} J(\mathrm{keys}\,G_j,\mathrm{keys}\,P_{m(j)}),\quad
              r_{value}=\sum_j\sum_{k\in\mathrm{keys}\,G_j}\mathbb 1[P_{m(j)}[k]=G_j[k]],\quad
              S_{max}=1+\sum_j(1+|\mathrm{keys}\,G_j|)

    with :math:`J` the multiset Jaccard index (:func:`match_score`) and :math:`m` the official
    greedy alignment: gold call :math:`j` (in order) takes the unused predicted call of the same name
    with the largest :math:`J+\text{matches}`, if that is > 0. Returns ``name, param, value, score``
    (the sum) and ``s_max``.
    """
    r_name = match_score([c["name"] for c in gold], [c["name"] for c in pred])
    r_param = r_value = 0.0
    s_max = 1.0
    used: set[int] = set()
    for g in gold:
        gp = g["parameters"]
        s_max += 1.0 + len(gp)
        best, best_i, best_kv = 0.0, -1, (0.0, 0.0)
        for i, p in enumerate(pred):
            if i in used or p["name"] != g["name"]:
                continue
            pp = p["parameters"]
            kscore = match_score(list(gp.keys()), list(pp.keys()))
            vscore = sum(1.0 for k, v in gp.items() if k in pp and pp[k] == v)
            if kscore + vscore > best:
                best, best_i, best_kv = kscore + vscore, i, (kscore, vscore)
        if best_i >= 0:
            used.add(best_i)
            r_param += best_kv[0]
            r_value += best_kv[1]
    return {"name": r_name, "param": r_param, "value": r_value, "score": r_name + r_param + r_value, "s_max": s_max}


def correctness_reward(text: str, gold: list, r_max: float = 3.0, r_min: float = -3.0) -> float:
    r""":math:`R_{correct}\in[R_{min},R_{max}]` (paper eqs. 3-6; official ``compute_tool_call_reward``).

    .. math:: R_{correct}=(R_{max}-R_{min})\,\frac{r_{name}+r_{param}+r_{value}}{S_{max}}+R_{min}
              \;=\;6\,\frac{R_{sum}}{S_{max}}-3

    (components in :func:`correctness_components`); :math:`R_{max}` if the parsed calls equal
    ``gold`` (order included), :math:`R_{min}` if the text does not parse (:func:`parse_tool_calls`).
    """
    pred = parse_tool_calls(text)
    if pred is None:
        return r_min
    if pred == gold:
        return r_max
    c = correctness_components(gold, pred)
    return (r_max - r_min) * c["score"] / c["s_max"] + r_min


def toolrl_reward(text: str, gold: list) -> float:
    r"""ToolRL's reward :math:`R=R_{format}+R_{correct}\in[-3,4]` (paper eq. 7, ``compute_score``)."""
    return format_reward(text) + correctness_reward(text, gold)


def exact_match(text: str, gold: list) -> bool:
    """The parsed calls equal the gold calls (order, names, keys and values; format not required)."""
    return parse_tool_calls(text) == gold


def binary_reward(text: str, gold: list) -> float:
    """Sparse answer matching: 1 iff the format is valid and the calls equal the gold calls, else 0."""
    return 1.0 if format_reward(text) == 1.0 and exact_match(text, gold) else 0.0


def format_dominant_reward(text: str, gold: list) -> float:
    r"""The scales swapped: :math:`4R_{format}+(R_{correct}+3)/6\in[0,5]` (format in {0, 4}, correctness in [0, 1])."""
    return 4.0 * format_reward(text) + (correctness_reward(text, gold) + 3.0) / 6.0


def reward_parts(text: str, gold: list) -> tuple[float, float, float]:
    """``(R_format, R_correct, exact)`` of one response, parsing it once; every reward here is a function of these.

    ``toolrl = f + c``, ``binary = f * exact``, ``format_dominant = 4 f + (c + 3) / 6``.
    """
    return call_parts(parse_tool_calls(text), gold, format_reward(text))


def call_parts(pred: list | None, gold: list, fmt: float) -> tuple[float, float, float]:
    """:func:`reward_parts` from already parsed calls (``None``: unparsable) and a known format reward.

    For a policy that writes its calls through :func:`render`, ``parse_tool_calls(render(calls)) == calls``,
    so this is the same number without the JSON round trip (tests check it on random outputs).
    """
    if pred is None:
        return fmt, -3.0, 0.0
    if pred == gold:
        return fmt, 3.0, 1.0
    c = correctness_components(gold, pred)
    return fmt, 6.0 * c["score"] / c["s_max"] - 3.0, 0.0


REWARDS = {"toolrl": toolrl_reward, "binary": binary_reward, "format_dominant": format_dominant_reward}
"""the three rewards the chapter compares, by name: ``fn(text, gold) -> float``"""
