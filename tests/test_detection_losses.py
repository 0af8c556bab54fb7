"""ATSS assignment on hand-built anchors and boxes, each loss against hand-computed values, inference."""

import math

import pytest
import torch

from florence_lib.detection.postprocess import InferenceConfig, postprocess
from florence_lib.losses.detection import atss_assign, atss_loss, centerness_target
from florence_lib.models.dyhead import encode_boxes

# One level of four 10x10 anchors in a row (centres x = 5, 15, 25, 35; y = 5) and a coarser level of one.
ROW = torch.tensor([[0.0, 0, 10, 10], [10, 0, 20, 10], [20, 0, 30, 10], [30, 0, 40, 10]])
TWO_LEVELS = torch.cat([ROW, torch.tensor([[0.0, 0, 20, 20]])])


def test_threshold_is_mean_plus_std_of_the_candidates_per_level():
    # Box centre (7, 5). Level 0, top 3 by centre distance: anchors 0, 1, 2 (IoU 80/120, 20/180, 0); level 1: its
    # only anchor (IoU 100/400). Threshold = mean + std (unbiased) of (2/3, 1/9, 0, 1/4) = 0.2569 + 0.2917.
    box = torch.tensor([[2.0, 0, 12, 10]])
    ious = torch.tensor([2 / 3, 1 / 9, 0, 1 / 4])
    assert ious.mean() + ious.std() == pytest.approx(0.5486, abs=1e-4)
    assigned = atss_assign(TWO_LEVELS, [4, 1], box, topk=3)
    assert assigned.tolist() == [0, -1, -1, -1, -1]


def test_candidates_are_the_top_k_by_centre_distance():
    # With topk=1 the only level-0 candidate is anchor 0 and the level-1 anchor is the second: threshold
    # mean + std of (2/3, 1/4) = 0.4583 + 0.2946 = 0.753 > 2/3, so nothing is positive.
    assert atss_assign(TWO_LEVELS, [4, 1], torch.tensor([[2.0, 0, 12, 10]]), topk=1).tolist() == [-1] * 5


def test_anchor_centre_must_lie_inside_the_box():
    # Box [0, 4] x [0, 10]: anchor 0 passes the IoU threshold (0.4 >= 0.364) but its centre x = 5 is outside.
    assert atss_assign(ROW, [4], torch.tensor([[0.0, 0, 4, 10]]), topk=3).tolist() == [-1, -1, -1, -1]


def test_anchor_positive_for_two_boxes_goes_to_the_higher_iou():
    # Anchor 1 is a positive of box A (IoU 90/110 = 0.818 >= 0.748) and of box B (80/120 = 0.667 >= 0.616).
    boxes = torch.tensor([[12.0, 0, 22, 10], [9.0, 0, 19, 10]])  # B first, so index order cannot decide
    assert atss_assign(ROW, [4], boxes, topk=3).tolist() == [-1, 1, -1, -1]
    assert atss_assign(ROW, [4], boxes[:1], topk=3).tolist() == [-1, 0, -1, -1]


def test_no_boxes_and_bad_counts():
    assert atss_assign(ROW, [4], torch.zeros(0, 4)).tolist() == [-1] * 4
    with pytest.raises(ValueError, match="num_anchors"):
        atss_assign(ROW, [3], torch.zeros(0, 4))


def test_centerness_target():
    # centre (5, 5) in [2, 12] x [0, 10]: l, r = 3, 7; t, b = 5, 5
    assert centerness_target(ROW[:1], torch.tensor([[2.0, 0, 12, 10]])).item() == pytest.approx(math.sqrt(3 / 7))


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_atss_loss_against_hand_computed_values():
    target = [{"boxes": torch.tensor([[2.0, 0, 12, 10]]), "labels": torch.tensor([0])}]  # anchor 0 positive
    cls = torch.zeros(1, 4, 1)
    pred = ROW.clone()[None]
    pred[0, 0] = torch.tensor([2.0, 0, 12, 5])  # IoU 0.5 with the box, enclosing box = the box: GIoU loss 0.5
    ctr = torch.ones(1, 4)
    total, logs = atss_loss(cls, pred, ctr, ROW, [4], target, topk=3)
    ln2 = math.log(2)
    focal_pos = 0.25 * 0.5**2 * ln2  # alpha * (1 - p)^2 * CE, p = 0.5
    focal_neg = 0.75 * 0.5**2 * ln2  # (1 - alpha) * p^2 * CE
    t = math.sqrt(3 / 7)
    bce = -(t * math.log(_sigmoid(1.0)) + (1 - t) * math.log(1 - _sigmoid(1.0)))
    assert logs["loss_cls"] == pytest.approx(focal_pos + 3 * focal_neg, rel=1e-5)  # / 1 positive
    assert logs["loss_box"] == pytest.approx(0.5, rel=1e-5)
    assert logs["loss_centerness"] == pytest.approx(bce, rel=1e-5)
    assert logs["num_pos"] == 1
    assert total.item() == pytest.approx(focal_pos + 3 * focal_neg + 2 * 0.5 + bce, rel=1e-5)


def test_atss_loss_without_positives_is_the_negatives_focal_loss_and_backpropagates():
    cls = torch.zeros(1, 4, 2, requires_grad=True)
    pred = ROW.clone()[None].requires_grad_()
    ctr = torch.zeros(1, 4, requires_grad=True)
    total, logs = atss_loss(cls, pred, ctr, ROW, [4], [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}])
    assert total.item() == pytest.approx(8 * 0.75 * 0.25 * math.log(2), rel=1e-5)
    total.backward()
    assert pred.grad is not None and ctr.grad is not None and logs["num_pos"] == 0


def test_postprocess_thresholds_scores_and_suppresses():
    anchors = ROW
    boxes = torch.tensor([[1.0, 1, 9, 9], [1.5, 1, 9, 9], [21, 1, 29, 9], [31, 1, 39, 9]])
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    cls = torch.full((1, 4, 2), logit(0.01))
    cls[0, 0, 1], cls[0, 1, 1], cls[0, 2, 0] = logit(0.9), logit(0.8), logit(0.6)  # anchor 3 below 0.05
    outputs = {"cls_logits": cls, "centerness": torch.zeros(1, 4), "anchors": anchors, "num_anchors": [4],
               "box_deltas": encode_boxes(boxes, anchors)[None]}
    det = postprocess(outputs, [(10, 40)], InferenceConfig())[0]
    # anchor 1's box overlaps anchor 0's (IoU 0.94 > 0.6) in the same class: suppressed
    assert det["labels"].tolist() == [1, 0]
    torch.testing.assert_close(det["scores"], torch.tensor([0.45, 0.3]))  # sigmoid(cls) * sigmoid(0)
    torch.testing.assert_close(det["boxes"], boxes[[0, 2]])
    none = postprocess({**outputs, "cls_logits": torch.full((1, 4, 2), -9.0)}, [(10, 40)])[0]
    assert none["boxes"].shape == (0, 4)
