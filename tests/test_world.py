import hashlib
import re
from collections import Counter

import numpy as np
import pytest
import torch

from florence_lib.config import ConfigError, from_dict
from florence_lib.data.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    as_video,
    eval_transform,
    tensor_transform,
    train_transform,
    video_eval_transform,
    video_train_transform,
)
from florence_lib.data.world import (
    World,
    WorldClassification,
    WorldConfig,
    WorldDetection,
    WorldPairs,
    WorldRetrieval,
    WorldVideo,
    WorldVQA,
    subject_is_salient,
)
from florence_lib.data.world_render import COLOURS, POSITION_PHRASES, SIZE_NAMES
from florence_lib.data.world_text import RELATIONS
from florence_lib.data.world_text import captions as scene_captions


@pytest.fixture(scope="module")
def world() -> World:
    return World(WorldConfig(seed=7))


def _digest(a: np.ndarray) -> str:
    return hashlib.sha1(a.tobytes()).hexdigest()


def test_scene_fields(world):
    s = world.scene("train", 0)
    assert s.image.dtype == np.uint8 and s.image.shape == (64, 64, 3)
    assert s.boxes.dtype == np.float32 and s.boxes.shape == (len(s.objects), 4)
    assert s.box_labels.dtype == np.int64 and s.box_labels.tolist() == [o.shape for o in s.objects]
    assert len(s.captions) == 6 and s.captions == sorted(s.captions, key=lambda t: len(t.split()))
    assert s.captions[0] == f"{'an' if s.class_name[0] in 'aeiou' else 'a'} {s.class_name}"
    assert world.classes[s.label] == s.class_name and len(world.classes) == 64
    assert len(s.qa) == 6 and s.domain == "clean"


def test_byte_for_byte_reproducible_and_renderable_alone():
    a, b = World(WorldConfig(seed=3)), World(WorldConfig(seed=3))
    for i in (5, 0, 123456):
        b.scene("val", i + 1)  # rendering other samples first must not matter
        sa, sb = a.scene("val", i, "photo"), b.scene("val", i, "photo")
        assert _digest(sa.image) == _digest(sb.image)
        assert sa.captions == sb.captions and sa.qa == sb.qa and np.array_equal(sa.boxes, sb.boxes)
    ca, cb = a.clip("train", 9), b.clip("train", 9)
    assert _digest(ca.frames) == _digest(cb.frames) and ca.caption == cb.caption
    other = World(WorldConfig(seed=4)).scene("val", 5).image
    assert _digest(other) != _digest(a.scene("val", 5).image)


def test_splits_are_disjoint(world):
    digests = {split: {_digest(world.scene(split, i).image) for i in range(150)} for split in world.splits}
    for split, d in digests.items():
        assert len(d) == 150, split  # no repeated image inside a split either
    splits = list(digests)
    for i, a in enumerate(splits):
        for b in splits[i + 1:]:
            assert not digests[a] & digests[b], (a, b)


def test_heldout_combinations(world):
    heldout = set(world.cfg.heldout)
    named = re.compile(r"\b(" + "|".join(heldout) + r")\b")  # 'red square' but not 'checkered square'
    for split in ("train", "val", "test"):
        for i in range(300):
            s = world.scene(split, i)
            assert not {f"{o.colour_name} {o.shape_name}" for o in s.objects} & heldout
            for text in s.captions + [q for q, _ in s.qa]:
                assert not named.search(text), (split, i, text)
        assert not named.search(world.clip(split, i).caption)
    found = Counter(world.scene("heldout", i).class_name for i in range(200))
    assert set(found) == heldout  # every held-out combination shows up, and only those are main objects


def test_boxes_inside_image_and_cover_their_objects(world):
    for i in range(60):
        s = world.scene("train", i, image_size=80)
        b = s.boxes
        assert (b[:, :2] >= 0).all() and (b[:, 2:] <= 80).all() and (b[:, 2:] > b[:, :2]).all()
        outside = np.ones((80, 80), dtype=bool)
        for (x0, y0, x1, y1), o in zip(b.astype(int), s.objects):
            region = s.image[y0:y1, x0:x1]
            assert (region == COLOURS[o.colour_name]).all(-1).any()  # the object's own colour is in its box
            cx, cy = (x0 + x1) / 2 / 80, (y0 + y1) / 2 / 80
            assert abs(cx - o.cx) < 0.05 and abs(cy - o.cy) < 0.08  # ...around the object's centre
            outside[y0:y1, x0:x1] = False
        palette = np.array(list(COLOURS.values()))
        assert not (s.image[outside][:, None, :] == palette[None]).all(-1).any()  # nothing drawn elsewhere


def test_qa_answers_match_the_scene(world):
    kinds = Counter()
    for i in range(200):
        s = world.scene("test", i)
        at = {POSITION_PHRASES[o.cell]: o for o in s.objects}
        centre = {id(o): ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for o, b in zip(s.objects, s.boxes)}
        for q, a in s.qa:
            if q == "how many shapes are there?":
                assert a == str(len(s.objects)) == str(len(s.boxes))
                kinds["count"] += 1
            elif q.startswith("what colour is the "):
                place = next(p for p in at if q.endswith(p + "?"))
                assert at[place].colour_name == a and at[place].shape_name in q
                kinds["colour"] += 1
            elif q.startswith("what shape is "):
                assert at[q[len("what shape is "):-1]].shape_name == a
                kinds["shape"] += 1
            elif q.startswith("where is the "):
                colour, shape = q[len("where is the "):-1].split()
                assert [o.position for o in s.objects if (o.colour_name, o.shape_name) == (colour, shape)] == [a]
                kinds["where"] += 1
            elif q.startswith("is there "):
                colour, shape = q[:-1].split()[-2:]
                present = any((o.colour_name, o.shape_name) == (colour, shape) for o in s.objects)
                assert a == ("yes" if present else "no")
                kinds["exists-" + a] += 1
            elif q.startswith("how many "):
                colour = q.split()[2]
                assert a == str(sum(o.colour_name == colour for o in s.objects))
            else:
                rel = next(r for r in RELATIONS if f" {r} " in q)
                left, right = q[3:-1].split(f" {rel} ")
                ref = {f"the {o.colour_name} {o.shape_name}": o for o in s.objects}
                ref.update({f"the {o.colour_name} {o.shape_name} {POSITION_PHRASES[o.cell]}": o for o in s.objects})
                (ax, ay), (bx, by) = centre[id(ref[left])], centre[id(ref[right])]
                if a == "yes":  # checked on the pixels: box centres
                    assert {"to the left of": ax < bx, "to the right of": ax > bx, "above": ay < by,
                            "below": ay > by}[rel], q
                kinds["relation-" + a] += 1
    assert min(kinds.values()) >= 10, kinds  # every kind of question, both yes and no answers


@pytest.mark.parametrize("repeat", [0.0, 0.3, 0.7, 1.0])
def test_caption_repetition_share(repeat):
    world = World(WorldConfig(seed=1, caption_repeat=repeat))
    pairs = WorldPairs(world, "train", 500)
    counts = Counter(pairs.texts)
    repeated = sum(counts[t] > 1 for t in pairs.texts) / len(pairs)
    assert abs(repeated - repeat) < 0.07, (repeat, repeated)


def test_label_ids_equal_iff_texts_equal(world):
    pairs = WorldPairs(world, "train", 400, image_label_fraction=0.3)
    n_classes = len(world.classes)
    image_label = np.array(pairs.is_image_label)
    assert 0.2 < image_label.mean() < 0.4
    labels, texts = np.array(pairs.labels), pairs.texts
    class_text = np.array([t in pairs.class_texts for t in texts])
    assert (labels[image_label] < n_classes).all() and class_text[image_label].all()
    assert (labels[~class_text] >= n_classes).all()
    idx = np.flatnonzero(~image_label)
    for i in idx:
        for j in idx:
            assert (labels[i] == labels[j]) == (texts[i] == texts[j])
    for i in np.flatnonzero(image_label):  # a prompt of the scene's class name, labelled by that class
        assert world.classes[labels[i]] in texts[i] and labels[i] == world.scene("train", int(i)).label
    assert pairs.num_labels == n_classes + len({texts[i] for i in idx if not class_text[i]})
    assert len(set(labels[labels >= n_classes])) == len({texts[i] for i in idx if not class_text[i]})
    item = pairs[3]
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
    assert item["text"] == texts[3] and item["label"] == labels[3]


def test_a_caption_equal_to_a_class_text_takes_the_class_label(world):
    """'a pink hexagon' (short caption) and 'a pink hexagon.' (prompt) are positives of one class, not negatives."""
    pairs = WorldPairs(world, "train", 300, caption="short", image_label_fraction=0.5)
    for i, (text, label) in enumerate(zip(pairs.texts, pairs.labels)):
        subject = world.label_of(world.layout("train", i))
        assert label == subject, (i, text, label)  # short captions and prompts alike: the subject's class
    hexagon = world.classes.index("pink hexagon")
    assert pairs.class_texts["a pink hexagon"] == pairs.class_texts["a pink hexagon."] == hexagon
    assert pairs.num_labels == len(world.classes)  # no caption id beside the classes: every text named a class
    long_pairs = WorldPairs(world, "train", 100, caption="long")
    assert min(long_pairs.labels) >= len(world.classes) and long_pairs.num_labels == 64 + len(set(long_pairs.texts))


def test_varied_captions_cover_every_descriptive_caption_and_keep_the_short_share():
    """'varied': short with probability caption_repeat, else any of the five descriptive captions (the ones
    retrieval queries with), each about equally often; 'mixed' with the same draws keeps the same short ones."""
    world = World(WorldConfig(seed=1, caption_repeat=0.4))
    varied, mixed = WorldPairs(world, "train", 1000, caption="varied"), WorldPairs(world, "train", 1000)
    rank = Counter()
    for i, (v, m) in enumerate(zip(varied.texts, mixed.texts)):
        layout = world.layout("train", i)
        caps = scene_captions(layout.objects, layout.background, layout.gradient)
        assert (v == caps[0]) == (m == caps[0]), i  # the same pairs are short in both modes
        rank[caps.index(v)] += 1
    assert abs(rank[0] / 1000 - 0.4) < 0.05, rank
    assert all(90 <= rank[k] <= 150 for k in range(1, 6)), rank  # ~120 each of the 600 descriptive pairs
    with pytest.raises(ValueError, match="'varied'"):
        WorldPairs(world, "train", 10, caption="verbose")


def test_every_scene_of_every_split_has_one_salient_subject():
    """The labelling rule, on every layout of each default-sized split, and on pixels for a sample of them."""
    world = World(WorldConfig(seed=5))
    large, small = SIZE_NAMES.index("large"), SIZE_NAMES.index("small")
    heldout = set(world.heldout_pairs)
    for split in world.splits:
        counts = Counter()
        for i in range(world.split_size(split)):
            objects = world.layout(split, i).objects
            assert objects[0].size == large and all(o.size == small for o in objects[1:]), (split, i)
            pairs = [(o.shape, o.colour) for o in objects]
            if split == "heldout":  # held-out subjects only, and never as a distractor
                assert pairs[0] in heldout and not set(pairs[1:]) & heldout, (split, i)
            else:  # held-out compositions appear in no scene of train/val/test, as any object
                assert not set(pairs) & heldout, (split, i)
            counts[len(objects)] += 1
        assert set(counts) == {1, 2, 3, 4}, (split, counts)
        for i in range(0, world.split_size(split), world.split_size(split) // 40):
            for size in (48, 64):
                s = world.scene(split, i, image_size=size)
                assert subject_is_salient(s.boxes), (split, i, size, s.boxes)
            assert s.class_name == f"{s.objects[0].colour_name} {s.objects[0].shape_name}"


def test_captions_describe_the_scene(world):
    for i in range(200):
        s = world.scene("train", i)
        subject = s.objects[0]
        assert s.captions[0] == f"{'an' if subject.colour_name[0] in 'aeiou' else 'a'} {s.class_name}"
        for caption in s.captions[1:]:  # every longer caption names every object, the subject first
            at = [caption.find(f"{o.colour_name} ") for o in s.objects]
            assert all(o.shape_name in caption for o in s.objects) and min(at) >= 0, (i, caption)
            assert at[0] == min(at), (i, caption)


def test_every_domain_renders(world):
    clean = world.scene("val", 2, "clean", 48).image
    for domain in world.domains:
        s = world.scene("val", 2, domain, 48)
        assert s.image.shape == (48, 48, 3) and s.image.dtype == np.uint8 and s.domain == domain
        assert s.image.std() > 5  # not blank
        assert domain == "clean" or np.abs(s.image.astype(int) - clean).mean() > 5
    with pytest.raises(ValueError, match="domain"):
        world.scene("val", 2, "infrared")


@pytest.mark.parametrize("size", [32, 57, 96, 128])
def test_any_image_size(world, size):
    s = world.scene("train", 11, image_size=size)
    assert s.image.shape == (size, size, 3) and (s.boxes <= size).all() and (s.boxes[:, 2:] > s.boxes[:, :2]).all()
    clip = world.clip("train", 11, image_size=size)
    assert clip.frames.shape == (world.cfg.clip_length, size, size, 3)


def _action_visible(c) -> bool:
    """Is the clip's action visible in the actor's boxes and pixels?"""
    b = c.boxes
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    changed = not np.array_equal(c.frames[0], c.frames[-1])
    if c.action.startswith("moving"):
        track = cx if c.action in ("moving left", "moving right") else cy
        sign = -1 if c.action in ("moving left", "moving up") else 1
        return bool((sign * np.diff(track) > 0).all() and sign * (track[-1] - track[0]) > 20)
    if c.action in ("growing", "shrinking"):
        first, last = (area[0], area[-1]) if c.action == "growing" else (area[-1], area[0])
        return bool(last > 2 * first)
    if c.action == "rotating":
        return max(np.ptp(cx), np.ptp(cy)) < 8 and changed
    if c.action == "changing colour":
        before, after = c.caption.split(" from ")[1].split(" to ")
        return before != after and changed
    appear = np.isnan(b[0]).all() and np.isfinite(b[-1]).all()
    disappear = np.isfinite(b[0]).all() and np.isnan(b[-1]).all()
    return bool(appear if c.action == "appearing" else disappear)


def test_clip_actions_are_visible():
    world = World(WorldConfig(seed=0, clip_length=6))
    seen = set()
    for i in range(120):
        c = world.clip("train", i)
        assert c.frames.shape == (6, 64, 64, 3) and world.actions[c.label] == c.action
        assert _action_visible(c), (i, c.action, c.boxes)
        seen.add(c.action)
    assert seen == set(world.actions)


def test_task_datasets(world):
    cls = WorldClassification(world, "test", 20, domain="sketch")
    x, y = cls[0]
    assert x.shape == (3, 64, 64) and cls.classes[y] == world.scene("test", 0).class_name
    assert all("{}" in t for t in cls.templates) and len(cls.targets) == 20
    ret = WorldRetrieval(world, "test", 10, captions_per_image=5)
    assert ret[0].shape == (3, 64, 64) and len(ret.captions) == 10 and all(len(c) == 5 for c in ret.captions)
    det_image, target = WorldDetection(world, "val", 5)[4]
    assert det_image.shape == (3, 64, 64) and target["boxes"].shape == (len(target["labels"]), 4)
    assert torch.equal(target["boxes"], torch.from_numpy(world.scene("val", 4).boxes))
    vqa = WorldVQA(world, "val", 4)
    item = vqa[7]
    assert len(vqa) == 24 and item["scene"] == 1 and vqa.answers[item["answer_id"]] == item["answer"]
    video, label = WorldVideo(world, "train", 3)[2]
    assert video.shape == (8, 3, 64, 64) and video.dtype == torch.float32 and 0 <= label < 10
    with pytest.raises(IndexError):
        cls[20]


def test_config_is_validated():
    with pytest.raises(ConfigError, match=r"heldout\[0\]"):
        from_dict(WorldConfig, {"heldout": ["violet star"]})
    with pytest.raises(ConfigError, match="min_objects"):
        from_dict(WorldConfig, {"min_objects": 3, "max_objects": 2})
    with pytest.raises(ValueError, match="split"):
        World().scene("pretrain", 0)
    shape_world = World(WorldConfig(label_by="shape"))
    assert shape_world.classes[shape_world.scene("train", 0).label] == shape_world.scene("train", 0).objects[0].shape_name


def test_transforms_any_size_and_video_consistency(world):
    image = world.scene("train", 0, image_size=80).image
    mean = torch.tensor(CLIP_MEAN)[:, None, None]
    std = torch.tensor(CLIP_STD)[:, None, None]
    x = tensor_transform()(image)
    assert torch.allclose(x * std + mean, torch.from_numpy(image).permute(2, 0, 1) / 255, atol=1e-5)
    for size in (32, 48, 112):
        assert train_transform(size)(image).shape == eval_transform(size)(image).shape == (3, size, size)
    frames = np.repeat(image[None], 5, axis=0)  # a still clip: one crop for all frames keeps frames equal
    torch.manual_seed(0)
    video = video_train_transform(40, scale=(0.3, 0.6))(as_video(frames))
    assert video.shape == (5, 3, 40, 40) and all(torch.equal(video[0], v) for v in video)
    assert video_eval_transform(40)(as_video(frames)).shape == (5, 3, 40, 40)
    with pytest.raises(ValueError, match="T, H, W, 3"):
        as_video(image)


def test_photometric_augmentations_grey_invert_and_leave_texts_and_labels_alone(world):
    image = world.scene("train", 0, image_size=32).image
    mean = torch.tensor(CLIP_MEAN)[:, None, None]
    std = torch.tensor(CLIP_STD)[:, None, None]
    raw = torch.from_numpy(image).permute(2, 0, 1) / 255
    crop = {"scale": (1.0, 1.0)}  # full-image crop of a square image: geometry is the identity
    grey = train_transform(32, **crop, grayscale=1.0)(image) * std + mean
    assert torch.allclose(grey[0], grey[1], atol=1e-5) and torch.allclose(grey[1], grey[2], atol=1e-5)
    assert not torch.allclose(raw[0], raw[2], atol=1e-2)  # the scene had colour to lose
    negative = train_transform(32, **crop, invert=1.0)(image) * std + mean
    assert torch.allclose(negative, 1 - raw, atol=1e-5)
    assert torch.allclose(train_transform(32, **crop, grayscale=0.0, invert=0.0)(image) * std + mean, raw, atol=1e-5)
    torch.manual_seed(0)
    half = [train_transform(32, **crop, grayscale=0.5)(image) * std + mean for _ in range(200)]
    share = sum(bool(torch.allclose(x[0], x[2], atol=1e-5)) for x in half) / 200
    assert 0.35 < share < 0.65
    with pytest.raises(ValueError, match="grayscale"):
        train_transform(32, grayscale=1.5)
    # the transform touches pixels only: the pairs' texts and UniCL labels are the un-augmented ones
    plain = WorldPairs(world, "train", 16, image_label_fraction=0.5)
    augmented = WorldPairs(world, "train", 16, image_label_fraction=0.5,
                           transform=train_transform(32, grayscale=1.0, invert=1.0))
    assert plain.texts == augmented.texts and plain.labels == augmented.labels
    assert augmented[3]["text"] == plain[3]["text"] and augmented[3]["label"] == plain[3]["label"]


def test_pretrain_config_refuses_bad_augmentation_probabilities():
    from florence_lib.training.config import PretrainConfig

    assert from_dict(PretrainConfig, {"data": {"grayscale": 0.2, "invert": 0.1}}).data.grayscale == 0.2
    with pytest.raises(ConfigError, match="grayscale"):
        from_dict(PretrainConfig, {"data": {"grayscale": 1.5}})
    with pytest.raises(ConfigError, match="invert"):
        from_dict(PretrainConfig, {"data": {"invert": -0.1}})
