"""Real-format loaders, on files written from the embedded world and on ../shared/data (counts.json)."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
import torch
import torchvision.transforms.v2 as T
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from florence_lib.data.coco import CocoCaptions, CocoDetection, detection_collate
from florence_lib.data.errors import collate_skip_none
from florence_lib.data.loaders import CDFSL_CHESTX_CLASSES, ChestXray14, ImageFolderDataset, humanize
from florence_lib.data.pairs import ImageTextPairs
from florence_lib.data.video import VideoClips, dense_indices, uniform_indices
from florence_lib.data.vqa import VQADataset
from florence_lib.data.world import World

WORLD = World()


@pytest.fixture(scope="module")
def scenes():
    return [WORLD.scene("train", i, image_size=48) for i in range(12)]


@pytest.fixture
def world_dir(tmp_path, scenes):
    """The scenes as PNG files ``img00000.png``, ... in tmp_path."""
    for i, scene in enumerate(scenes):
        Image.fromarray(scene.image).save(tmp_path / f"img{i:05d}.png")
    return tmp_path


def test_humanize():
    assert humanize("AnnualCrop") == "annual crop"
    assert humanize("Apple___Cedar_apple_rust") == "apple cedar apple rust"
    assert humanize("red_circle") == "red circle"


def test_image_folder_on_world(tmp_path, scenes):
    for i, scene in enumerate(scenes):
        folder = tmp_path / scene.class_name.replace(" ", "_")
        folder.mkdir(exist_ok=True)
        Image.fromarray(scene.image).save(folder / f"{i:05d}.png")
    ds = ImageFolderDataset(tmp_path, transform=pil_to_tensor)
    assert len(ds) == len(scenes)
    assert sorted(ds.class_names) == sorted({s.class_name for s in scenes})
    names = sorted(((ds.class_names[t], i) for i, (_, t) in enumerate(ds.samples)))
    assert [n for n, _ in names] == sorted(s.class_name for s in scenes)
    images, targets = next(iter(torch.utils.data.DataLoader(ds, batch_size=5, collate_fn=collate_skip_none)))
    assert images.shape == (5, 3, 48, 48) and images.dtype == torch.uint8 and targets.shape == (5,)


def test_csv_pairs_on_world(world_dir, scenes):
    lines = ["image\tcaption"] + [f"img{i:05d}.png\t{s.captions[-1]}" for i, s in enumerate(scenes)]
    (world_dir / "pairs.tsv").write_text("\n".join(lines) + "\n")
    ds = ImageTextPairs(world_dir / "pairs.tsv")
    assert ds.captions == [s.captions[-1] for s in scenes] and ds.log.skipped == 0
    image, caption = ds[3]
    assert np.array_equal(np.asarray(image), scenes[3].image) and caption == scenes[3].captions[-1]


def coco_json(scenes, with_boxes: bool) -> dict:
    images = [
        {"id": 100 + i, "file_name": f"img{i:05d}.png", "width": 48, "height": 48} for i in range(len(scenes))
    ]
    anns, next_id = [], 1
    for i, scene in enumerate(scenes):
        if with_boxes:
            for box, shape in zip(scene.boxes.tolist(), scene.box_labels.tolist()):
                x1, y1, x2, y2 = box
                anns.append(
                    {
                        "id": next_id,
                        "image_id": 100 + i,
                        "category_id": 10 + 3 * shape,
                        "iscrowd": 0,
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "area": (x2 - x1) * (y2 - y1),
                    }
                )
                next_id += 1
        else:
            for caption in scene.captions:
                anns.append({"id": next_id, "image_id": 100 + i, "caption": caption})
                next_id += 1
    out = {"images": images, "annotations": anns}
    if with_boxes:  # sparse ids, as COCO's 1..90 for 80 classes
        out["categories"] = [{"id": 10 + 3 * k, "name": name} for k, name in enumerate(WORLD.categories)]
    return out


def test_coco_instances_on_world(world_dir, scenes):
    (world_dir / "instances.json").write_text(json.dumps(coco_json(scenes, with_boxes=True)))
    ds = CocoDetection(world_dir, world_dir / "instances.json")
    assert len(ds) == len(scenes) and ds.num_boxes == sum(len(s.boxes) for s in scenes)
    assert ds.classes == list(WORLD.categories)
    image, target = ds[4]
    assert torch.allclose(target["boxes"], torch.from_numpy(scenes[4].boxes), atol=1e-4)
    assert target["labels"].tolist() == scenes[4].box_labels.tolist()  # contiguous again: id 10+3k -> k
    assert target["category_ids"].tolist() == [10 + 3 * k for k in scenes[4].box_labels.tolist()]
    resized = CocoDetection(world_dir, world_dir / "instances.json", transforms=T.Resize((96, 96)))
    big_image, big_target = resized[4]
    assert big_image.size == (96, 96)
    assert torch.allclose(big_target["boxes"], 2 * target["boxes"], atol=1e-3)  # v2 moves boxes with pixels
    images, targets = detection_collate([ds[0], None, ds[1]])
    assert len(images) == 2 and targets[1]["image_id"] == 101


def test_coco_captions_on_world(world_dir, scenes):
    (world_dir / "captions.json").write_text(json.dumps(coco_json(scenes, with_boxes=False)))
    ds = CocoCaptions(world_dir, world_dir / "captions.json")
    assert ds.image_captions == [s.captions for s in scenes]
    assert len(ds.captions) == len(ds.caption_image) == sum(len(s.captions) for s in scenes)
    for caption, image in zip(ds.captions, ds.caption_image):
        assert caption in scenes[image].captions
    image, captions = ds[2]
    assert np.array_equal(np.asarray(image), scenes[2].image) and captions == scenes[2].captions


def test_vqa_on_world(world_dir, scenes):
    records = [
        {"question_id": 10 * i + k, "image_id": i, "image": f"img{i:05d}.png", "question": q, "answer": a}
        for i, s in enumerate(scenes)
        for k, (q, a) in enumerate(s.qa)
    ]
    (world_dir / "qa.json").write_text(json.dumps(records))
    ds = VQADataset(world_dir / "qa.json", transform=pil_to_tensor)
    assert len(ds) == len(records)
    item = ds[len(records) - 1]
    assert (item["question"], item["answer"]) == scenes[-1].qa[-1] and item["pixels"].shape == (3, 48, 48)


def test_frame_sampling_indices():
    assert uniform_indices(8, 4).tolist() == [[1, 3, 5, 7]]
    assert uniform_indices(300, 8, num_clips=2).tolist() == [
        [9, 46, 84, 121, 159, 196, 234, 271],
        [28, 65, 103, 140, 178, 215, 253, 290],
    ]
    assert dense_indices(100, 4, stride=2).tolist() == [[46, 48, 50, 52]]  # the centre clip
    assert dense_indices(100, 4, stride=2, num_clips=3).tolist() == [
        [0, 2, 4, 6],
        [46, 48, 50, 52],
        [93, 95, 97, 99],
    ]
    assert dense_indices(5, 4, stride=2).tolist() == [[0, 2, 4, 4]]  # too short: repeat the last frame
    torch.manual_seed(0)
    jittered = uniform_indices(80, 8, num_clips=4, jitter=True)
    segment = torch.arange(8) * 10
    assert ((jittered >= segment) & (jittered < segment + 10)).all() and len(set(jittered[:, 0].tolist())) > 1


def test_video_clips_on_world(tmp_path):
    clip = WORLD.clip("train", 3)
    with av.open(str(tmp_path / "clip.avi"), "w") as out:  # lossless PNG frames, so pixels compare exactly
        stream = out.add_stream("png", rate=8)
        stream.width, stream.height, stream.pix_fmt = clip.frames.shape[2], clip.frames.shape[1], "rgb24"
        for frame in clip.frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    (tmp_path / "labels.csv").write_text(f"file,label\nclip.avi,{clip.action}\n")
    ds = VideoClips(tmp_path, num_frames=4, sampling="uniform", classes=WORLD.actions)
    clips, label = ds[0]
    assert label == clip.label and clips.shape == (1, 4, 3, 64, 64)
    assert np.array_equal(clips[0].permute(0, 2, 3, 1).numpy(), clip.frames[[1, 3, 5, 7]])
    views, _ = VideoClips(tmp_path, T.Resize((32, 40)), num_frames=3, stride=2, num_clips=2)[0]
    assert views.shape == (2, 3, 3, 32, 40) and views.dtype == torch.uint8


# ------------------------------------------------------------------------------------ real data (counts.json)
@pytest.fixture(scope="module")
def counts(data_root):
    return json.loads((data_root / "counts.json").read_text())


@pytest.mark.data
@pytest.mark.parametrize("name", ["eurosat", "cifar10_test", "plantvillage_apple", "isic2018"])
def test_real_image_folders(data_root, counts, name):
    ds = ImageFolderDataset(data_root / name, transform=T.Compose([T.PILToTensor(), T.Resize((24, 24))]))
    assert len(ds) == counts[name]
    image, target = ds[len(ds) - 1]
    assert image.shape == (3, 24, 24) and target == len(ds.classes) - 1


@pytest.mark.data
def test_real_chestx14(data_root, counts):
    ds = ChestXray14(data_root / "chestx14")
    assert (
        len(ds) == counts["chestx14"] and ds.targets.shape == (len(ds), 15) and ds.targets.sum(1).min() == 1
    )
    image, target = ds[0]
    assert image.mode == "RGB" and image.size == (64, 64) and target.sum() >= 1
    few = ChestXray14(data_root / "chestx14", classes=CDFSL_CHESTX_CLASSES, single_finding=True, mode="L")
    assert 0 < len(few) < len(ds) and set(few.targets) <= set(range(7))
    assert all("|" not in row for row in _finding_labels(data_root, few))
    by_split = [len(ChestXray14(data_root / "chestx14", split=s)) for s in ("train", "valid", "test")]
    assert sum(by_split) == len(ds) and min(by_split) > 0


def _finding_labels(data_root, ds) -> list[str]:
    rows = (data_root / "chestx14" / "labels.csv").read_text().splitlines()
    return [rows[line - 1].split(",")[1] for _, _, line in ds.samples]


@pytest.mark.data
@pytest.mark.parametrize("split", ["train2017", "val2017"])
def test_real_coco(data_root, counts, split):
    coco = data_root / "coco"
    det = CocoDetection(coco / split, coco / "annotations" / f"instances_{split}.json")
    assert [len(det), det.num_boxes] == counts[f"coco_instances_{split}"] and len(det.classes) == 80
    image, target = det[0]
    boxes = target["boxes"]
    assert (
        (boxes[:, 2:] > boxes[:, :2]).all()
        and (boxes[:, 2] <= image.width + 1).all()
        and (boxes[:, 3] <= image.height + 1).all()
        and target["labels"].max() < 80
    )
    caps = CocoCaptions(coco / split, coco / "annotations" / f"captions_{split}.json")
    assert [len(caps), len(caps.captions)] == counts[f"coco_captions_{split}"]
    assert min(len(c) for c in caps.image_captions) >= 5 and caps[0][0].size[0] > 0


@pytest.mark.data
def test_real_vqa(data_root, counts):
    ds = VQADataset(data_root / "vqa" / "vqav2_val_subset.json", image_root=data_root)
    assert len(ds) == counts["vqa"] and ds.log.skipped == 0
    item = ds[0]
    assert item["question"].endswith("?") and item["answer"] and item["pixels"].size[0] > 0


@pytest.mark.data
def test_real_video(data_root, counts):
    ds = VideoClips(data_root / "video", T.Resize((32, 48)), num_frames=8, stride=4, num_clips=2)
    assert len(ds) == counts["video"] and ds.log.skipped == 0
    clips, label = ds[0]
    assert clips.shape == (2, 8, 3, 32, 48) and ds.classes[label] == "arm wrestling"
    assert clips[0].float().std() > 5 and not torch.equal(clips[0], clips[1])  # real, distinct views
    frames, _ = VideoClips(data_root / "video", num_frames=4, sampling="uniform")[1]
    assert frames.shape == (1, 4, 3, 240, 320)  # the .avi at its native size
    # 'apply eye makeup' is a UCF-101 action, not a Kinetics-400 one: Kinetics names refuse it.
    kinetics = (data_root / "video" / "kinetics400_labels.txt").read_text().splitlines()
    ds = VideoClips(data_root / "video", classes=kinetics)
    assert len(ds) == counts["video"] - 1 and ds.log.counts == {"unknown_label": 1}
