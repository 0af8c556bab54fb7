"""Models: the CoSwin image encoder, the text encoders, the UniCL model and their named presets."""

from florence_lib.models.coswin import CoSwin, CoSwinConfig, interpolate_rel_pos_bias
from florence_lib.models.presets import (
    IMAGE_ENCODERS,
    MODELS,
    TEXT_ENCODERS,
    count_parameters,
    create_image_encoder,
    create_model,
    create_text_encoder,
    list_models,
    model_config,
)
from florence_lib.models.text_encoder import (
    MiniLMTextConfig,
    MiniLMTextEncoder,
    TextTransformer,
    TextTransformerConfig,
    build_text_encoder,
)
from florence_lib.models.unicl import UniCLConfig, UniCLModel

__all__ = [
    "IMAGE_ENCODERS",
    "MODELS",
    "TEXT_ENCODERS",
    "CoSwin",
    "CoSwinConfig",
    "MiniLMTextConfig",
    "MiniLMTextEncoder",
    "TextTransformer",
    "TextTransformerConfig",
    "UniCLConfig",
    "UniCLModel",
    "build_text_encoder",
    "count_parameters",
    "create_image_encoder",
    "create_model",
    "create_text_encoder",
    "interpolate_rel_pos_bias",
    "list_models",
    "model_config",
]
