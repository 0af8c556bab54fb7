"""The UniCL model (paper §2.2): image and text towers projected into one embedding space with a temperature.

The temperature is stored as ``logit_scale`` = log(1 / tau), initialised at ln(1/0.07) as in CLIP and kept in
[0, ln(100)] by clamping the *parameter* in place after each optimizer step (open_clip's way; the engines call
:meth:`UniCLModel.parameter_bounds`). A clamp in the forward pass instead passes no gradient once the parameter
overshoots the bound, so the temperature could never come back down.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from florence_lib.config import field
from florence_lib.models.coswin import CoSwin, CoSwinConfig
from florence_lib.models.text_encoder import (
    MiniLMTextConfig,
    TextTransformerConfig,
    build_text_encoder,
)


@dataclasses.dataclass
class UniCLConfig:
    """A whole UniCL model: the two towers and the shared space (serialisable with ``florence_lib.config``)."""

    image: CoSwinConfig = dataclasses.field(default_factory=CoSwinConfig)
    text: TextTransformerConfig | MiniLMTextConfig = dataclasses.field(default_factory=TextTransformerConfig)
    embed_dim: int = field(512, min=1, help="width of the shared image-text space")
    init_logit_scale: float = field(math.log(1 / 0.07), help="log of the initial inverse temperature")
    max_logit_scale: float = field(math.log(100), help="the engines clamp the log inverse temperature here")


class UniCLModel(nn.Module):
    """Image tower + text tower + two bias-free projections + a learnable temperature (open_clip's interface)."""

    def __init__(self, cfg: UniCLConfig) -> None:
        super().__init__()
        self.config = cfg
        self.image_encoder = CoSwin.from_config(cfg.image)
        self.text_encoder = build_text_encoder(cfg.text)
        self.image_projection = nn.Linear(self.image_encoder.num_features, cfg.embed_dim, bias=False)
        self.text_projection = nn.Linear(self.text_encoder.width, cfg.embed_dim, bias=False)
        # Shape (1,), not (): DeepSpeed broadcasts parameters viewed as bytes, which a 0-d tensor cannot be.
        self.logit_scale = nn.Parameter(torch.full((1,), cfg.init_logit_scale))
        for proj in (self.image_projection, self.text_projection):
            nn.init.normal_(proj.weight, std=proj.in_features**-0.5)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.image_encoder.set_grad_checkpointing(enable)
        self.text_encoder.set_grad_checkpointing(enable)

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        features = self.image_projection(self.image_encoder(images))
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, normalize: bool = True
    ) -> torch.Tensor:
        features = self.text_projection(self.text_encoder(input_ids, attention_mask))
        return F.normalize(features, dim=-1) if normalize else features

    def temperature_scale(self) -> torch.Tensor:
        """exp(logit_scale): the factor that multiplies cosine similarities into logits."""
        return self.logit_scale.exp().squeeze(0)

    def parameter_bounds(self) -> dict[str, tuple[float | None, float | None]]:
        """Parameters the training engines clamp in place after every optimizer step: ``name -> (min, max)``."""
        return {"logit_scale": (0.0, self.config.max_logit_scale)}

    def forward(
        self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(image features, text features, exp(logit_scale)); features are L2-normalised."""
        return self.encode_image(images), self.encode_text(input_ids, attention_mask), self.temperature_scale()

    def no_weight_decay(self) -> set[str]:
        """Names of the parameters that get no weight decay: norms, biases, the temperature, embeddings
        (token, position, relative-position tables). Decaying them shrinks scales and lookups, not capacity."""
        embeddings = {
            f"{name}.{pname}" if name else pname
            for name, module in self.named_modules()
            if isinstance(module, nn.Embedding)
            for pname, _ in module.named_parameters(recurse=False)
        }
        return {
            name
            for name, param in self.named_parameters()
            if param.ndim <= 1
            or name in embeddings
            or name.endswith(("positional_embedding", "relative_position_bias_table"))
        }
