"""data.sources: config validation, one label space, the weighted mix, streamed shards with bad samples and resume,
and smoke pretraining on shards written by ``curate``, on a CSV and on an image folder, alone and mixed."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from florence_lib.config import ConfigError, from_dict, load_config
from florence_lib.curation.config import CurateConfig
from florence_lib.curation.pipeline import curate
from florence_lib.data.errors import DataError
from florence_lib.data.mixing import MixedPairs, Part, open_sources, shares
from florence_lib.data.sources import SourceConfig, check_sources, default_sources
from florence_lib.data.stream import MixedStream
from florence_lib.data.transforms import train_transform
from florence_lib.data.world import World, WorldConfig
from florence_lib.runs import RunDir
from florence_lib.training.config import PretrainConfig
from florence_lib.training.pretrain import pretrain

ROOT = Path(__file__).resolve().parents[1]
WORLD_HASH = {"hash_size": 16, "hash_radius": 24, "contamination_radius": 24}


to_tensor = train_transform(32)


@pytest.fixture(scope="module")
def scenes():
    world = World(WorldConfig(seed=5))
    out = [world.scene("train", i, image_size=48) for i in range(24)]
    return [s.image for s in out], [out[0].captions[0] if i % 3 == 0 else s.captions[2] for i, s in enumerate(out)]


@pytest.fixture(scope="module")
def pairs_csv(tmp_path_factory, scenes) -> Path:
    root = tmp_path_factory.mktemp("pairs")
    (root / "img").mkdir()
    with open(root / "pairs.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption"])
        for i, (image, caption) in enumerate(zip(*scenes)):
            Image.fromarray(np.asarray(image)).save(root / "img" / f"{i}.png")
            writer.writerow([f"img/{i}.png", caption])
    return root / "pairs.csv"


@pytest.fixture(scope="module")
def curated(tmp_path_factory, pairs_csv) -> Path:
    out = tmp_path_factory.mktemp("curated")
    curate(pairs_csv, out, CurateConfig(**WORLD_HASH, shard_size=8, languages=[]), card=False, progress=False)
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for c, colour in enumerate(([200, 30, 30], [30, 200, 30], [30, 30, 200])):
        (root / "images" / f"c{c}").mkdir(parents=True)
        for i in range(5):
            pixels = np.clip(np.array(colour) + rng.normal(0, 20, (40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / "images" / f"c{c}" / f"{i}.png")
    (root / "names.tsv").write_text("c0\tred square\nc1\tgreen square\n", encoding="utf-8")
    return root


def micro(sources: list[dict], **data) -> PretrainConfig:
    """Three steps at 32 px on the given sources (image folders join stage 1 only)."""
    return from_dict(PretrainConfig, {
        "data": {"sources": sources, "train_size": 32, "val_size": 8, "image_size": 32, "batch_size": 4,
                 "shuffle_buffer": 8, **data},
        "optim": {"warmup_steps": 1}, "threads": 1, "device": "cpu",
        "phases": [{"name": "stage1", "steps": 2, "image_label_fraction": 0.5}, {"name": "stage2", "steps": 1}],
        "log_every": 1, "eval_every": 0, "checkpoint_every": 0})


# ------------------------------------------------------------------------------------------------- config
def test_sources_are_validated_naming_the_entry(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.sources\[1\]\.kind"):
        micro([{"kind": "world"}, {"kind": "parquet", "path": "x"}])
    with pytest.raises(ConfigError, match=r"data\.sources\[0\]\.colour: unknown key"):
        micro([{"kind": "world", "colour": 1}])
    with pytest.raises(ConfigError, match=r"data\.sources\[0\]\.path: a pairs source needs a path"):
        micro([{"kind": "pairs"}])
    with pytest.raises(ConfigError, match=r"data\.sources\[0\]\.class_names: only a imagefolder source"):
        micro([{"kind": "pairs", "path": "p.csv", "class_names": "n.tsv"}])
    with pytest.raises(ConfigError, match=r"data\.sources\[0\]\.weight: -1"):
        micro([{"kind": "world", "weight": -1}])
    cfg = micro([{"kind": "world"}, {"kind": "shards", "path": str(tmp_path / "none-{000..003}.tar")}])
    with pytest.raises(ConfigError, match=r"data\.sources\[1\]\.path: no shards match"):
        check_sources(cfg.data.sources)
    with pytest.raises(ConfigError, match=r"data\.sources\[1\]\.path"):  # refused before the run dir is touched
        pretrain(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_cli_override_parses_the_issue_example(curated):
    cfg = load_config(PretrainConfig, command="pretrain", profile="quick",
                      overrides=[f"data.sources=[{{kind: shards, path: {curated / 'shards'}}}]"])
    assert cfg.data.sources == [SourceConfig(kind="shards", path=str(curated / "shards"))]


# ------------------------------------------------------------------------------------------------- labels
def test_one_label_space_one_label_per_text(curated, pairs_csv, folder, scenes):
    world = World(WorldConfig(seed=0, image_size=32))
    from florence_lib.data.world_datasets import WorldPairs, class_texts

    sources = [SourceConfig("world"), SourceConfig("shards", str(curated / "shards")),
               SourceConfig("pairs", str(pairs_csv)),
               SourceConfig("imagefolder", str(folder / "images"), class_names=str(folder / "names.tsv"),
                            templates=["{}", "a photo of a {}."])]
    parts = open_sources(sources, to_tensor, lambda: WorldPairs(world, "train", 16, transform=to_tensor))
    table = json.loads((curated / "labels.json").read_text())
    distinct = len(set(scenes[1]))  # 24 captions, 8 of them one short caption
    assert distinct < 24 and [p.num_labels for p in parts[1:]] == [len(table), distinct, 3] == [distinct] * 2 + [3]
    ranges = [range(p.offset, p.offset + p.num_labels) for p in parts]
    assert all(a.stop <= b.start for a, b in zip(ranges, ranges[1:]))  # laid end to end: no collisions
    stream = iter(MixedStream(parts, to_tensor, seed=0, shuffle_buffer=4))
    by_source: dict[int, list[tuple[str, int]]] = {i: [] for i in range(4)}
    for _ in range(400):
        s = next(stream)
        by_source[s["source"]].append((s["text"], s["label"]))
    label_of: dict[str, set[int]] = {}
    for samples in by_source.values():
        for text, label in samples:
            label_of.setdefault(text, set()).add(label)
    assert all(len(labels) == 1 for labels in label_of.values())  # across sources: one label per text
    world_class = class_texts(world)
    for i in (1, 2):  # the shards curated from the CSV: a caption takes the world's class or the shards' label
        pairs = set(by_source[i])
        assert len({t for t, _ in pairs}) == len({lab for _, lab in pairs}) == len(pairs) > 2
        assert all(lab == world_class[t] if t in world_class else lab in ranges[1] for t, lab in pairs)
        assert any(t in world_class for t, _ in pairs) and any(t not in world_class for t, _ in pairs)
    assert {lab for _, lab in by_source[1]} == {lab for _, lab in by_source[2]}
    # the folder's classes 'red square' and 'green square' are the world's (their prompts are world class texts);
    # 'c2' is in no other source and keeps a label of the folder's own range
    folder_labels = {t: lab for t, lab in by_source[3]}
    assert folder_labels["a photo of a green square."] == folder_labels["green square"] == world_class["a green square"]
    assert folder_labels["red square"] == world_class["a red square"] != world_class["a green square"]
    assert folder_labels["c2"] in ranges[3]
    assert len(set(folder_labels.values())) == 3  # an image folder: the class is the label


# ------------------------------------------------------------------------------------------------- mixing
class Fake(torch.utils.data.Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {"image": torch.zeros(1), "text": str(i), "label": i}


def fake_parts(weights, sizes):
    return [Part(i, SourceConfig("world", weight=w), n, n, dataset=Fake(n))
            for i, (w, n) in enumerate(zip(weights, sizes))]


def test_the_mix_follows_the_weights_within_sampling_error():
    parts = fake_parts([1.0, 3.0, 0.5], [100, 50, 200])
    expected = shares(parts)
    assert expected == pytest.approx([100 / 350, 150 / 350, 100 / 350])  # open_clip: weight x size
    n = 6000
    stream = iter(MixedStream(parts, lambda x: x, seed=1, shuffle_buffer=16))
    seen = Counter(next(stream)["source"] for _ in range(n))
    for i, p in enumerate(expected):
        assert abs(seen[i] / n - p) < 4 * (p * (1 - p) / n) ** 0.5, (seen, expected)
    mixed = MixedPairs(parts)  # map-style: exactly weight x size virtual items per source
    assert Counter(mixed[j]["source"] for j in range(len(mixed))) == {0: 100, 1: 150, 2: 100}


def test_a_streamed_reader_skips_to_its_position_exactly():
    parts = fake_parts([1.0, 1.0], [30, 20])
    full = iter(MixedStream(parts, lambda x: x, seed=2, shuffle_buffer=8))
    head = [next(full) for _ in range(140)]  # past an epoch of both sources
    resumed = iter(MixedStream(parts, lambda x: x, seed=2, shuffle_buffer=8, skip=head[99]["_position"]))
    assert [(s["source"], s["text"]) for s in (next(resumed) for _ in range(40))] == \
        [(s["source"], s["text"]) for s in head[100:]]
    epoch = Counter((s["source"], s["text"]) for s in head[:50])
    assert max(epoch.values()) <= 2  # every sample once per epoch, give or take the buffer's overlap


@pytest.mark.parametrize("readers", [2, 5])  # fewer, then more readers than the 3 shards
def test_readers_of_all_ranks_and_workers_split_an_epoch_of_shards(curated, readers):
    from florence_lib.data.errors import BadSampleLog

    parts = open_sources([SourceConfig("shards", str(curated / "shards"))], to_tensor, world=lambda: None)
    stream = MixedStream(parts, to_tensor, seed=3)
    stream.log = BadSampleLog()
    epochs = [[raw["__key__"] for _, raw in stream._epochs(parts[0], reader, readers, epochs=1)]
              for reader in range(readers)]
    assert len(parts[0].urls) == 3
    kept = json.loads((curated / "stats.json").read_text())["kept"]
    assert sum(map(len, epochs)) == len(set().union(*epochs)) == kept  # each sample once, by one reader


# ------------------------------------------------------------------------------------------------- bad input
def corrupt_shard(path: Path, scenes) -> Path:
    images, captions = scenes
    path.mkdir()
    with wds.TarWriter(str(path / "shard-000000.tar")) as tar:
        for i, (image, caption) in enumerate(zip(images[:12], captions)):
            buf = io.BytesIO()
            Image.fromarray(np.asarray(image)).save(buf, format="PNG")
            fields = {"__key__": f"{i:04d}", "png": buf.getvalue(), "txt": caption.encode()}
            if i == 3:
                fields["png"] = buf.getvalue()[:60]  # truncated
            elif i == 5:
                fields["txt"] = b"a \xff\xfe caption"
            elif i == 7:
                del fields["txt"]
            elif i == 9:
                fields["png"] = b"not an image at all"
            tar.write(fields)
    return path


def test_corrupt_samples_are_counted_and_the_run_trains_to_the_end(tmp_path, scenes):
    shards = corrupt_shard(tmp_path / "bad", scenes)
    cfg = micro([{"kind": "shards", "path": str(shards)}], shuffle_buffer=0)
    results = pretrain(cfg, tmp_path / "run")
    assert results["steps"] == 3
    counts = results["data_counts"]
    assert counts["skipped_non_utf8"] >= 1 and counts["skipped_missing_caption"] >= 1
    assert counts["skipped_unreadable_image"] + counts.get("skipped_truncated_image", 0) >= 2
    records = [r for r in RunDir(tmp_path / "run").metrics() if r["split"] == "data"]
    assert records and records[-1]["skipped"] >= 1
    parts = open_sources([SourceConfig("shards", str(shards))], to_tensor, world=lambda: None)
    with pytest.raises(DataError, match=r"shard-000000\.tar key 0003"):  # strict: the first bad sample stops
        list(zip(range(12), MixedStream(parts, to_tensor, seed=0, shuffle_buffer=0, strict=True)))


# ------------------------------------------------------------------------------------------------- pretraining
def test_pretrains_on_each_source_alone_and_mixed(tmp_path, curated, pairs_csv, folder):
    shards = {"kind": "shards", "path": str(curated / "shards")}
    pairs = {"kind": "pairs", "path": str(pairs_csv)}
    images = {"kind": "imagefolder", "path": str(folder / "images"), "class_names": str(folder / "names.tsv")}
    for name, sources in {"shards": [shards], "pairs": [pairs], "imagefolder": [images],
                          "mixed": [shards, {**pairs, "weight": 2}, images, {"kind": "world", "weight": 0.5}]}.items():
        results = pretrain(micro(sources), tmp_path / name)
        assert results["steps"] == 3 and np.isfinite(results["final_loss"]), name
        seen = {k: v for k, v in results["data_counts"].items() if k.startswith("samples_") and v}
        assert len(seen) == len(sources) if name == "mixed" else len(seen) == 1, (name, seen)


def test_default_sources_finds_notebook_01_shards(tmp_path, curated):
    assert default_sources(None) == default_sources(tmp_path) == [{"kind": "world"}]
    target = tmp_path / "01_data_curation" / "curated_smoke" / "shards"
    target.mkdir(parents=True)
    assert default_sources(tmp_path) == [{"kind": "world"}]  # an empty folder is no data
    for shard in (curated / "shards").glob("*.tar"):
        (target / shard.name).write_bytes(shard.read_bytes())
    sources = default_sources(tmp_path, "smoke")
    assert sources == [{"kind": "shards", "path": str(target)}]
    assert default_sources(tmp_path, "smoke", with_world=True) == [*sources, {"kind": "world"}]
    assert default_sources(None, with_world=True) == [{"kind": "world"}]
    cfg = load_config(PretrainConfig, command="pretrain", profile="smoke",  # how notebook 02 passes them
                      overrides=[f"data.sources={json.dumps(sources)}"])
    assert cfg.data.sources == [SourceConfig("shards", str(target))]


# ------------------------------------------------------------------------------------------------- resume
KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    from florence_lib.config import from_dict
    from florence_lib.training.config import PretrainConfig
    from florence_lib.training.engine import Engine
    from florence_lib.training.pretrain import pretrain
    import json
    cfg = from_dict(PretrainConfig, json.loads(sys.argv[1]))
    step = Engine.train_step
    def killed(self, batch):
        if self.step == int(sys.argv[3]):
            os.kill(os.getpid(), signal.SIGKILL)
        return step(self, batch)
    Engine.train_step = killed
    pretrain(cfg, sys.argv[2])
""")


@pytest.mark.slow
def test_a_streamed_run_killed_mid_epoch_resumes_at_its_sample_count(tmp_path, curated):
    from florence_lib.config import to_dict

    cfg = micro([{"kind": "shards", "path": str(curated / "shards")}], shuffle_buffer=6)
    cfg.phases = cfg.phases[:1]
    cfg.phases[0].steps, cfg.checkpoint_every = 4, 2
    pretrain(cfg, tmp_path / "straight")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, json.dumps(to_dict(cfg)), str(tmp_path / "run"), "3"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert (tmp_path / "run" / "data_state" / "step-00000002-rank0.json").is_file()
    pretrain(cfg, tmp_path / "run")

    def losses(run):
        return [r["loss"] for r in RunDir(run).metrics() if r["split"] == "train"]

    assert len(losses(tmp_path / "run")) == 4
    assert losses(tmp_path / "run") == pytest.approx(losses(tmp_path / "straight"), rel=1e-5)
