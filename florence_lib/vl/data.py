"""Samples for the vision-language tasks, held in memory (the world renders each scene once; a scene's six
questions share its image tensor) and batched by the project's step-seeded loader.

- captions: ``{"image", "text"}`` from the world's captions or COCO captions;
- questions: ``{"image", "question", "answers", "type"}``, ``answers`` the annotators' answers (one for the
  world and for the consensus VQAv2 subset), ``type`` the question type that accuracies are broken down by.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ..data.transforms import eval_transform, tensor_transform
from ..data.world import World
from ..training.batches import trim_padding
from .answers import soft_targets

WORLD_QUESTION_TYPES = ("counting", "colour", "shape", "position", "existence", "relation")


def world_question_type(question: str) -> str:
    """The kind of a world question, from its template (see ``data.world_text.questions``)."""
    for prefix, kind in (("how many", "counting"), ("what colour", "colour"), ("what shape", "shape"),
                         ("where is", "position"), ("is there", "existence"), ("is ", "relation")):
        if question.startswith(prefix):
            return kind
    raise ValueError(f"question: {question!r} matches no world question template")


def answer_type(answer: str) -> str:
    """VQAv2's answer types, for a question whose annotators' answer is ``answer``."""
    a = answer.strip().lower()
    return "yes/no" if a in ("yes", "no") else "number" if a.isdigit() else "other"


class ListDataset(Dataset):
    def __init__(self, samples: Sequence[dict[str, Any]]) -> None:
        if not samples:
            raise ValueError("no samples")
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.samples[index]


def world_questions(world: World, split: str, scenes: int, image_size: int) -> ListDataset:
    """Every question of the first ``scenes`` scenes of ``split``, at ``image_size`` px."""
    to_tensor, samples = tensor_transform(), []
    for i in range(scenes):
        scene = world.scene(split, i, image_size=image_size)
        image = to_tensor(scene.image)
        samples += [{"image": image, "question": q, "answers": [a], "type": world_question_type(q), "scene": i}
                    for q, a in scene.qa]
    return ListDataset(samples)


def world_captions(world: World, split: str, scenes: int, image_size: int, which: str = "all") -> ListDataset:
    """(image, caption) pairs: every caption of each scene (``all``), or its longest (``long``)."""
    to_tensor, samples = tensor_transform(), []
    for i in range(scenes):
        scene = world.scene(split, i, image_size=image_size)
        image = to_tensor(scene.image)
        texts = scene.captions if which == "all" else scene.captions[-1:]
        samples += [{"image": image, "text": t, "scene": i} for t in texts]
    return ListDataset(samples)


def vqav2_questions(data_root: str | Path, image_size: int) -> ListDataset:
    """The consensus VQAv2 subset in ``<data_root>/vqa`` (one answer per question); its image paths are relative
    to ``data_root`` (``coco/val2017/...``, as the data README says), not to the JSON's folder."""
    from ..data.vqa import VQADataset

    files = sorted((Path(data_root) / "vqa").glob("*.json"))
    if not files:
        raise FileNotFoundError(f"{Path(data_root) / 'vqa'}: no question JSON file")
    ds = VQADataset(files[0], image_root=data_root, transform=eval_transform(image_size))
    samples = [s for s in (ds[i] for i in range(len(ds))) if s is not None]
    return ListDataset([{"image": s["pixels"], "question": s["question"], "answers": [s["answer"]],
                         "type": answer_type(s["answer"]), "question_id": s["question_id"]} for s in samples])


def coco_captions(data_root: str | Path, split: str, image_size: int) -> ListDataset:
    """COCO images with all their captions, one sample per image: ``{"image", "text" (first), "references"}``."""
    from ..data.coco import CocoCaptions

    root = Path(data_root) / "coco"
    ds = CocoCaptions(root / f"{split}2017", root / "annotations" / f"captions_{split}2017.json",
                      transform=eval_transform(image_size))
    samples = []
    for i in range(len(ds)):
        item = ds[i]
        if item is not None and item[1]:
            samples.append({"image": item[0], "text": item[1][0], "references": list(item[1])})
    return ListDataset(samples)


class CaptionCollate:
    """``{"image", "input_ids", "attention_mask", "texts"}`` with padding columns trimmed."""

    def __init__(self, tokenizer: Callable[[list[str]], dict[str, torch.Tensor]]) -> None:
        self.tokenizer = tokenizer

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        texts = [s["text"] for s in samples]
        return {"image": torch.stack([s["image"] for s in samples]), **trim_padding(self.tokenizer(texts)),
                "texts": texts}


class QuestionCollate:
    """``{"image", "input_ids", "attention_mask", "targets" [B, answers], "answers", "types"}``, plus
    ``stage_map`` and ``text_hidden`` where the samples carry a frozen tower's cached outputs."""

    def __init__(self, tokenizer: Callable[[list[str]], dict[str, torch.Tensor]], vocab: Sequence[str]) -> None:
        self.tokenizer, self.vocab = tokenizer, list(vocab)

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        answers = [s["answers"] for s in samples]
        tokens = trim_padding(self.tokenizer([s["question"] for s in samples]))
        batch = {"image": torch.stack([s["image"] for s in samples]), **tokens,
                 "targets": soft_targets(answers, self.vocab), "answers": answers,
                 "types": [s["type"] for s in samples]}
        if "stage_map" in samples[0]:  # frozen towers' outputs (vl.feature_cache)
            batch["stage_map"] = torch.stack([s["stage_map"] for s in samples])
        if "text_hidden" in samples[0]:
            from .feature_cache import pad_hidden

            batch["text_hidden"] = pad_hidden([s["text_hidden"] for s in samples], tokens["input_ids"].shape[1])
        return batch
