"""The Automatic1111 / Forge extension's glue, without the host: the step's conditioning, files, settings, infotext."""
import argparse
import importlib.util
from pathlib import Path

import pytest
import torch

from conftest import PACK_ROOT
from dice_pack.sharpeners import (ConditioningError, SharpenerFileError, TrainingInfo, negative_shift, save_sharpener,
                                  sharpen)
from dice_pack.webui import glue


@pytest.fixture
def folder(sharpener, tmp_path):
    (tmp_path / "sd15").mkdir()
    save_sharpener(tmp_path / "sd15" / "dream_dice.safetensors", sharpener, TrainingInfo(base_checkpoint="dream"))
    save_sharpener(tmp_path / "plain.safetensors", sharpener, TrainingInfo(base_checkpoint="plain"))
    (tmp_path / "notes.txt").write_text("not a sharpener")
    (tmp_path / "old.ckpt").write_bytes(b"a pickle")
    return tmp_path


def encoded(seed: int, tokens: int = 77, width: int = 768) -> torch.Tensor:
    return torch.randn(1, tokens, width, generator=torch.Generator().manual_seed(seed))


def generation(folder, alpha=1.0, beta=0.5, negative=""):
    made = glue.Generation(glue.load(folder, "plain.safetensors"), alpha, beta, negative)
    made.encoded = {text: encoded(index) for index, text in enumerate(made.prompts_to_encode())}
    return made


def test_the_dropdown_lists_safetensors_files_only_with_subfolders(folder):
    assert glue.list_sharpeners(folder) == ["plain.safetensors", "sd15/dream_dice.safetensors"]
    assert glue.list_sharpeners(folder / "absent") == []


def test_the_folder_is_models_sharpeners_unless_the_command_line_names_another(tmp_path):
    assert glue.sharpener_folder(str(tmp_path / "models")) == tmp_path / "models" / "sharpeners"
    assert glue.sharpener_folder(str(tmp_path / "models"), str(tmp_path / "mine")) == tmp_path / "mine"


@pytest.mark.parametrize("name", ["absent.safetensors", "../outside.safetensors", "old.ckpt", "notes.txt"])
def test_a_name_that_is_not_a_sharpener_in_the_folder_is_refused_by_name(folder, name):
    (folder.parent / "outside.safetensors").write_bytes((folder / "plain.safetensors").read_bytes())
    with pytest.raises(ConditioningError, match=f"no sharpener '{name}' in .*there: plain.safetensors"):
        glue.load(folder, name)


def test_a_pickle_renamed_to_safetensors_is_refused_by_its_file_name(folder):
    (folder / "hostile.safetensors").write_bytes(b"\x80\x04\x95" + b"\0" * 64)
    with pytest.raises(SharpenerFileError, match="hostile.safetensors"):
        glue.load(folder, "hostile.safetensors")


def test_every_row_is_sharpened_against_the_empty_prompt_and_the_hosts_tensor_is_kept(folder):
    made = generation(folder, alpha=0.75)
    text_cond = torch.randn(3, 77, 768)  # a batch of two, one with an AND-part
    kept = text_cond.clone()
    out = made.apply(text_cond)
    torch.testing.assert_close(out, sharpen(made.sharpener.network, kept, made.encoded[""], 0.75))
    assert torch.equal(text_cond, kept) and out is not text_cond


def test_alpha_zero_gives_the_hosts_conditioning_exactly(folder):
    text_cond = torch.randn(2, 154, 768)  # a long prompt: two chunks of 77
    assert torch.equal(generation(folder, alpha=0.0).apply(text_cond), text_cond)


def test_a_negative_prompt_is_the_reference_and_the_shift_moves_away_from_it(folder):
    made = generation(folder, alpha=1.0, beta=0.5, negative="blurry, watermark")
    text_cond = torch.randn(2, 77, 768)
    negative, null = made.encoded["blurry, watermark"], made.encoded[""]
    expected = negative_shift(sharpen(made.sharpener.network, text_cond, negative, 1.0), negative, null, 0.5)
    torch.testing.assert_close(made.apply(text_cond), expected)
    without_shift = generation(folder, alpha=1.0, beta=0.0, negative="blurry, watermark").apply(text_cond)
    torch.testing.assert_close(without_shift, sharpen(made.sharpener.network, text_cond, negative, 1.0))


def test_sdxls_vector_input_passes_unchanged(sharpener, tmp_path):
    from dice_pack.sharpeners import Sharpener, SharpenerConfig

    torch.manual_seed(0)
    save_sharpener(tmp_path / "xl.safetensors", Sharpener(SharpenerConfig(embed_dim=2048)), TrainingInfo())
    made = glue.Generation(glue.load(tmp_path, "xl.safetensors"), 1.0, 0.5, "")
    made.encoded = {"": encoded(0, width=2048)}
    text_cond = {"crossattn": torch.randn(1, 77, 2048), "vector": torch.randn(1, 2816)}
    out = made.apply(text_cond)
    assert out["vector"] is text_cond["vector"]
    assert not torch.equal(out["crossattn"], text_cond["crossattn"])


def test_a_checkpoint_of_another_width_is_named_before_any_step(folder):
    made = glue.Generation(glue.load(folder, "plain.safetensors"), 1.0, 0.5, "")
    made.encoded = {"": encoded(0, width=2048)}
    with pytest.raises(ConditioningError, match=r"2048 \(SDXL \(CLIP-L \+ OpenCLIP-G\)\) wide but this sharpener was "
                                                r"trained for 768 \(SD1.x \(CLIP-L\)\)"):
        made.check_width()


def test_the_host_encodings_come_batch_first_whatever_the_host_gives():
    assert glue.first_cond(torch.zeros(77, 768)).shape == (1, 77, 768)
    assert glue.first_cond({"crossattn": torch.zeros(77, 2048), "vector": torch.zeros(2816)}).shape == (1, 77, 2048)
    with pytest.raises(ConditioningError, match="not a tensor"):
        glue.first_cond([1, 2])


def test_dropping_the_negative_pass_is_restored_after_the_generation_even_when_never_set():
    opts_data, override = {}, {}
    glue.skip_negative_pass(opts_data, 0.0, override)
    # The host restores exactly the keys present in opts.data: the default is there now, so 1.0 cannot stay.
    assert opts_data == {"skip_early_cond": 0.0} and override == {"skip_early_cond": 1.0}
    opts_data = {"skip_early_cond": 0.25}
    glue.skip_negative_pass(opts_data, 0.0, {})
    assert opts_data == {"skip_early_cond": 0.25}


def test_guidance_above_one_warns_that_it_applies_twice():
    assert glue.guidance_warning(1.0) is None
    assert "guidance applies twice" in glue.guidance_warning(7.0) and "CFG scale to 1" in glue.guidance_warning(7.0)


def test_infotext_round_trips_and_images_without_it_turn_dice_off():
    params = glue.infotext("sd15/dream_dice.safetensors", 0.75, 0.5, "blurry")
    assert params == {"DICE sharpener": "sd15/dream_dice.safetensors", "DICE alpha": "0.75", "DICE beta": "0.5"}
    assert glue.from_infotext(params, "enabled", False) is True
    assert glue.from_infotext(params, glue.KEY_SHARPENER, None) == "sd15/dream_dice.safetensors"
    assert glue.from_infotext(params, glue.KEY_ALPHA, None) == 0.75
    assert glue.from_infotext({}, "enabled", True) is False
    assert glue.from_infotext({}, glue.KEY_ALPHA, "keep") == "keep"
    assert "DICE beta" not in glue.infotext("x.safetensors", 1.0, 0.5, "")


def test_preload_adds_the_sharpener_folder_option():
    spec = importlib.util.spec_from_file_location("dice_preload", PACK_ROOT / "preload.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parser = argparse.ArgumentParser()
    module.preload(parser)
    assert parser.parse_args(["--dice-sharpeners-dir", "/x"]).dice_sharpeners_dir == "/x"


def test_automatic1111_finds_one_python_script_and_comfyui_none_of_it():
    assert sorted(p.name for p in (PACK_ROOT / "scripts").glob("*.py")) == ["dice_webui.py"]


def test_the_prompts_loras_are_found_once_each_with_or_without_a_weight():
    prompts = ["a fox <lora:style_a:0.8> in snow <lora:dice_x>", "<lora:style_a:1:lbw=x> again"]
    assert glue.loras_in(prompts) == ["style_a", "dice_x"]


def test_only_dice_adapters_are_checked_and_a_broken_lora_file_is_refused_by_name(tmp_path):
    from safetensors.torch import save_file

    from dice_pack.sharpeners.adapter import GuidanceAdapter
    from dice_pack.sharpeners.adapter_file import AdapterFileError, AdapterInfo, save_adapter

    save_file({"lora_unet_x.lora_down.weight": torch.zeros(4, 8)}, tmp_path / "style.safetensors")
    save_adapter(tmp_path / "sub" / "ours.safetensors", GuidanceAdapter({"mid.attn": (8, 8)}), AdapterInfo())
    asked = []

    def layers():
        asked.append(1)
        return ["mid", "mid.attn"]

    found = glue.dice_adapters(tmp_path, ["a <lora:style:1> b <lora:ours:1> <lora:missing:1>"], layers)
    assert [Path(a.path).name for a in found] == ["ours.safetensors"] and asked == [1]
    assert glue.dice_adapters(tmp_path, ["a <lora:style:1>"], layers) == [] and asked == [1]  # no adapter: no look
    with pytest.raises(AdapterFileError, match="ours.safetensors: 1 of its 1 layers are not in this checkpoint's UNet"):
        glue.dice_adapters(tmp_path, ["<lora:ours:1>"], lambda: ["other"])
    (tmp_path / "broken.safetensors").write_bytes(b"\x80\x04\x95" + b"\0" * 64)
    with pytest.raises(AdapterFileError, match="broken.safetensors: is a Python pickle"):
        glue.dice_adapters(tmp_path, ["<lora:broken:1>"], layers)


class Params:
    """The webuis' ExtraNetworkParams as their modules/extra_networks.py builds it from <lora:…:…>."""

    def __init__(self, items):
        self.items, self.positional, self.named = list(items), [], {}
        for item in items:
            parts = item.split("=", 2) if isinstance(item, str) else [item]
            if len(parts) == 2:
                self.named[parts[0]] = parts[1]
            else:
                self.positional.append(item)


def knob_adapter(tmp_path, name, **info):
    from dice_pack.sharpeners.adapter import GuidanceAdapter
    from dice_pack.sharpeners.adapter_file import AdapterInfo, load_adapter, save_adapter

    save_adapter(tmp_path / f"{name}.safetensors", GuidanceAdapter({"mid.attn": (8, 8)}), AdapterInfo(**info))
    return load_adapter(tmp_path / f"{name}.safetensors")


def test_the_guidance_slider_scales_each_adapters_unet_multiplier_and_leaves_other_loras(tmp_path):
    knob = knob_adapter(tmp_path, "knob", guidance_min=1.0, guidance_max=10.0, knob_exponent=0.5)
    old = knob_adapter(tmp_path, "old")
    factors, warnings = glue.adapter_factors([knob, old], 3.0)
    assert factors == {"knob": pytest.approx(0.5 ** 0.5), "old": 0.5}
    assert len(warnings) == 1 and "old.safetensors: cfg 3 is outside" in warnings[0]
    params = [Params(["knob", "0.8"]), Params(["old"]), Params(["style", "0.7"]), Params(["knob", "1", "0.5", "unet=2"])]
    glue.scale_adapter_networks(params, factors)
    assert params[0].named["unet"] == f"{0.8 * 0.5 ** 0.5:.6g}" and params[0].positional == ["knob", "0.8"]
    assert params[1].named == {"unet": "0.5"} and params[1].items == ["old", "unet=0.5"]
    assert params[2].named == {} and params[2].items == ["style", "0.7"]
    assert params[3].named["unet"] == f"{2 * 0.5 ** 0.5:.6g}" and params[3].items.count(f"unet={2 * 0.5 ** 0.5:.6g}") == 1
    assert glue.adapter_factors([knob], glue.DEFAULT_GUIDANCE) == ({"knob": 1.0}, [])


def test_pasted_adapter_images_turn_dice_on_and_images_from_before_the_knob_get_its_default():
    assert glue.from_infotext({glue.KEY_ADAPTER: "x"}, "enabled", False) is True
    assert glue.from_infotext({glue.KEY_ADAPTER: "x"}, glue.KEY_GUIDANCE, "keep") == glue.DEFAULT_GUIDANCE
    assert glue.from_infotext({glue.KEY_ADAPTER: "x", glue.KEY_GUIDANCE: "7"}, glue.KEY_GUIDANCE, "keep") == 7.0
    assert glue.from_infotext({}, glue.KEY_GUIDANCE, "keep") == "keep"


class CrossAttention(torch.nn.Module):
    """The shape of Automatic1111's and Forge's attention module: to_q, to_k, to_v, to_out[0], heads."""

    def __init__(self, width=16, context=12, heads=2):
        super().__init__()
        self.heads = heads
        self.to_q, self.to_k, self.to_v = (torch.nn.Linear(w, width, bias=False) for w in (width, context, context))
        self.to_out = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.Dropout(0.0))

    def forward(self, x, context):
        split = lambda t: t.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.to_q(x)), split(self.to_k(context)), split(self.to_v(context))
        z = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        return self.to_out(z)


def test_the_negative_prompts_hooks_apply_nag_to_every_attn2_and_leave_the_model_as_it_was():
    from dice_pack.sharpeners.nag import NAGSettings, normalized_attention_guidance

    torch.manual_seed(0)
    unet = torch.nn.ModuleDict({"attn1": CrossAttention(context=16), "attn2": CrossAttention()})
    x, context, negative = torch.randn(3, 5, 16), torch.randn(3, 7, 12), torch.randn(1, 9, 12)
    plain = unet["attn2"](x, context)
    settings = NAGSettings(scale=3.0, tau=2.5, alpha=0.5)
    hooks = glue.NegativeAttention(negative, settings)
    assert hooks.attach(unet) == 1
    guided = unet["attn2"](x, context)
    hooks.detach()
    attn2 = unet["attn2"]
    split = lambda t: t.unflatten(-1, (2, -1)).transpose(1, 2)  # noqa: E731
    q = split(attn2.to_q(x))
    z_pos = torch.nn.functional.scaled_dot_product_attention(q, split(attn2.to_k(context)), split(attn2.to_v(context)))
    z_neg = torch.nn.functional.scaled_dot_product_attention(q, split(attn2.to_k(negative)).expand(3, -1, -1, -1),
                                                             split(attn2.to_v(negative)).expand(3, -1, -1, -1))
    flat = lambda t: t.transpose(1, 2).flatten(2)  # noqa: E731
    expected = attn2.to_out(normalized_attention_guidance(flat(z_pos), flat(z_neg), settings))
    torch.testing.assert_close(guided, expected, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(guided, plain, atol=1e-3)
    torch.testing.assert_close(unet["attn2"](x, context), plain)  # detached: the plain module again


def test_negative_strength_takes_the_adapters_trained_nag_settings_and_refuses_bad_values(tmp_path):
    trained = knob_adapter(tmp_path, "nag", nag_scale=3.0, nag_tau=2.0, nag_alpha=0.25)
    assert glue.negative_settings([trained], 4.0) == glue.NAGSettings(4.0, 2.0, 0.25)
    assert glue.negative_settings([knob_adapter(tmp_path, "plain")], 2.0) == glue.NAGSettings(2.0, glue.NAG_DEFAULTS.tau,
                                                                                             glue.NAG_DEFAULTS.alpha)
    with pytest.raises(ConditioningError, match="negative prompt strength: NAG scale must be a number of at least 1"):
        glue.negative_settings([trained], 0.5)
