"""Training throughput of the tiny Video CoSwin against torchvision's ``swin3d_t`` (random init, no weights
downloaded), same clips, frames, size, batch and optimizer, in the same run; and the memory per clip. A third
row builds Video CoSwin at Swin-T's size (widths, depths, 8x7x7 windows) to compare implementations like for like.

Throughput is clips per second of forward + backward + AdamW step, best of ``--repeats`` timed windows after a
warm-up. Memory per clip is the growth of peak RSS from batch ``b`` to ``2b`` divided by ``b`` (activations
scale with the batch; weights and optimizer state do not), each model in a fresh child process. On a busy
shared machine wall times drift: compare the ratio, which is measured under the same load.

    python benchmarks/bench_video.py [--frames 8] [--size 64] [--batch 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def build(name: str):
    import torch

    if name.startswith("video_coswin"):
        from florence_lib.models.video_coswin import create_video_encoder

        # video_coswin_swin_t: Swin-T's widths, depths and 8x7x7 windows, i.e. swin3d_t with conv embeddings
        encoder = create_video_encoder("video_coswin_tiny") if name == "video_coswin_tiny" else create_video_encoder(
            "video_coswin_tiny", embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=(7,),
            temporal_window=(8,))
        return torch.nn.Sequential(encoder, torch.nn.Linear(encoder.num_features, 400))
    from torchvision.models.video import swin3d_t

    return swin3d_t(weights=None, num_classes=400)


def child(name: str, frames: int, size: int, batch: int, steps: int, repeats: int, threads: int) -> dict:
    """Time training steps of one model in this process; report clips/s and peak RSS."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build(name).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    clips = torch.randn(batch, 3, frames, size, size)
    labels = torch.randint(0, 400, (batch,))

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(clips), labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up: allocations, masks and bias indices built once
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        best = min(best, (time.perf_counter() - start) / steps)
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"model": name, "batch": batch, "clips_per_s": batch / best, "step_s": best,
            "peak_rss_mib": rss_kib / 1024, "params_m": sum(p.numel() for p in model.parameters()) / 1e6}


def run_child(name: str, args: argparse.Namespace, batch: int) -> dict:
    cmd = [sys.executable, __file__, "--child", name, "--frames", str(args.frames), "--size", str(args.size),
           "--batch", str(batch), "--steps", str(args.steps), "--repeats", str(args.repeats),
           "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", default=None)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.frames, args.size, args.batch, args.steps, args.repeats,
                               args.threads)))
        return
    rows = []
    for name in ("video_coswin_tiny", "swin3d_t", "video_coswin_swin_t"):
        small, large = run_child(name, args, args.batch), run_child(name, args, 2 * args.batch)
        per_clip = (large["peak_rss_mib"] - small["peak_rss_mib"]) / args.batch
        rows.append({**small, "memory_per_clip_mib": per_clip})
        print(f"{name:18s} {small['params_m']:6.1f}M params  {small['clips_per_s']:7.2f} clips/s  "
              f"{per_clip:7.1f} MiB/clip  (peak {small['peak_rss_mib']:.0f} MiB at batch {args.batch})")
    ratio = rows[0]["clips_per_s"] / rows[1]["clips_per_s"]
    same_size = rows[2]["clips_per_s"] / rows[1]["clips_per_s"]
    print(f"video_coswin_tiny / swin3d_t training throughput: {ratio:.1f}x; at Swin-T's size {same_size:.2f}x "
          f"({args.frames} frames at {args.size} px, batch {args.batch}, {args.threads} thread(s))")
    RESULTS.mkdir(exist_ok=True)
    import torch

    result = {"frames": args.frames, "size": args.size, "batch": args.batch, "threads": args.threads,
              "host": platform.node(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M"),
              "rows": rows, "throughput_ratio_tiny": ratio, "throughput_ratio_swin_t_size": same_size}
    (RESULTS / "bench_video.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
