"""The nodes' CONDITIONING contract, through the adapters the node classes call."""
import pytest
import torch

from dice_pack.nodes.conditioning import negative_shift_conditioning, sharpen_conditioning
from dice_pack.sharpeners import ConditioningError, sharpen


def encoded(seed, tokens=77, width=768, **options):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(1, tokens, width, generator=generator), {"pooled_output": torch.randn(1, width), **options}]


def test_every_entry_is_sharpened_and_every_dict_entry_kept(sharpener_file):
    mask = torch.ones(1, 8, 8)
    positive = [encoded(0), encoded(1, tokens=154, area=(64, 64, 0, 0), strength=0.5, mask=mask,
                                    start_percent=0.2, end_percent=0.8, hooks=None)]
    reference = [encoded(9)]
    out = sharpen_conditioning(positive, reference, sharpener_file, 1.0, "cpu")
    assert len(out) == 2
    for (old_tensor, old_options), (new_tensor, new_options) in zip(positive, out):
        assert new_options == old_options and new_options is not old_options
        assert new_tensor.shape == old_tensor.shape and not torch.equal(new_tensor, old_tensor)
        torch.testing.assert_close(new_tensor, sharpen(sharpener_file.network, old_tensor, reference[0][0], 1.0))
    assert out[1][1]["mask"] is mask and out[0][1]["pooled_output"] is positive[0][1]["pooled_output"]


def test_the_callers_list_and_dicts_are_not_modified(sharpener_file):
    positive = [encoded(0)]
    tensor, options = positive[0][0].clone(), dict(positive[0][1])
    out = sharpen_conditioning(positive, [encoded(9)], sharpener_file, 1.0, "cpu")
    out[0][1]["added_later"] = True
    assert torch.equal(positive[0][0], tensor) and positive[0][1] == options


def test_alpha_zero_returns_the_input_tensors_unchanged(sharpener_file):
    positive = [encoded(0)]
    out = sharpen_conditioning(positive, [encoded(9)], sharpener_file, 0.0, "cpu")
    assert torch.equal(out[0][0], positive[0][0])


def test_only_the_first_reference_entry_is_used_as_comfy_concat_does(sharpener_file, caplog):
    positive = [encoded(0)]
    one = sharpen_conditioning(positive, [encoded(9)], sharpener_file, 1.0, "cpu")
    two = sharpen_conditioning(positive, [encoded(9), encoded(10)], sharpener_file, 1.0, "cpu")
    assert torch.equal(one[0][0], two[0][0])
    assert "only the first one is used" in caplog.text


@pytest.mark.parametrize("empty", [[], ()])
def test_empty_conditioning_is_refused_naming_the_input(sharpener_file, empty):
    with pytest.raises(ConditioningError, match="positive: the conditioning list is empty"):
        sharpen_conditioning(empty, [encoded(9)], sharpener_file, 1.0, "cpu")
    with pytest.raises(ConditioningError, match="reference: the conditioning list is empty"):
        sharpen_conditioning([encoded(0)], empty, sharpener_file, 1.0, "cpu")


def test_an_entry_that_is_not_a_tensor_dict_pair_is_refused(sharpener_file):
    with pytest.raises(ConditioningError, match="positive: entry 1 is not a \\[tensor, dict\\] pair"):
        sharpen_conditioning([encoded(0), ["text", {}]], [encoded(9)], sharpener_file, 1.0, "cpu")


def test_sdxl_conditioning_on_an_sd15_sharpener_names_both_widths(sharpener_file):
    with pytest.raises(ConditioningError) as caught:
        sharpen_conditioning([encoded(0, width=2048)], [encoded(9, width=2048)], sharpener_file, 1.0, "cpu")
    assert "positive: conditioning is 2048 (SDXL" in str(caught.value)
    assert "trained for 768 (SD1.x" in str(caught.value)


def test_nan_in_the_second_entry_is_named(sharpener_file):
    bad = encoded(1)
    bad[0][0, 3, 3] = float("nan")
    with pytest.raises(ConditioningError, match="positive entry 1: conditioning: contains 1 NaN"):
        sharpen_conditioning([encoded(0), bad], [encoded(9)], sharpener_file, 1.0, "cpu")


def test_a_sharpener_input_of_the_wrong_kind_is_named():
    with pytest.raises(ConditioningError, match="sharpener: expected a DICE sharpener, got str"):
        sharpen_conditioning([encoded(0)], [encoded(9)], "model.safetensors", 1.0, "cpu")


def test_half_precision_conditioning_comes_back_half(sharpener_file):
    positive = [[encoded(0)[0].half(), {}]]
    out = sharpen_conditioning(positive, [encoded(9)], sharpener_file, 1.0, "cpu")
    assert out[0][0].dtype == torch.float16 and out[0][0].device == positive[0][0].device


def test_negative_shift_applies_to_every_entry_and_keeps_dicts():
    conditioning = [encoded(0, strength=0.7), encoded(1, tokens=154)]
    negative, null = [encoded(5)], [encoded(6)]
    out = negative_shift_conditioning(conditioning, negative, null, 0.5)
    expected_first = conditioning[0][0] - 0.5 * (negative[0][0] - null[0][0])
    torch.testing.assert_close(out[0][0], expected_first)
    assert out[1][0].shape == (1, 154, 768)
    assert out[0][1] == conditioning[0][1] and out[0][1] is not conditioning[0][1]


def test_negative_shift_refuses_an_empty_null():
    with pytest.raises(ConditioningError, match="null: the conditioning list is empty"):
        negative_shift_conditioning([encoded(0)], [encoded(5)], [], 0.5)


def t5_sharpener(family, tmp_path):
    """A 4096-wide sharpener file recorded as trained for family (SD3 and PixArt share T5's width)."""
    from dice_pack.sharpeners import Sharpener, SharpenerConfig, TrainingInfo, load_sharpener, save_sharpener

    torch.manual_seed(0)
    path = tmp_path / f"{family}.safetensors"
    save_sharpener(path, Sharpener(SharpenerConfig(embed_dim=4096)).eval(),
                   TrainingInfo(model_family=family, base_checkpoint=f"{family}.safetensors", prediction_type="flow"))
    return load_sharpener(path)


def t5_encoded(seed, tokens, pooled_width=None, **options):
    """A conditioning entry as ComfyUI's T5 encoders give it: SD3's 77 CLIP + T5 tokens with a pooled CLIP output, or
    PixArt's unpadded T5 tokens with pooled_output None."""
    generator = torch.Generator().manual_seed(seed)
    pooled = None if pooled_width is None else torch.randn(1, pooled_width, generator=generator)
    return [torch.randn(1, tokens, 4096, generator=generator), {"pooled_output": pooled, **options}]


def test_sd3_conditioning_is_sharpened_with_its_pooled_output_passed_unchanged(tmp_path):
    sharpener = t5_sharpener("sd3", tmp_path)
    positive, reference = [t5_encoded(0, 231, 2048)], [t5_encoded(1, 154, 2048)]  # a long prompt's T5 tokens: 231
    out = sharpen_conditioning(positive, reference, sharpener, 1.0, "cpu")
    assert out[0][0].shape == (1, 231, 4096) and not torch.equal(out[0][0], positive[0][0])
    assert out[0][1]["pooled_output"] is positive[0][1]["pooled_output"]
    torch.testing.assert_close(out[0][0], sharpen(sharpener.network, positive[0][0], reference[0][0], 1.0))


def test_pixart_t5_conditioning_of_any_length_keeps_its_attention_mask(tmp_path):
    sharpener = t5_sharpener("pixart_alpha", tmp_path)
    mask = torch.ones(1, 13)
    positive, reference = [t5_encoded(0, 13, attention_mask=mask)], [t5_encoded(1, 1)]  # the empty prompt: one pad
    out = sharpen_conditioning(positive, reference, sharpener, 0.5, "cpu")
    assert out[0][0].shape == (1, 13, 4096) and out[0][1]["attention_mask"] is mask
    assert out[0][1]["pooled_output"] is None


@pytest.mark.parametrize(("family", "pooled", "trained", "seen"), [
    ("sd3", None, "SD3/SD3.5", "PixArt-α (T5-XXL, no pooled output) or PixArt-Σ"),
    ("pixart_sigma", 2048, "PixArt-Σ", "SD3/SD3.5"),
    ("sd3", 768, "SD3/SD3.5", "Flux"),
])
def test_a_sharpener_for_one_t5_family_is_refused_on_anothers_conditioning_naming_both(tmp_path, family, pooled,
                                                                                        trained, seen):
    sharpener = t5_sharpener(family, tmp_path)
    with pytest.raises(ConditioningError) as caught:
        sharpen_conditioning([t5_encoded(0, 154, pooled)], [t5_encoded(1, 154, pooled)], sharpener, 1.0, "cpu")
    message = str(caught.value)
    assert message.startswith("positive: this sharpener was trained for " + trained) and seen in message
