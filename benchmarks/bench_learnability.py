"""Can the image tower learn the world's classes? Supervised CoSwin vs timm's Swin of the same size, one run.

The learnability check of issue 10: if supervision cannot teach a tower the world's 64 colour-shape classes, no
contrastive run will. Scenes hold one object (``WorldConfig(min_objects=1, max_objects=1)``), so each label is
unambiguous. Every tower gets the same data, batches, AdamW and one-cycle schedule and a linear head on its
pooled feature; the towers step in lockstep (one step each, in turn), so load on a shared machine hits all alike
and the seconds per 1,000 steps are comparable within the run. Reported per tower: test top-1 over the 64 classes
(56 occur outside the held-out compositions), colour and shape accuracy, and the time per 1,000 steps.

    python benchmarks/bench_learnability.py [--towers coswin_tiny swin_tiny] [--steps 1000] [--image-size 48]

``--domain sketch|thermal|xray`` is the in-domain ceiling of notebook 06's few-shot sets instead: the scenes those
sets are drawn from (1-4 objects, the subject the largest, the luminance domains' visibility rule), rendered in
that domain and labelled by the subject's shape (8 classes), supervised on the domain's own training scenes. If a
supervised tower cannot tell the shapes apart in a domain, no frozen pretrained feature will in 5 shots.

The reference ``swin_<preset>`` is timm's ``SwinTransformer`` with the CoSwin preset's widths, depths, heads and
window and a patch-4 embedding. ``resnet18`` (torchvision) is a convolutional yardstick.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from florence_lib.data.world import World, WorldClassification, WorldConfig
from florence_lib.models.presets import IMAGE_ENCODERS, create_image_encoder
from florence_lib.runs import environment_report

RESULTS = Path(__file__).parent / "results"
N_COLOURS = 8  # class = shape * 8 + colour (World.classes order)


def world_tensors(split: str, size: int, image_size: int, seed: int, domain: str = "clean"
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """All scenes of a split as one image tensor and one label tensor (rendered once, reused by every tower).
    ``clean``: one-object scenes, 64 colour-shape classes; another domain: the few-shot sets' scenes, by shape."""
    if domain == "clean":
        world = World(WorldConfig(seed=seed, image_size=image_size, min_objects=1, max_objects=1))
    else:
        world = World(WorldConfig(seed=seed, image_size=image_size, label_by="shape"))
    data = WorldClassification(world, split, size, domain=domain)
    images = torch.stack([data[i][0] for i in range(size)])
    return images, torch.tensor(data.targets)


class Classifier(nn.Module):
    """A tower's pooled feature, then a linear head over the classes."""

    def __init__(self, tower: nn.Module, features: int, classes: int) -> None:
        super().__init__()
        self.tower, self.head = tower, nn.Linear(features, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.tower(x))


def build_tower(name: str, classes: int, image_size: int, overrides: dict[str, Any]) -> nn.Module:
    """``coswin_*`` (ours), ``swin_*`` (timm Swin matching coswin_*) or ``resnet18``."""
    if name.startswith("coswin_"):
        tower = create_image_encoder(name, **overrides)
        return Classifier(tower, tower.num_features, classes)
    if name.startswith("swin_"):
        from timm.models.swin_transformer import SwinTransformer

        cfg = IMAGE_ENCODERS.create("co" + name)
        return SwinTransformer(img_size=image_size, patch_size=4, embed_dim=cfg.embed_dim, depths=cfg.depths,
                               num_heads=cfg.num_heads, window_size=cfg.window_size, mlp_ratio=cfg.mlp_ratio,
                               drop_path_rate=cfg.drop_path_rate, num_classes=classes)
    if name == "resnet18":
        from torchvision.models import resnet18

        return resnet18(num_classes=classes)
    raise ValueError(f"towers: unknown tower {name!r} (coswin_<preset>, swin_<preset> or resnet18)")


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 250,
             by_shape: bool = False) -> dict[str, float]:
    model.eval()
    pred = torch.cat([model(images[i:i + batch]).argmax(1) for i in range(0, len(images), batch)])
    model.train()
    if by_shape:  # the label is the shape
        return {"top1": (pred == labels).float().mean().item(), "colour": None,
                "shape": (pred == labels).float().mean().item()}
    return {"top1": (pred == labels).float().mean().item(),
            "colour": (pred % N_COLOURS == labels % N_COLOURS).float().mean().item(),
            "shape": (pred // N_COLOURS == labels // N_COLOURS).float().mean().item()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    train_x, train_y = world_tensors("train", args.train_size, args.image_size, args.world_seed, args.domain)
    test_x, test_y = world_tensors("test", args.test_size, args.image_size, args.world_seed, args.domain)
    by_shape = args.domain != "clean"
    classes = len(World(WorldConfig(label_by="shape" if by_shape else "shape_colour")).classes)
    overrides = json.loads(args.overrides)
    models, opts, scheds, seconds = {}, {}, {}, {}
    for name in args.towers:
        torch.manual_seed(args.seed)
        models[name] = build_tower(name, classes, args.image_size, overrides if name.startswith("co") else {})
        opts[name] = torch.optim.AdamW(models[name].parameters(), lr=args.lr, weight_decay=args.weight_decay)
        scheds[name] = torch.optim.lr_scheduler.OneCycleLR(opts[name], args.lr, total_steps=args.steps,
                                                           pct_start=0.1)
        seconds[name] = 0.0
    gen = torch.Generator().manual_seed(args.seed)
    curves: dict[str, list] = {name: [] for name in args.towers}
    for step in range(1, args.steps + 1):
        idx = torch.randint(len(train_x), (args.batch_size,), generator=gen)
        x, y = train_x[idx], train_y[idx]
        for name, model in models.items():
            t = time.perf_counter()
            loss = F.cross_entropy(model(x), y)
            opts[name].zero_grad(set_to_none=True)
            loss.backward()
            opts[name].step()
            scheds[name].step()
            seconds[name] += time.perf_counter() - t
            if step % args.eval_every == 0 or step == args.steps:
                curves[name].append({"step": step, "loss": loss.item(), **evaluate(model, test_x, test_y, by_shape=by_shape)})
                print(f"{name} step {step} loss {loss.item():.3f} {curves[name][-1]}", flush=True)
        if step % args.eval_every == 0 or step == args.steps:  # a killed run still leaves its curve so far
            write(report(args, models, curves, seconds, step))
    return report(args, models, curves, seconds, args.steps)


def report(args: argparse.Namespace, models: dict, curves: dict, seconds: dict, step: int) -> dict[str, Any]:
    rows = [{"tower": name, **{k: v for k, v in curves[name][-1].items() if k not in ("step", "loss")},
             "params": sum(p.numel() for p in model.parameters()),
             "seconds_per_1000_steps": 1000 * seconds[name] / step, "curve": curves[name]}
            for name, model in models.items()]
    return {"args": vars(args), "steps_done": step, "threads": torch.get_num_threads(),
            "load_average": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "host": os.uname().nodename, "rows": rows, "environment": environment_report()}


def write(report: dict[str, Any]) -> None:
    name = report["args"]["name"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2))
    (RESULTS / f"{name}.md").write_text(markdown(report))


def markdown(report: dict[str, Any]) -> str:
    a = report["args"]
    what = ("the world's 64 classes" if a["domain"] == "clean" else
            f"the subject's shape (8 classes) in the {a['domain']} domain")
    scenes = "One object per scene" if a["domain"] == "clean" else "Notebook 06's scenes (1-4 objects)"
    lines = [f"# Learnability: supervised image towers on {what} ({report['host']}, {report['date']})",
             "", f"{scenes}, {a['image_size']} px, {a['train_size']} train / {a['test_size']} test "
             f"scenes, batch {a['batch_size']}, AdamW lr {a['lr']} one-cycle over {a['steps']} steps "
             f"(at step {report['steps_done']}), "
             f"{report['threads']} thread(s), load average {report['load_average'][0]:.1f} (shared machine: "
             "compare seconds within this table only).", "",
             "| tower | params | top-1 | colour | shape | s / 1,000 steps | top-1 curve (step: top-1) |",
             "|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        curve = ", ".join(f"{c['step']}: {c['top1']:.2f}" for c in r["curve"])
        colour = "-" if r["colour"] is None else f"{r['colour']:.3f}"  # None: labelled by shape only
        lines.append(f"| {r['tower']} | {r['params'] / 1e6:.2f}M | {r['top1']:.3f} | {colour} "
                     f"| {r['shape']:.3f} | {r['seconds_per_1000_steps']:.0f} | {curve} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--towers", nargs="+", default=["coswin_tiny", "swin_tiny"])
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--domain", default="clean", choices=["clean", "sketch", "thermal", "xray", "photo"],
                        help="clean: one-object scenes, 64 classes; else notebook 06's scenes by shape, rendered so")
    parser.add_argument("--train-size", type=int, default=10_000)
    parser.add_argument("--test-size", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=1e-3, help="2e-3 destabilises timm Swin (measured)")
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--overrides", default="{}", help="JSON changes to the CoSwin preset, e.g. '{\"window_size\": 3}'")
    parser.add_argument("--name", default="learnability", help="results/<name>.json and .md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = run(args)
    write(result)
    print(markdown(result))


if __name__ == "__main__":
    main()
