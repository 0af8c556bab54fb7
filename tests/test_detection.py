"""Detection adapter: COCO-style evaluation path, world boxes, training on the engine (overfit, resume), CLI."""

import shutil

import pytest
import torch

from florence_lib.config import ConfigError, from_dict
from florence_lib.detection.coco_eval import coco_evaluate, coco_ground_truth, coco_results
from florence_lib.detection.config import DetectConfig
from florence_lib.detection.data import eval_batches, train_batches, world_source
from florence_lib.runs import RunDir

CATS = ["a", "b", "c"]


def _gt():
    g = torch.Generator().manual_seed(0)
    targets, sizes = [], []
    for _ in range(6):
        xy = torch.rand(4, 2, generator=g) * 60
        wh = 10 + torch.rand(4, 2, generator=g) * 30
        targets.append({"boxes": torch.cat([xy, xy + wh], 1), "labels": torch.randint(0, 3, (4,), generator=g)})
        sizes.append((100, 100))
    return targets, sizes


def test_perfect_predictions_give_ap_one_and_shuffled_ones_less():
    targets, sizes = _gt()
    gt = coco_ground_truth(targets, sizes, CATS)
    perfect = [{"boxes": t["boxes"], "labels": t["labels"], "scores": torch.linspace(1, 0.5, 4)} for t in targets]
    m = coco_evaluate(gt, coco_results(perfect))
    assert m["AP"] == pytest.approx(1.0) and m["AP50"] == pytest.approx(1.0) and m["AP75"] == pytest.approx(1.0)
    assert all(v == pytest.approx(1.0) for v in m["per_class_AP"].values())
    assert m["APl"] is None  # no box larger than 96^2 px: not COCOeval's -1
    g = torch.Generator().manual_seed(1)
    shuffled = [{**d, "labels": d["labels"][torch.randperm(4, generator=g)]} for d in perfect]
    moved = [{**d, "boxes": d["boxes"] + 3} for d in perfect]  # IoU ~0.6-0.8: counts at 0.5, not at 0.75+
    assert coco_evaluate(gt, coco_results(shuffled))["AP"] < 0.8
    m_moved = coco_evaluate(gt, coco_results(moved))
    assert m_moved["AP"] < m_moved["AP50"] <= 1.0 and m_moved["AP"] < 0.9
    assert coco_evaluate(gt, [])["AP"] == 0.0


def test_world_boxes_multiscale_batches_and_flips():
    src = world_source(0, "train", 10)
    image, target = src.sample(3, 80)
    assert image.shape == (3, 80, 80) and image.dtype == torch.uint8
    assert target["boxes"].shape[1] == 4 and (target["labels"] < 8).all()
    small = src.sample(3, 40)[1]["boxes"]
    torch.testing.assert_close(small * 2, target["boxes"], atol=1.0, rtol=0)  # rendered at the side: boxes scale
    a = [b["images"].shape[-1] for b, _ in zip(train_batches(src, 2, [64, 72, 80], 0.5, seed=0), range(6))]
    b = [b["images"].shape[-1] for b, _ in zip(train_batches(src, 2, [64, 72, 80], 0.5, seed=0, start_step=3),
                                                range(3))]
    assert len(set(a)) > 1 and a[3:] == b  # the batch of step k is the same after a resume at k
    flipped = next(train_batches(src, 10, [64], 1.0, seed=0))
    plain = next(train_batches(src, 10, [64], 0.0, seed=0))
    torch.testing.assert_close(flipped["images"], plain["images"].flip(-1))
    boxes = plain["targets"][0]["boxes"]
    torch.testing.assert_close(flipped["targets"][0]["boxes"][:, [2, 0]], 64 - boxes[:, [0, 2]])
    (indices, batch), *_ = list(eval_batches(src, 64, 4, limit=5))
    assert indices == [0, 1, 2, 3] and batch["image_sizes"] == [(64, 64)] * 4


def test_bad_config_is_refused_before_work():
    with pytest.raises(ConfigError, match="data.train_sizes"):
        from_dict(DetectConfig, {"data": {"train_sizes": [16]}})
    with pytest.raises(ConfigError, match="detector"):
        from_dict(DetectConfig, {"detector": "dyhead_huge"})
    with pytest.raises(ConfigError, match="zero_shot.classifier"):
        from_dict(DetectConfig, {"zero_shot": {"classifier": "text"}})


OVERFIT = {"steps": 120, "batch_size": 4, "lr": 2e-3, "backbone_lr": 1e-3, "warmup_steps": 10,
           "log_every": 20, "checkpoint_every": 60, "threads": 1,
           "data": {"train_images": 4, "eval_images": 4, "image_size": 64, "train_sizes": [64], "hflip": 0.0}}


def test_a_handful_of_world_images_overfit(tmp_path, monkeypatch):
    """The detector learns: trained on 4 scenes, it finds their boxes (evaluated on the same scenes)."""
    from florence_lib.detection import train as train_mod

    monkeypatch.setattr(train_mod, "_sources", lambda cfg, label_by: (world_source(0, "train", 4),) * 2)
    results = train_mod.train_detector(from_dict(DetectConfig, OVERFIT), tmp_path / "run")
    assert results["AP50"] >= 0.9, results
    records = [r for r in RunDir(tmp_path / "run").metrics() if r.get("split") == "train"]
    assert records[-1]["loss"] < 0.5 * records[0]["loss"]
    assert (tmp_path / "run" / "detections_test.json").is_file()


def test_merged_set_maps_sources_into_one_label_space_and_adds_pseudo_boxes():
    from florence_lib.detection.merged import MergedBoxes, PseudoBoxes, data_card
    from florence_lib.models.dyhead import create_detector, detector_config

    world = world_source(0, "train", 3)
    agnostic = world_source(0, "val", 2, label_by="object")
    torch.manual_seed(0)
    teacher = create_detector(detector_config("dyhead_tiny", num_classes=1))
    torch.nn.init.constant_(teacher.cls_logits.bias, 5.0)  # a confident teacher: every position is an object
    pseudo = PseudoBoxes(world_source(0, "val", 2), teacher, ["object"], score_threshold=0.3)
    merged = MergedBoxes({"world": world, "shapes-as-objects": agnostic, "pseudo": pseudo})
    assert merged.categories == [*world.categories, "object"] and len(merged) == 7
    _, t = merged.sample(4, 64)  # the second source's first sample: its label 0 is "object" = index 8
    assert merged.locate(4) == ("shapes-as-objects", 1) and set(t["labels"].tolist()) == {8}
    _, p = merged.sample(5, 64)
    assert len(p["boxes"]) > 0 and set(p["labels"].tolist()) == {8}
    card = data_card(merged, 64)
    assert card["sources"]["world"]["images"] == 3 and "| pseudo | 2 |" in card["markdown"]
    with pytest.raises(IndexError):
        merged.locate(7)


def test_coco_boxes_resize_with_their_image():
    from florence_lib.detection.data import CocoBoxes
    from florence_lib.runs import data_root_or_none

    root = data_root_or_none()
    if root is None or not (root / "coco" / "annotations" / "instances_val2017.json").is_file():
        pytest.skip("no COCO subset under data_root")
    coco = CocoBoxes(root, "val2017")
    assert len(coco.categories) == 80 and len(coco) > 100
    image, target = coco.sample(0, 128)
    assert max(image.shape[1:]) == 128 and image.dtype == torch.uint8
    boxes = target["boxes"]
    assert len(boxes) > 0 and (boxes[:, 2] <= image.shape[2] + 1).all() and (boxes[:, 3] <= image.shape[1] + 1).all()
    assert (target["labels"] < 80).all()


TINY = ["steps=4", "batch_size=2", "warmup_steps=1", "log_every=1", "checkpoint_every=2", "data.image_size=48",
        "data.train_sizes=[48,56]", "data.train_images=8", "data.eval_images=2", "channels=16", "num_blocks=1"]


def test_cli_train_resumes_exactly_and_evaluates(tmp_path, capsys):
    from florence_lib.cli import main

    assert main(["detect", "train", "--profile", "smoke", "--run-dir", str(tmp_path / "a"), "--set", *TINY]) == 0
    # A run killed after its step-2 checkpoint: resume from that checkpoint in a fresh run dir.
    shutil.copytree(tmp_path / "a" / "checkpoints" / "step-00000002", tmp_path / "b" / "checkpoints" / "step-00000002")
    assert main(["detect", "train", "--profile", "smoke", "--run-dir", str(tmp_path / "b"), "--set", *TINY]) == 0

    def losses(run):
        return {r["step"]: r["loss"] for r in RunDir(tmp_path / run).metrics() if r.get("split") == "train"}

    a, b = losses("a"), losses("b")
    assert sorted(a) == [1, 2, 3, 4] and sorted(b) == [3, 4]
    assert [a[3], a[4]] == pytest.approx([b[3], b[4]], rel=1e-6)  # the same losses after the resume
    record = RunDir(tmp_path / "a").metrics()[-1]
    assert record["task"] == "detection" and record["dataset"] == "world" and "AP50" in record
    assert main(["detect", "evaluate", "--profile", "smoke", "--detector", str(tmp_path / "a"),
                 "--run-dir", str(tmp_path / "e"), "--set", *TINY]) == 0
    assert (tmp_path / "e" / "detections_test.json").is_file()
    capsys.readouterr()
    assert main(["detect", "train", "--set", "data.no_such_key=1"]) == 2
    assert "data.no_such_key" in capsys.readouterr().err
