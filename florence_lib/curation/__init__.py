"""FLD-style data curation (paper §2.1-2.2): filters, near-duplicate removal, decontamination, the caption ->
label table, sampling caps, webdataset shards, a manifest and a data card. ``python -m florence_lib curate``."""

from .config import CurateConfig
from .labels import LabelTable
from .pipeline import REASONS, CurationResult, curate

__all__ = ["REASONS", "CurateConfig", "CurationResult", "LabelTable", "curate"]
