"""Bad input: strict mode raises naming file and row; the default skips, counts each reason and reports."""

from __future__ import annotations

import io
import json
import logging
import tarfile

import pytest
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from florence_lib.data.coco import CocoCaptions, CocoDetection
from florence_lib.data.errors import BadSampleLog, DataError, collate_skip_none, decode_text, load_image
from florence_lib.data.loaders import ChestXray14
from florence_lib.data.pairs import ImageTextPairs
from florence_lib.data.shards import read_shards, write_shards
from florence_lib.data.video import VideoClips
from florence_lib.data.vqa import VQADataset


def png_bytes(colour=(200, 30, 30), size=16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(size=32) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((size, size), 40).convert("RGB").save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture
def images(tmp_path):
    """good.png, truncated.jpg (half its bytes), notimage.png (text), in tmp_path."""
    (tmp_path / "good.png").write_bytes(png_bytes())
    (tmp_path / "truncated.jpg").write_bytes(jpeg_bytes()[:300])
    (tmp_path / "notimage.png").write_bytes(b"this is not an image")
    return tmp_path


def test_strict_log_raises_with_file_and_row():
    with pytest.raises(DataError, match=r"^captions.csv row 17: empty caption$"):
        BadSampleLog(strict=True).bad("empty_caption", "captions.csv", 17)


def test_default_log_counts_reasons_keeps_examples_and_reports(caplog):
    log = BadSampleLog(name="pairs", max_examples=2)
    for row in (3, 5, 9):
        log.bad("empty_caption", "a.csv", row)
    log.bad("missing_file", "a.csv", 4, "x.jpg")
    assert log.summary() == {
        "name": "pairs",
        "skipped": 4,
        "reasons": {"empty_caption": 3, "missing_file": 1},
        "examples": {
            "empty_caption": ["a.csv row 3: empty caption", "a.csv row 5: empty caption"],
            "missing_file": ["a.csv row 4: missing file (x.jpg)"],
        },
    }
    with caplog.at_level(logging.WARNING, logger="florence_lib.data"):
        log.report()
    assert "pairs: skipped 4 bad record(s): empty_caption=3, missing_file=1" in caplog.text
    other = BadSampleLog()
    other.bad("missing_file", "b.csv", 1)
    log.merge(other)
    assert log.counts["missing_file"] == 2


def test_load_image_reasons(images):
    log = BadSampleLog()
    assert load_image(images / "good.png", log).size == (16, 16)
    for name in ("missing.png", "truncated.jpg", "notimage.png"):
        assert load_image(images / name, log) is None
    assert log.counts == {"missing_file": 1, "truncated_image": 1, "unreadable_image": 1}
    with pytest.raises(DataError, match=r"list.csv row 8: truncated image .*truncated.jpg"):
        load_image(images / "truncated.jpg", BadSampleLog(strict=True), "list.csv", 8)


def test_decode_text_reasons():
    log = BadSampleLog()
    assert decode_text(" café \n".encode(), log, "f") == "café"
    assert decode_text(b"caf\xe9", log, "f") is None
    assert decode_text("   ", log, "f") is None
    assert decode_text(None, log, "f", what="question") is None
    assert log.counts == {"non_utf8": 1, "empty_caption": 1, "empty_question": 1}


def write_pairs_csv(root) -> None:
    rows = [
        b"image,caption",
        b"good.png,a red square",
        b"good.png,",
        b"good.png,caf\xe9 au lait",
        b"missing.png,a ghost",
        b"good.png,too,many,fields",
        b"truncated.jpg,a broken picture",
        b'good.png,"a quoted, fine caption"',
    ]
    (root / "pairs.csv").write_bytes(b"\n".join(rows) + b"\n")


def test_csv_pairs_default_skips_counts_and_drops_bad_images(images, caplog):
    write_pairs_csv(images)
    with caplog.at_level(logging.WARNING, logger="florence_lib.data"):
        ds = ImageTextPairs(images / "pairs.csv", transform=pil_to_tensor)
    assert ds.log.counts == {"empty_caption": 1, "non_utf8": 1, "missing_file": 1, "malformed_row": 1}
    assert "skipped 4 bad record(s)" in caplog.text
    assert ds.captions == ["a red square", "a broken picture", "a quoted, fine caption"]
    batch = collate_skip_none([ds[i] for i in range(len(ds))])  # the truncated image is found when read
    assert batch[0].shape == (2, 3, 16, 16) and list(batch[1]) == ["a red square", "a quoted, fine caption"]
    assert ds.log.counts["truncated_image"] == 1


@pytest.mark.parametrize("line, reason", [(3, "empty caption"), (4, "non utf8")])
def test_csv_pairs_strict_names_file_and_row(images, line, reason):
    write_pairs_csv(images)
    rows = (images / "pairs.csv").read_bytes().split(b"\n")
    keep = [rows[0], rows[1], rows[line - 1]]
    (images / "one.tsv").write_bytes(b"\n".join(r.replace(b",", b"\t", 1) for r in keep) + b"\n")
    with pytest.raises(DataError, match=rf"one.tsv row 3: {reason}"):
        ImageTextPairs(images / "one.tsv", strict=True)


def test_csv_missing_column_always_raises(tmp_path):
    (tmp_path / "p.csv").write_text("path,text\na.png,hi\n")
    with pytest.raises(DataError, match=r"p.csv: missing column\(s\) image, caption"):
        ImageTextPairs(tmp_path / "p.csv")


def test_vqa_malformed_records(images):
    records = [
        {"question_id": 1, "image_id": 1, "image": "good.png", "question": "Is it red?", "answer": "yes"},
        {"question_id": 2, "image_id": 1, "image": "good.png", "question": "", "answer": "no"},
        {"question_id": "3", "image_id": 1, "image": "good.png", "question": "How many?", "answer": "2"},
        {"question_id": 4, "image_id": 2, "image": "missing.png", "question": "What?", "answer": "x"},
        ["not", "an", "object"],
    ]
    (images / "vqa.json").write_text(json.dumps(records))
    ds = VQADataset(images / "vqa.json")
    assert [r["question_id"] for r in ds.records] == [1]
    assert ds.log.counts == {"empty_question": 1, "malformed_row": 2, "missing_file": 1}
    assert ds[0]["pixels"].size == (16, 16)
    with pytest.raises(DataError, match=r"vqa.json row 1: empty question"):
        VQADataset(images / "vqa.json", strict=True)
    (images / "broken.json").write_text('[{"question_id": 1,')
    with pytest.raises(DataError, match="broken.json: not valid JSON"):
        VQADataset(images / "broken.json")


def test_coco_bad_captions_boxes_and_files(images):
    coco = {
        "images": [
            {"id": 1, "file_name": "good.png", "width": 16, "height": 16},
            {"id": 2, "file_name": "missing.png", "width": 16, "height": 16},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "caption": "a red square"},
            {"id": 11, "image_id": 1, "caption": "  "},
        ],
    }
    (images / "captions.json").write_text(json.dumps(coco))
    caps = CocoCaptions(images, images / "captions.json")
    assert caps.image_captions == [["a red square"]]
    assert caps.log.counts == {"missing_file": 1, "empty_caption": 1}
    coco["categories"] = [{"id": 3, "name": "square"}]
    coco["annotations"] = [
        {"id": 20, "image_id": 1, "category_id": 3, "bbox": [2, 2, 5, 5], "iscrowd": 0},
        {"id": 21, "image_id": 1, "category_id": 3, "bbox": [2, 2, 0, 5], "iscrowd": 0},
        {"id": 22, "image_id": 1, "category_id": 9, "bbox": [2, 2, 5, 5], "iscrowd": 0},
    ]
    (images / "instances.json").write_text(json.dumps(coco))
    det = CocoDetection(images, images / "instances.json")
    assert det.num_boxes == 1 and det.log.counts == {
        "missing_file": 1,
        "malformed_box": 1,
        "unknown_category": 1,
    }
    with pytest.raises(DataError, match=r"instances.json image_id=2: missing file"):
        CocoDetection(images, images / "instances.json", strict=True)
    (images / "bad.json").write_text('{"images": 1}')
    with pytest.raises(DataError, match="bad.json: not a COCO annotation file"):
        CocoDetection(images, images / "bad.json")


def test_chestx_unknown_findings_and_missing_images(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("L", (8, 8), 100).save(tmp_path / "images" / "a.png")
    (tmp_path / "labels.csv").write_text(
        "image,finding_labels,split\na.png,Mass|Nodule,train\na.png,Broken Rib,train\nb.png,Mass,test\n"
    )
    ds = ChestXray14(tmp_path)
    assert len(ds) == 1 and ds.log.counts == {"malformed_row": 1, "missing_file": 1}
    assert ds[0][1][[ds.classes.index("Mass"), ds.classes.index("Nodule")]].tolist() == [1.0, 1.0]
    with pytest.raises(DataError, match=r"labels.csv row 3: malformed row \(finding labels 'Broken Rib'\)"):
        ChestXray14(tmp_path, strict=True)


def test_unreadable_video(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    (tmp_path / "labels.csv").write_text("file,label\nclip.mp4,waving\nnone.mp4,waving\n")
    ds = VideoClips(tmp_path, num_frames=2)
    assert len(ds) == 1 and ds[0] is None
    assert ds.log.counts == {"missing_file": 1, "unreadable_video": 1}
    (tmp_path / "labels.csv").write_text("file,label\nclip.mp4,waving\n")
    with pytest.raises(DataError, match=r"labels.csv row 2: unreadable video .*clip.mp4"):
        VideoClips(tmp_path, num_frames=2, strict=True)[0]


def write_raw_shard(path, samples: list[dict[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for sample in samples:
            for ext, data in sample.items():
                if ext != "__key__":
                    info = tarfile.TarInfo(f"{sample['__key__']}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


def test_shard_bad_samples_are_skipped_by_key(tmp_path):
    good = {"png": png_bytes(), "txt": b"a red square", "cls": b"3"}
    write_raw_shard(
        tmp_path / "s-0.tar",
        [
            {"__key__": "ok", **good},
            {"__key__": "latin1", **good, "txt": b"caf\xe9"},
            {"__key__": "cut", "jpg": jpeg_bytes()[:200], "txt": b"x", "cls": b"1"},
            {"__key__": "nolabel", "png": png_bytes(), "txt": b"fine"},
            {"__key__": "badjson", **good, "json": b"{oops"},
            {"__key__": "noimage", "txt": b"text only", "cls": b"1"},
        ],
    )
    ds = read_shards(tmp_path / "s-0.tar", fields=("image", "caption", "label"))
    assert [c for _, c, _ in ds] == ["a red square"]
    assert ds.log.counts == {
        "non_utf8": 1,
        "truncated_image": 1,
        "missing_field": 1,
        "malformed_fields": 1,
        "missing_image": 1,
    }
    assert "s-0.tar key latin1: non utf8" in ds.log.examples["non_utf8"][0]
    with pytest.raises(DataError, match=r"s-0.tar key latin1: non utf8"):
        list(read_shards(tmp_path / "s-0.tar", strict=True))


def test_truncated_shard_yields_its_intact_samples_then_counts(tmp_path):
    samples = [
        {"key": f"k{i}", "image": png_bytes((i * 40, 0, 0), size=64), "caption": f"c{i}", "label": i}
        for i in range(6)
    ]
    (path,) = write_shards(samples, tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    ds = read_shards(path)
    got = [s["key"] for s in ds]
    assert 0 < len(got) < 6 and got == [f"k{i}" for i in range(len(got))]
    assert ds.log.counts["truncated_shard"] == 1
    with pytest.raises(DataError, match="shard-000000.tar: truncated shard"):
        list(read_shards(path, strict=True))
    (tmp_path / "noise.tar").write_bytes(b"\x01" * 4096)
    ds = read_shards(tmp_path / "noise.tar")
    assert list(ds) == [] and ds.log.counts == {"truncated_shard": 1, "unreadable_shard": 1}
