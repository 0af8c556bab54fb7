"""Hard-negative captions (NegCLIP, issue 10): the swapped caption, the batch that carries it, the loss columns."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from florence_lib.config import ConfigError, from_dict
from florence_lib.data.world import World, WorldConfig, WorldPairs
from florence_lib.data.world_text import captions, hard_negative, template_captions
from florence_lib.losses import clip_loss, unicl_loss, unicl_targets
from florence_lib.training.batches import PairCollate
from florence_lib.training.config import PretrainConfig
from florence_lib.training.grad_cache import grad_cache_step
from florence_lib.training.objectives import ContrastiveObjective


@pytest.fixture(scope="module")
def world() -> World:
    return World(WorldConfig(seed=3))


def _true_texts(objects, background, gradient, k):
    """Template k rendered for every order of the scene's objects: captions that describe the scene truly."""
    return {template_captions(tuple(p), background, gradient)[k] for p in itertools.permutations(objects)}


def test_hard_negative_swaps_attributes_and_is_never_true(world):
    made = 0
    for i in range(300):
        layout = world.layout("train", i)
        texts = template_captions(layout.objects, layout.background, layout.gradient)
        assert sorted(texts, key=lambda t: len(t.split())) == captions(layout.objects, layout.background,
                                                                       layout.gradient)
        if len(layout.objects) == 1:
            assert all(hard_negative(layout.objects, layout.background, layout.gradient, t, 0.5) is None
                       for t in texts)
            continue
        assert hard_negative(layout.objects, layout.background, layout.gradient, texts[0], 0.5) is None  # subject
        for k, text in enumerate(texts[1:], start=1):
            for u in (0.0, 0.37, 0.999):
                negative = hard_negative(layout.objects, layout.background, layout.gradient, text, u)
                if negative is None:
                    continue
                made += 1
                assert negative != text
                assert sorted(negative.replace(",", "").split()) == sorted(text.replace(",", "").split())  # rebound
                assert negative not in _true_texts(layout.objects, layout.background, layout.gradient, k)
                assert negative not in captions(layout.objects, layout.background, layout.gradient)
    assert made > 1000


def test_hard_negative_hand_made_case():
    from florence_lib.data.world_render import COLOUR_NAMES, SHAPES
    from florence_lib.data.world_text import WorldObject

    red_circle = WorldObject(SHAPES.index("circle"), COLOUR_NAMES.index("red"), 1, 0, 4, 0.5, 0.5)
    blue_square = WorldObject(SHAPES.index("square"), COLOUR_NAMES.index("blue"), 0, 0, 0, 0.2, 0.2)
    objects = (red_circle, blue_square)
    text = template_captions(objects, 0, 0)[1]
    assert text == "a red circle with a blue square"
    # the colours or the shapes swapped (this template names no position)
    assert {hard_negative(objects, 0, 0, text, u) for u in (0.0, 0.99)} == {"a blue circle with a red square",
                                                                            "a red square with a blue circle"}
    # two objects alike in all but position: no swap of a position-free caption is false
    twin = red_circle._replace(size=0, cell=0)
    alike = (red_circle._replace(size=0), twin)
    assert hard_negative(alike, 0, 0, template_captions(alike, 0, 0)[4], 0.5) is None
    positioned = template_captions(alike, 0, 0)[5]
    assert hard_negative(alike, 0, 0, positioned, 0.5) is None  # swapping twins' places describes the same scene


def test_world_pairs_carry_negatives_only_where_asked(world):
    plain = WorldPairs(world, "train", 400, image_label_fraction=0.3)
    assert plain.negatives == [None] * 400 and "negative" not in plain[0]
    pairs = WorldPairs(world, "train", 400, image_label_fraction=0.3, hard_negatives=1.0)
    assert pairs.texts == plain.texts and pairs.labels == plain.labels and pairs.num_labels == plain.num_labels
    known = set(pairs.texts) | set(pairs.class_texts)
    carried = [i for i, n in enumerate(pairs.negatives) if n is not None]
    eligible = [i for i in range(400) if not pairs.is_image_label[i] and pairs.texts[i] not in pairs.class_texts
                and len(world.layout("train", i).objects) > 1]
    assert set(carried) <= set(eligible) and len(carried) > 0.9 * len(eligible)
    assert not any(pairs.negatives[i] in known for i in carried)  # no pair has a negative as its positive
    assert pairs[carried[0]]["negative"] == pairs.negatives[carried[0]]
    half = WorldPairs(world, "train", 400, image_label_fraction=0.3, hard_negatives=0.5)
    share = sum(n is not None for n in half.negatives) / len(carried)
    assert 0.35 < share < 0.65
    assert all(n is None or n == pairs.negatives[i] for i, n in enumerate(half.negatives))
    with pytest.raises(ValueError, match="hard_negatives"):
        WorldPairs(world, "train", 4, hard_negatives=1.5)


def test_collate_tokenizes_the_negatives_apart():
    from florence_lib.data.tokenizer import Tokenizer

    image = torch.zeros(3, 8, 8)
    samples = [{"image": image, "text": "a red circle", "label": 0},
               {"image": image, "text": "a red circle with a blue square", "label": 70,
                "negative": "a blue circle with a red square"}]
    batch = PairCollate(Tokenizer())(samples)
    assert batch["input_ids"].shape[0] == 2 and batch["negative_input_ids"].shape[0] == 1
    assert batch["negative_attention_mask"].shape == batch["negative_input_ids"].shape
    assert "negative_input_ids" not in PairCollate(Tokenizer())(samples[:1])


def _features(n, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, dim, generator=g, dtype=torch.float64), dim=-1)


def test_loss_without_negatives_is_todays_loss_exactly():
    image, text, labels = _features(8), _features(8, seed=1), torch.tensor([0, 1, 1, 2, 3, 0, 4, 5])
    scale = torch.tensor(12.0, dtype=torch.float64)
    targets = unicl_targets(labels, dtype=image.dtype)
    today = (F.cross_entropy(scale * image @ text.T, targets) + F.cross_entropy(scale * text @ image.T, targets)) / 2
    assert torch.equal(unicl_loss(image, text, labels, scale), today)
    assert torch.equal(unicl_loss(image, text, labels, scale, negative_text_features=None), today)
    assert torch.equal(unicl_loss(image, text, labels, scale, negative_text_features=text[:0]), today)
    arange = torch.arange(8)
    clip_today = (F.cross_entropy(scale * image @ text.T, arange) + F.cross_entropy(scale * text @ image.T, arange)) / 2
    assert torch.equal(clip_loss(image, text, scale), clip_today)
    assert torch.equal(clip_loss(image, text, scale, negative_text_features=text[:0]), clip_today)


def test_negatives_are_extra_image_to_text_columns_hand_made():
    """Two images, their two texts and one negative; labels [0, 0] (two positives each): Eq. 2-3 by hand."""
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    text = torch.tensor([[0.6, 0.8], [0.8, 0.6]], dtype=torch.float64)
    negative = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    s, labels = 2.0, torch.tensor([0, 0])
    sim = [[s * float(image[i] @ text[j]) for j in range(2)] for i in range(2)]
    neg = [s * float(image[i] @ negative[0]) for i in range(2)]
    i2t = -sum(sum(math.log(math.exp(sim[i][k]) / (math.exp(sim[i][0]) + math.exp(sim[i][1]) + math.exp(neg[i])))
                   for k in range(2)) / 2 for i in range(2)) / 2
    t2i = -sum(sum(math.log(math.exp(sim[k][j]) / (math.exp(sim[0][j]) + math.exp(sim[1][j]))) for k in range(2)) / 2
               for j in range(2)) / 2  # no row for the negative; the text-to-image direction is unchanged
    loss = unicl_loss(image, text, labels, torch.tensor(s, dtype=torch.float64), negative_text_features=negative)
    assert loss.item() == pytest.approx((i2t + t2i) / 2, abs=1e-12)
    assert loss.item() > unicl_loss(image, text, labels, torch.tensor(s, dtype=torch.float64)).item()
    # CLIP: targets stay each image's own text
    clip = clip_loss(image, text, torch.tensor(s, dtype=torch.float64), negative_text_features=negative)
    i2t = -sum(math.log(math.exp(sim[i][i]) / (math.exp(sim[i][0]) + math.exp(sim[i][1]) + math.exp(neg[i])))
               for i in range(2)) / 2
    t2i = -sum(math.log(math.exp(sim[j][j]) / (math.exp(sim[0][j]) + math.exp(sim[1][j]))) for j in range(2)) / 2
    assert clip.item() == pytest.approx((i2t + t2i) / 2, abs=1e-12)


def test_objective_encodes_negatives_with_the_text_tower_and_they_get_gradient():
    from tiny_unicl import CONTEXT, tiny_batch, tiny_model

    model, batch = tiny_model(), tiny_batch()
    g = torch.Generator().manual_seed(9)
    ids = torch.randint(200, 512, (3, CONTEXT), generator=g)
    ids[:, CONTEXT // 2] = 102
    batch = {**batch, "negative_input_ids": ids, "negative_attention_mask": torch.ones(3, CONTEXT, dtype=torch.long)}
    loss, logs = ContrastiveObjective("unicl")(model, batch)
    assert logs["negatives"] == 3.0
    image, text, scale = model(batch["image"], batch["input_ids"], batch["attention_mask"])
    negatives = model.encode_text(ids, batch["negative_attention_mask"])
    expected = unicl_loss(image, text, batch["label"], scale, negative_text_features=negatives)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    plain, _ = ContrastiveObjective("unicl")(model, tiny_batch())
    assert loss.item() > plain.item()  # more columns in the softmax: a larger image-to-text loss
    negatives.retain_grad()
    expected.backward()
    assert negatives.grad is not None and negatives.grad.abs().sum() > 0  # they are trained, not only scored
    with pytest.raises(ValueError, match="hard negatives"):
        grad_cache_step(model, batch, ContrastiveObjective("unicl").features_loss, chunk_size=4)


def test_config_refuses_negatives_where_they_are_not_supported():
    assert from_dict(PretrainConfig, {"data": {"hard_negatives": 0.5}}).data.hard_negatives == 0.5
    assert PretrainConfig().data.hard_negatives == 0.0
    with pytest.raises(ConfigError, match="hard_negatives"):
        from_dict(PretrainConfig, {"data": {"hard_negatives": 1.5}})
    with pytest.raises(ConfigError, match="gradient cache"):
        from_dict(PretrainConfig, {"data": {"hard_negatives": 0.5}, "distributed": {"grad_cache_chunk": 4}})
    with pytest.raises(ConfigError, match="DeepSpeed"):
        from_dict(PretrainConfig, {"data": {"hard_negatives": 0.5}, "distributed": {"engine": "deepspeed"}})
    with pytest.raises(ConfigError, match="world source"):
        from_dict(PretrainConfig, {"data": {"hard_negatives": 0.5, "sources": [{"kind": "pairs", "path": "x.csv"}]}})


def test_negatives_never_name_a_held_out_combination(world):
    """No train/val/test text names a held-out (colour, shape) pair; a swapped caption must not either."""
    import re

    pairs = WorldPairs(world, "train", 1500, caption="varied", hard_negatives=1.0)
    negatives = [n for n in pairs.negatives if n is not None]
    assert len(negatives) > 500
    for name in world.cfg.heldout:
        colour, shape = name.split()
        pattern = re.compile(rf"\b{colour} (?:striped |dotted |checkered )?{shape}\b")
        assert not any(pattern.search(n) for n in negatives), name
    # unconstrained, the swaps do make them: the exclusion is what keeps them out
    layouts = [world.layout("train", i) for i in range(len(pairs))]
    made = [hard_negative(lay.objects, lay.background, lay.gradient, t, 0.5)
            for lay, t, n in zip(layouts, pairs.texts, pairs.negatives) if n is not None]
    assert any(re.search(rf"\b{n.split()[0]} (?:striped |dotted |checkered )?{n.split()[1]}\b", m or "")
               for m in made for n in world.cfg.heldout)
