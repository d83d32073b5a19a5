import pytest
import torch

from dice_pack.sharpeners import ConditioningError, negative_shift, sharpen
from dice_pack.sharpeners.formulas import repeat_to_common_length


def embedding(batch=1, tokens=77, width=768, seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, tokens, width, generator=generator).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_alpha_zero_gives_back_c_exactly(sharpener, dtype):
    c = embedding(dtype=dtype)
    out = sharpen(sharpener, c, embedding(seed=1), 0.0)
    assert out.dtype == dtype and torch.equal(out, c)


def test_sharpen_adds_alpha_times_the_residual(sharpener):
    c, c_ref = embedding(), embedding(seed=1)
    with torch.no_grad():
        residual = sharpener(c, c_ref)
    assert residual.abs().mean() > 1e-3
    torch.testing.assert_close(sharpen(sharpener, c, c_ref, 1.5), c + 1.5 * residual)


def test_long_prompt_against_a_77_token_reference_keeps_the_long_shape(sharpener):
    c = embedding(tokens=154)
    out = sharpen(sharpener, c, embedding(seed=1), 1.0)
    assert out.shape == (1, 154, 768)


def test_each_77_token_chunk_of_a_long_prompt_is_sharpened_as_if_alone(sharpener):
    c, c_ref = embedding(tokens=154), embedding(seed=1)
    whole = sharpen(sharpener, c, c_ref, 1.0)
    torch.testing.assert_close(whole[:, :77], sharpen(sharpener, c[:, :77], c_ref, 1.0))
    torch.testing.assert_close(whole[:, 77:], sharpen(sharpener, c[:, 77:], c_ref, 1.0))


def test_a_reference_repeated_whole_gives_the_same_result_as_comfy_padding_promises(sharpener):
    c, c_ref = embedding(), embedding(seed=1)
    torch.testing.assert_close(
        sharpen(sharpener, c, c_ref.repeat(1, 3, 1), 1.0), sharpen(sharpener, c, c_ref, 1.0)
    )


def test_batch_one_reference_broadcasts_over_a_batch_of_prompts(sharpener):
    c, c_ref = embedding(batch=3), embedding(seed=1)
    out = sharpen(sharpener, c, c_ref, 1.0)
    assert out.shape == (3, 77, 768)
    torch.testing.assert_close(out[2:3], sharpen(sharpener, c[2:3], c_ref, 1.0))


def test_batch_one_prompt_broadcasts_over_a_batch_of_references(sharpener):
    c, c_ref = embedding(), embedding(batch=2, seed=1)
    out = sharpen(sharpener, c, c_ref, 1.0)
    assert out.shape == (2, 77, 768)
    torch.testing.assert_close(out[1:2], sharpen(sharpener, c, c_ref[1:2], 1.0))


def test_two_different_batch_sizes_above_one_are_refused(sharpener):
    with pytest.raises(ConditioningError, match="conditioning has 2, reference has 3"):
        sharpen(sharpener, embedding(batch=2), embedding(batch=3), 1.0)


def test_width_mismatch_names_both_widths_and_families(sharpener):
    with pytest.raises(ConditioningError) as caught:
        sharpen(sharpener, embedding(width=2048), embedding(width=2048), 1.0)
    message = str(caught.value)
    assert "2048 (SDXL" in message and "768 (SD1.x" in message


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_in_the_input_is_refused(sharpener, bad):
    c = embedding()
    c[0, 5, 7] = bad
    with pytest.raises(ConditioningError, match="conditioning: contains 1 NaN or infinite"):
        sharpen(sharpener, c, embedding(seed=1), 1.0)


@pytest.mark.parametrize("alpha", [float("nan"), "1", None, True])
def test_alpha_must_be_a_finite_number(sharpener, alpha):
    with pytest.raises(ConditioningError, match="alpha"):
        sharpen(sharpener, embedding(), embedding(seed=1), alpha)


def test_output_returns_to_the_input_device_and_dtype_when_the_sharpener_is_elsewhere(sharpener):
    network = sharpener.to("cuda" if torch.cuda.is_available() else "cpu")
    c, c_ref = embedding(dtype=torch.float16), embedding(seed=1, dtype=torch.float16)
    out = sharpen(network, c, c_ref, 1.0)
    assert out.device == c.device and out.dtype == torch.float16
    # The sum is computed in float32 and rounded once to the input's dtype.
    expected = sharpen(network, c.float(), c_ref.float(), 1.0)
    torch.testing.assert_close(out, expected.half())


def test_negative_shift_formula():
    c, neg, null = embedding(), embedding(seed=1), embedding(seed=2)
    torch.testing.assert_close(negative_shift(c, neg, null, 0.7), c - 0.7 * (neg - null))


def test_negative_shift_beta_zero_gives_back_c_exactly():
    c = embedding(dtype=torch.float16)
    assert torch.equal(negative_shift(c, embedding(seed=1), embedding(seed=2), 0.0), c)


def test_negative_shift_tiles_token_counts_to_their_least_common_multiple():
    c, neg, null = embedding(tokens=154), embedding(tokens=231, seed=1), embedding(seed=2)
    out = negative_shift(c, neg, null, 1.0)
    assert out.shape == (1, 462, 768)
    torch.testing.assert_close(out, c.repeat(1, 3, 1) - (neg.repeat(1, 2, 1) - null.repeat(1, 6, 1)))


def test_repeat_to_common_length_leaves_equal_lengths_alone():
    a, b = embedding(), embedding(seed=1)
    out = repeat_to_common_length([a, b])
    assert out[0] is a and out[1] is b


def test_negative_shift_broadcasts_batch_one_inputs():
    out = negative_shift(embedding(batch=4), embedding(seed=1), embedding(seed=2), 0.5)
    assert out.shape == (4, 77, 768)


def test_negative_shift_refuses_mixed_widths():
    with pytest.raises(ConditioningError, match="negative is 1024"):
        negative_shift(embedding(), embedding(width=1024), embedding(), 0.5)
