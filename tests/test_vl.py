"""The METER tasks: MLM masking statistics, ITM negatives, soft scores, answer vocabulary, the official VQA
accuracy and normalisation, world question types, and a tiny VQA set that overfits on the engine."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from florence_lib.config import ConfigError, load_config
from florence_lib.data.tokenizer import Tokenizer
from florence_lib.data.world import World, WorldConfig
from florence_lib.models.meter import METERForVQA, meter_config
from florence_lib.training.batches import step_loader
from florence_lib.vl.answers import build_answer_vocab, soft_score, soft_targets
from florence_lib.vl.config import VLConfig
from florence_lib.vl.data import ListDataset, QuestionCollate, world_question_type, world_questions
from florence_lib.vl.feature_cache import cache_frozen_features
from florence_lib.vl.itm import itm_negatives
from florence_lib.vl.masking import IGNORE, mask_tokens
from florence_lib.vl.objectives import VQAObjective, cached_features
from florence_lib.vl.train import (
    MASK_ID,
    VQAData,
    build_engine,
    evaluate_predictions,
    predict_vqa,
    resolve_meter_config,
    vqa_optim,
)
from florence_lib.vl.vqa_metrics import exact_match, normalize_answer, vqa_accuracy


# ------------------------------------------------------------------------------------------------ MLM
def test_mlm_masking_statistics() -> None:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (4000, 30))
    ids[:, 0], ids[:, 25] = 101, 102  # [CLS] ... [SEP] then padding
    ids[:, 26:] = 0
    mask = (ids != 0).long()
    masked, labels = mask_tokens(ids, mask, mask_id=MASK_ID, vocab_size=30522, special_ids=(0, 101, 102),
                                 generator=g)
    chosen = labels != IGNORE
    assert not chosen[:, [0, 25]].any() and not chosen[:, 26:].any()  # never special tokens or padding
    assert torch.equal(labels[chosen], ids[chosen])  # the loss targets are the original tokens
    assert torch.equal(masked[~chosen], ids[~chosen])  # nothing else changes
    assert chosen.float().sum() / mask[:, 1:25].sum() == pytest.approx(0.15, abs=0.005)
    n = chosen.sum().item()
    as_mask = (masked[chosen] == MASK_ID).sum().item() / n
    kept = (masked[chosen] == ids[chosen]).sum().item() / n
    assert as_mask == pytest.approx(0.8, abs=0.01)
    assert kept == pytest.approx(0.1, abs=0.01)
    assert 1 - as_mask - kept == pytest.approx(0.1, abs=0.01)  # random tokens


def test_every_text_gets_a_masked_token() -> None:
    ids = torch.tensor([[101, 2003, 102, 0, 0]] * 500)
    _, labels = mask_tokens(ids, (ids != 0).long(), mask_id=MASK_ID, vocab_size=30522, special_ids=(0, 101, 102),
                            generator=torch.Generator().manual_seed(1))
    assert ((labels != IGNORE).sum(1) == 1).all()
    assert (labels[:, 1] == 2003).all()


def test_mask_id_is_the_tokenizers() -> None:
    tok = Tokenizer(16)
    assert tok._tok.mask_token_id == MASK_ID


# ------------------------------------------------------------------------------------------------ ITM
def test_itm_negatives_never_equal_the_positive() -> None:
    texts = ["a red circle", "a red circle", "a blue star", "two shapes", "a blue star", "a green ring"] * 3
    g = torch.Generator().manual_seed(0)
    negatives = 0
    for _ in range(300):
        index, match = itm_negatives(texts, generator=g)
        for i, (j, m) in enumerate(zip(index.tolist(), match.tolist(), strict=True)):
            if m == 1:
                assert j == i
            else:
                assert texts[j] != texts[i]
                negatives += 1
    assert negatives / (300 * len(texts)) == pytest.approx(0.5, abs=0.03)


def test_itm_without_a_possible_negative_stays_positive() -> None:
    index, match = itm_negatives(["same"] * 4, generator=torch.Generator().manual_seed(0), fraction=1.0)
    assert match.tolist() == [1, 1, 1, 1] and index.tolist() == [0, 1, 2, 3]


def test_hard_negatives_follow_the_weights() -> None:
    texts = ["a", "b", "c", "d"]
    weights = torch.full((4, 4), 1e-6)
    weights[:, 2] = 1.0  # image 2 is everyone's hardest negative
    weights[2, 3] = 1.0  # and image 3 is text 2's
    index, match = itm_negatives(texts, generator=torch.Generator().manual_seed(0), fraction=1.0, weights=weights)
    assert match.tolist() == [0, 0, 0, 0]
    assert index.tolist() == [2, 2, 3, 2]


# ------------------------------------------------------------------------------------------------ answers
def test_soft_scores() -> None:
    assert [soft_score(k) for k in range(7)] == [0.0, 0.3, 0.6, 0.9, 1.0, 1.0, 1.0]
    vocab = ["yes", "no", "2"]
    answers = [["yes"] * 4 + ["no"] * 2 + ["two"] + ["maybe"] * 3, ["no"], ["yes", "yes", "yes", "no"]]
    t = soft_targets(answers, vocab)
    torch.testing.assert_close(t, torch.tensor([[1.0, 0.6, 0.3], [0.0, 1.0, 0.0], [0.9, 0.3, 0.0]]))


def test_answer_vocabulary_top_k_and_min_count() -> None:
    answers = [["Yes"], ["yes"], ["no"], ["two"], ["2"], ["2"], ["blue"], ["red."]]
    assert build_answer_vocab(answers, top_k=10) == ["2", "yes", "blue", "no", "red"]
    assert build_answer_vocab(answers, top_k=2) == ["2", "yes"]
    assert build_answer_vocab(answers, top_k=10, min_count=2) == ["2", "yes"]


# ------------------------------------------------------------------------------------------------ VQA metric
@pytest.mark.parametrize(("raw", "normalised"), [
    ("Two", "2"), ("the dog.", "dog"), ("A Man", "man"), ("dont", "don't"), ("3.5", "3.5"), ("yes!", "yes"),
    ("100,978", "100978"), ("hot-dog", "hot dog"), ("red, white", "red white"), ("isnt it", "isn't it"),
    ("  Ten\tapples ", "10 apples"), ("none", "0"), ("an apple", "apple")])
def test_official_answer_normalisation(raw: str, normalised: str) -> None:
    assert normalize_answer(raw) == normalised


@pytest.mark.parametrize(("matches", "accuracy"), [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_official_accuracy_over_ten_annotators(matches: int, accuracy: float) -> None:
    answers = ["2"] * matches + ["3"] * (10 - matches)
    assert vqa_accuracy("two", answers) == pytest.approx(accuracy)
    assert vqa_accuracy("two", answers) == pytest.approx(soft_score(matches))  # the soft targets mirror it


def test_single_consensus_answer_needs_exact_match() -> None:
    assert vqa_accuracy("cat", ["cat"]) == 0.0  # every leave-one-out subset is empty
    assert exact_match("The cat.", "cat") == 1.0
    assert exact_match("dog", "cat") == 0.0


def test_world_question_types() -> None:
    world = World(WorldConfig(seed=0))
    seen = {world_question_type(q) for i in range(40) for q, _ in world.scene("train", i, image_size=32).qa}
    assert seen == {"counting", "colour", "shape", "position", "existence", "relation"}
    with pytest.raises(ValueError, match="no world question template"):
        world_question_type("why?")


# ------------------------------------------------------------------------------------------------ learning
def test_tiny_vqa_set_overfits_on_the_engine() -> None:
    torch.manual_seed(0)
    world = World(WorldConfig(seed=0))
    data = world_questions(world, "train", 4, 32)
    vocab = build_answer_vocab(s["answers"] for s in data.samples)
    tok = Tokenizer(32)
    cfg = meter_config("meter_tiny", text={"pretrained": False, "width": 32, "layers": 1, "heads": 2}, width=64)
    model = METERForVQA(cfg, len(vocab))
    opt = load_config(VLConfig, command="vl", profile="smoke").vqa.optim
    opt.steps, opt.lr, opt.warmup_fraction, opt.batch_size = 50, 2e-3, 0.05, len(data)
    opt.fusion_lr_mult = opt.head_lr_mult = 1.0
    engine = build_engine(model, VQAObjective(), opt, torch.device("cpu"), "fp32")
    loader = step_loader(data, QuestionCollate(tok, vocab), batch_size=len(data), seed=0)
    records = engine.fit(loader, opt.steps, log_every=1)
    assert records[-1]["loss"] < 0.4 * records[0]["loss"]
    predictions = predict_vqa(model, data, vocab, tok, torch.device("cpu"))
    assert evaluate_predictions(predictions, data, exact=True)["accuracy"] >= 0.9


def test_frozen_tower_cache_gives_the_same_logits() -> None:
    torch.manual_seed(0)
    world = World(WorldConfig(seed=0))
    data = world_questions(world, "train", 3, 32)
    vocab = build_answer_vocab(s["answers"] for s in data.samples)
    tok = Tokenizer(32)
    text = {"pretrained": False, "width": 32, "layers": 1, "heads": 2}
    model = METERForVQA(meter_config("meter_tiny", text={**text, "freeze": True}, freeze_image=True, width=64),
                        len(vocab)).eval()
    cached = cache_frozen_features(model.meter, data, tok, torch.device("cpu"), batch_size=4)
    assert len({id(s["stage_map"]) for s in cached.samples}) == 3  # one map per scene, shared by its questions
    plain, fast = (QuestionCollate(tok, vocab)(d.samples) for d in (data, cached))
    assert "stage_map" not in plain and fast["text_hidden"].shape[:2] == fast["input_ids"].shape
    with torch.no_grad():
        expected = model(plain["image"], plain["input_ids"], plain["attention_mask"])
        got = model(torch.zeros_like(fast["image"]), fast["input_ids"], fast["attention_mask"],
                    **cached_features(fast))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    blind = cache_frozen_features(model.meter, data, tok, torch.device("cpu"), blind=True)
    zero = model.meter.stage_map(torch.zeros_like(plain["image"][:1]))[0]
    torch.testing.assert_close(blind.samples[0]["stage_map"], zero)
    assert all(s["stage_map"] is blind.samples[0]["stage_map"] for s in blind.samples)  # computed once
    trainable = METERForVQA(meter_config("meter_tiny", text=text, width=64), len(vocab))
    assert not set(cache_frozen_features(trainable.meter, data, tok, torch.device("cpu")).samples[0]) & {
        "stage_map", "text_hidden"}


def test_bad_config_is_refused() -> None:
    with pytest.raises(ConfigError, match="vqa.optim.lr"):
        load_config(VLConfig, command="vl", profile="smoke", overrides=["vqa.optim.lr=-1"])
    with pytest.raises(ConfigError, match="hard_negatives"):
        load_config(VLConfig, command="vl", profile="smoke", overrides=["pretrain.hard_negatives=true"])
    with pytest.raises(ConfigError, match="model_overrides.*bogus"):
        load_config(VLConfig, command="vl", profile="smoke", overrides=["model_overrides={bogus: 1}"])


def test_vqav2_subset_takes_its_own_steps() -> None:
    cfg = load_config(VLConfig, command="vl", profile="smoke", overrides=["vqa.vqav2_steps=3"])
    data = VQAData(ListDataset([{}]), ListDataset([{}]), ["yes"], True, "vqav2")
    assert vqa_optim(cfg, data).steps == 3 and cfg.vqa.optim.steps == 4
    assert vqa_optim(cfg, dataclasses.replace(data, name="world")).steps == 4


def test_model_overrides_reach_the_model() -> None:
    cfg = load_config(VLConfig, command="vl", profile="smoke",
                      overrides=["model_overrides={image_stage: 1, text: {freeze: true}}"])
    mcfg = resolve_meter_config(cfg)
    assert mcfg.image_stage == 1 and mcfg.text.freeze
    model = METERForVQA(mcfg, 3)
    assert not any(p.requires_grad for p in model.meter.text_encoder.parameters())
    assert all(p.requires_grad for p in model.meter.text_layers.parameters())


# ------------------------------------------------------------------------------------------------ plumbing
def test_unicl_image_tower_and_vl_checkpoint_round_trip(tmp_path) -> None:
    from florence_lib.models import create_model
    from florence_lib.models.meter import METERPretraining
    from florence_lib.training.checkpoint import save_checkpoint
    from florence_lib.vl.train import (
        load_unicl_image_encoder,
        load_vl_checkpoint,
        resolve_meter_config,
        spec_of,
    )

    unicl = create_model("unicl_tiny")
    ckpt = save_checkpoint(tmp_path / "unicl", unicl, step=1, model_spec={"name": "unicl_tiny", "kwargs": {}})
    cfg = load_config(VLConfig, command="vl", profile="smoke", overrides=[f"unicl_checkpoint={ckpt}"])
    mcfg = resolve_meter_config(cfg)
    model = METERPretraining(mcfg)
    assert load_unicl_image_encoder(model.meter, ckpt) > 0
    torch.testing.assert_close(model.meter.image_encoder.stages[0].embed.proj.weight,
                               unicl.image_encoder.stages[0].embed.proj.weight)
    saved = save_checkpoint(tmp_path / "vl", model, step=2, model_spec=spec_of(mcfg, "meter_pretraining"))
    loaded = load_vl_checkpoint(saved)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_vqa_pretrained_false_starts_a_fresh_fusion(tmp_path, monkeypatch) -> None:
    from florence_lib.runs import RunDir
    from florence_lib.vl import experiment

    seen = []
    monkeypatch.setattr(experiment, "finetune_vqa", lambda cfg, run_dir, data, init=None, blind=False: (
        seen.append(init), {"metrics": {"accuracy": 0.5}})[1])
    monkeypatch.setattr(experiment, "majority_baseline", lambda data: {"accuracy": 0.3})
    sentinel = object()
    for pretrained in (True, False):
        cfg = load_config(VLConfig, command="vl", profile="smoke", overrides=[f"vqa.pretrained={str(pretrained).lower()}",
                                                                               "vqa.scenes=2", "vqa.test_scenes=1"])
        record = experiment.vqa_experiment(cfg, RunDir(tmp_path / str(pretrained)), init=sentinel)["record"]
        assert record["vl_pretrained"] is pretrained
    assert seen == [sentinel, sentinel, None, None]  # the blind twin starts where the model does


def test_cli_dry_run_and_bad_key(capsys) -> None:
    from florence_lib.cli import main

    assert main(["vl", "vqa", "--profile", "smoke", "--dry-run", "--set", "vqa.top_k=10"]) == 0
    assert "top_k: 10" in capsys.readouterr().out
    assert main(["vl", "pretrain", "--profile", "smoke", "--set", "pretrain.bogus=1"]) == 2
    assert "pretrain.bogus" in capsys.readouterr().err


def test_table8_keeps_the_paper_rows_labelled() -> None:
    from florence_lib.evaluation.tables import render
    from florence_lib.vl.tables import TABLE8, vqa_rows

    record = {"dataset": "world", "accuracy": 0.61, "blind_accuracy": 0.35, "majority_accuracy": 0.33}
    text = render(TABLE8, vqa_rows("ours", [record, {**record, "dataset": "vqav2", "accuracy": 0.2}]))
    assert "Florence (paper) | 80.16 | 80.36" in text
    assert "| ours | - | - | 61.00 | 20.00 |" in text
    assert "VQAv2 subset (exact match)" in text and "question only" in text


def test_unicl_similarity_weights_hard_negatives(tmp_path) -> None:
    from florence_lib.models import create_model
    from florence_lib.training.checkpoint import save_checkpoint
    from florence_lib.vl.train import unicl_similarity

    ckpt = save_checkpoint(tmp_path, create_model("unicl_tiny"), step=1, model_spec={"name": "unicl_tiny",
                                                                                       "kwargs": {}})
    similarity = unicl_similarity(ckpt, Tokenizer(16), torch.device("cpu"))
    texts = ["a red circle", "a blue star", "two shapes", "a green ring"]
    weights = similarity({"image": torch.randn(4, 3, 32, 32), "texts": texts})
    assert weights.shape == (4, 4)
    torch.testing.assert_close(weights.sum(1), torch.ones(4))
    index, match = itm_negatives(texts, generator=torch.Generator().manual_seed(0), fraction=1.0, weights=weights)
    assert match.tolist() == [0, 0, 0, 0] and all(i != j for i, j in enumerate(index.tolist()))


def test_vqav2_subset_images_resolve_from_data_root():
    from florence_lib.runs import data_root_or_none
    from florence_lib.vl.data import vqav2_questions

    root = data_root_or_none(None)
    if root is None or not (root / "vqa").is_dir():
        pytest.skip("no ../shared/data/vqa here")
    data = vqav2_questions(root, 32)  # paths like coco/val2017/x.jpg are relative to data_root
    assert len(data.samples) > 100 and data.samples[0]["image"].shape == (3, 32, 32)
