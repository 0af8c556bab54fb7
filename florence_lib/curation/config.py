"""The typed configuration of ``python -m florence_lib curate`` (profiles in ``configs/curate/``)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ConfigError, field


@dataclass
class CurateConfig:
    """Every threshold of the FLD-style pipeline; defaults follow the paper where it states a choice."""

    # 1. decode and validate
    min_side: int = field(32, min=1, help="drop images whose shorter side is below this many pixels")
    max_aspect: float = field(3.0, min=1.0, help="drop images whose long/short side ratio exceeds this")
    # 2. text
    min_tokens: int = field(1, min=0, help="drop captions with fewer word tokens")
    max_tokens: int = field(77, min=1, help="drop captions with more word tokens (77: CLIP's context)")
    languages: list[str] = field(default_factory=lambda: ["en"],
                                 help="ISO 639-1 codes to keep (langid); empty keeps every language")
    language_margin: float = field(15.0, min=0.0, help="drop a caption only when another language is this many "
                                   "nats more likely (langid) than the best kept one")
    # 3. near-duplicate images
    hash_size: int = field(8, min=4, max=32, help="pHash side: hash_size**2 bits (a multiple of 16); 8 for photos, "
                           "16 for flat synthetic scenes")
    hash_radius: int = field(10, min=0, help="max Hamming distance between the pHashes of near-duplicates")
    fine_threshold: float | None = field(0.9, min=-1.0, max=1.0,
                                         help="a pHash candidate is a duplicate only if the 8x8 RGB thumbnails' "
                                              "cosine reaches this too (null: pHash alone); our assumption, "
                                              "measured in benchmarks/bench_curation.py")
    # 4. redundant texts
    merge_near_identical: bool = field(False, help="also give near-identical captions (MinHash LSH) one label")
    minhash_threshold: float = field(0.8, min=0.0, max=1.0, help="Jaccard similarity of word 3-shingles")
    minhash_num_perm: int = field(128, min=16, max=1024, help="MinHash permutations")
    # 5. image-text relevance
    relevance_checkpoint: str | None = field(None, help="UniCL checkpoint scoring image-caption pairs; null skips")
    relevance_image_size: int = field(64, min=8, help="side the relevance model sees")
    relevance_threshold: float = field(0.2, min=-1.0, max=1.0, help="drop pairs with cosine similarity below")
    # 6. decontamination
    contamination_radius: int = field(10, min=0,
                                      help="max pHash distance to an evaluation image for a row to be dropped")
    # 8. sampling
    max_per_query: int = field(0, min=0, help="keep at most this many pairs per label (0: no cap)")
    max_per_source: int = field(0, min=0, help="keep at most this many pairs per source (0: no cap)")
    # execution
    batch_size: int = field(256, min=1, help="rows per journalled batch (a killed run redoes at most one)")
    workers: int = field(0, min=0, help="processes decoding and hashing images (0: in the main process)")
    shard_size: int = field(1000, min=1, help="samples per output shard")
    seed: int = field(0, min=0, help="seed of the sampling stage")
    strict: bool = field(False, help="raise on the first unreadable row instead of counting it")

    def validate(self) -> None:
        if self.hash_size**2 % 16:
            raise ConfigError(f"hash_size: {self.hash_size}**2 bits is not a multiple of 16; use 4, 8, 12, 16, ...")
        if self.min_tokens > self.max_tokens:
            raise ConfigError(f"min_tokens: {self.min_tokens} exceeds max_tokens {self.max_tokens}")
