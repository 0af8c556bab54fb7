"""Issue 11's curation defects: a non-UTF-8 byte in a pairs CSV spoils one row, not the run; near-duplicate
search confirms pHash candidates with a second look, dropping <= 1% of distinct images, catching >= 90% of edits."""

from __future__ import annotations

import csv

import numpy as np
from PIL import Image

from florence_lib.curation.config import CurateConfig
from florence_lib.curation.dedup import Deduplicator
from florence_lib.curation.dirt import EDITS, duplicate_rates
from florence_lib.curation.pipeline import curate
from florence_lib.data.world import World, WorldConfig


def test_a_row_that_is_not_utf8_is_counted_and_the_rest_curated(tmp_path):
    rng = np.random.default_rng(0)
    with open(tmp_path / "pairs.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption"])
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
            writer.writerow([f"{i}.png", f"a photo of thing number {i} on a table"])
    data = (tmp_path / "pairs.csv").read_bytes().replace(b"thing number 2", b"thing \xff\xfe number 2")
    (tmp_path / "pairs.csv").write_bytes(data)
    result = curate(tmp_path / "pairs.csv", tmp_path / "out", CurateConfig(languages=[]), card=False, progress=False)
    assert result.stats["dropped"]["bad_encoding"] == 1 and result.stats["kept"] == 4
    assert [r.row for r in result.records if r.reason == "bad_encoding"] == [2]


def test_dedup_second_check_drops_few_distinct_images_and_catches_edits():
    world = World(WorldConfig(seed=11))  # flat synthetic scenes: many distinct ones collide in a 64-bit pHash
    images = [Image.fromarray(world.scene("train", i, image_size=80).image) for i in range(250)]
    phash_only = duplicate_rates(images, lambda: Deduplicator(10, 64), edits_per_kind=40)
    checked = duplicate_rates(images, lambda: Deduplicator(10, 64, fine_threshold=0.9), edits_per_kind=40)
    assert phash_only["distinct_dropped"] > 0.03  # the defect, reproduced
    assert checked["distinct_dropped"] <= 0.01
    assert checked["caught"] >= 0.9 and min(checked[f"caught_{k}"] for k in EDITS) >= 0.85, checked
