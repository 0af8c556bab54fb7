"""The video adapter: multi-view aggregation, stable-rank retrieval metrics, clip views and augmentation, the
real clips and Kinetics-style CSVs, config refusal, training/resume on the engine and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from florence_lib.cli import main as cli_main
from florence_lib.config import ConfigError, from_dict, load_config
from florence_lib.evaluation.retrieval import retrieval_metrics
from florence_lib.runs import RunDir, data_root_or_none
from florence_lib.video.config import VideoConfig, VideoDataConfig
from florence_lib.video.data import ClipViews, FileClips, WorldActionClips, spatial_crops, world_for
from florence_lib.video.recognition import evaluate_recognizer, multi_view_probabilities, train_recognizer
from florence_lib.video.retrieval import stable_ranks, text_video_metrics

DATA = data_root_or_none()
needs_data = pytest.mark.skipif(DATA is None or not (DATA / "video").is_dir(), reason="no shared/data/video")


# ----------------------------------------------------------------------------------------- multi-view
class ViewLogits(torch.nn.Module):
    """Logits read off the clip: view v of clip b has logits ``clip[0, 0, 0, :K]`` (set by the test)."""

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return clips[:, 0, 0, 0, :3]


def test_multi_view_averages_probabilities_not_logits():
    views = torch.zeros(2, 3, 1, 1, 1, 3)
    views[0, :, 0, 0, 0] = torch.tensor([[10.0, 0, 0], [0, 1, 0], [0, 1, 0]])  # one confident view, two mild
    views[1, :, 0, 0, 0] = torch.tensor([[0.0, 0, 5], [0, 0, 5], [0, 0, 5]])
    probs = multi_view_probabilities(ViewLogits(), views)
    want = views[:, :, 0, 0, 0].softmax(-1).mean(1)
    torch.testing.assert_close(probs, want)
    assert probs[0].argmax() == 0  # the confident view wins on probabilities ...
    assert views[0, :, 0, 0, 0].mean(0).argmax() == 0 and probs.sum(1).allclose(torch.ones(2))


def test_evaluate_recognizer_reads_top1_top5_off_view_averaged_probabilities():
    class Stacks(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            views = torch.zeros(2, 1, 1, 1, 3)
            views[:, 0, 0, 0, i % 3] = 5.0  # every view predicts class i % 3
            return {"video": views, "label": i % 2, "caption": ""}

    res = evaluate_recognizer(ViewLogits(), Stacks(), batch_size=3)
    assert res.metrics["top1"] == pytest.approx(0.5)  # clips 0 (0 -> 0) and 1 (1 -> 1) right, 2 and 3 wrong
    assert res.metrics["views"] == 2 and res.metrics["num_clips"] == 4
    assert res.probabilities.shape == (4, 3)


# ----------------------------------------------------------------------------------------- retrieval
def test_ties_rank_in_gallery_order_so_a_constant_encoder_scores_chance():
    n = 10
    m = text_video_metrics(torch.zeros(n, n))
    assert m["t2v_r1"] == pytest.approx(1 / n)  # CLIP4Clip's first-equal rule would give 1.0
    assert m["t2v_r5"] == pytest.approx(5 / n)
    assert m["t2v_median_rank"] == 5.0  # ranks 1..10, lower middle
    assert m["t2v_mean_rank"] == pytest.approx(5.5)


def test_recalls_and_ranks_agree_with_the_image_text_protocol():
    torch.manual_seed(0)
    sim = torch.randn(30, 30).round(decimals=1)  # plenty of ties
    m = text_video_metrics(sim)
    ref = retrieval_metrics(sim, [[i] for i in range(30)])
    ranks = stable_ranks(sim.T, torch.arange(30))
    for k in (1, 5, 10):
        assert m[f"t2v_r{k}"] == pytest.approx(ref[f"t2i_r{k}"]) == pytest.approx((ranks < k).float().mean().item())
    assert m["t2v_median_rank"] == (ranks + 1).float().median().item()
    perfect = text_video_metrics(torch.eye(5))
    assert perfect["t2v_r1"] == 1.0 and perfect["t2v_median_rank"] == 1.0


def test_stable_ranks_by_hand():
    sim = torch.tensor([[0.5, 0.5, 0.9], [0.1, 0.3, 0.3]])
    assert stable_ranks(sim, torch.tensor([1, 2])).tolist() == [2, 1]


# ----------------------------------------------------------------------------------------- clips
def test_spatial_crops_run_along_the_long_side():
    video = torch.arange(40, dtype=torch.uint8).repeat(1, 3, 20, 1)  # [1, 3, 20, 40]: column index as value
    crops = spatial_crops(video, 20, 3)
    assert crops.shape == (3, 1, 3, 20, 20)
    assert [int(c[0, 0, 0, 0]) for c in crops] == [0, 10, 20]
    assert int(spatial_crops(video, 20, 1)[0, 0, 0, 0, 0]) == 10


def test_world_clip_views_and_frame_consistent_augmentation():
    cfg = from_dict(VideoDataConfig, {"clip_length": 8, "num_frames": 4, "image_size": 32, "crop_scale": [0.3, 0.5]})
    world = world_for(cfg, 0)
    train = WorldActionClips(world, "train", 8, ClipViews(cfg, train=True), 40)
    test = WorldActionClips(world, "test", 8, ClipViews(cfg, train=False, temporal_views=4, spatial_crops=3), 40)
    item = train[0]
    assert item["video"].shape == (3, 4, 32, 32) and isinstance(item["caption"], str)
    assert test[0]["video"].shape == (12, 3, 4, 32, 32)
    still = torch.randint(0, 255, (1, 3, 40, 40), dtype=torch.uint8).expand(8, -1, -1, -1)
    torch.manual_seed(3)
    clip = ClipViews(cfg, train=True)(still)  # one crop for all frames: a still clip stays still
    assert torch.equal(clip[:, 0], clip[:, 3])


@needs_data
def test_real_clips_through_the_pyav_loader(tmp_path):
    cfg = from_dict(VideoDataConfig, {"num_frames": 4, "image_size": 32})
    clips = FileClips(DATA / "video" / "labels.csv", ClipViews(cfg, train=False, temporal_views=2),
                      path_column="file")
    assert len(clips) == 4
    item = clips[0]
    assert item["video"].shape == (2, 3, 4, 32, 32) and item["caption"] in clips.classes
    # a Kinetics-style path,label CSV of the user's own clips; a missing file is counted and skipped
    rows = ["path,label", f"{DATA / 'video' / 'tests_data_test.mp4'},cleaning pool", "gone.mp4,arm wrestling"]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    mine = FileClips(tmp_path / "train.csv", ClipViews(cfg, train=True))
    assert len(mine) == 1 and mine.files.log.counts["missing_file"] == 1
    assert mine[0]["video"].shape == (3, 4, 32, 32)


# ----------------------------------------------------------------------------------------- config, engine
def test_config_refuses_bad_values_before_work():
    with pytest.raises(ConfigError, match="train.warmup_steps"):
        from_dict(VideoConfig, {"train": {"steps": 5, "warmup_steps": 5}})
    with pytest.raises(ConfigError, match="csv"):
        from_dict(VideoConfig, {"data": {"dataset": "csv"}})
    with pytest.raises(ConfigError, match="model.init"):
        from_dict(VideoConfig, {"model": {"init": "imagenet"}})
    for profile in ("smoke", "quick", "paper"):
        load_config(VideoConfig, command="video", profile=profile)


def test_training_learns_checkpoints_and_resumes(tmp_path):
    """A still-vs-moving toy task: the engine drives the loss down; a rerun on the run dir resumes at the end."""
    from florence_lib.models.video_coswin import create_video_encoder
    from florence_lib.video.model import ActionRecognizer, load_recognizer

    class Toy(torch.utils.data.Dataset):
        def __len__(self):
            return 16

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            video = torch.randn(3, 4, 16, 16, generator=g).expand(-1, 4, -1, -1).clone()
            if i % 2:
                video = video + torch.linspace(-2, 2, 4)[None, :, None, None]  # brightening over time
            return {"video": video, "label": i % 2, "caption": ""}

    torch.manual_seed(0)
    model = ActionRecognizer(create_video_encoder("video_coswin_tiny", depths=(1, 1), num_heads=(1, 2), temporal_window=(2,)), 2, 0.0)
    cfg = from_dict(VideoConfig, {"train": {"steps": 16, "batch_size": 8, "lr": 3e-3, "warmup_steps": 2,
                                            "log_every": 1}}).train
    run = RunDir(tmp_path / "run")
    curve = train_recognizer(model, Toy(), cfg, device=torch.device("cpu"), seed=0, run_dir=run, spec=model.spec())
    # the order-aware head learns this within a few steps, down to the label-smoothing floor (~0.2)
    first, last = curve[0]["loss"], sum(r["loss"] for r in curve[-5:]) / 5
    assert last < 0.5 * first
    again = ActionRecognizer(create_video_encoder("video_coswin_tiny", depths=(1, 1), num_heads=(1, 2), temporal_window=(2,)), 2, 0.0)
    assert train_recognizer(again, Toy(), cfg, device=torch.device("cpu"), seed=0, run_dir=run) == []  # resumed
    loaded = load_recognizer(run.path / "checkpoints")
    clip = Toy()[1]["video"][None]
    torch.testing.assert_close(loaded(clip), model.eval()(clip))


def test_backbone_lr_sets_the_backbone_rate_apart_from_the_head():
    from florence_lib.models.video_coswin import create_video_encoder
    from florence_lib.video.model import ActionRecognizer

    class Clips(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return {"video": torch.randn(3, 2, 16, 16, generator=torch.Generator().manual_seed(i)), "label": i % 2}

    torch.manual_seed(0)
    model = ActionRecognizer(create_video_encoder("video_coswin_tiny", depths=(1, 1), num_heads=(1, 2),
                                                  temporal_window=(2,)), 2, 0.0)
    backbone, head = ([p.detach().clone() for p in m.parameters()] for m in (model.backbone, model.head))
    cfg = from_dict(VideoConfig, {"train": {"steps": 2, "batch_size": 4, "lr": 1e-2, "backbone_lr": 0.0,
                                            "warmup_steps": 0, "weight_decay": 0.0, "log_every": 0}}).train
    train_recognizer(model, Clips(), cfg, device=torch.device("cpu"), seed=0)
    assert all(torch.equal(a, b) for a, b in zip(backbone, model.backbone.parameters(), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(head, model.head.parameters(), strict=True))


def test_cli_smoke_retrieval_writes_records(tmp_path, capsys):
    assert cli_main(["video", "retrieval", "--profile", "smoke", "--run-dir", str(tmp_path),
                     "--set", "retrieval.gallery_size=6", "data.num_frames=2"]) == 0
    records = json.loads((tmp_path / "retrieval_world.json").read_text())
    assert [r["task"] for r in records] == ["video_retrieval", "video_retrieval_meanp"]
    assert {"t2v_r1", "t2v_r5", "t2v_r10", "t2v_median_rank"} <= set(records[0])
    assert cli_main(["video", "train", "--set", "model.init=imagenet"]) == 2
    assert "model.init" in capsys.readouterr().err


def test_cli_evaluate_needs_a_recognizer():
    with pytest.raises(SystemExit, match="--recognizer"):
        cli_main(["video", "evaluate", "--profile", "smoke"])
    assert Path(__file__).exists()
