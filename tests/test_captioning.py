"""Captioning on METER: teacher forcing learns a tiny set, greedy == beam search of width 1, causal decoding."""

from __future__ import annotations

import torch

from florence_lib.config import load_config
from florence_lib.data.tokenizer import Tokenizer
from florence_lib.data.world import World, WorldConfig
from florence_lib.models.meter import METERCaptioner, meter_config
from florence_lib.training.batches import step_loader
from florence_lib.vl.captioning import (
    CaptionObjective,
    beam_search,
    block_repeat,
    caption_scores,
    greedy,
    most_frequent_caption,
)
from florence_lib.vl.config import VLConfig
from florence_lib.vl.data import CaptionCollate, ListDataset, world_captions
from florence_lib.vl.train import build_engine

TINY = {"text": {"pretrained": False, "width": 32, "layers": 1, "heads": 2}, "width": 64}


def test_decoder_is_causal() -> None:
    torch.manual_seed(0)
    model = METERCaptioner(meter_config("meter_tiny", **TINY), decoder_layers=1, max_length=16).eval()
    images = torch.randn(2, 3, 32, 32)
    ids = torch.randint(1000, 2000, (2, 8))
    changed = ids.clone()
    changed[:, 5:] = 7
    a, b = model(images, ids), model(images, changed)
    torch.testing.assert_close(a[:, :5], b[:, :5])  # a later token never changes an earlier prediction
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_tiny_caption_set_is_learned_and_decoded() -> None:
    torch.manual_seed(0)
    tok = Tokenizer(24)
    data = world_captions(World(WorldConfig(seed=0)), "train", 2, 32, which="long")
    model = METERCaptioner(meter_config("meter_tiny", **TINY), decoder_layers=1, max_length=24)
    opt = load_config(VLConfig, command="vl", profile="smoke").caption.optim
    opt.steps, opt.lr, opt.batch_size, opt.warmup_fraction = 150, 3e-3, len(data), 0.05
    opt.fusion_lr_mult = opt.head_lr_mult = 1.0
    engine = build_engine(model, CaptionObjective(), opt, torch.device("cpu"), "fp32")
    records = engine.fit(step_loader(data, CaptionCollate(tok), batch_size=len(data), seed=0), opt.steps,
                         log_every=1)
    assert records[-1]["token_acc"] > 0.97
    model.eval()
    images = torch.stack([s["image"] for s in data.samples])
    captions = [tok.decode(ids) for ids in greedy(model, images, tok.start_id, tok.end_id, 24)]
    assert captions == [tok.decode(tok([s["text"]])["input_ids"][0]) for s in data.samples]
    for image, ids in zip(images, greedy(model, images, tok.start_id, tok.end_id, 24), strict=True):
        assert beam_search(model, image, tok.start_id, tok.end_id, beam=1, max_length=24) == ids
        assert len(beam_search(model, image, tok.start_id, tok.end_id, beam=3, max_length=24)) > 0


def test_most_frequent_caption_is_the_trivial_baseline() -> None:
    texts = ("A red circle.", "a red circle", "a blue square", "a big blue square", "a blue square")
    assert most_frequent_caption(ListDataset([{"text": t} for t in texts])) == "a red circle"  # tie: shorter
    more = ListDataset([{"text": t} for t in (*texts, "a blue square")])
    assert most_frequent_caption(more) == "a blue square"
    scores = caption_scores(["a blue square"] * 2, [["a blue square"], ["a red circle"]])
    assert 0 < scores["bleu4"] < 1 and scores["cider"] > 0


class LoopingDecoder(torch.nn.Module):
    """After [CLS] (1) says 'a' (5); after 'a' says 'a' again (log p -0.1), else [SEP] (2, -1.0); then [SEP]."""

    def memory(self, images: torch.Tensor) -> torch.Tensor:
        return images.new_zeros(images.shape[0], 1, 4)

    def decoder(self, ids: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        logits = torch.full((ids.shape[0], ids.shape[1], 8), -20.0)
        last = ids[:, -1]
        logits[last == 1, -1, 5] = 0.0
        logits[last == 5, -1, 5], logits[last == 5, -1, 2] = -0.1, -1.0
        logits[(last != 1) & (last != 5), -1, 2] = 0.0
        return logits


def test_repeat_blocking_stops_a_looping_decoder() -> None:
    model, images = LoopingDecoder(), torch.zeros(2, 3, 8, 8)
    assert greedy(model, images, 1, 2, max_length=6) == [[5] * 6] * 2  # the loop, to the length limit
    assert greedy(model, images, 1, 2, max_length=6, no_repeat=1) == [[5]] * 2  # 'a' then [SEP]
    assert beam_search(model, images[0], 1, 2, beam=2, max_length=6, no_repeat=1) == [5]
    # unblocked at alpha 1, 'a' x n then [SEP] scores (-1.0 - 0.1 (n - 1)) / (n + 1): the longest allowed wins
    assert beam_search(model, images[0], 1, 2, beam=2, max_length=6) == [5] * 6
    assert beam_search(model, images[0], 1, 2, beam=2, max_length=6, alpha=0.0) == [5]  # no length penalty


class MarkovDecoder(torch.nn.Module):
    """Next-token logits from a fixed table indexed by the last token (a toy decoder; the image is ignored)."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table

    def memory(self, images: torch.Tensor) -> torch.Tensor:
        return images.new_zeros(images.shape[0], 1, 4)

    def decoder(self, ids: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        return self.table[ids]


def exhaustive_best(table: torch.Tensor, start: int, end: int, max_length: int, alpha: float) -> list[int]:
    """The caption of at most ``max_length`` tokens with the best log p / (tokens + 1)^alpha, by enumeration."""
    logp = table.log_softmax(-1)
    best, frontier = (-float("inf"), []), [(0.0, [start])]
    for _ in range(max_length + 1):
        grown = []
        for s, row in frontier:
            for t in range(table.shape[0]):
                if t == start:
                    continue
                total = s + logp[row[-1], t].item()
                if t == end:
                    best = max(best, (total / len(row) ** alpha, row[1:]))
                else:
                    grown.append((total, row + [t]))
        frontier = [g for g in grown if len(g[1]) <= max_length + 1]
    return best[1]


def test_beam_search_is_exact_when_the_beam_holds_every_hypothesis() -> None:
    image = torch.zeros(3, 8, 8)
    for seed in range(5):
        table = torch.randn(5, 5, generator=torch.Generator().manual_seed(seed)) * 2
        table[:, 0] = -1e4  # the start token (0) is never generated; 1 is the end token; 3^4 = 81 live at most
        for alpha in (0.0, 0.6, 1.0):
            want = exhaustive_best(table, 0, 1, 4, alpha)
            assert beam_search(MarkovDecoder(table), image, 0, 1, beam=81, max_length=4, alpha=alpha) == want


def test_beam_search_on_a_decoder_that_loves_repeating_does_not_repeat() -> None:
    # after 'striped' (3) 'checkered' (4) and back (log p ~ -0.05 each), [SEP] (1) at ~ -3: beam 2 loops to the
    # length limit ('striped checkered striped checkered ...') unless the 2-gram repeat is blocked
    table = torch.full((6, 6), -8.0)
    table[0, 3] = table[3, 4] = table[4, 3] = 0.0
    table[3, 1] = table[4, 1] = table[5, 1] = -3.0
    table[3, 5] = table[4, 5] = -4.0
    image = torch.zeros(3, 8, 8)
    looping = beam_search(MarkovDecoder(table), image, 0, 1, beam=2, max_length=8)
    assert looping == [3, 4] * 4
    for no_repeat in (2, 4):
        caption = beam_search(MarkovDecoder(table), image, 0, 1, beam=2, max_length=8, no_repeat=no_repeat)
        assert 0 < len(caption) < 8
        assert not any(caption[i:i + n] == caption[i + n:i + 2 * n] for n in range(1, 5)
                       for i in range(len(caption) - 2 * n + 1)), caption


def test_repeat_blocking_forbids_exactly_the_back_to_back_repeats() -> None:
    logp = torch.zeros(3, 10)
    ids = torch.tensor([[1, 4, 5, 4], [1, 6, 7, 8], [1, 3, 3, 9]])
    blocked = block_repeat(logp, ids, longest=2).isinf()
    # row 0: 4 again ('4 4'), 5 ('4 5 4 5'); row 1: only 8; row 2: only 9 ('3 9 3' is no back-to-back repeat)
    assert [torch.nonzero(b).flatten().tolist() for b in blocked] == [[4, 5], [8], [9]]
    assert block_repeat(logp, ids, longest=1).isinf().sum() == 3
