"""Known-answer tests of the transfer protocols (paper Tables 1-5): an oracle encoder scores 100%, a random
one scores near chance, the few-shot sampler never leaks a support image into the queries, retrieval recall on
hand-built similarity matrices, determinism under a seed, and the ``evaluate`` CLI writing metrics JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from florence_lib.cli import main as cli_main
from florence_lib.evaluation.datasets import classification_set, retrieval_set
from florence_lib.evaluation.features import image_features, text_features
from florence_lib.evaluation.few_shot import few_shot_episodes, few_shot_eval
from florence_lib.evaluation.linear_probe import linear_probe
from florence_lib.evaluation.metrics import classification_metrics, confusion_matrix, mean_per_class_recall
from florence_lib.evaluation.retrieval import retrieval_eval, retrieval_metrics, text_to_image_index
from florence_lib.evaluation.tables import TABLE1, TABLE4, classification_row, render
from florence_lib.evaluation.zero_shot import zero_shot_classifier, zero_shot_eval

CLASSES = ["circle", "square", "star", "triangle", "heart", "cross", "ring", "arrow"]
TEMPLATES = ["a photo of a {}.", "a drawing of the {}.", "itap of a {}."]


def clusters(n_classes: int, per_class: int, dim: int, noise: float,
             seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm features around one random centre per class; noise 0 is an oracle encoder."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    centres = F.normalize(torch.randn(n_classes, dim, generator=g), dim=-1)
    return F.normalize(centres[labels] + noise * torch.randn(len(labels), dim, generator=g), dim=-1), labels


def oracle_text_encoder(texts: list[str]) -> torch.Tensor:
    """Knows which class a prompt names: a one-hot per class (plus a template-dependent nuisance)."""
    out = torch.zeros(len(texts), len(CLASSES) + 1)
    for i, t in enumerate(texts):
        out[i, next(j for j, c in enumerate(CLASSES) if f" {c}." in t)] = 1.0
        out[i, -1] = 0.3 * len(t) / 20
    return out


# ------------------------------------------------------------------------------------------- metrics
def test_metrics_hand_computed():
    logits = torch.tensor([[3.0, 2, 1], [3, 2, 1], [1, 3, 2], [1, 2, 3], [1, 3, 2]])
    labels = torch.tensor([0, 1, 1, 0, 1])  # predicted 0, 0, 1, 2, 1
    m = classification_metrics(logits, labels, ks=(1, 2, 5))
    assert m["top1"] == pytest.approx(3 / 5) and m["top2"] == pytest.approx(4 / 5) and m["top5"] == 1.0
    # class 0: 1 of 2 right, class 1: 2 of 3 right -> mean per class 7/12 while accuracy is 3/5
    assert m["mean_per_class"] == pytest.approx(7 / 12)
    assert mean_per_class_recall(torch.tensor([0, 0]), torch.tensor([0, 2]), 3) == pytest.approx(0.5)
    assert confusion_matrix(logits.argmax(1), labels, 3).tolist() == [[1, 0, 1], [1, 2, 0], [0, 0, 0]]


# ------------------------------------------------------------------------------------------- features
def test_feature_extraction_keeps_order_labels_and_flips():
    images = torch.arange(2 * 3 * 2 * 4, dtype=torch.float32).reshape(2, 3, 2, 4).repeat(5, 1, 1, 1)
    labels = torch.arange(10)
    out = image_features(lambda x: x[:, 0, 0, :], TensorDataset(images, labels), batch_size=3, flip=True)
    assert torch.equal(out.labels, labels) and torch.equal(out.features, images[:, 0, 0, :])
    assert torch.equal(out.flipped, images[:, 0, 0, :].flip(-1))
    unlabelled = image_features(lambda x: x[:, 0, 0, :], DataLoader(images, batch_size=4))  # batches of images
    assert unlabelled.labels is None and torch.equal(unlabelled.features, images[:, 0, 0, :])
    texts = [f"t{i}" for i in range(7)]
    emb = text_features(lambda t: torch.tensor([[float(s[1:])] for s in t]), texts, batch_size=3)
    assert emb.squeeze(1).tolist() == list(range(7))


# ------------------------------------------------------------------------------------------- zero-shot
def test_zero_shot_classifier_is_the_renormalised_prompt_average():
    clf = zero_shot_classifier(oracle_text_encoder, CLASSES, TEMPLATES)
    assert clf.shape == (len(CLASSES) + 1, len(CLASSES))
    expected = F.normalize(F.normalize(oracle_text_encoder([t.format("star") for t in TEMPLATES]), dim=-1)
                           .mean(0), dim=0)
    assert torch.allclose(clf[:, 2], expected, atol=1e-6)
    assert torch.allclose(clf.norm(dim=0), torch.ones(len(CLASSES)))
    # a class with two names averages over both names x all templates
    syn = zero_shot_classifier(oracle_text_encoder, [["circle", "ring"], "star"], TEMPLATES)
    assert syn[0, 0] > 0.6 and syn[6, 0] > 0.6 and syn[2, 0] == 0 and syn[2, 1] > 0.9


def test_zero_shot_oracle_scores_100_and_random_scores_chance():
    clf = zero_shot_classifier(oracle_text_encoder, CLASSES, TEMPLATES)
    labels = torch.arange(len(CLASSES)).repeat_interleave(50)
    oracle = F.one_hot(labels, len(CLASSES) + 1).float()
    m = zero_shot_eval(oracle, labels, clf)
    assert m["top1"] == 1.0 and m["top5"] == 1.0 and m["mean_per_class"] == 1.0
    rand = torch.randn(len(labels), len(CLASSES) + 1, generator=torch.Generator().manual_seed(0))
    m = zero_shot_eval(rand, labels, clf)
    assert abs(m["top1"] - 1 / len(CLASSES)) < 0.06 and abs(m["top5"] - 5 / len(CLASSES)) < 0.1


def test_zero_shot_classifier_cache(tmp_path):
    calls = []

    def counting(texts: list[str]) -> torch.Tensor:
        calls.append(len(texts))
        return oracle_text_encoder(texts)

    a = zero_shot_classifier(counting, CLASSES, TEMPLATES, cache_dir=tmp_path, model_key="ckpt-1")
    b = zero_shot_classifier(counting, CLASSES, TEMPLATES, cache_dir=tmp_path, model_key="ckpt-1")
    assert torch.equal(a, b) and sum(calls) == len(CLASSES) * len(TEMPLATES)
    zero_shot_classifier(counting, CLASSES, TEMPLATES[:2], cache_dir=tmp_path, model_key="ckpt-1")
    zero_shot_classifier(counting, CLASSES, TEMPLATES, cache_dir=tmp_path, model_key="ckpt-2")
    assert len(list(tmp_path.iterdir())) == 3
    with pytest.raises(ValueError, match="placeholder"):
        zero_shot_classifier(counting, CLASSES, ["a photo"])


# ------------------------------------------------------------------------------------------- linear probe
def test_linear_probe_oracle_and_random():
    x, y = clusters(6, 40, 16, noise=0.0, seed=0)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(1))
    tr, te = perm[:160], perm[160:]
    res = linear_probe(x[tr], y[tr], x[te], y[te], seed=0)
    assert res.metrics["top1"] == 1.0 and res.metrics["mean_per_class"] == 1.0
    # CLIP's sweep: 7 coarse values 1e-6..1e6, then 2 per halving (step 2 -> 1/8 decade): 4 rounds
    assert len(res.sweep) <= 15
    assert min(res.sweep) == pytest.approx(1e-6) and max(res.sweep) == pytest.approx(1e6)
    fine = np.diff(np.sort(np.log10(list(res.sweep))))
    assert fine.min() == pytest.approx(0.125)
    g = torch.Generator().manual_seed(2)
    rx, ry = torch.randn(300, 16, generator=g), torch.randint(0, 4, (300,), generator=g)
    rand = linear_probe(rx[:200], ry[:200], rx[200:], ry[200:], seed=0)
    assert abs(rand.metrics["top1"] - 0.25) < 0.12


def test_linear_probe_never_looks_at_test_labels_and_is_deterministic():
    x, y = clusters(4, 50, 8, noise=0.8, seed=3)
    tr, te = slice(0, 200, 2), slice(1, 200, 2)
    a = linear_probe(x[tr], y[tr], x[te], y[te], seed=5)
    b = linear_probe(x[tr], y[tr], x[te], y[te][torch.randperm(100)], seed=5)
    c = linear_probe(x[tr], y[tr], x[te], y[te], seed=5)
    assert a.sweep == b.sweep and a.best_c == b.best_c
    assert a.metrics == c.metrics and torch.equal(a.test_logits, c.test_logits)
    # an explicit validation split is used as given
    d = linear_probe(x[tr][:60], y[tr][:60], x[te], y[te], x[tr][60:], y[tr][60:], steps_per_decade=1)
    assert len(d.sweep) == 7 + 2


# ------------------------------------------------------------------------------------------- few-shot
def test_episode_sampler_keeps_support_and_query_apart():
    labels = np.repeat(np.arange(7), [30, 25, 40, 21, 50, 20, 19])
    eps = few_shot_episodes(labels, n_way=5, k_shot=5, n_query=15, episodes=200, seed=0)
    for ep in eps:
        assert len(set(ep.support) | set(ep.query)) == 25 + 75  # no image twice, none in both sets
        assert np.array_equal(labels[ep.support], ep.classes[ep.support_labels])
        assert np.array_equal(labels[ep.query], ep.classes[ep.query_labels])
        assert 6 not in ep.classes  # 19 images cannot give 5 + 15
    again = few_shot_episodes(labels, n_way=5, k_shot=5, n_query=15, episodes=200, seed=0)
    assert all(np.array_equal(a.support, b.support) and np.array_equal(a.query, b.query)
               for a, b in zip(eps, again))
    with pytest.raises(ValueError, match="need 5 classes of at least 65 images"):
        few_shot_episodes(labels, k_shot=50)


def test_few_shot_oracle_random_and_determinism():
    x, y = clusters(8, 30, 32, noise=0.0, seed=0)
    xf, _ = clusters(8, 30, 32, noise=0.0, seed=0)
    res = few_shot_eval(x, y, flipped=xf, k_shot=5, episodes=40, seed=0)  # CD-FSL head: 100 epochs
    assert res.accuracy == 1.0 and res.ci95 == 0.0 and len(res.episode_accuracies) == 40
    g = torch.Generator().manual_seed(1)
    y8 = torch.arange(8).repeat_interleave(60)
    rand = few_shot_eval(torch.randn(480, 32, generator=g), y8, k_shot=5, episodes=60, seed=0, epochs=30)
    assert abs(rand.accuracy - 0.2) < 0.05 and 0 < rand.ci95 < 0.05
    x, y = clusters(8, 30, 32, noise=0.3, seed=4)
    x = 10 * x  # the scale of un-normalised backbone features, which the reference head's lr 0.01 is made for
    a = few_shot_eval(x, y, k_shot=5, episodes=20, seed=7, epochs=20)
    b = few_shot_eval(x, y, k_shot=5, episodes=20, seed=7, epochs=20)
    assert np.array_equal(a.episode_accuracies, b.episode_accuracies) and 0.6 < a.accuracy < 0.98
    assert a.metrics()["ci95"] == pytest.approx(1.96 * a.episode_accuracies.std() / np.sqrt(20))


# ------------------------------------------------------------------------------------------- retrieval
def test_retrieval_metrics_on_a_hand_built_matrix():
    # 3 images; captions 0,1 -> image 0, 2,3 -> image 1, 4 -> image 2
    image_to_captions = [[0, 1], [2, 3], [4]]
    sim = torch.tensor([
        [0.1, 0.9, 0.5, 0.2, 0.0],  # image 0: its caption 1 ranks first
        [0.8, 0.1, 0.3, 0.7, 0.2],  # image 1: caption 3 ranks 2nd
        [0.9, 0.8, 0.7, 0.6, 0.5],  # image 2: its only caption ranks last (5th)
    ])
    m = retrieval_metrics(sim, image_to_captions, ks=(1, 2, 5))
    assert m["i2t_r1"] == pytest.approx(1 / 3) and m["i2t_r2"] == pytest.approx(2 / 3) and m["i2t_r5"] == 1.0
    # each caption's image ranks: c0 3rd (0.9, 0.8 above), c1 1st, c2 3rd (0.7, 0.5 above), c3 1st, c4 1st
    assert m["t2i_r1"] == pytest.approx(3 / 5) and m["t2i_r2"] == pytest.approx(3 / 5) and m["t2i_r5"] == 1.0
    assert m["rsum"] == pytest.approx(100 * sum(v for k, v in m.items() if k != "rsum"))
    # ties are broken by index, so a constant encoder is not perfect
    flat = retrieval_metrics(torch.zeros(3, 5), image_to_captions, ks=(1,))
    assert flat["i2t_r1"] == pytest.approx(1 / 3) and flat["t2i_r1"] == pytest.approx(2 / 5)
    with pytest.raises(ValueError, match="belongs to two images"):
        retrieval_metrics(sim, [[0, 1], [1, 2, 3], [4]])
    with pytest.raises(ValueError, match="belongs to no image"):
        retrieval_metrics(sim, [[0, 1], [2], [4]])


def test_retrieval_oracle_random_and_faiss_agree_with_exact():
    g = torch.Generator().manual_seed(0)
    n, per, d = 200, 5, 32
    img = torch.randn(n, d, generator=g)
    owner = torch.arange(n).repeat_interleave(per)
    image_to_captions = [list(range(i * per, (i + 1) * per)) for i in range(n)]
    oracle = retrieval_eval(img, img[owner] + 0.01 * torch.randn(n * per, d, generator=g), image_to_captions)
    assert all(v == 1.0 for k, v in oracle.items() if k != "rsum")
    txt = torch.randn(n * per, d, generator=g)
    exact = retrieval_eval(img, txt, image_to_captions)
    assert abs(exact["t2i_r10"] - 10 / n) < 0.03 and abs(exact["i2t_r1"] - per / (n * per)) < 0.03
    noisy = img[owner] + 1.5 * torch.randn(n * per, d, generator=g)
    for t in (txt, noisy):
        assert retrieval_eval(img, t, image_to_captions, max_exact=0) == pytest.approx(
            retrieval_eval(img, t, image_to_captions))


# ------------------------------------------------------------------------------------------- tables
def test_tables_show_paper_rows_beside_ours():
    text = render(TABLE1, [classification_row("ours", [{"dataset": "cifar10_test", "top1": 0.5},
                                                        {"dataset": "world", "top1": 0.25}])])
    assert "Florence-CoSwin-H (@384pix) (paper) | 95.1 | 94.6" in text
    assert text.splitlines()[2].endswith("| ImageNet | world |")
    assert "| ours | - | 50.0 |" in text and text.rstrip().endswith("| 25.0 |")
    row = classification_row("ours", [{"dataset": d, "accuracy": a} for d, a in
                                      [("isic2018", 0.4), ("eurosat", 0.8), ("plantvillage_apple", 0.9),
                                       ("chestx14", 0.3)]], "accuracy", "5-shot")
    assert "| ours | 40.0 | 80.0 | 90.0 | 30.0 | 60.0 |" in render(TABLE4, [row])


# ------------------------------------------------------------------------------------------- real data
@pytest.mark.data
def test_real_sets_resolve_with_clip_prompts_and_cdfsl_classes(data_root):
    eurosat = classification_set("eurosat", "test", data_root=data_root, test_fraction=0.5)
    assert len(eurosat.targets) == 1500 and np.bincount(eurosat.targets).tolist() == [150] * 10
    # CLIP's names and templates, matched to the folders (CLIP lists EuroSAT in another order)
    assert eurosat.classes[:2] == ["annual crop land", "forest"] and eurosat.classes[-1] == "lake or sea"
    assert "satellite" in eurosat.templates[0]
    train = classification_set("eurosat", "train", data_root=data_root, test_fraction=0.5)
    assert not set(train.dataset.indices) & set(eurosat.dataset.indices)
    chestx = classification_set("chestx14", "all", data_root=data_root)
    assert len(chestx.classes) == 7 and chestx.targets.max() == 6  # single-finding CD-FSL classes only
    coco = retrieval_set("coco", data_root=data_root)
    assert (len(coco.image_to_captions), len(coco.captions)) == (283, 1416)
    assert torch.equal(text_to_image_index(coco.image_to_captions).bincount(), torch.tensor(
        [len(c) for c in coco.image_to_captions]))


# ------------------------------------------------------------------------------------------- CLI
def test_cli_writes_flat_metrics_json(tmp_path):
    rc = cli_main(["evaluate", "zero-shot", "--dataset", "world-heldout", "--profile", "smoke",
                   "--set", "max_images=16", "--run-dir", str(tmp_path)])
    assert rc == 0
    records = json.loads((tmp_path / "zero_shot_world-heldout.json").read_text())
    assert len(records) == 1 and records[0]["task"] == "zero_shot" and records[0]["num_images"] == 16
    assert all(isinstance(v, (str, int, float, type(None))) for v in records[0].values())  # flat
    assert 0.0 <= records[0]["top1"] <= records[0]["top5"] <= 1.0
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0]) == records[0]
    assert "dataset: world-heldout" in (tmp_path / "config.yaml").read_text()
    assert list((tmp_path / "cache").glob("zeroshot_*.safetensors"))  # the text classifier was cached
    assert cli_main(["evaluate", "few-shot", "--set", "few_shot.n_way=1", "--dry-run"]) == 2


# ------------------------------------------------------------------------------------------- fidelity
def test_linear_probe_survives_a_validation_split_without_a_class():
    x, y = clusters(5, 30, 16, noise=0.1, seed=0)
    val = (y < 4) & (torch.arange(len(y)) % 3 == 0)  # classes 0-3 only: class 4 is in train and test alone
    train, test = ~val & (torch.arange(len(y)) % 3 != 1), torch.arange(len(y)) % 3 == 1
    res = linear_probe(x[train], y[train], x[test], y[test], x[val], y[val], steps_per_decade=1)
    assert res.test_logits.shape == (int(test.sum()), 5) and res.metrics["top1"] > 0.9
    assert set(res.test_logits.argmax(1).tolist()) == set(range(5))  # class 4 is predicted on test


def test_image_features_backbone_before_projection_and_embedding_after():
    from florence_lib.evaluation.features import image_encoder
    from florence_lib.models import create_model

    torch.manual_seed(0)
    model = create_model("unicl_tiny").eval()
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        backbone = image_encoder(model, features="backbone")(images)
        embedding = image_encoder(model)(images)
        torch.testing.assert_close(backbone, model.image_encoder(images))  # the tower's pooled output
        torch.testing.assert_close(embedding, model.encode_image(images, normalize=True))
    assert backbone.shape[1] != embedding.shape[1] or not torch.allclose(backbone, embedding)
    assert not torch.allclose(backbone.norm(dim=1), torch.ones(3))  # not normalised
    torch.testing.assert_close(embedding.norm(dim=1), torch.ones(3))
    with pytest.raises(ValueError, match="backbone"):
        image_encoder(model, features="logits")


def test_protocol_defaults_are_the_references():
    from florence_lib.config import load_config
    from florence_lib.evaluation.config import EvalConfig

    cfg = EvalConfig()
    assert cfg.linear_probe.features == "backbone"  # CLIP appendix A.3
    fs = cfg.few_shot  # CD-FSL finetune.py
    assert (fs.lr, fs.momentum, fs.dampening, fs.weight_decay, fs.batch_size, fs.epochs, fs.dropout, fs.flip) \
        == (0.01, 0.9, 0.9, 1e-3, 4, 100, 0.0, False)
    assert not load_config(EvalConfig, command="evaluate", profile="quick").few_shot.finetune_backbone
    assert load_config(EvalConfig, command="evaluate", profile="paper").few_shot.finetune_backbone


def test_batched_episode_heads_are_torch_sgd_with_dampening_and_weight_decay():
    """Each episode's head must be exactly a torch.optim.SGD run of its own (momentum, dampening, decay)."""
    from florence_lib.evaluation.few_shot import train_episode_heads

    e, s, d, n_way, epochs, batch = 3, 6, 5, 2, 4, 4
    support = torch.randn(e, s, d, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    opts = {"lr": 0.1, "momentum": 0.9, "dampening": 0.9, "weight_decay": 1e-2}
    weight, bias = train_episode_heads(support, labels, n_way, epochs=epochs, batch_size=batch, dropout=0.0,
                                       generator=torch.Generator().manual_seed(1), **opts)
    g = torch.Generator().manual_seed(1)  # replay the same draws: init, then one order per epoch
    w0 = (torch.rand(e, d, n_way, generator=g) * 2 - 1) * d**-0.5
    b0 = (torch.rand(e, n_way, generator=g) * 2 - 1) * d**-0.5
    orders = [torch.rand(e, s, generator=g).argsort(dim=1) for _ in range(epochs)]
    for i in range(e):
        w, b = w0[i].clone().requires_grad_(), b0[i].clone().requires_grad_()
        opt = torch.optim.SGD([w, b], **opts)
        for order in orders:
            for start in range(0, s, batch):
                idx = order[i, start : start + batch]
                loss = F.cross_entropy(support[i, idx] @ w + b, labels[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        torch.testing.assert_close(weight[i], w.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(bias[i], b.detach(), rtol=1e-5, atol=1e-6)


def test_finetune_episode_trains_a_copy_of_the_tower():
    from florence_lib.evaluation.features import ImageTower
    from florence_lib.evaluation.few_shot import finetune_episode
    from florence_lib.models import create_model

    torch.manual_seed(0)
    model = create_model("unicl_tiny").eval()
    tower = ImageTower(model, "embedding")
    before = {k: v.clone() for k, v in tower.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    colours = torch.tensor([[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0]])  # red vs blue images, noisy
    labels = torch.tensor([0, 1]).repeat(6)
    images = colours[labels][:, :, None, None] + 0.3 * torch.randn(12, 3, 32, 32, generator=g)
    acc = finetune_episode(tower, images[:8], labels[:8], images[8:], labels[8:], 2, epochs=15, lr=0.5,
                           backbone_lr=0.05, generator=g)
    assert acc == 1.0
    assert all(torch.equal(before[k], v) for k, v in tower.state_dict().items())  # the caller's is untouched


# ------------------------------------------------------------------------------------------- user data
COLOURS = {"Red_Things": (220, 30, 30), "green": (30, 200, 40), "BlueSky": (30, 40, 220)}


def _write_images(folder, colour, n, start=0):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(start)
    for i in range(start, start + n):
        pixels = np.clip(np.array(colour) + g.normal(0, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.png")


@pytest.fixture(scope="module")
def user_sets(tmp_path_factory):
    """A one-folder ImageFolder, a train/ + test/ one (test lacks a class), a COCO-captions JSON, a CSV."""
    root = tmp_path_factory.mktemp("user")
    for name, colour in COLOURS.items():
        _write_images(root / "folder" / name, colour, 24)
        _write_images(root / "splits" / "train" / name, colour, 20)
        if name != "green":
            _write_images(root / "splits" / "test" / name, colour, 6, start=50)
    (root / "splits" / "classnames.txt").write_text("Red_Things\tred thing\tcrimson thing\nBlueSky\tblue sky\n")
    (root / "splits" / "templates.txt").write_text("# mine\na picture of a {}.\n\nsomething {} coloured\n")
    images, annotations, rows = [], [], ["image,caption"]
    for i, (name, _) in enumerate(COLOURS.items()):
        for j in range(4):
            file = f"{name}/img{j}.png"
            images.append({"id": 10 * i + j, "file_name": file})
            annotations += [{"id": 100 * i + 2 * j + k, "image_id": 10 * i + j, "caption": f"a {name} {k}"}
                            for k in range(2)]
            rows += [f"folder/{file},a photo of {name}", f"folder/{file},{name} again"]
    (root / "captions.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    (root / "pairs.csv").write_text("\n".join(rows) + "\n")
    return root


def test_user_image_folders_resolve_with_their_names_templates_and_splits(user_sets):
    from florence_lib.data.prompts import IMAGE_TEMPLATES

    one = classification_set(str(user_sets / "folder"), "test", image_size=32, test_fraction=0.25, seed=1)
    assert one.name == "folder" and one.classes == ["blue sky", "red things", "green"]  # humanised folders
    assert one.templates == list(IMAGE_TEMPLATES) and np.bincount(one.targets).tolist() == [6, 6, 6]
    train = classification_set(str(user_sets / "folder"), "train", image_size=32, test_fraction=0.25, seed=1)
    assert not set(train.dataset.indices) & set(one.dataset.indices) and len(train.targets) == 54
    image, label = one.dataset[0]
    assert image.shape == (3, 32, 32) and label == one.targets[0]
    splits = classification_set(str(user_sets / "splits"), "test", image_size=32)
    assert splits.classes == ["blue sky", ["red thing", "crimson thing"], "green"]  # classnames.txt, synonyms
    assert splits.templates == ["a picture of a {}.", "something {} coloured"]
    assert sorted(set(splits.targets.tolist())) == [0, 1]  # test has no green: labels stay in train's order
    assert [splits.dataset[i][1] for i in range(len(splits.targets))] == splits.targets.tolist()
    every = classification_set(str(user_sets / "splits"), "all", image_size=32)
    assert np.bincount(every.targets).tolist() == [26, 26, 20]


def test_user_captions_json_and_csv_resolve_for_retrieval(user_sets):
    coco = retrieval_set(str(user_sets / "captions.json"), images=user_sets / "folder", image_size=32)
    assert (len(coco.image_to_captions), len(coco.captions)) == (12, 24) and coco.name == "captions"
    table = retrieval_set(str(user_sets / "pairs.csv"), image_size=32)
    assert (len(table.image_to_captions), len(table.captions)) == (12, 24)  # two rows per image: one image
    assert table.captions[:2] == ["a photo of Red_Things", "Red_Things again"]
    assert table.dataset[0].shape == (3, 32, 32)
    test = retrieval_set(str(user_sets / "pairs.csv"), image_size=32, split="test", test_fraction=0.25)
    assert len(test.image_to_captions) == 3


@pytest.mark.parametrize("protocol, dataset, expected", [
    ("zero-shot", "imagenet", "unknown classification set 'imagenet'; expected one of world"),
    ("retrieval", "eurosat", "unknown retrieval set 'eurosat'; expected one of world, coco, or a path"),
    ("linear-probe", "{root}/nowhere", "no such file or folder"),
    ("few-shot", "{root}/captions.json", "not a folder; expected a folder of class folders"),
    ("retrieval", "{root}/folder", "not a retrieval set; expected a COCO-captions .json"),
    ("retrieval", "{root}/captions.json --images {root}/nope", "does not exist; pass --images DIR"),
    ("finetune", "{root}/bad_names", "classnames.txt:2: expected 'folder<TAB>readable name'"),
    ("zero-shot", "{root}/bad_templates", "templates.txt:1: template 'a photo' has no '{{}}'"),
    ("zero-shot", "{root}/empty", "no class folders with images"),
])
def test_cli_refuses_a_bad_dataset_before_building_a_model(user_sets, monkeypatch, capsys, tmp_path, protocol,
                                                           dataset, expected):
    import florence_lib.evaluation.evaluator as evaluator

    for name, text in (("bad_names", "green\tgreen\nBlueSky blue sky\n"), ("bad_templates", "a photo\n")):
        _write_images(user_sets / name / "green", COLOURS["green"], 2)
        _write_images(user_sets / name / "BlueSky", COLOURS["BlueSky"], 2)
        (user_sets / name / ("classnames.txt" if name == "bad_names" else "templates.txt")).write_text(text)
    (user_sets / "empty" / "a").mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(evaluator.Evaluator, "from_config", lambda *a, **k: pytest.fail("a model was built"))
    rc = cli_main(["evaluate", protocol, "--dataset", *dataset.format(root=user_sets).split(),
                   "--run-dir", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and expected.format() in err, err


def test_every_protocol_runs_on_a_user_folder(user_sets, tmp_path):
    from florence_lib.config import load_config
    from florence_lib.evaluation.config import EvalConfig
    from florence_lib.evaluation.evaluator import Evaluator
    from florence_lib.models import create_model

    cfg = load_config(EvalConfig, command="evaluate", profile="smoke",
                      overrides=["image_size=32", "few_shot.episodes=3", "finetune.steps=2"])
    torch.manual_seed(0)
    ev = Evaluator(create_model("unicl_tiny"), cfg, "tiny")
    path = str(user_sets / "splits")
    zs = ev.zero_shot(path).records[0]
    assert zs["dataset"] == "splits" and zs["dataset_path"] == str((user_sets / "splits").resolve())
    assert zs["num_images"] == 12 and zs["num_classes"] == 3 and zs["num_templates"] == 2
    lp = ev.linear_probe(path).records[0]
    assert lp["features"] == "backbone" and lp["num_train"] == 60 and lp["top1"] > 0.9  # colours: easy
    capped_cfg = load_config(EvalConfig, command="evaluate", profile="smoke",  # the probe's train cap is its own
                             overrides=["image_size=32", "max_images=8", "linear_probe.max_train_images=50"])
    capped = Evaluator(ev.model, capped_cfg, "tiny").linear_probe(path).records[0]
    assert capped["num_train"] == 50 and capped["num_test"] == 8
    fs = ev.few_shot(str(user_sets / "folder")).records
    assert fs[0]["n_way"] == 3 and fs[0]["episodes"] == 3 and fs[0]["finetune_backbone"] is False
    ft = ev.finetune(path).records[0]
    assert ft["task"] == "finetune_unicl" and ft["num_train"] == 60 and ft["num_test"] == 12
    rt = ev.finetune_retrieval(str(user_sets / "pairs.csv")).records[0]
    assert rt["dataset"] == "pairs" and rt["num_images"] == 6 and rt["num_train_pairs"] == 12


# ------------------------------------------------------------------------------------------- notebooks
def test_evaluation_notebooks_resolve_data_root_with_the_one_helper(tmp_path, monkeypatch):
    from pathlib import Path

    from florence_lib.evaluation.evaluator import notebook_real_sets
    from florence_lib.runs import data_root_or_none

    monkeypatch.setenv("FLORENCE_DATA_ROOT", str(tmp_path))
    root = data_root_or_none(None)  # what JupyterLab gets with no parameter: the environment, then ../shared/data
    assert root == tmp_path
    assert notebook_real_sets(["eurosat"], root, "quick", None) == ["eurosat"]
    assert notebook_real_sets(["eurosat"], root, "smoke", None) == []  # smoke keeps to seconds
    assert notebook_real_sets(["eurosat"], root, "smoke", tmp_path) == ["eurosat"]  # unless asked for
    assert notebook_real_sets(["eurosat"], None, "paper", None) == []
    for stem in ("03_zero_shot", "04_linear_probe", "05_finetuning", "06_few_shot", "07_retrieval"):
        cells = json.loads((Path(__file__).parents[1] / "notebooks" / f"{stem}.ipynb").read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        assert "root = data_root_or_none(data_root)" in code and "data_root=root" in code, stem
        assert "if data_root" not in code, f"{stem} tests the raw data_root parameter"


def test_few_shot_fine_tunes_the_tower_only_for_the_chosen_shot_counts(user_sets):
    """finetune_shots picks which shot counts get Florence's per-episode fine-tune (with finetune_epochs and
    max_finetune_episodes); the others keep the frozen-feature head, and each record says which it got."""
    from florence_lib.config import load_config
    from florence_lib.evaluation.config import EvalConfig
    from florence_lib.evaluation.evaluator import Evaluator
    from florence_lib.models import create_model

    cfg = load_config(EvalConfig, command="evaluate", profile="smoke", overrides=[
        "image_size=32", "few_shot.shots=[1,2]", "few_shot.episodes=3", "few_shot.finetune_backbone=true",
        "few_shot.finetune_shots=[1]", "few_shot.finetune_epochs=2", "few_shot.max_finetune_episodes=2"])
    torch.manual_seed(0)
    records = Evaluator(create_model("unicl_tiny"), cfg, "tiny").few_shot(str(user_sets / "folder")).records
    by_k = {r["k_shot"]: r for r in records}
    assert by_k[1]["finetune_backbone"] is True and by_k[1]["episodes"] == 2 and by_k[1]["epochs"] == 2
    assert by_k[2]["finetune_backbone"] is False and by_k[2]["episodes"] == 3 and by_k[2]["epochs"] == 20
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in records)
