"""Named model presets, from CPU-sized to the paper's, and the factory that builds them (open_clip style).

Presets are config dataclasses (data, not code paths); each registry maps a name to a function
``(**overrides) -> config``. Overrides are checked like any config: ``create_model("unicl_tiny", embed_dim=64,
image={"window_size": 8})``, and an unknown key or a bad value raises ``ConfigError`` naming it.
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch
from torch import nn

from florence_lib.config import deep_merge, from_dict, to_dict
from florence_lib.models.coswin import CoSwin, CoSwinConfig
from florence_lib.models.text_encoder import (
    MiniLMTextConfig,
    MiniLMTextEncoder,
    TextConfig,
    TextTransformer,
    TextTransformerConfig,
    build_text_encoder,
)
from florence_lib.models.unicl import UniCLConfig, UniCLModel
from florence_lib.registry import Registry

C = TypeVar("C")

IMAGE_ENCODERS: Registry[CoSwinConfig] = Registry("image encoder")
TEXT_ENCODERS: Registry[TextConfig] = Registry("text encoder")
MODELS: Registry[UniCLConfig] = Registry("model")


def _preset(registry: Registry[C], name: str, cfg: C) -> C:
    def make(**overrides: Any) -> C:
        return from_dict(type(cfg), deep_merge(to_dict(cfg), overrides))

    registry.register(name)(make)
    return cfg


# ------------------------------------------------------------------------------------------- image towers
COSWIN_TINY = _preset(IMAGE_ENCODERS, "coswin_tiny", CoSwinConfig(
    embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), window_size=4, drop_path_rate=0.0,
))  # 64 px -> 16, 8, 4, 2 token maps; trains on 2 CPU cores
COSWIN_SMALL = _preset(IMAGE_ENCODERS, "coswin_small", CoSwinConfig(
    embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7, drop_path_rate=0.2,
))  # Swin-T's widths and depths
COSWIN_BASE = _preset(IMAGE_ENCODERS, "coswin_base", CoSwinConfig(
    embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=7, drop_path_rate=0.3,
))  # Swin-B's widths and depths
# The paper gives CoSwin-H only as "637M parameters". Assumption: SwinV2-H's width (352, heads of 32 channels)
# and window (7 at 224 px, 12 for the 384 px phase); depth 16 in stage 3 instead of 18 because the convolutional
# embeddings (k3 convs between stages, 47M parameters) weigh more than Swin's patch merging. 633.3M (-0.6%).
COSWIN_HUGE = _preset(IMAGE_ENCODERS, "coswin_huge", CoSwinConfig(
    embed_dim=352, depths=(2, 2, 16, 2), num_heads=(11, 22, 44, 88), window_size=7, drop_path_rate=0.5,
))

# -------------------------------------------------------------------------------------------- text towers
TEXT_TINY = _preset(TEXT_ENCODERS, "text_tiny", TextTransformerConfig(width=128, layers=2, heads=2))
TEXT_SMALL = _preset(TEXT_ENCODERS, "text_small", TextTransformerConfig(width=256, layers=4, heads=4))
TEXT_BASE = _preset(TEXT_ENCODERS, "text_base", TextTransformerConfig(width=512, layers=12, heads=8))  # CLIP's
# The paper: "a 12-layer transformer ... 256M parameters", CLIP-like. With the 30522-token WordPiece vocabulary
# and 77 positions, width 1280 (20 heads of 64) and an MLP ratio of 3.5 give 255.6M (-0.1%); ratio 4 would
# overshoot (275M) and width 1216 undershoot (250M).
TEXT_HUGE = _preset(TEXT_ENCODERS, "text_huge", TextTransformerConfig(
    width=1280, layers=12, heads=20, mlp_ratio=3.5,
))
MINILM_L6 = _preset(TEXT_ENCODERS, "minilm_l6", MiniLMTextConfig())

# ----------------------------------------------------------------------------------------- UniCL models
_preset(MODELS, "unicl_tiny", UniCLConfig(image=COSWIN_TINY, text=TEXT_TINY, embed_dim=128))
_preset(MODELS, "unicl_minilm_tiny", UniCLConfig(image=COSWIN_TINY, text=MINILM_L6, embed_dim=128))
_preset(MODELS, "unicl_small", UniCLConfig(image=COSWIN_SMALL, text=TEXT_SMALL, embed_dim=256))
_preset(MODELS, "unicl_base", UniCLConfig(image=COSWIN_BASE, text=TEXT_BASE, embed_dim=512))
_preset(MODELS, "unicl_huge", UniCLConfig(image=COSWIN_HUGE, text=TEXT_HUGE, embed_dim=1024))


def list_models() -> list[str]:
    return MODELS.names()


def model_config(name: str, **overrides: Any) -> UniCLConfig:
    """The config of preset ``name`` with ``overrides`` applied (what a checkpoint should store)."""
    return MODELS.create(name, **overrides)


def create_model(name: str, **overrides: Any) -> UniCLModel:
    return UniCLModel(model_config(name, **overrides))


def create_image_encoder(name: str, **overrides: Any) -> CoSwin:
    return CoSwin.from_config(IMAGE_ENCODERS.create(name, **overrides))


def create_text_encoder(name: str, **overrides: Any) -> TextTransformer | MiniLMTextEncoder:
    return build_text_encoder(TEXT_ENCODERS.create(name, **overrides))


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_parameters(name: str, **overrides: Any) -> dict[str, int]:
    """Parameters of model preset ``name``: ``image`` and ``text`` towers and the ``total`` (with projections
    and temperature). Built on the meta device, so the paper's sizes cost no memory and no init time."""
    cfg = model_config(name, **overrides)
    if isinstance(cfg.text, MiniLMTextConfig):
        cfg.text = MiniLMTextConfig(pretrained=False)  # same shapes; weights cannot be loaded onto meta
    with torch.device("meta"):
        model = UniCLModel(cfg)
    return {"image": _numel(model.image_encoder), "text": _numel(model.text_encoder), "total": _numel(model)}


__all__: list[str] = [
    "IMAGE_ENCODERS",
    "MODELS",
    "TEXT_ENCODERS",
    "count_parameters",
    "create_image_encoder",
    "create_model",
    "create_text_encoder",
    "list_models",
    "model_config",
]
