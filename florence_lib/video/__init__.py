"""The Video CoSwin adapter (paper §2.6, §3.8-3.9): CoSwin inflated to 3D for action recognition (Table 10)
and zero-shot text-video retrieval (Table 9). The encoder lives in ``florence_lib.models.video_coswin``."""

from florence_lib.video.config import VideoConfig
from florence_lib.video.model import ActionRecognizer, VideoTextModel, load_recognizer, video_encoder
from florence_lib.video.recognition import evaluate_recognizer, multi_view_probabilities, train_recognizer
from florence_lib.video.retrieval import stable_ranks, text_video_metrics

__all__ = [
    "ActionRecognizer",
    "VideoConfig",
    "VideoTextModel",
    "evaluate_recognizer",
    "load_recognizer",
    "multi_view_probabilities",
    "stable_ranks",
    "text_video_metrics",
    "train_recognizer",
    "video_encoder",
]
