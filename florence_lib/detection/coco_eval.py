"""COCO-style detection metrics through pycocotools' ``COCOeval``, from in-memory ground truth and detections.

Ground truth and detections of any source (the world, COCO, a merged set) are written as COCO dictionaries, so
that AP, AP50, AP75, APs/m/l and per-class AP mean exactly what they mean on COCO (101-point interpolation,
IoU 0.50:0.95, at most 100 detections per image). A metric with no ground truth in its range (e.g. APl on
96-px scenes) is None, not COCOeval's -1.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _xywh(boxes: torch.Tensor) -> list[list[float]]:
    b = boxes.detach().cpu().double()
    return torch.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], -1).tolist()


def coco_ground_truth(targets: Sequence[dict[str, torch.Tensor]], image_sizes: Sequence[tuple[int, int]],
                      categories: Sequence[str]) -> COCO:
    """A pycocotools COCO of ``targets[i]`` (``boxes`` xyxy, ``labels`` 0..K-1) as image ``i``; category id
    ``k + 1`` is ``categories[k]``."""
    images, annotations = [], []
    for i, (target, (h, w)) in enumerate(zip(targets, image_sizes, strict=True)):
        images.append({"id": i, "height": int(h), "width": int(w)})
        for box, label in zip(_xywh(target["boxes"]), target["labels"].tolist(), strict=True):
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(label) + 1,
                                "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations,
                    "categories": [{"id": k + 1, "name": n} for k, n in enumerate(categories)]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def coco_results(detections: Sequence[dict[str, torch.Tensor]]) -> list[dict[str, Any]]:
    """Detections (``boxes``, ``scores``, ``labels`` per image ``i``) as a COCO results list."""
    out = []
    for i, det in enumerate(detections):
        for box, score, label in zip(_xywh(det["boxes"]), det["scores"].tolist(), det["labels"].tolist(),
                                     strict=True):
            out.append({"image_id": i, "category_id": int(label) + 1, "bbox": [round(v, 3) for v in box],
                        "score": round(float(score), 5)})
    return out


def _none_if_missing(v: float) -> float | None:
    return None if v < 0 else float(v)


def coco_evaluate(gt: COCO, results: list[dict[str, Any]], category_ids: Sequence[int] | None = None
                  ) -> dict[str, Any]:
    """AP, AP50, AP75, APs, APm, APl and ``per_class_AP`` (name -> AP) over ``category_ids`` (default: all)."""
    cats = sorted(gt.getCatIds()) if category_ids is None else list(category_ids)
    if not results:
        return {**dict.fromkeys(STAT_NAMES, 0.0), "per_class_AP": {gt.cats[c]["name"]: 0.0 for c in cats}}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.params.catIds = cats
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    metrics: dict[str, Any] = {n: _none_if_missing(v) for n, v in zip(STAT_NAMES, ev.stats[:6], strict=True)}
    precision = ev.eval["precision"]  # [iou, recall, category, area, max_dets]
    per_class = {}
    for k, c in enumerate(cats):
        p = precision[:, :, k, 0, -1]
        per_class[gt.cats[c]["name"]] = float(np.mean(p[p > -1])) if (p > -1).any() else None
    metrics["per_class_AP"] = per_class
    return metrics


def save_results(path: str | Path, results: list[dict[str, Any]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results), encoding="utf-8")
    return path
