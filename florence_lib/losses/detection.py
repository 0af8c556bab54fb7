"""ATSS targets and losses (Zhang et al. 2020, "Bridging the Gap Between Anchor-based and Anchor-free
Detection via Adaptive Training Sample Selection"), written from the paper on ``torchvision.ops``.

Assignment, per image and ground-truth box ``g``:

1. on each pyramid level, the ``topk`` (9) anchors whose centres are closest to ``g``'s centre are candidates;
2. the IoU threshold of ``g`` is the mean + standard deviation of its candidates' IoUs;
3. a candidate whose IoU reaches the threshold and whose centre lies inside ``g`` is a positive of ``g``;
4. an anchor that is a positive of several boxes goes to the one it overlaps most.

Losses, normalised by the number of positives (classification, centerness) or by the sum of the positives'
centerness targets (regression), as ATSS does: sigmoid focal loss (gamma 2, alpha 0.25) over every anchor and
class, GIoU loss of the decoded boxes weighted by the centerness target, binary cross-entropy of centerness.
The standard deviation is the unbiased one (``torch.std``), the paper does not say; mmdetection does the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import box_iou, generalized_box_iou_loss, sigmoid_focal_loss

INSIDE_EPS = 0.01
"""An anchor centre counts as inside a box when it is at least this many pixels from every edge."""


def _centres(boxes: torch.Tensor) -> torch.Tensor:
    return torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], -1)


def atss_assign(anchors: torch.Tensor, num_anchors: list[int], gt_boxes: torch.Tensor, topk: int = 9
                ) -> torch.Tensor:
    """The index of the box each anchor is a positive of, or -1 (``anchors [A, 4]`` xyxy, levels in the order
    of ``num_anchors``; ``gt_boxes [G, 4]``). Returns int64 ``[A]``."""
    a, g = anchors.shape[0], gt_boxes.shape[0]
    if sum(num_anchors) != a:
        raise ValueError(f"num_anchors: {num_anchors} sums to {sum(num_anchors)}, there are {a} anchors")
    assigned = torch.full((a,), -1, dtype=torch.long, device=anchors.device)
    if g == 0:
        return assigned
    ious = box_iou(anchors, gt_boxes)  # [A, G]
    centres = _centres(anchors)
    distances = torch.cdist(centres, _centres(gt_boxes))  # [A, G]
    candidates, start = [], 0
    for n in num_anchors:
        k = min(topk, n)
        _, idx = distances[start:start + n].topk(k, dim=0, largest=False)  # [k, G]
        candidates.append(idx + start)
        start += n
    candidates = torch.cat(candidates)  # [C, G]
    candidate_ious = ious.gather(0, candidates)
    std = candidate_ious.std(0) if candidates.shape[0] > 1 else torch.zeros(g, device=anchors.device)
    threshold = candidate_ious.mean(0) + std
    cx, cy = centres[candidates, 0], centres[candidates, 1]  # [C, G]
    inside = torch.stack([cx - gt_boxes[:, 0], cy - gt_boxes[:, 1], gt_boxes[:, 2] - cx, gt_boxes[:, 3] - cy]
                         ).amin(0) > INSIDE_EPS
    positive = (candidate_ious >= threshold) & inside  # [C, G]
    # Scatter into an [A, G] IoU table of the positives only, then each anchor takes its best box.
    table = torch.full_like(ious, -1.0)
    cols = torch.arange(g, device=anchors.device).expand_as(candidates)
    table[candidates[positive], cols[positive]] = candidate_ious[positive]
    best_iou, best = table.max(1)
    assigned[best_iou >= 0] = best[best_iou >= 0]
    return assigned


def centerness_target(anchors: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """FCOS centerness of each anchor centre in its box: sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))."""
    cx, cy = (anchors[:, 0] + anchors[:, 2]) / 2, (anchors[:, 1] + anchors[:, 3]) / 2
    left, right = cx - boxes[:, 0], boxes[:, 2] - cx
    top, bottom = cy - boxes[:, 1], boxes[:, 3] - cy
    lr = torch.stack([left, right], -1).clamp(min=0)
    tb = torch.stack([top, bottom], -1).clamp(min=0)
    ratio = (lr.amin(-1) / lr.amax(-1).clamp(min=1e-6)) * (tb.amin(-1) / tb.amax(-1).clamp(min=1e-6))
    return ratio.sqrt()


@dataclass
class ATSSLossWeights:
    cls: float = 1.0
    box: float = 2.0  # ATSS's REG_LOSS_WEIGHT
    centerness: float = 1.0


def atss_loss(
    cls_logits: torch.Tensor,
    pred_boxes: torch.Tensor,
    centerness_logits: torch.Tensor,
    anchors: torch.Tensor,
    num_anchors: list[int],
    targets: list[dict[str, torch.Tensor]],
    *,
    topk: int = 9,
    alpha: float = 0.25,
    gamma: float = 2.0,
    weights: ATSSLossWeights | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The ATSS loss of a batch: ``cls_logits [B, A, K]``, decoded ``pred_boxes [B, A, 4]`` (xyxy pixels),
    ``centerness_logits [B, A]``; ``targets[i]`` has ``boxes [G, 4]`` and ``labels [G]`` (0..K-1).

    Returns the weighted total and its parts (``loss_cls``, ``loss_box``, ``loss_centerness``, ``num_pos``).
    """
    w = weights or ATSSLossWeights()
    b = cls_logits.shape[0]
    cls_target = torch.zeros_like(cls_logits)
    pos_pred, pos_box, pos_anchor, pos_ctr = [], [], [], []
    for i in range(b):
        boxes, labels = targets[i]["boxes"], targets[i]["labels"]
        assigned = atss_assign(anchors, num_anchors, boxes, topk)
        pos = (assigned >= 0).nonzero().squeeze(1)
        if pos.numel() == 0:
            continue
        matched = assigned[pos]
        cls_target[i, pos, labels[matched]] = 1.0
        pos_pred.append(pred_boxes[i, pos])
        pos_box.append(boxes[matched])
        pos_anchor.append(anchors[pos])
        pos_ctr.append(centerness_logits[i, pos])
    num_pos = sum(p.shape[0] for p in pos_pred)
    loss_cls = sigmoid_focal_loss(cls_logits, cls_target, alpha=alpha, gamma=gamma, reduction="sum")
    loss_cls = loss_cls / max(num_pos, 1)
    if num_pos == 0:  # nothing to regress; keep the graph connected so every parameter gets a (zero) grad
        zero = pred_boxes.sum() * 0 + centerness_logits.sum() * 0
        loss_box, loss_ctr = zero, zero
    else:
        pred, gt, anc = torch.cat(pos_pred), torch.cat(pos_box), torch.cat(pos_anchor)
        ctr_target = centerness_target(anc, gt)
        giou = generalized_box_iou_loss(pred, gt, reduction="none")
        loss_box = (giou * ctr_target).sum() / ctr_target.sum().clamp(min=1e-6)
        loss_ctr = F.binary_cross_entropy_with_logits(torch.cat(pos_ctr), ctr_target, reduction="sum") / num_pos
    total = w.cls * loss_cls + w.box * loss_box + w.centerness * loss_ctr
    return total, {"loss_cls": loss_cls.item(), "loss_box": loss_box.item(), "loss_centerness": loss_ctr.item(),
                   "num_pos": float(num_pos) / b}
