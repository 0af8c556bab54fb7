import pytest
import torch

from florence_lib.data.prompts import WORLD_TEMPLATES, fill, load_clip_prompts, parse_clip_prompts
from florence_lib.data.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer()


def test_shapes_dtypes_and_special_ids(tok):
    out = tok(["a red circle", "a large blue striped square at the top left"])
    assert set(out) == {"input_ids", "attention_mask"}
    assert out["input_ids"].shape == out["attention_mask"].shape == (2, 77)
    assert out["input_ids"].dtype == out["attention_mask"].dtype == torch.long
    assert tok.vocab_size == 30522 and tok.pad_id == 0 and tok.end_id != tok.start_id
    assert int(out["input_ids"].max()) < tok.vocab_size
    assert (out["input_ids"][:, 0] == tok.start_id).all()


def test_single_string_is_a_batch_of_one(tok):
    assert tok("a red circle")["input_ids"].shape == (1, 77)


def test_padding_and_mask(tok):
    out = tok(["a red circle"])
    ids, mask = out["input_ids"][0], out["attention_mask"][0]
    n = int(mask.sum())
    assert n == 5  # [CLS] a red circle [SEP]
    assert ids[n - 1] == tok.end_id
    assert (mask[:n] == 1).all() and (mask[n:] == 0).all()
    assert (ids[n:] == tok.pad_id).all()
    assert tok.decode(ids) == "a red circle"


def test_long_caption_is_truncated_and_keeps_end_token(tok):
    text = " ".join(["a large red striped circle at the top left"] * 30)
    out = tok([text, "a dog"])
    ids, mask = out["input_ids"], out["attention_mask"]
    assert mask[0].sum() == 77
    assert ids[0, -1] == tok.end_id
    assert (ids[0, 1:-1] != tok.end_id).all()
    assert tok.decode(ids[0]).startswith("a large red striped circle")


def test_deterministic_and_context_length(tok):
    texts = ["two shapes: a small green ring and a pink star", "a cyan hexagon"]
    a, b = tok(texts), Tokenizer()(texts)
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["attention_mask"], b["attention_mask"])
    short = Tokenizer(context_length=8)(texts)["input_ids"]
    assert short.shape == (2, 8) and short[0, -1] == tok.end_id


def test_bad_input_is_named(tok):
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        tok(["ok", None])
    with pytest.raises(ValueError, match="context_length"):
        Tokenizer(context_length=1)


def test_prompt_file_parses(data_root):
    prompts = load_clip_prompts(data_root)
    assert len(prompts) == 26
    eurosat = prompts["EuroSAT"]
    assert len(eurosat.classes) == 10 and eurosat.classes[0] == "forest"
    assert eurosat.templates[0] == "a centered satellite photo of {}."
    fer = prompts["FacialEmotionRecognition2013"]
    assert fer.classes[3] == "happy" and fer.synonyms[3] == ["happy", "smiling"]
    assert all("{}" in t for p in prompts.values() for t in p.templates)


def test_prompt_parser_skips_absence_and_names_bad_sections(tmp_path):
    assert load_clip_prompts(None) == {} and load_clip_prompts(tmp_path) == {}
    text = "# Title\n\nprose\n\n## Good\n```bash\nclasses = [\n    'cat',\n]\n\ntemplates = [\n    'a {}.',\n]\n```\n"
    assert parse_clip_prompts(text)["Good"].templates == ["a {}."]
    bad = text.replace("'a {}.'", "'no slot'")
    with pytest.raises(ValueError, match=r"line 5 \(Good\).*template"):
        parse_clip_prompts(bad)
    with pytest.raises(ValueError, match=r"\(Good\).*both"):
        parse_clip_prompts(text.split("templates")[0] + "```\n")
    assert fill(WORLD_TEMPLATES, "red circle")[1] == "a photo of a red circle."
