"""Layer 3, evaluation: the paper's transfer protocols (Tables 1-5) as functions of features or encoders.

- ``features``: batched frozen image/text feature extraction; ``metrics``: top-k, mean per-class recall.
- ``zero_shot`` (Table 1), ``linear_probe`` (Table 2), ``finetune`` (Table 3), ``few_shot`` (Table 4),
  ``retrieval`` (Table 5): each protocol as the paper and its references run it.
- ``datasets``: the world's views and the real sets by name, a user's sets by path (``user_data``: ImageFolder,
  COCO-captions JSON, image-caption CSV); ``evaluator``: one checkpoint through every
  protocol, flat metrics records; ``command``: ``python -m florence_lib evaluate <protocol>``.
- ``tables``: the paper's published numbers and our rows in its layout; ``plots``: the notebooks' figures.
"""

from .few_shot import few_shot_episodes, few_shot_eval
from .linear_probe import linear_probe
from .retrieval import retrieval_eval, retrieval_metrics
from .zero_shot import zero_shot_classifier, zero_shot_eval

__all__ = [
    "few_shot_episodes",
    "few_shot_eval",
    "linear_probe",
    "retrieval_eval",
    "retrieval_metrics",
    "zero_shot_classifier",
    "zero_shot_eval",
]
