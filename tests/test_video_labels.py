"""The world's action labels as the video datasets deliver them: each label matches the motion in its clip, frames
keep their order through the train and test views, and a linear oracle on frame-difference features learns the
labels well above chance (so a recognizer stuck at chance is the model's or the recipe's problem, not the data's).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from florence_lib.config import from_dict
from florence_lib.data.world_video import ACTIONS
from florence_lib.video.config import VideoDataConfig
from florence_lib.video.data import ClipViews, WorldActionClips, world_for

CFG = from_dict(VideoDataConfig, {"clip_length": 16, "num_frames": 8, "image_size": 32})


def box_action(boxes: np.ndarray) -> str | None:
    """The action read off the actor's boxes alone (None for rotating / changing colour, which boxes hide)."""
    shown = ~np.isnan(boxes[:, 0])
    if not shown.all():
        return "appearing" if shown[-1] else "disappearing"
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    dx, dy, grow = cx[-1] - cx[0], cy[-1] - cy[0], area[-1] / area[0]
    if max(abs(dx), abs(dy)) > 0.2 * CFG.image_size:
        return ("moving left" if dx < 0 else "moving right") if abs(dx) > abs(dy) else \
            ("moving up" if dy < 0 else "moving down")
    if grow > 2 or grow < 0.5:
        return "growing" if grow > 1 else "shrinking"
    return None


def test_labels_match_the_motion_in_the_clip():
    world = world_for(CFG, 0)
    train = WorldActionClips(world, "train", 60, ClipViews(CFG, train=True), CFG.image_size)
    seen = set()
    for i in range(len(train)):
        clip = world.clip("train", i, image_size=CFG.image_size)
        item = train[i]
        assert item["label"] == clip.label and ACTIONS[item["label"]] in {clip.action}
        assert clip.action.split()[0] in item["caption"]  # "moving ...", "rotating", "changing colour" ...
        read = box_action(clip.boxes)
        assert read in (None, clip.action), f"clip {i}: labelled {clip.action!r}, boxes show {read!r}"
        seen.add(clip.action)
    assert len(seen) == len(ACTIONS)


def test_views_keep_frames_in_order_and_stack_views_on_the_first_axis():
    frames = torch.arange(16, dtype=torch.uint8)[:, None, None, None].expand(16, 3, 32, 32).contiguous() * 10
    torch.manual_seed(0)
    clip = ClipViews(CFG, train=True)(frames)  # [C, T, H, W], normalised
    means = clip[0].mean((1, 2))
    assert torch.all(means[1:] > means[:-1])  # time runs forward
    views = ClipViews(CFG, train=False, temporal_views=4, spatial_crops=3)(frames)  # [V, C, T, H, W]
    assert views.shape == (12, 3, 8, 32, 32)
    assert torch.all(views[:, 0].mean((2, 3)).diff(dim=1) > 0)


def _motion_features(video: torch.Tensor) -> np.ndarray:
    """Where and how much each frame differs from the clip's median frame: area, centre and colour per frame."""
    v = video.numpy()
    mask = np.abs(v - np.median(v, axis=1, keepdims=True)).sum(0) > 0.5  # [T, H, W]
    ys, xs = np.mgrid[0 : mask.shape[1], 0 : mask.shape[2]] / mask.shape[1]
    count = np.maximum(mask.sum((1, 2)), 1)
    area, cx, cy = mask.mean((1, 2)), (mask * xs).sum((1, 2)) / count, (mask * ys).sum((1, 2)) / count
    colour = (v * mask[None]).sum((2, 3)) / count
    return np.concatenate([area, cx, cy, colour.ravel(), np.diff(area), np.diff(cx), np.diff(cy)])


def test_a_linear_oracle_on_frame_differences_learns_the_labels_as_delivered():
    world = world_for(CFG, 0)
    train = WorldActionClips(world, "train", 500, ClipViews(CFG, train=True), CFG.image_size)
    test = WorldActionClips(world, "test", 150, ClipViews(CFG, train=False), CFG.image_size)
    torch.manual_seed(0)
    x, y = zip(*((_motion_features(s["video"]), s["label"]) for s in train), strict=True)
    xt, yt = zip(*((_motion_features(s["video"][0]), s["label"]) for s in test), strict=True)
    oracle = LogisticRegression(max_iter=3000, C=10.0).fit(np.array(x), y)
    assert oracle.score(np.array(xt), yt) > 0.4  # chance 0.1; measured 0.6-0.65


def test_the_head_sees_the_order_of_time():
    """The fix for recognizers stuck at chance: the I3D mean over (T, H, W) hands the head the same input for a
    clip and its time reversal (left/right, appearing/disappearing); ``mean_diff`` adds the late-minus-early
    change, which reversal negates."""
    from florence_lib.models.video_coswin import create_video_encoder
    from florence_lib.video.model import ActionRecognizer, mean_and_change

    per_step = torch.randn(2, 4, 5)
    forward, backward = mean_and_change(per_step), mean_and_change(per_step.flip(1))
    torch.testing.assert_close(forward[:, :5], backward[:, :5])
    torch.testing.assert_close(forward[:, 5:], -backward[:, 5:])
    assert forward[:, 5:].abs().min() > 0
    torch.testing.assert_close(mean_and_change(per_step[:, :1])[:, 5:], torch.zeros(2, 5))
    torch.manual_seed(0)
    model = ActionRecognizer(create_video_encoder("video_coswin_tiny"), 10, 0.0).eval()
    assert model.pool == "mean_diff" and model.head.in_features == 2 * model.backbone.num_features
    clip = torch.randn(2, 3, 8, 32, 32)
    pooled = model.pooled(clip)
    torch.testing.assert_close(pooled[:, : model.backbone.num_features], model.backbone(clip))
    assert model.spec()["kwargs"]["pool"] == "mean_diff"
