"""Can METER's inputs be read at all? Linear probes on the frozen towers that world VQA starts from (issue 14).

- image: each CoSwin stage of a UniCL checkpoint, average-pooled to the world's 3x3 cells; a logistic regression
  per cell predicts colour-or-empty and shape-or-empty (scored on all cells and on occupied cells only);
- text: the frozen MiniLM text tower (METER's tiny preset, 2 layers) on the world's questions; a logistic
  regression predicts the question type from the first token's state and from the masked mean of all tokens;
- positions: the share of the 2-D position embedding's energy that differs between cells on the 3x3 grid.
Prints one JSON line per probe.

    python benchmarks/bench_vqa_probes.py --unicl-checkpoint /path/to/unicl/checkpoints [--image-size 48]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from florence_lib.data.tokenizer import Tokenizer
from florence_lib.data.transforms import tensor_transform
from florence_lib.data.world import World, WorldConfig
from florence_lib.models.meter import METER, build_bert, meter_config, sincos_2d
from florence_lib.vl.config import VLConfig
from florence_lib.vl.data import world_question_type
from florence_lib.vl.train import load_unicl_image_encoder, resolve_meter_config


def probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> np.ndarray:
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    clf = LogisticRegression(max_iter=300).fit((train_x - mu) / sd, train_y)
    return clf.predict((test_x - mu) / sd) == test_y


def scenes(world: World, split: str, n: int, size: int) -> tuple[torch.Tensor, np.ndarray]:
    images, labels = [], np.zeros((n, 9, 2), dtype=int)  # per cell: colour + 1, shape + 1 (0: empty)
    for i in range(n):
        scene = world.scene(split, i, image_size=size)
        images.append(tensor_transform()(scene.image))
        for o in scene.objects:
            labels[i, o.cell] = (o.colour + 1, o.shape + 1)
    return torch.stack(images), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unicl-checkpoint", required=True)
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--scenes", type=int, default=600)
    args = parser.parse_args()
    torch.set_num_threads(1)
    world = World(WorldConfig(seed=0, image_size=args.image_size))
    cfg = VLConfig(unicl_checkpoint=args.unicl_checkpoint)
    mcfg = resolve_meter_config(cfg)
    meter = METER(mcfg).eval()
    load_unicl_image_encoder(meter, args.unicl_checkpoint)
    (xtr, ytr), (xte, yte) = (scenes(world, "train", args.scenes, args.image_size),
                              scenes(world, "test", args.scenes // 3, args.image_size))
    with torch.no_grad():
        ftr, fte = (meter.image_encoder.forward_features(x)["features"] for x in (xtr, xte))
    for stage, (a, b) in enumerate(zip(ftr, fte, strict=True)):
        cells = [F.adaptive_avg_pool2d(f, 3).flatten(2).transpose(1, 2).reshape(-1, f.shape[1]).numpy()
                 for f in (a, b)]
        row = {"probe": "image", "stage": stage, "grid": list(a.shape[2:])}
        for k, name in enumerate(("colour", "shape")):
            hit = probe(cells[0], ytr[:, :, k].ravel(), cells[1], yte[:, :, k].ravel())
            occupied = yte[:, :, k].ravel() > 0
            row |= {f"{name}_or_empty": round(hit.mean(), 3), f"{name}_occupied": round(hit[occupied].mean(), 3)}
        print(json.dumps(row), flush=True)
    qa = [qa for i in range(300) for qa in world.scene("train", i, image_size=16).qa]
    types = np.array([world_question_type(q) for q, _ in qa])
    tokens = Tokenizer(40)([q for q, _ in qa])
    with torch.no_grad():
        hidden = build_bert(meter_config("meter_tiny").text).eval()(**tokens).last_hidden_state
    weights = tokens["attention_mask"][..., None].float()
    cut = len(qa) * 2 // 3
    for name, f in (("first_token", hidden[:, 0]), ("mean", (hidden * weights).sum(1) / weights.sum(1))):
        f = f.numpy()
        print(json.dumps({"probe": "text", "pooling": name, "std_per_dim": round(float(f.std(0).mean()), 4),
                          "question_type_acc": round(probe(f[:cut], types[:cut], f[cut:], types[cut:]).mean(), 3)}))
    pos = sincos_2d(3, 3, mcfg.width)
    varying = pos.var(0).sum() / (pos.var(0).sum() + pos.mean(0).pow(2).sum())
    print(json.dumps({"probe": "positions", "grid": [3, 3], "varying_energy_share": round(varying.item(), 3)}))


if __name__ == "__main__":
    main()
