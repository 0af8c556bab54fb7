"""Where does world VQA's accuracy come from? METER's fusion on three kinds of image tokens, one run each.

Issue 14's diagnosis: the same co-attention fusion, VQA head, questions, schedule and (frozen) text tower, with
the image tokens taken from
- ``coswin``: METER as built (the CoSwin tower from a UniCL checkpoint, the configured stage);
- ``cnn``: a 3-layer CNN trained from scratch, max-pooled to the 3x3 grid (a convolutional yardstick);
- ``oracle``: ground-truth attributes per grid cell (present, shape, colour, size) as summed embeddings: the
  ceiling of the fusion itself, with perfect perception;
- ``blind``: the question only (zero images), the baseline every other row must beat.
Prints one JSON line per variant: accuracy overall and per question type, and the seconds it took.

    python benchmarks/bench_vqa_ceilings.py --variants oracle cnn coswin blind --steps 300 \\
        --unicl-checkpoint /path/to/unicl/checkpoints [--set vqa.optim.batch_size=16 ...]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn

from florence_lib.config import load_config
from florence_lib.models.meter import METERForVQA, sincos_2d
from florence_lib.runs import RunDir
from florence_lib.vl import train as vl_train
from florence_lib.vl.config import VLConfig

GRID = 3  # the world's 3x3 cells


def attribute_grids(world, split: str, scenes: int, image_size: int) -> list[torch.Tensor]:  # noqa: ANN001
    """Per question, a [4, 9] LongTensor: (present, shape + 1, colour + 1, size + 1) of each cell, 0 if empty."""
    out = []
    for i in range(scenes):
        scene = world.scene(split, i, image_size=image_size)
        grid = torch.zeros(4, GRID * GRID, dtype=torch.long)
        for o in scene.objects:
            grid[:, o.cell] = torch.tensor([1, o.shape + 1, o.colour + 1, o.size + 1])
        out += [grid] * len(scene.qa)
    return out


class OracleTokens(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(16, width) for _ in range(4))

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        tokens = sum(table(grid[:, j]) for j, table in enumerate(self.tables))
        return tokens + sincos_2d(GRID, GRID, tokens.shape[-1], tokens.device)


class CNNTokens(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(GRID))
        self.map = nn.Linear(128, width)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.map(self.net(images).flatten(2).transpose(1, 2))
        return tokens + sincos_2d(GRID, GRID, tokens.shape[-1], tokens.device)


def model_factory(variant: str):  # noqa: ANN201 - a METERForVQA subclass
    class Variant(METERForVQA):
        def __init__(self, cfg, num_answers: int) -> None:  # noqa: ANN001
            super().__init__(cfg, num_answers)
            if variant in ("oracle", "cnn"):  # under meter.: the fusion's learning rate
                self.meter.tokens = (OracleTokens if variant == "oracle" else CNNTokens)(cfg.width)
                tokens = self.meter.tokens
                # instance attributes outside nn.Module's registry shadow METER's methods; the feature cache
                # then holds the inputs themselves (grids or pixels) and the tokens are computed every step
                object.__setattr__(self.meter, "stage_map", lambda images: images)
                object.__setattr__(self.meter, "image_tokens",
                                   lambda images, stage_map=None: tokens(images if stage_map is None else stage_map))
                self.meter.image_encoder.requires_grad_(False)
    return Variant


def run(variant: str, cfg: VLConfig, data: vl_train.VQAData, world) -> dict:  # noqa: ANN001
    if variant == "oracle":
        for dataset, split, n in ((data.train, "train", cfg.vqa.scenes), (data.test, "test", cfg.vqa.test_scenes)):
            for sample, grid in zip(dataset.samples, attribute_grids(world, split, n, cfg.image_size), strict=True):
                sample.setdefault("pixels", sample["image"])
                sample["image"] = grid
    else:
        for dataset in (data.train, data.test):
            for sample in dataset.samples:
                sample["image"] = sample.get("pixels", sample["image"])
    vl_train.METERForVQA = model_factory(variant)
    loaded.clear()
    t0 = time.perf_counter()
    out = vl_train.finetune_vqa(cfg, RunDir.create(name=f"bench-vqa-{variant}"), data, blind=variant == "blind")
    if variant in ("coswin", "blind") and cfg.unicl_checkpoint is not None and not loaded:
        raise RuntimeError(f"{variant}: the UniCL image tower was not loaded")
    return {"variant": variant, "steps": cfg.vqa.optim.steps, "seconds": round(time.perf_counter() - t0, 1),
            "image_tower": f"unicl ({loaded[0]} tensors)" if loaded else "random",
            **{k: round(v, 3) for k, v in out["metrics"].items()}}


loaded: list[int] = []  # tensors copied from the UniCL checkpoint by the latest finetune_vqa
_load_unicl = vl_train.load_unicl_image_encoder


def _counting_load(meter, checkpoint) -> int:  # noqa: ANN001
    loaded.append(_load_unicl(meter, checkpoint))
    return loaded[-1]


vl_train.load_unicl_image_encoder = _counting_load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["oracle", "cnn", "coswin", "blind"],
                        choices=["oracle", "cnn", "coswin", "blind"])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--unicl-checkpoint")
    parser.add_argument("--set", nargs="*", default=[], help="VLConfig overrides, key=value")
    args = parser.parse_args()
    cfg = load_config(VLConfig, command="vl", profile=args.profile,
                      overrides=[f"vqa.optim.steps={args.steps}", *args.set])
    cfg.unicl_checkpoint = args.unicl_checkpoint
    _, _, world = vl_train.setup(cfg)
    data = vl_train.vqa_data(cfg, world)
    print(json.dumps({"variant": "majority", **{k: round(v, 3) for k, v in vl_train.majority_baseline(data).items()}}))
    for variant in args.variants:
        print(json.dumps(run(variant, cfg, data, world)), flush=True)


if __name__ == "__main__":
    main()
