"""The notebooks' explorers without a browser: what each shows for typed input, and that its widget drives it."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from florence_lib.curation.pipeline import Record  # noqa: E402
from florence_lib.explorers._grid import parse_lines  # noqa: E402
from florence_lib.explorers.curation import CurationInspector, dropped_by_reason  # noqa: E402
from florence_lib.explorers.retrieval import RetrievalBrowser, image_captions, search_images  # noqa: E402
from florence_lib.explorers.zero_shot import ZeroShotPlayground, predict  # noqa: E402

WORDS = ["circle", "square", "star", "heart"]


def word_encoder(texts: list[str]) -> torch.Tensor:
    """A text encoder that knows which of WORDS a text names (one-hot; a fifth dim for anything else)."""
    out = torch.zeros(len(texts), len(WORDS) + 1)
    for i, t in enumerate(texts):
        hit = [j for j, w in enumerate(WORDS) if w in t]
        out[i, hit[0] if hit else -1] = 1.0
    return out


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_parse_lines():
    assert parse_lines(" cat, dog\n\nred fox ,") == ["cat", "dog", "red fox"]
    assert parse_lines("a {}.\nan {}, maybe\n", "\n") == ["a {}.", "an {}, maybe"]


def test_zero_shot_playground_follows_the_typed_names():
    truth = [0, 1, 2, 3, 1, 0]
    features = torch.eye(len(WORDS) + 1)[truth]
    images = [torch.zeros(3, 16, 16)] * len(truth)
    pred = predict(word_encoder, features, ["circle", "square", "star", "heart"], ["a photo of a {}."])
    assert [pred.top(i, 1)[0][0] for i in range(6)] == [WORDS[t] for t in truth]
    assert torch.allclose(pred.probs.sum(1), torch.ones(6))
    play = ZeroShotPlayground(images, features, word_encoder, ["circle", "square"], truth=[WORDS[t] for t in truth])
    fig = play.run()
    assert len([ax for ax in fig.axes if ax.images]) == 6 and "[star]" in fig.axes[2].get_title(loc="left")
    assert play.last.top(1, 1)[0][0] == "square"
    play.run("heart\nstar", "{} drawing\nan {}")  # typed: new names, new templates
    assert play.last.classes == ["heart", "star"] and play.last.top(3, 1)[0][0] == "heart"
    with pytest.raises(ValueError, match="at least two"):
        play.run("only one")
    box = play.show()  # the widget: editing the text and clicking re-runs with what was typed
    classes, templates, button, _ = box.children
    classes.value = "star, circle, square"
    button.click()
    assert play.last.classes == ["star", "circle", "square"] and play.last.top(2, 1)[0][0] == "star"


def test_retrieval_browser_both_directions():
    owner = [0, 0, 1, 1, 2, 2, 3, 3]  # two captions per image
    captions = [f"a {WORDS[o]} {k}" for o, k in zip(owner, [0, 1] * 4)]
    image_to_captions = [[2 * i, 2 * i + 1] for i in range(4)]
    features = torch.eye(len(WORDS) + 1)[[0, 1, 2, 3]]
    hits = search_images("the big star", word_encoder, features, k=2)
    assert hits[0] == (2, pytest.approx(1.0)) and len(hits) == 2
    with pytest.raises(ValueError, match="type a caption"):
        search_images("  ", word_encoder, features)
    browser = RetrievalBrowser([torch.zeros(3, 16, 16)] * 4, features, captions, image_to_captions, word_encoder)
    top = image_captions(1, browser.similarity, captions, image_to_captions, k=3)
    assert [own for _, _, own in top[:2]] == [True, True] and top[0][0].startswith("a square")
    with pytest.raises(IndexError, match="4 images"):
        image_captions(4, browser.similarity, captions, image_to_captions)
    assert "#3" in browser.text_to_images("heart").axes[0].get_title(loc="left")
    assert "✓" in browser.image_to_texts(0).axes[0].get_title(loc="left")
    box = browser.show("circle")
    pick = box.children[4]
    pick.value = 3  # picking an image re-renders its captions
    assert pick.value == 3


def test_curation_inspector_pages_reasons_and_clusters(tmp_path):
    rows = ["image,caption"]
    for i in range(12):
        Image.fromarray(np.full((8, 8, 3), 20 * i, np.uint8)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,caption {i}")
    (tmp_path / "in.csv").write_text("\n".join(rows) + "\n")
    records = [Record(i, f"{i}.png", "in", caption=f"caption {i}") for i in range(12)]
    for i in (1, 2, 3, 7, 8):
        records[i].reason, records[i].duplicate_of = "duplicate_image", 0 if i < 7 else 6
    for i in (4, 5):
        records[i].reason, records[i].detail = "too_small", "8x8"
    groups = dropped_by_reason(records)
    assert list(groups) == ["duplicate_image", "too_small"] and len(groups["duplicate_image"]) == 5
    inspector = CurationInspector(records, tmp_path / "in.csv", per_page=4)
    assert inspector.pages("duplicate_image") == 2 and inspector.page_rows("duplicate_image", 1) == [8]
    fig = inspector.dropped("too_small")
    assert len([ax for ax in fig.axes if ax.images]) == 2 and "8x8" in fig.axes[0].get_title(loc="left")
    assert inspector.clusters == [[0, 1, 2, 3], [6, 7, 8]]
    titles = [ax.get_title(loc="left") for ax in inspector.cluster(1).axes if ax.images]
    assert titles[0].startswith("KEPT row 6") and titles[1].startswith("dup row 7")
    with pytest.raises(KeyError, match="reasons: duplicate_image, too_small"):
        inspector.page_rows("language")
    box = inspector.show()
    reason, page = box.children[1].children
    reason.value = "too_small"
    assert page.max == 0
