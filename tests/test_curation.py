"""The curation pipeline on world scenes with injected dirt of known kind: exact counts per drop reason,
duplicate precision/recall, manifest/shard integrity, resume after SIGKILL, CLI refusal of bad keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from florence_lib.cli import main as cli_main
from florence_lib.curation.config import CurateConfig
from florence_lib.curation.dedup import HammingIndex, hamming, near_identical_groups
from florence_lib.curation.dirt import (
    BOILERPLATE,
    FOREIGN_CAPTIONS,
    NEAR_DUPLICATES,
    confusion,
    duplicate_precision_recall,
    write_dirty_pairs,
)
from florence_lib.curation.filters import caption_key, identify_language, is_boilerplate, language_reason
from florence_lib.curation.labels import LabelTable, sharing_stats
from florence_lib.curation.pipeline import Journal, curate
from florence_lib.curation.sampling import balance
from florence_lib.data.errors import DataError
from florence_lib.data.world import World, WorldConfig

KINDS = ("exact_duplicate", "resized", "jpeg", "crop", "colour_shift", "non_english", "empty_caption",
         "long_caption", "boilerplate", "corrupt", "too_small", "aspect")
# World scenes are flat synthetic renderings: 64-bit pHashes cannot tell many of them apart, 256 bits can.
WORLD_HASH = {"hash_size": 16, "hash_radius": 24, "contamination_radius": 24}


@pytest.fixture(scope="module")
def world_pairs():
    world = World(WorldConfig(seed=3))
    scenes = [world.scene("train", i, image_size=96) for i in range(80)]
    return [s.image for s in scenes], [s.captions[2] for s in scenes]


@pytest.fixture(scope="module")
def dirty(tmp_path_factory, world_pairs):
    images, captions = world_pairs
    return write_dirty_pairs(tmp_path_factory.mktemp("dirty"), images, captions, {k: 5 for k in KINDS}, seed=1)


@pytest.fixture(scope="module")
def curated(tmp_path_factory, dirty):
    return curate(dirty.csv, tmp_path_factory.mktemp("out"), CurateConfig(**WORLD_HASH, shard_size=32),
                  progress=False)


def read_manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def read_shard_samples(out: Path) -> list[tuple[str, str, int]]:
    urls = sorted(str(p) for p in (out / "shards").glob("shard-*.tar"))
    return [(s["__key__"], s["txt"].decode(), int(s["cls"]))
            for s in wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples())]


# ----------------------------------------------------------------------------------------------- end to end
def test_exact_counts_per_drop_reason(curated, dirty):
    expected = Counter(dirty.expected_reason(r) for r in range(len(dirty.kinds)))
    assert curated.stats["kept"] == expected[None] == 80
    assert {k: v for k, v in curated.stats["dropped"].items() if v} == {k: v for k, v in expected.items() if k}
    assert expected["duplicate_image"] == 25 and expected["caption_length"] == 10
    for rec in curated.records:  # and each row for the right reason, not just the right totals
        assert rec.reason == dirty.expected_reason(rec.row), (rec.row, dirty.kinds[rec.row], rec.reason)


def test_duplicate_precision_and_recall(curated, dirty):
    truth = {r for r, k in enumerate(dirty.kinds) if k in NEAR_DUPLICATES}
    found = {r.row: r.duplicate_of for r in curated.records if r.reason == "duplicate_image"}
    correct = sum(dirty.origin[row] == dirty.origin[of] for row, of in found.items() if row in truth)
    precision, recall = correct / max(1, len(found)), correct / len(truth)
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)
    reasons, dups = [r.reason for r in curated.records], [r.duplicate_of for r in curated.records]
    assert duplicate_precision_recall(dirty, dups, reasons) == (precision, recall)
    assert confusion(dirty, reasons)["crop"] == {"duplicate_image": 5}


def test_manifest_and_shards_cover_every_row_once(curated, dirty):
    manifest = read_manifest(curated.output)
    assert [m["row"] for m in manifest] == list(range(len(dirty.kinds)))
    assert all(m["kept"] == (m["reason"] is None) == (m["label"] is not None) for m in manifest)
    samples = read_shard_samples(curated.output)
    kept = [m for m in manifest if m["kept"]]
    assert [int(k) for k, _, _ in samples] == [m["row"] for m in kept]
    assert [lab for _, _, lab in samples] == [m["label"] for m in kept]
    assert len(curated.shards) == -(-len(kept) // 32)
    assert (curated.output / "data_card.md").read_text().count("| duplicate_image | 25 |") == 1
    assert (curated.output / "figures" / "duplicate_clusters.png").is_file()


def test_identical_captions_share_a_label(curated):
    by_key: dict[str, set[int]] = {}
    for rec in curated.records:
        if rec.reason is None:
            by_key.setdefault(caption_key(rec.caption), set()).add(curated.labels[rec.row])
    assert all(len(v) == 1 for v in by_key.values())
    assert len(set(curated.labels.values())) == len(by_key) == len(curated.table)
    stats = curated.stats["labels"]
    assert stats["pairs"] == 80 and stats["pairs_sharing_caption"] == sum(
        x.count for x in curated.table.labels if x.count > 1)


def test_relevance_decontamination_and_sampling(tmp_path, dirty, world_pairs):
    images, captions = world_pairs
    from PIL import Image

    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    for i in (3, 10, 42):  # evaluation copies, slightly resized, of three clean rows
        Image.fromarray(images[i]).resize((90, 90)).save(eval_dir / f"{i}.png")

    def scorer(imgs, caps):  # a fake UniCL: pairs whose caption names a star are 'irrelevant'
        assert len(imgs) == len(caps) and all(im.size[0] >= 32 for im in imgs)
        return np.array([0.0 if "star" in c else 1.0 for c in caps])

    cfg = CurateConfig(**WORLD_HASH, languages=[], max_per_source=40, seed=5)
    result = curate(dirty.csv, tmp_path / "out", cfg, eval_images=[eval_dir], scorer=scorer, card=False,
                    progress=False)
    stars = {i for i, c in enumerate(captions) if "star" in c}
    clean_rows = [row for row, kind in enumerate(dirty.kinds) if kind == "clean"]  # scene i is clean_rows[i]
    contaminated = {clean_rows[i] for i in (3, 10, 42) if i not in stars}
    got = {r.row for r in result.records if r.reason == "contaminated"}
    assert got == contaminated
    assert all(str(eval_dir) in r.duplicate_of for r in result.records if r.reason == "contaminated")
    assert result.stats["dropped"]["relevance"] == len(stars)
    assert result.stats["kept"] == 40 and result.stats["dropped"]["sampling"] == 80 - len(stars) - len(got) - 40


def test_strict_mode_names_file_and_row(tmp_path, dirty):
    bad = dirty.kinds.index("corrupt")
    with pytest.raises(DataError, match=rf"pairs.csv row {bad}: unreadable"):
        curate(dirty.csv, tmp_path / "out", CurateConfig(strict=True, languages=[]), card=False, progress=False)


KILLER = """
import os, signal, sys
from florence_lib.curation import pipeline
from florence_lib.curation.config import CurateConfig
from florence_lib.data import shards
finish = shards.ShardWriter._finish
def killing_finish(self):  # SIGKILL right after the first shard is renamed into place
    finish(self)
    os.kill(os.getpid(), signal.SIGKILL)
shards.ShardWriter._finish = killing_finish
pipeline.curate(sys.argv[1], sys.argv[2], CurateConfig(**%r), card=False, progress=False)
"""


@pytest.mark.slow
def test_resume_after_kill_gives_the_same_result(tmp_path, dirty, monkeypatch):
    kw = dict(WORLD_HASH, languages=[], batch_size=16, shard_size=20)
    out = tmp_path / "killed"
    # 1. die in the scan after two journalled batches, leaving a torn line behind
    append, calls = Journal.append, []

    def dying_append(self, records):
        append(self, records)
        calls.append(1)
        if len(calls) == 2:
            with open(self.path, "a") as f:
                f.write('{"row": 32, "ima')
            raise KeyboardInterrupt

    monkeypatch.setattr(Journal, "append", dying_append)
    with pytest.raises(KeyboardInterrupt):
        curate(dirty.csv, out, CurateConfig(**kw), card=False, progress=False)
    monkeypatch.undo()
    assert not (out / "shards").exists() and len(Journal(out / ".state" / "scan.jsonl").load()) == 32
    # 2. a real SIGKILL in another process, after its resumed scan, once the first shard is complete
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", KILLER % kw, str(dirty.csv), str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert [p.name for p in (out / "shards").glob("*.tar")] == ["shard-000000.tar"]
    # 3. the same command again finishes; the result equals an uninterrupted run
    resumed = curate(dirty.csv, out, CurateConfig(**kw), card=False, progress=False)
    fresh = curate(dirty.csv, tmp_path / "fresh", CurateConfig(**kw), card=False, progress=False)
    assert (out / "manifest.jsonl").read_text() == (tmp_path / "fresh" / "manifest.jsonl").read_text()
    samples = read_shard_samples(out)
    assert samples == read_shard_samples(tmp_path / "fresh")
    assert len({k for k, _, _ in samples}) == len(samples) == resumed.stats["kept"] == fresh.stats["kept"]
    assert not list((out / "shards").glob(".*.tmp"))


def test_resume_refuses_a_changed_config(tmp_path, dirty):
    curate(dirty.csv, tmp_path, CurateConfig(languages=[], max_tokens=20), card=False, progress=False)
    with pytest.raises(Exception, match="different config"):
        curate(dirty.csv, tmp_path, CurateConfig(languages=[], max_tokens=30), card=False, progress=False)


# ----------------------------------------------------------------------------------------------- CLI
def test_cli_bad_key_exits_2_naming_it(tmp_path, capsys):
    args = ["curate", "--input", str(tmp_path / "none.csv"), "--output", str(tmp_path / "o")]
    assert cli_main(args + ["--set", "hash_radiuss=3"]) == 2
    assert "hash_radiuss" in capsys.readouterr().err
    assert cli_main(args + ["--set", "max_aspect=0.5"]) == 2
    assert "max_aspect" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert cli_main(args + ["--dry-run", "--set", "hash_radius=3"]) == 0
    assert "hash_radius: 3" in capsys.readouterr().out


def test_cli_curates_webdataset_shards(tmp_path, curated):
    assert cli_main(["curate", "--input", str(curated.output / "shards"), "--output", str(tmp_path / "again"),
                     "--set", "languages=[]", "hash_size=16", "hash_radius=24"]) == 0
    manifest = read_manifest(tmp_path / "again")
    assert len(manifest) == 80 and all(m["kept"] for m in manifest)  # clean data passes through unchanged


# ----------------------------------------------------------------------------------------------- parts
def test_multi_index_hashing_is_exact():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (3000, 8), dtype=np.uint8)
    queries = base[:200].copy()
    flips = rng.integers(0, 64, (200, 12))
    bits = np.unpackbits(queries, axis=1)
    for q, f in enumerate(flips):
        bits[q, f] ^= 1
    queries = np.packbits(bits, axis=1)
    index = HammingIndex(radius=10)
    index.add(base, range(len(base)))
    brute = hamming(queries, base)
    for q, (ids, dist) in enumerate(index.search(queries)):
        assert sorted(ids.tolist()) == np.flatnonzero(brute[q] <= 10).tolist()
        assert dist.tolist() == brute[q, ids].tolist()


def test_text_filters():
    for text in BOILERPLATE + ("www.site.com/a.png", "DSCN0042", "  ...  ", "Untitled!"):
        assert is_boilerplate(text), text
    for text in ("a red circle on the left", "IMG of a dog at sunset is lovely", "two images of cats"):
        assert not is_boilerplate(text), text
    assert caption_key("A  Red-circle, on the LEFT!") == caption_key("a red circle on the left")
    for text in FOREIGN_CAPTIONS:
        assert language_reason(*identify_language(text, ["en"]), ["en"], 15.0) == "language", text
    world = World(WorldConfig())
    for i in range(40):
        for text in world.scene("train", i).captions:
            assert language_reason(*identify_language(text, ["en"]), ["en"], 15.0) is None, text


def test_near_identical_captions_and_labels():
    texts = ["a red circle at the top left of the image", "a red circle at the top left of the image .",
             "a red circle at the top left of the picture", "two blue stars below a green square"]
    assert near_identical_groups(texts, threshold=0.7, num_perm=128, progress=False).tolist() == [0, 0, 0, 3]
    table = LabelTable()
    ids = [table.add_caption(t) for t in ("A cat.", "a cat", "a dog")]
    assert ids == [0, 0, 1]
    classes = table.add_classes("eurosat", ["forest", "a cat"])
    assert classes == [2, 3] and table.add_classes("eurosat", ["forest"]) == [2]
    assert table.prompt(2, np.random.default_rng(0)).count("forest") == 1 and table.prompt(0, None) == "A cat."
    assert sharing_stats([0, 0, 1, 2, 2, 2]) == {"pairs": 6, "labels": 3, "pairs_sharing_caption": 5,
                                                 "labels_shared": 2, "largest_label": 3}


def test_balance_caps_per_query_and_source():
    labels = [0] * 10 + [1] * 3 + [2] * 7
    sources = ["a"] * 12 + ["b"] * 8
    keep = balance(labels, sources, max_per_query=4, max_per_source=5, seed=0)
    kept = Counter((labels[i], sources[i]) for i in np.flatnonzero(keep))
    per_source = Counter(s for (_, s), v in kept.items() for _ in range(v))
    per_query = Counter(q for (q, _), v in kept.items() for _ in range(v))
    assert per_source["a"] == 5 and per_source["b"] <= 5  # b holds at most 4 of label 2 + 1 of label 1
    assert per_query[2] == 4 and per_query[0] <= 4 and per_query[1] <= 3
    assert (balance(labels, sources, 4, 5, seed=0) == keep).all() and not (balance(labels, sources, 4, 5, 1) == keep).all()


def test_unicl_scorer_from_a_saved_checkpoint(tmp_path):
    """The relevance stage's real scorer: a saved UniCL checkpoint scores pairs by its own cosine similarity."""
    import torch
    from PIL import Image

    from florence_lib.curation.relevance import UniCLScorer
    from florence_lib.data.tokenizer import Tokenizer
    from florence_lib.data.transforms import eval_transform
    from florence_lib.data.world import World, WorldConfig
    from florence_lib.models import create_model
    from florence_lib.training.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create_model("unicl_tiny").eval()
    ckpt = save_checkpoint(tmp_path / "ckpt", model, step=1, model_spec={"name": "unicl_tiny", "kwargs": {}})
    world = World(WorldConfig(seed=3))
    scenes = [world.scene("val", i) for i in range(5)]
    images = [Image.fromarray(s.image) for s in scenes]
    captions = [s.captions[-1] for s in scenes[::-1]]  # mismatched on purpose: scores must still be per pair

    scores = UniCLScorer.from_checkpoint(ckpt, image_size=64, batch_size=2)(images, captions)

    tokens = Tokenizer()(captions)
    with torch.no_grad():
        img = model.encode_image(torch.stack([eval_transform(64)(im) for im in images]))
        txt = model.encode_text(tokens["input_ids"], tokens["attention_mask"])
    assert scores.shape == (5,)
    np.testing.assert_allclose(scores, (img * txt).sum(-1).numpy(), atol=1e-5)
