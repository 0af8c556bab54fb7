"""Captioning on METER (the seed's third METER task): a decoder trained by teacher forcing on the one engine,
greedy and beam-search decoding, BLEU-4 and CIDEr-D against every reference caption of an image."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data.tokenizer import Tokenizer
from ..models.meter import METER, METERCaptioner
from ..runs import RunDir
from ..training.batches import step_loader
from .caption_metrics import bleu, cider_d, tokenize
from .config import VLConfig
from .data import CaptionCollate, ListDataset, coco_captions, world_captions
from .train import build_engine, resolve_meter_config, setup


class CaptionObjective:
    """Next-token cross-entropy on the caption tokens after [CLS] (padding ignored)."""

    def __call__(self, model: nn.Module, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        logits = model(batch["image"], ids[:, :-1]).float()
        targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
        real = targets != -100
        acc = (logits.argmax(-1) == targets)[real].float().mean()
        return loss, {"token_acc": acc.item()}


def block_repeat(logp: torch.Tensor, ids: torch.Tensor, longest: int = 4) -> torch.Tensor:
    """``logp`` [B, V] with every token that would repeat an n-gram back to back (n <= ``longest``: 'striped
    striped', 'striped checkered striped checkered') made impossible, given each row's tokens so far ``ids``.

    An undertrained decoder loops; no world caption repeats an n-gram of n <= 4 WordPiece tokens back to back (0
    of the 6,000 captions of 1,000 training scenes; a 2-word loop 'striped check ##ered' is 3 tokens long,
    COCO's 'a with a in' 4), while every n-gram size 1-6
    does recur apart inside valid captions ('at the top left and ... at the top right': 4-grams in 189 of
    3,000), so HF-style no_repeat_ngram blocking would forbid real captions: only immediate repeats are
    blocked. The start token is never a candidate anyway."""
    out = logp.clone()
    rows = ids.tolist()
    for n in range(1, longest + 1):
        for b, row in enumerate(rows):
            # the next token t repeats the n-gram before it iff row[-(n-1):] + [t] == row[-2n:-n]
            if len(row) >= 2 * n - 1 and row[len(row) - n + 1:] == row[len(row) - 2 * n + 1:len(row) - n]:
                out[b, row[-n]] = float("-inf")
    return out


@torch.no_grad()
def greedy(model: METERCaptioner, images: torch.Tensor, start_id: int, end_id: int, max_length: int = 20,
           no_repeat: int = 0) -> list[list[int]]:
    """The most likely next token at each step, for a batch; each caption stops at its first ``end_id``.
    ``no_repeat``: no n-gram (n <= this) repeated back to back (:func:`block_repeat`)."""
    memory = model.memory(images)
    ids = torch.full((images.shape[0], 1), start_id, device=images.device)
    done = torch.zeros(images.shape[0], dtype=torch.bool, device=images.device)
    for _ in range(max_length):
        logits = model.decoder(ids, memory)[:, -1]
        nxt = (block_repeat(logits, ids, no_repeat) if no_repeat else logits).argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, end_id), nxt)
        ids = torch.cat([ids, nxt[:, None]], 1)
        done |= nxt == end_id
        if done.all():
            break
    return [_strip(row, end_id) for row in ids[:, 1:].tolist()]


@torch.no_grad()
def beam_search(model: METERCaptioner, image: torch.Tensor, start_id: int, end_id: int, beam: int = 3,
                max_length: int = 20, alpha: float = 1.0, no_repeat: int = 0) -> list[int]:
    """Beam search for one image [3, H, W]: the caption (``end_id`` excluded) of the best finished hypothesis
    by log p / length^alpha, length counting the end token.

    Each step extends the ``beam`` live hypotheses (ranked by summed log p, with ``no_repeat``'s back-to-back
    n-gram blocking applied to every one of them, :func:`block_repeat`) and takes the best 2 x ``beam``
    continuations: those that end are scored with the length penalty and kept aside, the best ``beam`` others
    live on, so a hypothesis that ends never shrinks the beam. The search stops when no live hypothesis can
    still beat the best finished one: its log p only falls, so its score is at most log p / (max_length + 1)^alpha.
    After ``max_length`` tokens only the end token may follow, so every caption has at most that many."""
    memory = model.memory(image[None])
    ids = torch.full((1, 1), start_id, device=image.device)
    scores = torch.zeros(1, device=image.device)
    finished: list[tuple[float, list[int]]] = []
    for step in range(max_length + 1):
        logp = model.decoder(ids, memory.expand(ids.shape[0], -1, -1))[:, -1].float().log_softmax(-1)
        logp = block_repeat(logp, ids, no_repeat) if no_repeat else logp
        if step == max_length:  # past max_length tokens: only the end token may follow
            logp = torch.where(torch.arange(logp.shape[1], device=logp.device) == end_id, logp, -torch.inf)
        total = (scores[:, None] + logp).flatten()
        top = total.topk(min(2 * beam, total.numel()))
        keep_rows, keep_tokens, keep_scores = [], [], []
        for index, s in zip(top.indices.tolist(), top.values.tolist(), strict=True):
            if s == -float("inf"):
                break
            r, t = divmod(index, logp.shape[1])
            if t == end_id:
                finished.append((s / (step + 1) ** alpha, ids[r, 1:].tolist()))
            elif len(keep_rows) < beam:
                keep_rows.append(r), keep_tokens.append(t), keep_scores.append(s)
        if not keep_rows:
            break
        ids = torch.cat([ids[keep_rows], torch.tensor(keep_tokens, device=ids.device)[:, None]], 1)
        scores = torch.tensor(keep_scores, device=ids.device)
        if finished and max(f[0] for f in finished) >= scores.max().item() / (max_length + 1) ** alpha:
            break
    return max(finished, key=lambda f: f[0])[1]


def _strip(row: list[int], end_id: int) -> list[int]:
    return row[: row.index(end_id)] if end_id in row else row


def caption_scores(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    cands = {i: [tokenize(c)] for i, c in enumerate(candidates)}
    refs = {i: [tokenize(r) for r in rs] for i, rs in enumerate(references)}
    return {"bleu4": bleu(cands, refs)[3], "cider": cider_d(cands, refs)[0]}


def most_frequent_caption(train: ListDataset) -> str:
    """The trivial captioner's output: the training caption seen most often (ties: the shortest, then
    alphabetical), emitted for every test image. A decoder that looks at the image beats it."""
    counts = Counter(tokenize(s["text"]) for s in train.samples)
    return min(counts, key=lambda c: (-counts[c], len(c), c))


def caption_data(cfg: VLConfig, dataset: str) -> tuple[ListDataset, ListDataset]:
    """(train pairs, test images with ``references``): world scenes, or the COCO captions subset."""
    if dataset == "coco":
        if cfg.data_root is None:
            raise FileNotFoundError("caption dataset coco: set data_root (the folder holding coco/)")
        train = coco_captions(cfg.data_root, "train", cfg.image_size)
        pairs = [{"image": s["image"], "text": t} for s in train.samples for t in s["references"]]
        return ListDataset(pairs), coco_captions(cfg.data_root, "val", cfg.image_size)
    _, _, world = setup(cfg)
    c = cfg.caption
    test = world_captions(world, "test", c.test_scenes, cfg.image_size, which="all")
    by_scene: dict[int, dict[str, Any]] = {}
    for s in test.samples:
        by_scene.setdefault(s["scene"], {"image": s["image"], "references": []})["references"].append(s["text"])
    return world_captions(world, "train", c.scenes, cfg.image_size), ListDataset(list(by_scene.values()))


def train_captioner(cfg: VLConfig, run_dir: RunDir, dataset: str = "world", init: METER | None = None
                    ) -> dict[str, Any]:
    """Train the decoder (and fine-tune METER) on ``dataset``; greedy and beam captions of its test images and
    their scores. Returns ``{"record", "model", "greedy", "beam", "test"}``."""
    device, tokenizer, _ = setup(cfg)
    train, test = caption_data(cfg, dataset)
    mcfg = init.config if init is not None else resolve_meter_config(cfg)
    model = METERCaptioner(mcfg, cfg.caption.decoder_layers, cfg.context_length)
    if init is not None:
        model.meter.load_state_dict(init.state_dict())
    model.to(device)
    opt = cfg.caption.optim
    engine = build_engine(model, CaptionObjective(), opt, device, cfg.precision)
    loader = step_loader(train, CaptionCollate(tokenizer), batch_size=opt.batch_size, seed=cfg.seed)
    records = engine.fit(loader, opt.steps, run_dir=run_dir.sub(f"caption_{dataset}"), log_every=opt.log_every,
                         record={"stage": "caption"}, desc="caption")
    model.eval()
    images = torch.stack([s["image"] for s in test.samples]).to(device)
    decode = _decoder(tokenizer)
    c = cfg.caption
    greedy_caps = [decode(r) for r in greedy(model, images, tokenizer.start_id, tokenizer.end_id,
                                             c.max_length, c.no_repeat)]
    beam_caps = [decode(beam_search(model, img, tokenizer.start_id, tokenizer.end_id, c.beam, c.max_length,
                                    c.length_alpha, c.no_repeat)) for img in images]
    refs = [s["references"] for s in test.samples]
    g, b = caption_scores(greedy_caps, refs), caption_scores(beam_caps, refs)
    frequent = most_frequent_caption(train)
    base = caption_scores([frequent] * len(refs), refs)
    record = {"task": "captioning", "dataset": dataset, "bleu4": b["bleu4"], "cider": b["cider"],
              "greedy_bleu4": g["bleu4"], "greedy_cider": g["cider"], "baseline_bleu4": base["bleu4"],
              "baseline_cider": base["cider"], "baseline_caption": frequent, "beam": c.beam,
              "no_repeat": c.no_repeat, "length_alpha": c.length_alpha,
              "steps": opt.steps, "num_test": len(test), "final_token_acc": records[-1]["token_acc"]}
    return {"record": record, "model": model, "greedy": greedy_caps, "beam": beam_caps, "test": test,
            "records": records}


def _decoder(tokenizer: Tokenizer):  # noqa: ANN202 - a closure over the tokenizer
    return lambda ids: tokenizer.decode(ids)
