"""The testbed's text encoder is the real pretrained all-MiniLM-L6-v2, loaded offline and padded like CLIP."""
import pytest
import torch

from dice_pack.training.testbed.text_encoder import TOKENS, TextEncoder, first_padding_index


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder()


def test_matches_the_reference_bert_implementation(encoder, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Golden values computed once with Hugging Face transformers' BertModel on the same weights and token ids.
    out = encoder.encode(["a small crimson disc to the left of a big blue box", ""])
    torch.testing.assert_close(out[0, 1, :4], torch.tensor([-0.1170, 0.1412, -0.3284, 0.0195]), atol=2e-3, rtol=0)
    torch.testing.assert_close(out[0, 40, :4], torch.tensor([-0.1887, -0.2542, -0.2794, 0.2550]), atol=2e-3, rtol=0)
    torch.testing.assert_close(out[1, 0, :4], torch.tensor([-0.0385, 0.0369, 0.0086, 0.0016]), atol=2e-3, rtol=0)


def test_prompts_become_77_tokens_padded_with_the_end_token(encoder):
    ids = encoder.tokenizer("a red circle")
    assert len(ids) == TOKENS and ids[0] == encoder.tokenizer.cls
    end = first_padding_index(encoder.tokenizer, "a red circle")
    assert end == 5 and set(ids[end - 1:]) == {encoder.tokenizer.sep}


def test_long_prompts_are_cut_to_77_tokens_keeping_the_end_token(encoder):
    ids = encoder.tokenizer(" ".join(["red"] * 200))
    assert len(ids) == TOKENS and ids[-1] == encoder.tokenizer.sep


def test_padding_tokens_carry_the_prompts_context(encoder):
    red, blue = encoder.encode(["a red circle", "a blue circle"])
    padding = first_padding_index(encoder.tokenizer, "a red circle")
    assert (red[padding:] - blue[padding:]).norm(dim=-1).min() > 0.1


def test_embedding_shape_and_null(encoder):
    assert encoder.encode(["x", "y z"]).shape == (2, 77, 384)
    assert encoder.null().shape == (1, 77, 384)
