"""The notebook series: which notebook reproduces which part of the Florence paper (arXiv 2111.11432)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SeriesEntry:
    notebook: str
    paper: str
    what: str
    after: tuple[str, ...] = ()
    """The notebooks whose outputs in the run directory this one reads (``reproduce --jobs`` waits for them)."""
    seconds: float = 0.0
    """What it took in a quick ``make reproduce`` (one thread each, ``--jobs 2``, quiet 2-core machine): only
    used to start the longest chains first. Measured at ecd62a6 (``summary.json`` of that run, 27.0 min)."""


PRETRAINED = ("02_unicl_pretraining",)  # the UniCL checkpoint every evaluation and adapter starts from


SERIES: tuple[SeriesEntry, ...] = (
    SeriesEntry("00_overview", "-", "environment report, map of the series, preview of the embedded world",
                seconds=12),
    SeriesEntry("00b_data_tour", "§2.1", "gallery of the embedded world and of the real evaluation sets", seconds=25),
    SeriesEntry("01_data_curation", "§2.1-2.2", "FLD-style curation: filters, dedup, caption->label table",
                seconds=28),
    SeriesEntry("02_unicl_pretraining", "§2.2-2.3", "CoSwin + text encoder, UniCL loss, pretraining, collapse detector",
                after=("01_data_curation",), seconds=336),
    SeriesEntry("02b_scaling_up", "§2.7, Fig. 5", "DeepSpeed ZeRO, activation checkpointing, gradient cache",
                seconds=26),
    SeriesEntry("02c_ablations", "§2.2-2.3", "the paper's claims as seeded ablations: UniCL vs CLIP, long vs short "
                "captions, MiniLM vs from-scratch text", seconds=720),  # needs nothing: runs beside 02
    SeriesEntry("03_zero_shot", "§3.1, Table 1", "zero-shot classification with prompt ensembles", after=PRETRAINED,
                seconds=22),
    SeriesEntry("04_linear_probe", "§3.2, Table 2", "linear probe (CLIP protocol)", after=PRETRAINED, seconds=107),
    SeriesEntry("05_finetuning", "§3.3, Table 3", "fine-tuning with the UniCL loss vs a linear head", after=PRETRAINED,
                seconds=116),
    SeriesEntry("06_few_shot", "§3.4, Table 4", "cross-domain few-shot (CD-FSL)", after=PRETRAINED, seconds=142),
    SeriesEntry("07_retrieval", "§3.5, Table 5", "image-text retrieval, zero-shot and fine-tuned", after=PRETRAINED,
                seconds=84),
    SeriesEntry("08_detection", "§2.4, Table 6", "Dynamic Head + ATSS object detection, COCO-style AP", after=PRETRAINED,
                seconds=457),
    SeriesEntry("09_zero_shot_detection", "§3.6, Table 7", "zero-shot detection: text-classified proposals",
                after=PRETRAINED, seconds=333),
    SeriesEntry("10_vqa", "§2.5, §3.7, Table 8", "METER fusion: MLM + ITM pretraining, VQA vs blind and majority",
                after=PRETRAINED, seconds=623),
    SeriesEntry("11_video", "§2.6, §3.8-3.9, Tables 9-10",
                "Video CoSwin: inflation, action recognition (4x3 views), zero-shot text-video retrieval",
                after=PRETRAINED, seconds=167),
    SeriesEntry("12_results", "Tables 1-10", "every table of the paper from one run, gaps labelled; HTML report",
                after=("*",), seconds=13),  # all the others
)


def prerequisites(stems: list[str]) -> dict[str, set[str]]:
    """For each notebook of ``stems`` (in series order), the ones among ``stems`` it must wait for: its
    ``after`` (``*``: every other one); a notebook the series does not know waits for every one before it."""
    entries = {e.notebook: e for e in SERIES}
    out: dict[str, set[str]] = {}
    for i, stem in enumerate(stems):
        entry = entries.get(stem)
        if entry is None:
            out[stem] = set(stems[:i])
        elif "*" in entry.after:
            out[stem] = set(stems) - {stem}
        else:
            out[stem] = set(entry.after) & set(stems)
    return out


def critical_paths(stems: list[str]) -> dict[str, float]:
    """For each notebook of ``stems``, its ``seconds`` plus the longest chain of notebooks that wait for it:
    ``reproduce --jobs`` starts the ready notebook with the longest one first (critical-path list scheduling),
    so that the long independent notebooks (02c, 10, 08) do not end up last, one of the workers idle."""
    seconds = {e.notebook: e.seconds for e in SERIES}
    waits = prerequisites(stems)
    longest: dict[str, float] = {}
    for stem in reversed(stems):  # a notebook only waits for notebooks before it in the series
        after = [longest[s] for s in stems if stem in waits[s] and s in longest]
        longest[stem] = seconds.get(stem, 0.0) + max(after, default=0.0)
    return longest


def series_table() -> str:
    """The series as a markdown table."""
    rows = ["| notebook | paper | what it reproduces |", "|---|---|---|"]
    rows += [f"| `{e.notebook}.ipynb` | {e.paper} | {e.what} |" for e in SERIES]
    return "\n".join(rows)
