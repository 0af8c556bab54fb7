"""Losses: pure functions of tensors (distributed gathering is the caller's, through keyword seams)."""

from florence_lib.losses.contrastive import clip_loss, unicl_loss, unicl_targets

__all__ = ["clip_loss", "unicl_loss", "unicl_targets"]
