"""Layer 1, data: everything that yields samples, knowing nothing of models.

- ``world`` (+ ``world_render``, ``world_text``, ``world_video``, ``world_datasets``): the embedded, seeded,
  procedurally rendered world that every task trains and evaluates on by default.
- ``tokenizer``: MiniLM WordPiece, 77 tokens. ``transforms``: train/eval image and video transforms.
- ``prompts``: CLIP-style templates and CLIP's per-dataset prompt file.
- ``loaders``, ``shards``, ``errors`` and friends: real-format datasets, webdataset shards, bad-input policy.
- ``viz``: plots of samples for the notebooks.
"""

from .tokenizer import Tokenizer
from .world import World, WorldConfig

__all__ = ["Tokenizer", "World", "WorldConfig"]
