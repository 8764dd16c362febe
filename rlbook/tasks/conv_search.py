r"""A toy conversational search task: a passage corpus, a numpy BM25, conversations with a gold passage,
and ConvSearch-R1's rank-incentive reward (arXiv 2505.15776; official code BeastyZ/ConvSearch-R1,
``verl/verl/utils/reward_score/rewrite_r1.py``).

Corpus: fictional companies whose names have two words (``"iron zorvat"``; 10 first words x 8
second words = 80 entities), five aspects each (founder, location, product, rival, year) = 400
passages. Every passage names its entity, uses its aspect's vocabulary (``founded``, ``located``...)
and common filler; a rival passage also names another company. So a query that names the aspect
only ties with the 80 passages of that aspect, half a name narrows it to about ten, the full name
and the aspect find the gold passage at rank 1.

A conversation: a history (``"tell me about iron zorvat please"``, an assistant turn, two
chit-chat turns, sometimes a turn about another company) and a context-dependent current query (``"who founded it ?"``). A
*rewrite* is the query a retriever sees; the gold passage is (entity, aspect).

Reward (the official ``cal_reward`` and ``compute_score``):

.. math::
   r(\text{rank})=\begin{cases}-\frac19\text{rank}+\frac{19}{9} & 1\le\text{rank}\le10\\
   -\frac1{90}\text{rank}+\frac{10}{9} & 10<\text{rank}\le100\\ 0 & \text{otherwise}\end{cases}
   \qquad R(o)=\begin{cases}-0.1 & o\ \text{does not match}\ \texttt{<think>..</think>\n<rewrite>..</rewrite>}\\
   r(\text{rank of gold}\mid\text{rewrite}(o)) & \text{otherwise}\end{cases}

Ranks here are *pessimistic* under ties: the gold passage's rank is the number of passages scoring at
least as much as it (a passage with score 0 is never retrieved: rank ``D + 1``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

FIRST = ("blue", "north", "iron", "silver", "red", "stone", "oak", "lake", "sun", "frost")
SECOND = ("zorvat", "kelmor", "dravik", "pellan", "quorin", "talvex", "brimon", "sarnik")
ASPECTS = ("founder", "location", "product", "rival", "year")
ASPECT_WORDS = {
    "founder": ("founded", "founder", "by"),
    "location": ("located", "headquarters", "city"),
    "product": ("product", "makes", "sells"),
    "rival": ("rival", "competitor", "competes"),
    "year": ("year", "established", "since"),
}
"""the vocabulary every passage of an aspect shares"""
QUERIES = {
    "founder": "who founded it ?",
    "location": "where is it located ?",
    "product": "what product does it have ?",
    "rival": "who is its main rival ?",
    "year": "which year was it established ?",
}
"""the context-dependent current query of each aspect (names the aspect, not the company)"""
VALUES = {
    "founder": ("anna", "boris", "chen", "dana", "emil", "fatima", "goran", "hana", "ivan", "jun"),
    "location": ("paris", "lagos", "lima", "oslo", "delhi", "quito", "perth", "riga", "seoul", "tunis"),
    "product": ("engines", "lamps", "boots", "radios", "clocks", "paper", "cables", "tiles", "pumps", "glass"),
    "year": ("1901", "1923", "1947", "1958", "1966", "1971", "1984", "1990", "2003", "2011"),
}
FILLER = ("the", "a", "company", "is", "known", "for", "its", "and", "of", "in", "with", "that", "has", "many",
          "people", "market", "business", "today", "work", "growth")
OPENERS = ("tell me about {e} please", "i want to know about the company {e}", "what do you know about {e} ?")
REPLIES = ("{e} is a company in the {v} business .", "sure , {e} is well known .", "{e} has many customers .")
DISTRACT = ("i also heard of {d} before", "my friend works at {d}")
CHAT = ("thanks , that sounds really interesting to me", "ok great , i am writing a short report for my class",
        "nice , my family often talks about such things at dinner", "good to hear , i was curious about this all week",
        "cool , please keep the answers short and simple")
"""chit-chat turns: words the retriever ignores or that match everything (the sparse reward's haystack)"""

FORMAT_RE = re.compile(r"^<think>.*?</think>\n<rewrite>.*?</rewrite>$", re.DOTALL | re.MULTILINE)
"""the official format pattern (``format_reward`` in rewrite_r1.py)"""
REWRITE_RE = re.compile(r"<rewrite>(.*?)</rewrite>", re.DOTALL)


def tokenize(text: str) -> list[str]:
    """Lower-cased whitespace tokens."""
    return text.lower().split()


# ---------------------------------------------------------------------------------
# BM25 in numpy
# ---------------------------------------------------------------------------------
class BM25:
    r"""Okapi BM25 over a tokenised corpus, as a dense ``(V, D)`` weight matrix.

    .. math:: s(q,d)=\sum_{w\in q}\mathrm{idf}(w)\,\frac{f(w,d)\,(k_1+1)}{f(w,d)+k_1\big(1-b+b\,|d|/\overline{|d|}\big)},
              \qquad \mathrm{idf}(w)=\log\Big(1+\frac{D-n_w+0.5}{n_w+0.5}\Big)

    (Lucene's idf; ``k1=0.9, b=0.4``, Pyserini's defaults, which the paper's BM25 retriever uses).
    A query counts repeated words once per occurrence. Unknown words are ignored.
    """

    def __init__(self, docs: list[list[str]], k1: float = 0.9, b: float = 0.4):
        self.vocab = {w: i for i, w in enumerate(sorted({w for d in docs for w in d}))}
        V, D = len(self.vocab), len(docs)
        tf = np.zeros((V, D))
        for j, d in enumerate(docs):
            for w in d:
                tf[self.vocab[w], j] += 1
        dl = tf.sum(0)
        df = (tf > 0).sum(1)
        self.idf = np.log(1.0 + (D - df + 0.5) / (df + 0.5))  # (V,)
        self.weights = self.idf[:, None] * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / dl.mean()))  # (V, D)
        self.n_docs = D

    def query_counts(self, queries: list[list[str]]) -> np.ndarray:
        """``(N, V)`` word counts of tokenised queries (unknown words dropped)."""
        q = np.zeros((len(queries), len(self.vocab)))
        for i, toks in enumerate(queries):
            for w in toks:
                j = self.vocab.get(w)
                if j is not None:
                    q[i, j] += 1
        return q

    def scores(self, queries: list[list[str]]) -> np.ndarray:
        """``(N, D)`` BM25 scores."""
        return self.query_counts(queries) @ self.weights

    def rank_of(self, queries: list[list[str]], gold: np.ndarray) -> np.ndarray:
        """Pessimistic rank of passage ``gold[i]`` for query ``i``: ``#{d : s_d >= s_gold}``; ``D + 1`` if ``s_gold = 0``."""
        s = self.scores(queries)  # (N, D)
        g = s[np.arange(len(gold)), gold][:, None]
        rank = (s >= g - 1e-9).sum(1)
        return np.where(g[:, 0] > 0, rank, self.n_docs + 1)


# ---------------------------------------------------------------------------------
# rewards
# ---------------------------------------------------------------------------------
def rank_incentive(rank) -> np.ndarray:
    """The official piecewise-linear rank reward ``cal_reward``: r(1)=2, r(10)=1, r(100)=0, 0 beyond (and for rank < 1)."""
    rank = np.asarray(rank, dtype=float)
    return np.where((rank >= 1) & (rank <= 10), (-1 / 9) * rank + (19 / 9),
                    np.where((rank > 10) & (rank <= 100), (-1 / 90) * rank + (10 / 9), 0.0))


def recall_at(rank, k: int = 1) -> np.ndarray:
    """Sparse retrieval metric: 1 if the gold passage is in the top ``k``."""
    return (np.asarray(rank) <= k).astype(float)


def mrr_at(rank, k: int = 3) -> np.ndarray:
    """Reciprocal rank cut at ``k``: ``1/rank`` if ``rank <= k`` else 0."""
    rank = np.asarray(rank, dtype=float)
    return np.where(rank <= k, 1.0 / np.maximum(rank, 1.0), 0.0)


def format_ok(text: str) -> bool:
    """The official format check: ``^<think>...</think>\\n<rewrite>...</rewrite>$``."""
    return FORMAT_RE.match(text) is not None


def parse_rewrite(text: str) -> str | None:
    """The text inside the first ``<rewrite>...</rewrite>``, or ``None``."""
    m = REWRITE_RE.search(text)
    return m.group(1) if m else None


def text_reward(text: str, rank: int | None) -> float:
    """``R(o)``: -0.1 if the format fails (the official ``compute_score``), else the rank reward of ``rank``."""
    if not format_ok(text) or rank is None:
        return -0.1
    return float(rank_incentive(rank))


# ---------------------------------------------------------------------------------
# corpus and conversations
# ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Conversation:
    """One conversational search instance."""

    history: tuple[str, ...]
    """the earlier turns, oldest first"""
    query: str
    """the context-dependent current query"""
    gold: int
    """index of the gold passage in the corpus"""
    entity: int
    """the company the conversation is about"""
    aspect: str
    """the aspect asked for"""


class ConvSearchTask:
    """The corpus (400 passages), its BM25 index and a conversation sampler with a fixed 20% test split."""

    def __init__(self, seed: int = 0, filler: int = 6, distractor_prob: float = 0.5, chat_turns: int = 2):
        rng = np.random.default_rng([seed, 15776])
        self.entities = [f"{a} {b}" for a in FIRST for b in SECOND]
        E = len(self.entities)
        self.rival = {e: int(rng.choice([x for x in range(E) if x != e])) for e in range(E)}
        self.value = {(e, a): str(rng.choice(VALUES[a])) for e in range(E) for a in ASPECTS if a != "rival"}
        self.passages: list[str] = []
        self.key: list[tuple[int, str]] = []
        for e in range(E):
            for a in ASPECTS:
                v = self.entities[self.rival[e]] if a == "rival" else self.value[(e, a)]
                words = [self.entities[e], *ASPECT_WORDS[a], v, *rng.choice(FILLER, size=filler)]
                order = [0] + list(1 + rng.permutation(len(words) - 1))
                self.passages.append(" ".join(words[i] for i in order))
                self.key.append((e, a))
        self.index = BM25([tokenize(p) for p in self.passages])
        self.distractor_prob = distractor_prob
        self.chat_turns = chat_turns
        self._gold = {k: i for i, k in enumerate(self.key)}
        pairs = np.array([(e, i) for e in range(E) for i in range(len(ASPECTS))])
        test = (pairs[:, 0] * 31 + pairs[:, 1] * 7) % 5 == 0
        self._split = {"train": pairs[~test], "test": pairs[test]}

    def sample(self, n: int, rng: np.random.Generator, split: str = "train") -> list[Conversation]:
        """``n`` conversations about (entity, aspect) pairs of ``split`` (with replacement), random wording."""
        pairs = self._split[split]
        out = []
        for e, ai in pairs[rng.integers(len(pairs), size=n)]:
            e, a = int(e), ASPECTS[int(ai)]
            name = self.entities[e]
            hist = [str(rng.choice(OPENERS)).format(e=name),
                    str(rng.choice(REPLIES)).format(e=name, v=str(rng.choice(VALUES["product"])))]
            for t in rng.choice(len(CHAT), size=self.chat_turns, replace=False):
                hist.insert(int(rng.integers(1, len(hist) + 1)), CHAT[int(t)])
            if rng.random() < self.distractor_prob:
                d = int(rng.choice([x for x in range(len(self.entities)) if x != e]))
                hist.insert(int(rng.integers(0, 3)), str(rng.choice(DISTRACT)).format(d=self.entities[d]))
            out.append(Conversation(tuple(hist), QUERIES[a], self._gold[(e, a)], e, a))
        return out

    def ranks(self, rewrites: list[str], convs: list[Conversation]) -> np.ndarray:
        """Gold-passage rank of each rewrite under BM25 (pessimistic ties)."""
        return self.index.rank_of([tokenize(r) for r in rewrites], np.array([c.gold for c in convs]))
