"""rlbook.tasks.grid_boxes: scenes, IoU/GIoU, matching, the criterion reward and its baselines, AP."""

import numpy as np
import pytest

from rlbook.tasks import grid_boxes as GB


def test_scene_has_targets_of_the_instructed_colour():
    for s in GB.make_scenes(50, 0):
        assert s.image.shape == (3, GB.SIZE, GB.SIZE) and 1 <= len(s.boxes) <= 2
        want = np.array(GB.RGB[GB.COLOURS[s.colour]], dtype=np.float32)
        for x0, y0, x1, y1 in s.boxes:
            assert 0 <= x0 <= x1 < GB.SIZE and 0 <= y0 <= y1 < GB.SIZE
            assert np.allclose(s.image[:, y0, x0], want) and np.allclose(s.image[:, y1, x1], want)
        assert [tuple(b) for b in s.boxes] == sorted(map(tuple, s.boxes), key=lambda b: (b[1], b[0]))


def test_iou_and_giou_hand_computed():
    a = np.array([[0, 0, 1, 1]])  # 2x2 = 4 cells
    b = np.array([[1, 1, 2, 2], [0, 0, 1, 1], [4, 4, 5, 5]])
    assert np.allclose(GB.box_iou(a, b), [[1 / 7, 1.0, 0.0]])
    # GIoU: enclosing box of a and b[2] is 6x6 = 36, union 8 -> 0 - 28/36
    assert np.allclose(GB.box_giou(a, b), [[1 / 7 - (9 - 7) / 9, 1.0, -28 / 36]])


def test_match_is_one_to_one_and_optimal():
    gt = np.array([[0, 0, 3, 3], [8, 8, 11, 11]])
    pred = np.array([[8, 8, 11, 11], [0, 0, 3, 4], [0, 0, 3, 3]])
    rows, cols = GB.match(pred, gt)
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(0, 1), (2, 0)]


def test_phi_is_the_official_modify_tensor():
    u = np.array([0.2, 0.5, 0.6, 0.75, 0.8])
    assert GB.phi(u, 0.5, 0.75).tolist() == [0.0, 0.5, 0.6, 0.75, 1.0]
    assert GB.phi(u, 0.5, 0.5).tolist() == [0.0, 0.5, 1.0, 1.0, 1.0]  # a step at 0.5 (the recall count)


def test_parse_tokens():
    boxes, ok = GB.parse([1, 2, 3, 4, 5, 6, 7, 8, GB.EOS])
    assert ok and boxes.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    boxes, ok = GB.parse([3, 2, 1, 4, 5, 6, 7, 8, GB.EOS])  # x0 > x1: dropped, not well formed
    assert not ok and boxes.tolist() == [[5, 6, 7, 8]]
    boxes, ok = GB.parse([1, 2, 3, 4, 5])  # no EOS
    assert not ok and boxes.tolist() == [[1, 2, 3, 4]]
    assert GB.boxes_to_tokens(np.array([[1, 2, 3, 4]])) == [1, 2, 3, 4, GB.EOS]


def test_criterion_reward_hand_computed():
    gt = np.array([[0, 0, 3, 3], [8, 8, 11, 11]])
    exact = GB.criterion_reward(gt, gt, True)
    assert exact == {"reward": 1.0, "format": 1.0, "recall": 1.0, "precision": 1.0}
    one = GB.criterion_reward(gt[:1], gt, True)  # one of two targets, perfectly
    assert one["recall"] == 0.5 and one["precision"] == 1.0 and abs(one["reward"] - 2.5 / 3) < 1e-12
    spray = np.concatenate([gt, [[4, 4, 6, 6], [12, 12, 14, 14]]])  # two extra boxes
    r = GB.criterion_reward(spray, gt, True)
    assert r["recall"] == 1.0 and r["precision"] == 0.5  # unmatched boxes dilute precision
    empty = GB.criterion_reward(np.zeros((0, 4), int), gt, True)
    assert empty["recall"] == 0.0 and empty["precision"] == 0.0 and abs(empty["reward"] - 1 / 3) < 1e-12


def test_progressive_rules_are_stricter():
    gt = np.array([[0, 0, 9, 9]])
    pred = np.array([[0, 0, 9, 7]])  # IoU = GIoU = 0.8
    plain = GB.criterion_reward(pred, gt, True, GB.PLAIN)
    s1 = GB.criterion_reward(pred, gt, True, GB.STAGE1)
    s2 = GB.criterion_reward(pred, gt, True, GB.STAGE2)
    assert abs(plain["precision"] - 0.8) < 1e-12 and s1["precision"] == 1.0  # above 0.75: full credit
    assert abs(s2["precision"] - 0.8) < 1e-12  # between 0.75 and 0.9: its IoU
    loose = np.array([[0, 0, 9, 5]])  # IoU 0.6
    assert GB.criterion_reward(loose, gt, True, GB.STAGE1)["recall"] == 1.0
    assert GB.criterion_reward(loose, gt, True, GB.STAGE2) == {"reward": 1 / 3, "format": 1.0, "recall": 0.0,
                                                               "precision": 0.0}


def test_recall_only_reward_is_hackable_and_binary_is_not():
    gt = np.array([[0, 0, 3, 3]])
    guess = np.array([[0, 0, 3, 1]])
    many = np.concatenate([guess, [[0, 0, 3, 3], [5, 5, 9, 9]]])
    assert GB.recall_only_reward(many, gt, True) == 1.0 > GB.recall_only_reward(guess, gt, True)
    assert GB.binary_reward(many, gt, True) == 0.0 and GB.binary_reward(gt, gt, True) == 1.0
    assert GB.binary_reward(gt, gt, False) == 0.0
    assert GB.criterion_reward(many, gt, True)["reward"] < GB.criterion_reward(gt, gt, True)["reward"]


def test_average_precision_hand_computed():
    gts = [np.array([[0, 0, 3, 3]]), np.array([[5, 5, 8, 8]])]
    perfect = GB.average_precision(gts, [np.array([0.9]), np.array([0.8])], gts, 0.5)
    assert perfect == pytest.approx(1.0)
    # image 0: a wrong box ranked first, then the right one; image 1: nothing
    preds = [np.array([[10, 10, 12, 12], [0, 0, 3, 3]]), np.zeros((0, 4), int)]
    ap = GB.average_precision(preds, [np.array([0.9, 0.5]), np.zeros(0)], gts, 0.5)
    assert ap == pytest.approx(0.5 * 0.5)  # recall 0.5 reached at precision 0.5
