"""From the ATSS head's outputs to detections: ATSS's inference, on torchvision's batched NMS.

Per image and level, positions whose classification probability exceeds ``score_threshold`` are candidates
(the reference thresholds the classifier alone, before centerness); the score of a candidate is
``sigmoid(cls) * sigmoid(centerness)``; the best ``pre_nms_top_n`` per level are decoded, clipped to the image,
merged over levels, suppressed class by class (``batched_nms`` at IoU ``nms_threshold``) and the best
``detections_per_image`` kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import batched_nms, clip_boxes_to_image, remove_small_boxes

from ..models.dyhead import decode_boxes


@dataclass
class InferenceConfig:
    score_threshold: float = 0.05
    pre_nms_top_n: int = 1000
    nms_threshold: float = 0.6
    detections_per_image: int = 100


@torch.no_grad()
def postprocess(outputs: dict, image_sizes: list[tuple[int, int]], cfg: InferenceConfig | None = None
                ) -> list[dict[str, torch.Tensor]]:
    """``[{"boxes" [N, 4] xyxy, "scores" [N], "labels" [N]}]`` per image from a detector's forward outputs;
    ``image_sizes`` are the (height, width) of the unpadded images."""
    cfg = cfg or InferenceConfig()
    cls, ctr, anchors = outputs["cls_logits"].float(), outputs["centerness"].float(), outputs["anchors"]
    boxes_all = decode_boxes(outputs["box_deltas"].float(), anchors)
    probs = cls.sigmoid()
    scores_all = probs * ctr.sigmoid()[..., None]
    results = []
    for i, size in enumerate(image_sizes):
        boxes_i, scores_i, labels_i, start = [], [], [], 0
        for n in outputs["num_anchors"]:
            level = slice(start, start + n)
            start += n
            keep = probs[i, level] > cfg.score_threshold  # [n, K]
            scores = scores_all[i, level][keep]
            if scores.numel() == 0:
                continue
            top = scores.topk(min(cfg.pre_nms_top_n, scores.numel())).indices
            where = keep.nonzero()[top]
            scores_i.append(scores[top])
            labels_i.append(where[:, 1])
            boxes_i.append(boxes_all[i, level][where[:, 0]])
        if not scores_i:
            results.append({"boxes": torch.zeros(0, 4), "scores": torch.zeros(0),
                            "labels": torch.zeros(0, dtype=torch.long)})
            continue
        boxes = clip_boxes_to_image(torch.cat(boxes_i), size)
        scores, labels = torch.cat(scores_i), torch.cat(labels_i)
        valid = remove_small_boxes(boxes, 1e-3)
        boxes, scores, labels = boxes[valid], scores[valid], labels[valid]
        kept = batched_nms(boxes, scores, labels, cfg.nms_threshold)[: cfg.detections_per_image]
        results.append({"boxes": boxes[kept].cpu(), "scores": scores[kept].cpu(), "labels": labels[kept].cpu()})
    return results
