"""Detection speed: the Dynamic Head detector (tiny preset, 256 px) against torchvision's FCOS head on the same
CoSwin + FPN features, and the CPU deformable conv against ``torchvision.ops.deform_conv2d``, in the same run.

Both detectors share the backbone, the pyramid, the ATSS loss and the inference (ATSS post-processing); only the
head differs: 2 Dynamic Head blocks + 3x3 predictors against FCOS's two 4-conv GroupNorm towers. Training is
forward + backward + AdamW step; inference is forward + post-processing under ``no_grad``. Process CPU time is
reported beside wall time (a busy shared machine slows wall time, not CPU time); ratios to the reference measured
in the same run are what survive another machine.

The deformable conv (batch 8, 64 and 128 channels, 32x32, 3x3 modulated, forward + backward) is timed with
torchvision's kernel, the CPU path and a plain conv interleaved in one process, ``--deform-repeats`` times each;
medians, the load average before and after, the largest relative differences to torchvision (output and every
gradient) and a profile of the CPU path are recorded.

    python benchmarks/bench_detection.py [--threads 2] [--side 256] [--batch 4] [--repeats 3] [--deform-only]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torchvision
from provenance import provenance
from torchvision.models.detection.fcos import FCOSHead

from florence_lib.detection.postprocess import postprocess
from florence_lib.detection.train import detection_objective
from florence_lib.models.deform_conv import deform_conv2d
from florence_lib.models.dyhead import create_detector, detector_config, level_anchors

RESULTS = Path(__file__).parent / "results"


class FCOSHeadDetector(torch.nn.Module):
    """The same backbone and pyramid as a DyHead detector, with torchvision's FCOS head instead."""

    def __init__(self, base: torch.nn.Module) -> None:
        super().__init__()
        self.base = base
        self.head = FCOSHead(base.config.channels, num_anchors=1, num_classes=base.config.num_classes)

    def forward(self, images: torch.Tensor) -> dict:
        base = self.base
        stages = base.backbone.forward_features(images)["features"][1:4]
        feats = {f"p{i + 3}": norm(x) for i, (norm, x) in enumerate(zip(base.stage_norms, stages))}
        levels = list(base.fpn(feats).values())
        out = self.head(levels)
        sizes = [tuple(x.shape[-2:]) for x in levels]
        return {"cls_logits": out["cls_logits"], "box_deltas": out["bbox_regression"],
                "centerness": out["bbox_ctrness"].squeeze(-1),
                "anchors": level_anchors(sizes, list(base.strides), base.config.anchor_scale, images.device),
                "num_anchors": [h * w for h, w in sizes]}


def _timed(fn, repeats: int) -> dict[str, float]:
    fn()  # warm-up (allocations, mask caches)
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return {"wall_s": min(wall), "cpu_s": min(cpu)}


def bench_detectors(side: int, batch: int, repeats: int) -> dict[str, dict[str, float]]:
    torch.manual_seed(0)
    images = torch.randn(batch, 3, side, side)
    g = torch.Generator().manual_seed(0)
    targets = []
    for _ in range(batch):
        xy = torch.rand(4, 2, generator=g) * side * 0.7
        targets.append({"boxes": torch.cat([xy, xy + side * 0.1 + torch.rand(4, 2, generator=g) * side * 0.2], 1),
                        "labels": torch.randint(0, 8, (4,), generator=g)})
    batch_dict = {"images": images, "targets": targets}
    out = {}
    for name in ("dyhead", "fcos_head"):
        dyhead = create_detector(detector_config("dyhead_tiny"))
        model = dyhead if name == "dyhead" else FCOSHeadDetector(dyhead)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

        def train_step(model=model, opt=opt):
            model.train()
            loss, _ = detection_objective(model, batch_dict)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        def infer(model=model):
            model.eval()
            with torch.no_grad():
                postprocess(model(images), [(side, side)] * batch)

        t, i = _timed(train_step, repeats), _timed(infer, repeats)
        out[name] = {"train_images_per_s": batch / t["wall_s"], "train_images_per_cpu_s": batch / t["cpu_s"],
                     "infer_images_per_s": batch / i["wall_s"], "infer_images_per_cpu_s": batch / i["cpu_s"],
                     "parameters_M": sum(p.numel() for p in model.parameters()) / 1e6}
    return out


def _max_relative_errors(ours: list[torch.Tensor], ref: list[torch.Tensor]) -> dict[str, float]:
    names = ("output", "d_input", "d_offset", "d_mask", "d_weight")
    return {n: ((a - b).abs().max() / b.abs().max()).item() for n, a, b in zip(names, ours, ref, strict=True)}


def _top_ops(fn, rows: int = 8) -> dict[str, float]:
    """Self CPU milliseconds of the most expensive aten ops in one call of ``fn``."""
    with torch.profiler.profile() as prof:
        fn()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return {"total_ms": total / 1000, **{e.key: e.self_cpu_time_total / 1000 for e in events[:rows]}}


def bench_deform_conv(repeats: int, b: int = 8, c: int = 64, side: int = 32) -> dict:
    """Forward + backward of a 3x3 modulated deformable conv; the implementations interleaved, medians reported."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, c, side, side, generator=g).requires_grad_()
    offset = (3 * torch.randn(b, 18, side, side, generator=g)).requires_grad_()
    mask = torch.rand(b, 9, side, side, generator=g).requires_grad_()
    weight = (0.05 * torch.randn(c, c, 3, 3, generator=g)).requires_grad_()
    impls = ("torchvision", "gather", "plain_conv")

    def step(impl: str) -> list[torch.Tensor]:
        for t in (x, offset, mask, weight):
            t.grad = None
        if impl == "plain_conv":
            y = torch.nn.functional.conv2d(x, weight, padding=1)
        else:
            y = deform_conv2d(x, offset, weight, None, padding=1, mask=mask, impl=impl)
        y.backward(torch.ones_like(y))
        return [y.detach()] + [t.grad for t in (x, offset, mask, weight) if t.grad is not None]

    outputs = {impl: step(impl) for impl in impls}  # warm-up, and the results compared below
    wall: dict[str, list[float]] = {impl: [] for impl in impls}
    cpu: dict[str, list[float]] = {impl: [] for impl in impls}
    load = [os.getloadavg()[0]]
    for _ in range(repeats):
        for impl in impls:
            w, t = time.perf_counter(), time.process_time()
            step(impl)
            wall[impl].append(1000 * (time.perf_counter() - w))
            cpu[impl].append(1000 * (time.process_time() - t))
    load.append(os.getloadavg()[0])
    out: dict = {impl: {"wall_ms_median": statistics.median(wall[impl]), "cpu_ms_median": statistics.median(cpu[impl]),
                        "wall_ms": wall[impl]} for impl in impls}
    out["speedup_vs_torchvision"] = {k: out["torchvision"][k] / out["gather"][k]
                                     for k in ("wall_ms_median", "cpu_ms_median")}
    out["max_relative_error_vs_torchvision"] = _max_relative_errors(outputs["gather"], outputs["torchvision"])
    out["load_average_1min_before_after"] = load
    out["gather_profile_self_cpu_ms"] = _top_ops(lambda: step("gather"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--deform-repeats", type=int, default=7, help="interleaved repeats of each deform conv")
    parser.add_argument("--deform-only", action="store_true",
                        help="only the deformable conv (its entry in results/detection.json is replaced)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = RESULTS / "detection.json"
    results = json.loads(path.read_text()) if args.deform_only and path.exists() else {}
    results.update({"machine": platform.processor() or platform.machine(), "threads": args.threads,
                    "torch": torch.__version__, "torchvision": torchvision.__version__,
                    "load_average_1min": os.getloadavg()[0]})
    for c in (64, 128):
        results[f"deform_conv_fwd_bwd_b8_c{c}_32x32"] = bench_deform_conv(args.deform_repeats, c=c)
        print(f"deform conv, {c} channels:", json.dumps(results[f"deform_conv_fwd_bwd_b8_c{c}_32x32"], indent=2))
    if not args.deform_only:
        results[f"detector_tiny_{args.side}px_batch{args.batch}"] = bench_detectors(args.side, args.batch,
                                                                                    args.repeats)
    results.update(provenance())  # host, date, cpu, load at the end (of a --deform-only run: its own)
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
