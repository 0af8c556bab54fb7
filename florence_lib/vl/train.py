"""METER's two training stages on the project's one engine: vision-language pretraining (MLM + ITM) and VQA
fine-tuning, plus VQA evaluation and the baselines it is judged against (question-only model, majority answer
per question type)."""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..config import from_dict, to_dict
from ..data.tokenizer import Tokenizer
from ..data.world import World, WorldConfig
from ..models.meter import METER, METERConfig, METERForVQA, METERPretraining, meter_config
from ..runs import RunDir
from ..training.batches import step_loader
from ..training.checkpoint import WEIGHTS, load_weights, read_model_spec, resolve_checkpoint
from ..training.engine import Engine, move_to, resolve_device
from ..training.schedules import build_scheduler
from .answers import build_answer_vocab
from .config import OptimConfig, VLConfig
from .data import (
    CaptionCollate,
    ListDataset,
    QuestionCollate,
    vqav2_questions,
    world_captions,
    world_questions,
)
from .feature_cache import cache_frozen_features
from .objectives import PretrainObjective, VQAObjective, cached_features
from .vqa_metrics import exact_match, vqa_accuracy

MASK_ID = 103  # [MASK] in the MiniLM/BERT uncased WordPiece vocabulary (checked against the tokenizer in tests)


# ------------------------------------------------------------------------------------------------ models
def resolve_meter_config(cfg: VLConfig) -> METERConfig:
    """The preset, with the image tower's config taken from the UniCL checkpoint where one is given."""
    mcfg = meter_config(cfg.model, **cfg.model_overrides)
    if cfg.unicl_checkpoint is not None:
        from ..models import model_config

        spec = read_model_spec(cfg.unicl_checkpoint)
        mcfg = dataclasses.replace(mcfg, image=model_config(spec["name"], **spec.get("kwargs", {})).image)
    return mcfg


def load_unicl_image_encoder(meter: METER, checkpoint: str | Path) -> int:
    """Copy a UniCL checkpoint's ``image_encoder.*`` weights into ``meter``; returns the number of tensors."""
    weights = load_weights(checkpoint)
    image = {k.removeprefix("image_encoder."): v for k, v in weights.items() if k.startswith("image_encoder.")}
    if not image:
        raise ValueError(f"{resolve_checkpoint(checkpoint)}: no image_encoder.* weights (not a UniCL checkpoint?)")
    meter.image_encoder.load_state_dict(image, strict=True)
    return len(image)


def spec_of(mcfg: METERConfig, kind: str, **extra: Any) -> dict[str, Any]:
    return {"name": kind, "kwargs": {"config": to_dict(mcfg), **extra}}


def load_vl_checkpoint(path: str | Path) -> nn.Module:
    """A METER checkpoint written by :func:`pretrain` (``METERPretraining``) or :func:`finetune_vqa`."""
    spec = read_model_spec(path)
    kwargs = spec["kwargs"]
    mcfg = from_dict(METERConfig, kwargs["config"])
    mcfg = dataclasses.replace(mcfg, text=dataclasses.replace(mcfg.text, pretrained=False))  # weights follow
    if spec["name"] == "meter_pretraining":
        model: nn.Module = METERPretraining(mcfg)
    elif spec["name"] == "meter_vqa":
        model = METERForVQA(mcfg, len(kwargs["vocab"]))
        model.vocab = list(kwargs["vocab"])
    else:
        raise ValueError(f"{resolve_checkpoint(path)}: model {spec['name']!r} is not a METER checkpoint")
    load_model(model, str(resolve_checkpoint(path) / WEIGHTS), strict=True)
    return model.eval()


# ------------------------------------------------------------------------------------------------ optim
def param_groups(model: nn.Module, lr: float, weight_decay: float, fusion_mult: float, head_mult: float
                 ) -> list[dict[str, Any]]:
    """AdamW groups by (lr, decay): encoders at ``lr``, the new fusion parts at ``lr * fusion_mult``, task heads
    at ``lr * head_mult``; norms, biases and embeddings (text and modality) without weight decay."""
    no_decay = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    groups: dict[tuple[float, bool], list[nn.Parameter]] = defaultdict(list)
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.startswith(("meter.image_encoder.", "meter.text_encoder.")) and "image_norm" not in name:
            mult = 1.0
        elif name.startswith("meter."):
            mult = fusion_mult
        else:
            mult = head_mult
        groups[(mult, name not in no_decay)].append(param)
    return [{"params": ps, "lr": lr * mult, "weight_decay": weight_decay if decay else 0.0, "lr_mult": mult}
            for (mult, decay), ps in sorted(groups.items())]


def build_engine(model: nn.Module, objective: Any, opt: OptimConfig, device: torch.device, precision: str
                 ) -> Engine:
    groups = param_groups(model, opt.lr, opt.weight_decay, opt.fusion_lr_mult, opt.head_lr_mult)
    # the single-kernel update (as pretraining's build_optimizer): ~13% of a cached VQA step of the CPU preset
    optimizer = torch.optim.AdamW(groups, lr=opt.lr, betas=(0.9, 0.98), eps=1e-6,
                                  fused=device.type in ("cpu", "cuda"))
    scheduler = build_scheduler(optimizer, warmup_steps=int(opt.warmup_fraction * opt.steps), total_steps=opt.steps)
    return Engine(model, objective, optimizer, scheduler, device=device, precision=precision)


def setup(cfg: VLConfig) -> tuple[torch.device, Tokenizer, World]:
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    return (resolve_device(cfg.device), Tokenizer(cfg.context_length),
            World(WorldConfig(seed=cfg.world_seed, image_size=cfg.image_size)))


def batches(dataset: Dataset, collate: Any, batch_size: int) -> Iterable[dict[str, Any]]:
    """One ordered pass (evaluation)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)


# ------------------------------------------------------------------------------------------------ pretraining
def pretrain_objective(tokenizer: Tokenizer, cfg: VLConfig, similarity: Any = None) -> PretrainObjective:
    return PretrainObjective(mask_id=MASK_ID, vocab_size=tokenizer.vocab_size,
                             special_ids=(tokenizer.pad_id, tokenizer.start_id, tokenizer.end_id),
                             mlm_probability=cfg.pretrain.mlm_probability, itm_fraction=cfg.pretrain.itm_fraction,
                             similarity=similarity)


@torch.no_grad()
def evaluate_pretraining(model: nn.Module, loader: Iterable[Mapping[str, Any]], objective: PretrainObjective,
                         device: torch.device, seed: int = 0) -> dict[str, float]:
    """Held-out MLM and ITM accuracies under a fixed draw of masks and negatives (comparable across steps)."""
    model.eval()
    totals: Counter[str] = Counter()
    n = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for batch in loader:
            _, logs = objective(model, move_to(batch, device))
            for k, v in logs.items():
                totals[k] += v
            n += 1
    return {f"val_{k}": v / max(n, 1) for k, v in totals.items()}


def unicl_similarity(checkpoint: str | Path, tokenizer: Tokenizer, device: torch.device) -> Any:
    """``batch -> exp(UniCL similarity) [B, B]``, the weights of hard ITM negatives (image row i, text col j)."""
    from ..training.checkpoint import load_checkpoint

    unicl, _ = load_checkpoint(checkpoint, device)
    unicl.requires_grad_(False)

    @torch.no_grad()
    def similarity(batch: Mapping[str, Any]) -> torch.Tensor:
        tokens = tokenizer(list(batch["texts"]))
        img, txt, scale = unicl(batch["image"], tokens["input_ids"].to(device), tokens["attention_mask"].to(device))
        return (scale * txt @ img.T).softmax(-1)  # row = a text, column = the candidate image

    return similarity


def pretrain(cfg: VLConfig, run_dir: RunDir) -> tuple[METERPretraining, list[dict[str, Any]]]:
    """MLM + ITM on world captions; saves ``run_dir/checkpoints``; returns the model and the logged records."""
    device, tokenizer, world = setup(cfg)
    mcfg = resolve_meter_config(cfg)
    model = METERPretraining(mcfg)
    if cfg.unicl_checkpoint is not None:
        load_unicl_image_encoder(model.meter, cfg.unicl_checkpoint)
    model.to(device)
    p = cfg.pretrain
    train = world_captions(world, "train", p.scenes, cfg.image_size)
    val = world_captions(world, "val", p.val_scenes, cfg.image_size, which="long")
    collate = CaptionCollate(tokenizer)
    similarity = unicl_similarity(cfg.unicl_checkpoint, tokenizer, device) if p.hard_negatives else None
    objective = pretrain_objective(tokenizer, cfg, similarity)
    engine = build_engine(model, objective, p.optim, device, cfg.precision)
    loader = step_loader(train, collate, batch_size=p.optim.batch_size, seed=cfg.seed)
    val_batches = list(batches(val, collate, cfg.eval_batch_size))
    eval_objective = pretrain_objective(tokenizer, cfg)
    records = engine.fit(loader, p.optim.steps, run_dir=run_dir, log_every=p.optim.log_every,
                         eval_every=max(1, p.optim.steps // 5),
                         evaluate=lambda: evaluate_pretraining(model, val_batches, eval_objective, device),
                         record={"stage": "vl_pretrain"}, desc="vl pretrain")
    engine.save(run_dir.checkpoints, model_spec=spec_of(mcfg, "meter_pretraining"), config=cfg, keep=1)
    return model.eval(), records


# ------------------------------------------------------------------------------------------------ VQA
@dataclasses.dataclass
class VQAData:
    train: ListDataset
    test: ListDataset
    vocab: list[str]
    exact: bool  # one consensus answer per question: exact match instead of the 10-annotator formula
    name: str


def vqa_data(cfg: VLConfig, world: World) -> VQAData:
    v = cfg.vqa
    if v.dataset == "world":
        train = world_questions(world, "train", v.scenes, cfg.image_size)
        test = world_questions(world, "test", v.test_scenes, cfg.image_size)
    else:
        if cfg.data_root is None:
            raise FileNotFoundError("vqa.dataset vqav2: set data_root (the folder holding vqa/ and coco/)")
        full = vqav2_questions(cfg.data_root, cfg.image_size).samples
        cut = int(len(full) * v.vqav2_train_fraction)
        train, test = ListDataset(full[:cut]), ListDataset(full[cut:])
    vocab = build_answer_vocab((s["answers"] for s in train.samples), v.top_k, v.min_count)
    exact = all(len(s["answers"]) == 1 for s in test.samples)
    return VQAData(train, test, vocab, exact, v.dataset)


def score(prediction: str, answers: Sequence[str], exact: bool) -> float:
    return exact_match(prediction, answers[0]) if exact else vqa_accuracy(prediction, answers)


def summarise(scores: Sequence[float], types: Sequence[str]) -> dict[str, float]:
    by_type: dict[str, list[float]] = defaultdict(list)
    for s, t in zip(scores, types, strict=True):
        by_type[t].append(s)
    return {"accuracy": sum(scores) / len(scores), **{f"accuracy_{t}": sum(v) / len(v) for t, v in by_type.items()}}


@torch.no_grad()
def predict_vqa(model: nn.Module, dataset: ListDataset, vocab: Sequence[str], tokenizer: Tokenizer,
                device: torch.device, batch_size: int = 64, blind: bool = False) -> list[str]:
    model.eval()
    out: list[str] = []
    for batch in batches(dataset, QuestionCollate(tokenizer, vocab), batch_size):
        batch = move_to(batch, device)
        images = torch.zeros_like(batch["image"]) if blind else batch["image"]
        logits = model(images, batch["input_ids"], batch["attention_mask"], **cached_features(batch))
        out += [vocab[i] for i in logits.argmax(-1).tolist()]
    return out


def evaluate_predictions(predictions: Sequence[str], dataset: ListDataset, exact: bool) -> dict[str, float]:
    scores = [score(p, s["answers"], exact) for p, s in zip(predictions, dataset.samples, strict=True)]
    return summarise(scores, [s["type"] for s in dataset.samples])


def majority_baseline(data: VQAData) -> dict[str, float]:
    """The most frequent training answer of each question type, given to every test question of that type."""
    per_type: dict[str, Counter[str]] = defaultdict(Counter)
    overall: Counter[str] = Counter()
    for s in data.train.samples:
        per_type[s["type"]][s["answers"][0]] += 1
        overall[s["answers"][0]] += 1
    fallback = overall.most_common(1)[0][0]
    preds = [per_type[s["type"]].most_common(1)[0][0] if per_type[s["type"]] else fallback
             for s in data.test.samples]
    return evaluate_predictions(preds, data.test, data.exact)


def vqa_optim(cfg: VLConfig, data: VQAData) -> OptimConfig:
    """``vqa.optim``, with ``vqa.vqav2_steps`` on the (small) VQAv2 subset."""
    steps = cfg.vqa.vqav2_steps if data.name == "vqav2" and cfg.vqa.vqav2_steps is not None else None
    return cfg.vqa.optim if steps is None else dataclasses.replace(cfg.vqa.optim, steps=steps)


def finetune_vqa(cfg: VLConfig, run_dir: RunDir, data: VQAData, *, init: METER | None = None,
                 blind: bool = False) -> dict[str, Any]:
    """Fine-tune METER + a fresh VQA head (from ``init``'s weights if given) and evaluate on ``data.test``.

    Returns ``{"model", "records", "predictions", "metrics"}``; ``blind`` trains and tests question-only."""
    device, tokenizer, _ = setup(cfg)
    mcfg = init.config if init is not None else resolve_meter_config(cfg)
    model = METERForVQA(mcfg, len(data.vocab))
    if init is not None:
        model.meter.load_state_dict(init.state_dict())
    elif cfg.unicl_checkpoint is not None:
        load_unicl_image_encoder(model.meter, cfg.unicl_checkpoint)
    model.to(device)
    opt = vqa_optim(cfg, data)
    train, test = data.train, data.test
    if cfg.vqa.cache_features:
        train, test = (cache_frozen_features(model.meter, d, tokenizer, device, cfg.eval_batch_size, blind)
                       for d in (train, test))
    engine = build_engine(model, VQAObjective(blind=blind), opt, device, cfg.precision)
    loader = step_loader(train, QuestionCollate(tokenizer, data.vocab), batch_size=opt.batch_size, seed=cfg.seed)
    records = engine.fit(loader, opt.steps, run_dir=run_dir, log_every=opt.log_every,
                         record={"stage": "vqa_blind" if blind else "vqa"}, desc="vqa blind" if blind else "vqa")
    engine.save(run_dir.checkpoints, model_spec=spec_of(mcfg, "meter_vqa", vocab=data.vocab), config=cfg, keep=1)
    predictions = predict_vqa(model, test, data.vocab, tokenizer, device, cfg.eval_batch_size, blind)
    model.vocab = data.vocab
    return {"model": model, "records": records, "predictions": predictions,
            "metrics": evaluate_predictions(predictions, data.test, data.exact)}
