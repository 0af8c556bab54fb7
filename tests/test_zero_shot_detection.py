"""Zero-shot detection: crops, region embeddings, and the protocol's baseline and oracle on perfect proposals."""

import pytest
import torch

from florence_lib.detection import zero_shot as zs
from florence_lib.detection.config import ZeroShotConfig
from florence_lib.detection.data import world_source
from florence_lib.models import create_model


def test_crops_cover_the_box_with_context():
    image = torch.zeros(3, 40, 40, dtype=torch.uint8)
    image[:, 10:20, 10:20] = 255  # a white square in a black image
    tight = zs.crop_regions(image, torch.tensor([[10.0, 10, 20, 20]]), 8, context=0.0)
    wide = zs.crop_regions(image, torch.tensor([[10.0, 10, 20, 20]]), 8, context=0.5)
    assert tight.shape == (1, 3, 8, 8)
    inner = tight[..., 1:-1, 1:-1]  # bilinear samples on the border blend with the black outside
    assert torch.allclose(inner, inner[..., :1, :1].expand_as(inner), atol=1e-4) and inner.min() > 1.5
    assert wide[0, :, 0, 0].max() < 0 < wide[0, :, 4, 4].min()  # black corner (normalised < 0), white centre


@pytest.mark.parametrize("classifier", ["crops", "roi_align"])
def test_protocol_with_perfect_proposals(monkeypatch, classifier):
    source = world_source(0, "heldout", 6, label_by="shape_colour")
    categories = zs.heldout_categories(source)
    assert len(categories) == 8 and all(source.categories[c] in source.world.cfg.heldout for c in categories)
    targets = [source.sample(i, 64)[1] for i in range(6)]
    perfect = [{"boxes": t["boxes"], "scores": torch.linspace(0.9, 0.5, len(t["boxes"])),
                "labels": torch.zeros(len(t["boxes"]), dtype=torch.long)} for t in targets]
    monkeypatch.setattr(zs, "predict", lambda *a, **k: (perfect, targets, [(64, 64)] * 6))
    torch.manual_seed(0)
    unicl = create_model("unicl_tiny")
    cfg = ZeroShotConfig(classifier=classifier, eval_images=6, crop_size=32)
    result = zs.zero_shot_detection(None, unicl, source, categories, cfg, 64, ["a photo of a {}."])
    m = result["metrics"]
    assert m["oracle_AP50"] == pytest.approx(1.0)  # each proposal is a box, labelled with its category
    held = [int(t["labels"][0]) for t in targets]  # the held-out split's main object is a held-out pair
    present = len(set(held))
    # one class right at best, the other held-out categories present score 0: at most 1 / present
    assert 0.0 < m["baseline_AP50"] <= 1.0 / present + 1e-6
    assert 0.0 <= m["AP50"] <= 1.0 and m["num_categories"] == 8
    assert len(result["detections"]) == 6


def test_proposer_trains_its_own_steps_on_the_frozen_tower(monkeypatch, tmp_path):
    from florence_lib.config import load_config
    from florence_lib.detection.config import DetectConfig
    from florence_lib.runs import RunDir

    seen = []

    def fake_train(cfg, run_dir, label_by):
        seen.append((cfg.steps, cfg.freeze_backbone, label_by))
        raise RuntimeError("stop after the proposer's config")

    monkeypatch.setattr(zs, "train_detector", fake_train)
    for steps, expected in ((None, 30), (7, 7)):
        cfg = load_config(DetectConfig, command="detect", profile="smoke",
                          overrides=["steps=30"] + ([f"zero_shot.proposer_steps={steps}"] if steps else []))
        with pytest.raises(RuntimeError, match="proposer"):
            zs.run_zero_shot(cfg, RunDir(tmp_path / str(steps)))
        assert seen[-1] == (expected, True, "object")
    assert cfg.steps == 30  # the caller's config is left as it was
