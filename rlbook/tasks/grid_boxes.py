r"""Grid "images" with rectangles: a visual-grounding toy, box IoU, Vision-R1's criterion reward and its baselines, AP.

The toy of the Vision-R1 chapter (Zhan et al. 2025, arXiv 2503.18013). An image is a ``16 x 16`` RGB grid with
1-2 *target* rectangles of the instructed colour (red or blue), 0-1 rectangle of the other colour and clutter
pixels; the instruction is "find red" or "find blue". An answer is a list of boxes ``(x0, y0, x1, y1)``, inclusive
integer cell coordinates in ``0..15``.

Rewards for one completion with predicted boxes :math:`P` and ground-truth boxes :math:`G` (checked against the
official ``Vision-R1/EasyR1/examples/reward_function/visionr1.py`` of github.com/jefferyZhan/Griffon):

- predictions and targets are matched one-to-one (Hungarian, :func:`match`, the official ``BoxPriorMatcher``:
  cost = L1 distance - GIoU, class term dropped: one class), giving :math:`\min(|P|,|G|)` matched pairs whose
  quality is their **GIoU** (the official code returns the GIoU, not the IoU);
- **recall** :math:`R_{rec}=\psi\big(|\{\text{matched pairs with } u>\xi\}|/|G|\big)` (``recall_reward``);
- **precision** :math:`R_{prec}=\sum_{\text{matched}}\phi(u)/|P|` (``precision_reward``): unmatched
  predictions count in :math:`|P|` and add nothing, so spraying extra boxes lowers it;
- **format** :math:`R_{fmt}\in\{0,1\}` (``dual_format_reward``): the answer is well formed;
- :math:`R=(R_{fmt}+R_{rec}+R_{prec})/3` (``compute_score``).

:math:`\phi_{[a,b]}(u)` is the official ``modify_tensor``/``modify_list``: 0 below ``a``, 1 above ``b``, ``u`` in
between. *Progressive rule refinement* (the paper's Sec. 3.3): without it (the official ``step=None``) the recall
threshold is :math:`\xi=0.5`, :math:`\psi` and :math:`\phi` are the identity (clipped at 0); with it, stage 1 uses
:math:`\psi=\phi_{[0.5,0.75]}` and :math:`\phi=\phi_{[0.5,0.75]}` ("differentiation policy"), stage 2
(the official ``step >= 1500``) raises :math:`\xi=0.75` and :math:`\phi=\phi_{[0.75,0.9]}` ("staged progression").

Baselines: a **binary** reward (every target found at IoU :math:`\ge 0.5` and no extra box) and a
**recall-only** reward (mean over targets of the best IoU of *any* prediction: hackable by predicting many boxes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIZE = 16
"""grid side (cells); coordinates are 0..SIZE-1"""
COLOURS = ("red", "blue")
"""target colours (instruction 0 = red, 1 = blue)"""
RGB = {"red": (1.0, 0.1, 0.1), "blue": (0.1, 0.2, 1.0), "clutter": (0.2, 0.8, 0.2)}
"""pixel colours of rectangles and clutter"""


@dataclass
class Scene:
    """One image and its instruction."""

    image: np.ndarray
    """``(3, SIZE, SIZE)`` float32 RGB in [0, 1]"""
    colour: int
    """instructed colour: 0 red, 1 blue"""
    boxes: np.ndarray
    """target boxes ``(k, 4)`` int ``(x0, y0, x1, y1)`` inclusive, sorted by ``(y0, x0)``"""
    distractors: np.ndarray
    """boxes of the other colour ``(m, 4)``"""


def _overlaps(b, others, margin: int = 1) -> bool:
    return any(not (b[2] + margin < o[0] or o[2] + margin < b[0] or b[3] + margin < o[1] or o[3] + margin < b[1])
               for o in others)


def make_scene(rng: np.random.Generator, max_targets: int = 2, clutter: int = 6) -> Scene:
    """A random scene: 1..max_targets target rectangles, 0-1 distractor, ``clutter`` random green pixels."""
    colour = int(rng.integers(2))
    n_t, n_d = int(rng.integers(1, max_targets + 1)), int(rng.integers(0, 2))
    boxes: list[tuple[int, int, int, int]] = []
    while len(boxes) < n_t + n_d:
        w, h = rng.integers(3, 8, size=2)
        x0, y0 = rng.integers(0, SIZE - w + 1), rng.integers(0, SIZE - h + 1)
        b = (int(x0), int(y0), int(x0 + w - 1), int(y0 + h - 1))
        if not _overlaps(b, boxes):
            boxes.append(b)
    img = np.zeros((3, SIZE, SIZE), dtype=np.float32)
    for _ in range(clutter):
        y, x = rng.integers(0, SIZE, size=2)
        img[:, y, x] = RGB["clutter"]
    targets, distractors = boxes[:n_t], boxes[n_t:]
    for bs, name in ((targets, COLOURS[colour]), (distractors, COLOURS[1 - colour])):
        for x0, y0, x1, y1 in bs:
            img[:, y0 : y1 + 1, x0 : x1 + 1] = np.array(RGB[name], dtype=np.float32)[:, None, None]
    order = sorted(targets, key=lambda b: (b[1], b[0]))
    return Scene(img, colour, np.array(order, dtype=np.int64).reshape(-1, 4),
                 np.array(distractors, dtype=np.int64).reshape(-1, 4))


def make_scenes(n: int, seed: int, **kw) -> list[Scene]:
    """``n`` scenes from ``np.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    return [make_scene(rng, **kw) for _ in range(n)]


# ---------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------
def _area(t: np.ndarray) -> np.ndarray:
    return np.clip(t[:, 2] - t[:, 0] + 1, 0, None) * np.clip(t[:, 3] - t[:, 1] + 1, 0, None)


def _inter(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt + 1, 0, None)
    return wh[..., 0] * wh[..., 1]


def box_iou(a, b) -> np.ndarray:
    r"""IoU of inclusive integer boxes: ``a: (N, 4)``, ``b: (M, 4)`` → ``(N, M)`` float64.

    Cell boxes ``(x0, y0, x1, y1)`` cover ``(x1-x0+1)(y1-y0+1)`` cells:
    :math:`\mathrm{IoU}=|a\cap b|/(|a|+|b|-|a\cap b|)`. Arrays or tensors in, numpy out.
    """
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    inter = _inter(a, b)
    return inter / (_area(a)[:, None] + _area(b)[None, :] - inter)


def box_giou(a, b) -> np.ndarray:
    r"""Generalised IoU (Rezatofighi et al. 2019), the quality the official matcher returns: ``(N, M)``.

    :math:`\mathrm{GIoU}=\mathrm{IoU}-|C\setminus(a\cup b)|/|C|` with :math:`C` the smallest enclosing box.
    """
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    inter = _inter(a, b)
    union = _area(a)[:, None] + _area(b)[None, :] - inter
    c = (np.maximum(a[:, None, 2:], b[None, :, 2:]) - np.minimum(a[:, None, :2], b[None, :, :2]) + 1).prod(-1)
    return inter / union - (c - union) / c


def match(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of predictions to targets (official ``BoxPriorMatcher``: Hungarian on L1 - GIoU).

    ``pred: (N, 4)``, ``gt: (M, 4)`` → index arrays ``(rows, cols)`` of the ``min(N, M)`` matched pairs.
    """
    from scipy.optimize import linear_sum_assignment

    pred, gt = np.asarray(pred, np.float64).reshape(-1, 4), np.asarray(gt, np.float64).reshape(-1, 4)
    if len(pred) == 0 or len(gt) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    cost = np.abs(pred[:, None, :] - gt[None, :, :]).sum(-1) - box_giou(pred, gt)
    return linear_sum_assignment(cost)


def phi(u, low: float, high: float) -> np.ndarray:
    r"""The official ``modify_tensor`` :math:`\phi_{[a,b]}(u)`: 0 where :math:`u<a`, 1 where :math:`u>b`, else :math:`u`."""
    u = np.asarray(u, np.float64)
    return np.where(u < low, 0.0, np.where(u > high, 1.0, u))


# ---------------------------------------------------------------------------------
# answers: token sequences <-> boxes
# ---------------------------------------------------------------------------------
EOS = SIZE
"""the end token (coordinate tokens are 0..SIZE-1)"""
MAX_BOXES = 4
"""longest answer: MAX_BOXES boxes of 4 tokens, then EOS"""


def boxes_to_tokens(boxes: np.ndarray) -> list[int]:
    """``(k, 4)`` → ``[x0, y0, x1, y1, ..., EOS]``."""
    return [int(v) for b in boxes for v in b] + [EOS]


def parse(tokens: list[int]) -> tuple[np.ndarray, bool]:
    """Tokens → ``(valid boxes (k, 4), well_formed)``.

    Well formed: ends with EOS at a box boundary and every box has ``x0 <= x1`` and ``y0 <= y1``.
    Degenerate boxes are dropped (as the official ``extract`` drops ``x1 <= x0`` boxes).
    """
    toks = list(tokens)
    ended = EOS in toks
    if ended:
        toks = toks[: toks.index(EOS)]
    n = len(toks) // 4
    raw = np.array(toks[: 4 * n], dtype=np.int64).reshape(-1, 4)
    ok = (raw[:, 0] <= raw[:, 2]) & (raw[:, 1] <= raw[:, 3])
    well_formed = ended and len(toks) % 4 == 0 and bool(ok.all())
    return raw[ok], well_formed


# ---------------------------------------------------------------------------------
# rewards
# ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rules:
    """Thresholds of the criterion reward (one stage of progressive rule refinement)."""

    recall_thr: float = 0.5
    """ξ: a matched target counts as recalled when its GIoU exceeds this"""
    recall_phi: tuple[float, float] = (0.0, 1.0)
    """ψ applied to the recall fraction: (low, high) of phi ((0, 1) = identity)"""
    precision_phi: tuple[float, float] = (0.0, 1.0)
    """φ applied to each matched GIoU in the precision term ((0, 1) = identity clipped at 0)"""


PLAIN = Rules()
"""the official ``step=None`` rules: ξ = 0.5, no differentiation"""
STAGE1 = Rules(0.5, (0.5, 0.75), (0.5, 0.75))
"""progressive rule refinement, first stage (official ``step < 1500``)"""
STAGE2 = Rules(0.75, (0.5, 0.75), (0.75, 0.9))
"""progressive rule refinement, second stage (official ``step >= 1500``): stricter"""


def criterion_reward(pred: np.ndarray, gt: np.ndarray, well_formed: bool, rules: Rules = PLAIN) -> dict[str, float]:
    r"""Vision-R1's criterion reward of one answer: ``{"reward", "format", "recall", "precision"}``.

    .. math:: R=\tfrac13\Big(R_{fmt}+\psi\Big(\frac{|\{(p,g)\in M: u_{pg}>\xi\}|}{|G|}\Big)
              +\frac{1}{|P|}\sum_{(p,g)\in M}\phi(u_{pg})\Big)

    with :math:`M` the one-to-one matching and :math:`u` its GIoU (official ``compute_score``,
    ``recall_reward``, ``precision_reward``). An empty answer scores recall = precision = 0 (there are
    always targets here). ``pred: (N, 4)``, ``gt: (M, 4)`` int arrays.
    """
    fmt = float(well_formed)
    if len(pred) == 0:
        return {"reward": fmt / 3.0, "format": fmt, "recall": 0.0, "precision": 0.0}
    rows, cols = match(pred, gt)
    u = box_giou(pred, gt)[rows, cols]  # (min(N, M),)
    tp = float(phi(u, rules.recall_thr, rules.recall_thr).sum())  # modify_tensor(min = max = ξ): a step at ξ
    recall = float(phi(tp / len(gt), *rules.recall_phi))
    precision = float(phi(u, *rules.precision_phi).sum() / len(pred))
    return {"reward": (fmt + recall + precision) / 3.0, "format": fmt, "recall": recall, "precision": precision}


def binary_reward(pred: np.ndarray, gt: np.ndarray, well_formed: bool, thr: float = 0.5) -> float:
    """1 if the answer is well formed, has exactly ``|G|`` boxes and matches every target at IoU >= ``thr``, else 0."""
    if not well_formed or len(pred) != len(gt):
        return 0.0
    rows, cols = match(pred, gt)
    return float(bool((box_iou(pred, gt)[rows, cols] >= thr).all()))


def recall_only_reward(pred: np.ndarray, gt: np.ndarray, well_formed: bool) -> float:
    r"""Mean over targets of the best IoU of *any* prediction, :math:`\frac1{|G|}\sum_g\max_{p}\mathrm{IoU}(p,g)`.

    No precision term and no one-to-one matching: more boxes never lower it (the hackable baseline).
    """
    if len(pred) == 0:
        return 0.0
    return float(box_iou(pred, gt).max(0).mean())


# ---------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------
def average_precision(preds: list[np.ndarray], scores: list[np.ndarray], gts: list[np.ndarray], thr: float) -> float:
    """COCO/VOC-style AP at IoU ``thr`` (all-point interpolation) over a data set.

    ``preds[i]: (k_i, 4)`` predicted boxes of image ``i`` with confidences ``scores[i]: (k_i,)``;
    ``gts[i]: (m_i, 4)``. Detections are sorted by confidence over the whole set and greedily matched
    to the unmatched target of highest IoU in their image (IoU >= ``thr``: true positive).
    """
    n_gt = sum(len(g) for g in gts)
    det = [(float(s), i, j) for i, ss in enumerate(scores) for j, s in enumerate(ss)]
    det.sort(key=lambda t: -t[0])
    used = [np.zeros(len(g), dtype=bool) for g in gts]
    ious = [box_iou(p, g) if len(p) and len(g) else None
            for p, g in zip(preds, gts)]
    tp = np.zeros(len(det))
    for k, (_, i, j) in enumerate(det):
        if ious[i] is None:
            continue
        cand = np.where(~used[i], ious[i][j], -1.0)
        best = int(cand.argmax())
        if cand[best] >= thr:
            used[i][best] = True
            tp[k] = 1.0
    if n_gt == 0:
        return 0.0
    ctp = np.cumsum(tp)
    recall = ctp / n_gt
    precision = ctp / np.arange(1, len(det) + 1)
    # all-point interpolation: precision envelope, integrate over recall
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    for k in range(len(mpre) - 2, -1, -1):
        mpre[k] = max(mpre[k], mpre[k + 1])
    idx = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))
