"""The world_shapes source (issue 10): the world's scenes labelled by shape with colour-free prompts, its
colour-destroying augmentation on its own images only, its labels in the one UniCL label space, its config."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from florence_lib.config import ConfigError, from_dict
from florence_lib.data.mixing import MixedPairs
from florence_lib.data.transforms import CLIP_MEAN, CLIP_STD, colour_free_ops, train_transform
from florence_lib.data.world import World, WorldConfig
from florence_lib.data.world_datasets import class_texts
from florence_lib.data.world_render import COLOUR_NAMES, SHAPES
from florence_lib.training.config import PretrainConfig
from florence_lib.training.pretrain import phase_parts, phase_sources, phase_transform, plan_phases, pretrain

MEAN = torch.tensor(CLIP_MEAN)[:, None, None]
STD = torch.tensor(CLIP_STD)[:, None, None]


def micro(sources: list[dict], steps: tuple[int, int] = (2, 1)) -> PretrainConfig:
    return from_dict(PretrainConfig, {
        "data": {"sources": sources, "train_size": 48, "val_size": 8, "image_size": 32, "batch_size": 4},
        "optim": {"warmup_steps": 1}, "threads": 1, "device": "cpu",
        "phases": [{"name": "stage1", "steps": steps[0], "image_label_fraction": 0.5},
                   {"name": "stage2", "steps": steps[1]}],
        "log_every": 1, "eval_every": 0, "checkpoint_every": 0})


def opened(cfg: PretrainConfig, phase: int = 0):
    p = plan_phases(cfg)[phase]
    return phase_parts(cfg, p, phase_transform(cfg, p)), p


def test_shape_labels_name_no_colour_and_own_a_label_range(tmp_path):
    # a CSV whose captions equal a shape prompt and a colour-shape class text: they take those classes' labels
    (tmp_path / "img").mkdir()
    with open(tmp_path / "pairs.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption"])
        for i, caption in enumerate(["a photo of a circle.", "a red circle", "a circle near a wall"]):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / "img" / f"{i}.png")
            writer.writerow([f"img/{i}.png", caption])
    cfg = micro([{"kind": "world"}, {"kind": "world_shapes", "size": 40},
                 {"kind": "pairs", "path": str(tmp_path / "pairs.csv")}])
    (world, shapes, pairs), _ = opened(cfg)
    assert shapes.size == 40 and shapes.num_labels == len(SHAPES) == 8
    assert world.offset + world.num_labels <= shapes.offset  # after the 64 classes and the world's caption ids
    assert world.num_labels > 64 and shapes.offset >= 64
    layout_world = World(WorldConfig(seed=cfg.data.world_seed))
    ds = shapes.dataset
    for i, (text, local) in enumerate(zip(ds.texts, ds.labels)):
        subject = layout_world.layout("train", i).objects[0]
        assert local == subject.shape and SHAPES[subject.shape] in text  # the subject's shape, prompted
        assert not any(colour in text.split() or colour + "." in text.split() for colour in COLOUR_NAMES), text
        assert shapes.label(local) == shapes.offset + local  # no world text equals a shape prompt: not merged
    assert all(ds.is_image_label)
    prompts = class_texts(World(WorldConfig(label_by="shape")))
    assert prompts["a photo of a circle."] == SHAPES.index("circle")
    by_caption = dict(zip(pairs.dataset.pairs.captions, pairs.dataset.labels))
    assert pairs.label(by_caption["a photo of a circle."]) == shapes.label(SHAPES.index("circle"))
    assert pairs.label(by_caption["a red circle"]) == world.label(class_texts(layout_world)["a red circle"])
    assert pairs.label(by_caption["a circle near a wall"]) in range(pairs.offset, pairs.offset + pairs.num_labels)
    # through the mix: every shape sample keeps its shape's global label
    mixed = MixedPairs([world, shapes])
    samples = [mixed[j] for j in range(world.size, world.size + 12)]
    named = [next(n for n in SHAPES if n in s["text"].rstrip(".").split()) for s in samples]
    assert [s["source"] for s in samples] == [1] * 12
    assert [s["label"] - shapes.offset for s in samples] == [SHAPES.index(n) for n in named]


def test_colour_free_augmentation_touches_only_the_world_shapes_images():
    cfg = micro([{"kind": "world"}, {"kind": "world_shapes", "colour_free": 1.0}])
    (world, shapes), phase = opened(cfg)
    plain = phase_transform(cfg, phase)
    scene = World(WorldConfig(seed=cfg.data.world_seed, image_size=32)).scene("train", 5).image
    changed, dominant = 0, set()
    for k in range(40):
        torch.manual_seed(k)
        expected = plain(scene)
        torch.manual_seed(k)
        assert torch.equal(world.dataset[5]["image"], expected)  # the world's images: the phase transform alone
        torch.manual_seed(k)
        image = shapes.dataset[5]["image"]
        changed += not torch.allclose(image, expected, atol=1e-4)
        dominant.add(int((image * STD + MEAN).mean((1, 2)).argmax()))
    assert changed >= 36  # strength 1: almost every image recoloured (p(no op) < 1%)
    assert len(dominant) >= 2  # the dominant colour channel is no longer a property of the scene
    assert world.dataset.texts[5] != shapes.dataset.texts[5]  # one scene, two views: caption or colour-shape vs shape
    off = micro([{"kind": "world"}, {"kind": "world_shapes", "colour_free": 0.0}])
    (_, plain_shapes), _ = opened(off)
    torch.manual_seed(3)
    expected = plain(scene)
    torch.manual_seed(3)
    assert torch.equal(plain_shapes.dataset[5]["image"], expected)
    grey = train_transform(32, scale=(1.0, 1.0), colour_free=1.0)
    assert grey(scene).shape == (3, 32, 32)
    with pytest.raises(ValueError, match="colour_free"):
        colour_free_ops(1.5)


def test_world_shapes_joins_the_image_label_phases_unless_phases_says_otherwise():
    cfg = micro([{"kind": "world"}, {"kind": "world_shapes"}])
    stage1, stage2 = plan_phases(cfg)
    assert [s.kind for s in phase_sources(cfg, stage1)] == ["world", "world_shapes"]
    assert [s.kind for s in phase_sources(cfg, stage2)] == ["world"]  # stage 2: no image-label data
    both = micro([{"kind": "world"}, {"kind": "world_shapes", "phases": ["stage1", "stage2"]}])
    assert [s.kind for s in phase_sources(both, plan_phases(both)[1])] == ["world", "world_shapes"]
    late = micro([{"kind": "world", "phases": ["stage1"]}, {"kind": "world_shapes", "phases": ["stage2"]}])
    assert [[s.kind for s in phase_sources(late, p)] for p in plan_phases(late)] == [["world"], ["world_shapes"]]


def test_world_shapes_options_are_refused_when_bad():
    with pytest.raises(ConfigError, match=r"data\.sources\[1\]\.colour_free: 1\.5"):
        micro([{"kind": "world"}, {"kind": "world_shapes", "colour_free": 1.5}])
    with pytest.raises(ConfigError, match=r"data\.sources\[0\]\.colour_free: only a world_shapes source"):
        micro([{"kind": "world", "colour_free": 0.5}])
    with pytest.raises(ConfigError, match=r"data\.sources\[0\]\.path: the world_shapes source takes no path"):
        micro([{"kind": "world_shapes", "path": "x"}])
    with pytest.raises(ConfigError, match=r"data\.sources\[1\]\.phases: \['stage3'\] name no phase"):
        micro([{"kind": "world"}, {"kind": "world_shapes", "phases": ["stage3"]}])


def test_pretrains_with_world_shapes_in_both_stages(tmp_path: Path):
    cfg = micro([{"kind": "world"}, {"kind": "world_shapes", "phases": ["stage1", "stage2"], "weight": 2}],
                steps=(2, 2))
    results = pretrain(cfg, tmp_path / "run")
    assert results["steps"] == 4 and np.isfinite(results["final_loss"])
    counts = results["data_counts"]
    assert counts["samples_0_world"] > 0 and counts["samples_1_world_shapes"] > 0
    assert counts["samples_0_world"] + counts["samples_1_world_shapes"] == 16
