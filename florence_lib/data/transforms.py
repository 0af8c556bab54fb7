"""Image and video transforms for training and evaluation, at any resolution (torchvision ``transforms.v2``).

Inputs may be PIL images, uint8 numpy arrays [H, W, 3] or uint8 tensors [3, H, W]; videos are wrapped with
:func:`as_video` so that v2 draws one set of random parameters per clip and applies it to every frame (a crop
that jumped between frames would invent motion). Normalisation uses CLIP's mean and std, as Florence and
UniCL do, so weights and features stay comparable with CLIP-trained models.

Random crops default to open_clip's mild ``scale=(0.9, 1.0)`` and flips default to off: the embedded world's
captions name positions ("at the top left", "to the left of"), which aggressive crops or flips would falsify.
Photometric augmentations (``grayscale``, ``invert``, SimCLR's and torchvision's generic ones) default to off: they
keep every position and shape word true but not colour words, so a pretraining profile uses them with a small
probability (see configs/pretrain/quick.yaml). ``colour_free`` is the strong version, for a source whose texts name
no colour at all (the ``world_shapes`` source: scenes labelled by shape): every colour cue is scrambled (hue,
channel order, grey, negative, solarize, posterize, blur) while shape and position stay, so the contrastive
objective itself asks for colour-invariant shape features without falsifying any colour caption.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _finish() -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(CLIP_MEAN, CLIP_STD)]


def tensor_transform() -> v2.Compose:
    """uint8 image -> normalised float tensor [3, H, W], no change of geometry (for already-sized images)."""
    return v2.Compose([v2.ToImage(), *_finish()])


def colour_free_ops(strength: float) -> list[v2.Transform]:
    """Label-preserving, colour-destroying photometric ops on uint8 images, each applied with a probability
    proportional to ``strength`` (1: SimCLR's colour distortion at full hue range plus grey, negative, channel
    order, solarize, posterize and blur; 0: none). torchvision generics only, never a domain renderer of the
    evaluation sets: what they ask for is invariance to colour, not the look of any one test domain."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"colour_free: strength {strength} is outside [0, 1]")
    if strength == 0:
        return []
    s = strength
    return [
        v2.RandomApply([v2.ColorJitter(brightness=0.5, contrast=0.5, saturation=0.8, hue=0.5)], p=0.8 * s),
        v2.RandomApply([v2.RandomChannelPermutation()], p=0.5 * s),
        v2.RandomGrayscale(0.4 * s),
        v2.RandomInvert(0.4 * s),
        v2.RandomSolarize(128, 0.2 * s),
        v2.RandomPosterize(2, 0.2 * s),
        v2.RandomApply([v2.GaussianBlur(5, sigma=(0.3, 1.2))], p=0.4 * s),
    ]


def train_transform(
    image_size: int, scale: tuple[float, float] = (0.9, 1.0), hflip: float = 0.0, grayscale: float = 0.0,
    invert: float = 0.0, colour_free: float = 0.0,
) -> v2.Compose:
    """Random resized crop to ``image_size`` (+ optional horizontal flip), then with probability ``grayscale``
    a grey image (3 equal channels) and independently with probability ``invert`` the colour negative, then
    the :func:`colour_free_ops` of strength ``colour_free``, then CLIP normalisation. Geometry and photometry
    are drawn independently."""
    for name, p in (("hflip", hflip), ("grayscale", grayscale), ("invert", invert)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name}: probability {p} is outside [0, 1]")
    ops: list[v2.Transform] = [v2.ToImage(), v2.RandomResizedCrop(image_size, scale=scale, antialias=True)]
    if hflip > 0:
        ops.append(v2.RandomHorizontalFlip(hflip))
    if grayscale > 0:
        ops.append(v2.RandomGrayscale(grayscale))
    if invert > 0:
        ops.append(v2.RandomInvert(invert))
    return v2.Compose(ops + colour_free_ops(colour_free) + _finish())


def eval_transform(image_size: int) -> v2.Compose:
    """Resize the short side to ``image_size``, centre-crop a square, CLIP normalisation."""
    return v2.Compose([v2.ToImage(), v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size), *_finish()])


def as_video(frames: np.ndarray | torch.Tensor) -> tv_tensors.Video:
    """uint8 frames [T, H, W, 3] (numpy or torch) -> a torchvision Video [T, 3, H, W]."""
    t = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"frames: expected [T, H, W, 3], got shape {tuple(t.shape)}")
    return tv_tensors.Video(t.permute(0, 3, 1, 2))


def video_train_transform(
    image_size: int, scale: tuple[float, float] = (0.9, 1.0), hflip: float = 0.0
) -> v2.Compose:
    """The image train transform applied to a :func:`as_video` clip with the same parameters for all frames."""
    ops: list[v2.Transform] = [v2.RandomResizedCrop(image_size, scale=scale, antialias=True)]
    if hflip > 0:
        ops.append(v2.RandomHorizontalFlip(hflip))
    return v2.Compose(ops + _finish())


def video_eval_transform(image_size: int) -> v2.Compose:
    """Resize + centre crop + normalisation for a :func:`as_video` clip."""
    return v2.Compose([v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size), *_finish()])
