"""Pretraining throughput: our UniCL step vs open_clip training a CLIP of matched size, on the same batch.

For each preset, the reference is open_clip's ``CLIP`` with the same text tower shape (width, layers, heads,
vocabulary) and timm's ``SwinTransformer`` of the same widths, depths, heads and window as its image tower (Swin's
patch embedding and merging where CoSwin has convolutional embeddings), trained with open_clip's ``ClipLoss`` and
the same AdamW. Both run one full step (forward, loss, backward, clip, update) on the same world batch, timed
alternately so that load on the machine hits both alike. FLOPs per step come from ``torch.utils.flop_counter``;
achieved FLOP/s is reported against this machine's fp32 and bf16 matmul peaks, measured in the same run. Beside
wall-clock images/s, each step's CPU time (``time.process_time``, all threads) is kept: on a shared machine a
process waiting for a core loses wall time, not CPU time, so the CPU-time ratio is the steadier one under load.

Runs accumulate in ``results/<name>.json`` and ``.md`` under their ``--label`` (the code state, e.g. ``main
f10b969``): a label measured again replaces its old run, so one table holds the before and the after runs, each
with its host, date and load.

    python benchmarks/bench_pretrain.py [--presets unicl_tiny unicl_small] [--steps 5] [--label "main f10b969"]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from provenance import headline, provenance
from timm.models.swin_transformer import SwinTransformer
from torch.utils.flop_counter import FlopCounterMode

from florence_lib.data.tokenizer import Tokenizer
from florence_lib.data.world import World, WorldConfig, WorldPairs
from florence_lib.models import create_model
from florence_lib.runs import environment_report
from florence_lib.training.batches import PairCollate
from florence_lib.training.engine import Engine
from florence_lib.training.objectives import ContrastiveObjective
from florence_lib.training.optim import build_optimizer
from florence_lib.training.schedules import build_scheduler

RESULTS = Path(__file__).parent / "results"
PEAK_DTYPE = {"fp32": torch.float32, "bf16": torch.bfloat16}


DEVICE = torch.device("cpu")  # --device; CUDA timings synchronise before reading the clock


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def matmul_seconds(a: torch.Tensor, b: torch.Tensor) -> float:
    sync()
    t = time.perf_counter()
    a @ b
    sync()
    return time.perf_counter() - t


def matmul_peak(dtype: torch.dtype, n: int = 1024, seconds: float = 2.0) -> float:
    """Best FLOP/s of an ``n x n`` matmul over ``seconds`` (the ceiling a training step can approach)."""
    n = n * 8 if DEVICE.type == "cuda" else n
    a, b = torch.randn(n, n, dtype=dtype, device=DEVICE), torch.randn(n, n, dtype=dtype, device=DEVICE)
    a @ b
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        sync()
        t = time.perf_counter()
        a @ b
        sync()
        best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


class OpenClipObjective:
    """open_clip's CLIP + ClipLoss behind our Engine's objective interface (same optimizer and step)."""

    def __init__(self) -> None:
        self.loss = ClipLoss()

    def __call__(self, model: CLIP, batch: dict) -> tuple[torch.Tensor, dict]:
        image = F.normalize(model.visual(batch["image"]), dim=-1)
        text = model.encode_text(batch["input_ids"], normalize=True)
        return self.loss(image.float(), text.float(), model.logit_scale.exp()), {}


def open_clip_twin(ours: torch.nn.Module, image_size: int, vocab_size: int, context_length: int) -> CLIP:
    """open_clip CLIP whose towers match ``ours`` in shape (timm Swin image tower, CLIP text transformer).

    Its context is the batch's trimmed text length, the length our text tower sees (open_clip's causal mask is
    built for a fixed context)."""
    img, txt = ours.config.image, ours.config.text
    model = CLIP(ours.config.embed_dim, CLIPVisionCfg(layers=1, width=64, patch_size=16, image_size=image_size),
                 CLIPTextCfg(context_length=context_length, vocab_size=vocab_size, width=txt.width, heads=txt.heads,
                             layers=txt.layers, mlp_ratio=txt.mlp_ratio))
    model.visual = SwinTransformer(img_size=image_size, patch_size=4, embed_dim=img.embed_dim, depths=img.depths,
                                   num_heads=img.num_heads, window_size=img.window_size,
                                   drop_path_rate=img.drop_path_rate, num_classes=ours.config.embed_dim)
    return model


def engine_for(model: torch.nn.Module, objective, precision: str) -> Engine:
    model.to(DEVICE)
    opt = build_optimizer(model, lr=1e-4, weight_decay=0.1)
    return Engine(model, objective, opt, build_scheduler(opt, warmup_steps=1, total_steps=10**6),
                  device=DEVICE, precision=precision, grad_clip=1.0)


def step_flops(engine: Engine, batch: dict) -> int:
    with FlopCounterMode(display=False) as counter:
        engine.train_step(batch)
    return counter.get_total_flops()


def bench_preset(name: str, batch: dict, image_size: int, steps: int, precision: str, compiled: bool = False
                 ) -> dict:
    torch.manual_seed(0)
    if DEVICE.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    ours = create_model(name)
    engines = {"ours": engine_for(ours, ContrastiveObjective("clip"), precision),
               "open_clip": engine_for(open_clip_twin(ours, image_size, 30522, batch["input_ids"].shape[1]),
                                       OpenClipObjective(), precision)}
    out: dict = {"preset": name, "image_size": image_size, "batch_size": len(batch["image"])}
    for key, engine in engines.items():
        out[f"{key}_params"] = sum(p.numel() for p in engine.model.parameters())
        out[f"{key}_flops_per_step"] = step_flops(engine, batch)  # also the warm-up step
    if compiled:  # the config key `compile: true`: both towers through torch.compile, keys unchanged
        torch.manual_seed(0)
        model = create_model(name)
        model.image_encoder.compile()
        model.text_encoder.compile()
        engines["ours_compiled"] = engine_for(model, ContrastiveObjective("clip"), precision)
        t = time.perf_counter()
        engines["ours_compiled"].train_step(batch)  # compiles forward and backward
        out["ours_compiled_first_step_seconds"] = time.perf_counter() - t
        out["ours_compiled_params"] = out["ours_params"]
        out["ours_compiled_flops_per_step"] = out["ours_flops_per_step"]
    times: dict[str, list[float]] = {k: [] for k in engines}
    cpu_times: dict[str, list[float]] = {k: [] for k in engines}
    n = 1024 * (8 if DEVICE.type == "cuda" else 1)
    a, b = (torch.randn(n, n, dtype=PEAK_DTYPE[precision], device=DEVICE) for _ in range(2))
    peak_samples = []
    for _ in range(steps):  # alternate, so that a busy moment on a shared machine hits both (and the matmul)
        peak_samples.append(2 * n**3 / min(matmul_seconds(a, b) for _ in range(3)))
        for key, engine in engines.items():
            sync()
            t, cpu = time.perf_counter(), time.process_time()
            engine.train_step(batch)
            sync()
            times[key].append(time.perf_counter() - t)
            cpu_times[key].append(time.process_time() - cpu)
    for key in engines:
        sec = statistics.median(times[key])
        out[f"{key}_cpu_step_seconds"] = statistics.median(cpu_times[key])
        out[f"{key}_step_seconds"] = sec
        out[f"{key}_images_per_second"] = len(batch["image"]) / sec
        out[f"{key}_flops_per_second"] = out[f"{key}_flops_per_step"] / sec
    out["throughput_ratio"] = out["ours_images_per_second"] / out["open_clip_images_per_second"]
    out["cpu_time_ratio"] = out["open_clip_cpu_step_seconds"] / out["ours_cpu_step_seconds"]
    out["matmul_flops_same_load"] = statistics.median(peak_samples)  # the peak as loaded as the steps were
    if DEVICE.type == "cuda":  # both models' states and the last steps' activations
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def world_batch(batch_size: int, image_size: int) -> dict:
    world = World(WorldConfig(image_size=image_size))
    pairs = WorldPairs(world, "train", batch_size, caption="mixed", image_label_fraction=0.3)
    batch = PairCollate(Tokenizer())([pairs[i] for i in range(batch_size)])
    return {k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def default_label() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "this tree"
    return f"this tree ({rev})"


def render(report: dict) -> str:
    """One table over every run in ``report["runs"]``: a row per (run, preset), each with its host, date, load."""
    lines = [
        f"# Pretraining throughput ({headline(report)}; latest run)",
        "",
        "Each run: batch, px, threads and precision as in its row; median of alternated steps (ours, open_clip's "
        "matched CLIP, a matmul). Ratio: images/s ours / open_clip (wall clock); CPU ratio: the same from each "
        "step's CPU time (steadier under load). % peak: achieved FLOP/s (the FLOPs each side executes) over the "
        "best matmul of the run, and over the matmul timed between the steps (as loaded as they were). Our text tower "
        "skips what follows each caption's end token (models/text_encoder.py), so from issue-17e on it executes "
        "fewer FLOPs than open_clip's, and a faster step can show a lower % of peak.",
        "",
        "| run | host, date, load | preset | setting | GFLOP/step ours / open_clip | img/s ours | img/s open_clip "
        "| ratio | CPU ratio | % peak ours / open_clip | % same-load peak ours / open_clip |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, run in report["runs"].items():
        load = run.get("load_average")
        where = f"{run['host']}, {run['date']}, {load[0]:.1f}" if load else f"{run['host']}, {run['date']}"
        for r in run["rows"]:
            cpu = f"{r['cpu_time_ratio']:.2f}" if "cpu_time_ratio" in r else "—"
            same = (f"{100 * r['ours_fraction_of_same_load_peak']:.0f}% / "
                    f"{100 * r['open_clip_fraction_of_same_load_peak']:.0f}%"
                    if "ours_fraction_of_same_load_peak" in r else "—")
            lines.append(
                f"| {label} | {where} | {r['preset']} | {run['precision']}, {run['threads']} thr, "
                f"b{r['batch_size']}, {r['image_size']} px, {run.get('steps', '?')} steps "
                f"| {r['ours_flops_per_step'] / 1e9:.1f} / {r['open_clip_flops_per_step'] / 1e9:.1f} "
                f"| {r['ours_images_per_second']:.1f} | {r['open_clip_images_per_second']:.1f} "
                f"| {r['throughput_ratio']:.2f} | {cpu} "
                f"| {100 * r['ours_fraction_of_peak']:.0f}% / {100 * r['open_clip_fraction_of_peak']:.0f}% | {same} |")
    for label, run in report["runs"].items():
        peaks = run["matmul_peak_flops"]
        lines.append(f"\n{label}: matmul peak fp32 {peaks['fp32'] / 1e9:.1f}, bf16 {peaks['bf16'] / 1e9:.1f} GFLOP/s"
                     + "".join(f"; {r['preset']} between steps {r['matmul_flops_same_load'] / 1e9:.1f}"
                               for r in run["rows"] if "matmul_flops_same_load" in r) + ".")
        for r in run["rows"]:
            if "peak_memory_gib" in r:
                lines.append(f"{label}, {r['preset']}: peak CUDA memory {r['peak_memory_gib']:.2f} GiB (both models).")
            if "ours_compiled_step_seconds" in r:
                lines.append(f"{label}, {r['preset']} with `compile: true`: first step (compiling) "
                             f"{r['ours_compiled_first_step_seconds']:.1f} s, then "
                             f"{r['ours_compiled_images_per_second']:.1f} img/s vs {r['ours_images_per_second']:.1f} "
                             f"eager (x{r['ours_compiled_images_per_second'] / r['ours_images_per_second']:.2f}).")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["unicl_tiny", "unicl_small"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--compile", action="store_true", help="also time our model with torch.compile'd towers")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--name", default="bench_pretrain", help="results/<name>.json and .md")
    parser.add_argument("--label", default=None, help="names the code state measured (default: this tree's commit)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    global DEVICE
    DEVICE = torch.device(args.device)

    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    batch = world_batch(args.batch_size, args.image_size)
    rows = [bench_preset(p, batch, args.image_size, args.steps, args.precision, args.compile) for p in args.presets]
    for r in rows:
        for key in ("ours", "open_clip"):
            r[f"{key}_fraction_of_peak"] = r[f"{key}_flops_per_second"] / peaks[args.precision]
            r[f"{key}_fraction_of_same_load_peak"] = r[f"{key}_flops_per_second"] / r["matmul_flops_same_load"]
    run = {**provenance(), "device": args.device, "precision": args.precision, "threads": torch.get_num_threads(),
           "steps": args.steps, "matmul_peak_flops": peaks, "rows": rows, "environment": environment_report()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{args.name}.json"
    report = json.loads(path.read_text()) if path.exists() else {}
    report = {"runs": report.get("runs", {})}
    report["runs"][args.label or default_label()] = run
    report.update(provenance())  # the file's date: its latest run's
    path.write_text(json.dumps(report, indent=2))
    path.with_suffix(".md").write_text(text := render(report))
    print(text)


if __name__ == "__main__":
    main()
