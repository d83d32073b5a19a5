"""The guidance adapter: LoRA hooks on a frozen model, its kohya-layout file, and the errors a user sees."""
import os
import pickle
import stat

import pytest
import torch
from torch import nn

from dice_pack.sharpeners.adapter import AdapterConfig, GuidanceAdapter, block_layers, lora_name
from dice_pack.sharpeners.adapter_file import AdapterFileError, AdapterInfo, load_adapter, save_adapter
from dice_pack.training.testbed.model import Testbed as TestbedModel


@pytest.fixture(scope="module")
def testbed():
    return TestbedModel.load()


def trained_looking(adapter: GuidanceAdapter) -> GuidanceAdapter:
    """Non-zero up matrices, as after training (a new adapter's are zero)."""
    torch.manual_seed(3)
    for lora in adapter.layers.values():
        lora.up.data.normal_(0, 0.05)
    return adapter


def eps(testbed, x, context):
    return testbed.predict_noise(x, torch.full((len(x),), 2.0), context)


def test_kohya_names_are_the_layer_paths_with_underscores():
    assert lora_name("input_blocks.1.1.transformer_blocks.0.attn1.to_out.0") == \
        "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_out_0"


@pytest.mark.parametrize("selection", ["transformer", "all"])
def test_the_hooks_give_exactly_the_merged_weights_w_plus_scale_up_down(testbed, selection):
    """What ComfyUI's and the webuis' LoRA loaders do to the weights is what the hooks do to the outputs: up @ down,
    for a convolution (LoCon) on the flattened kernels, reshaped to the layer's weight."""
    paths = testbed.adapter_layers(selection)
    adapter = trained_looking(GuidanceAdapter.for_layers(testbed.unet, paths, AdapterConfig(rank=4, alpha=2.0,
                                                                                            layers=selection)))
    x, context = torch.randn(3, 4, 8, 8), testbed.encode_prompts(["a red circle", "a blue square", "x"])
    adapter.attach(testbed.unet)
    try:
        hooked = eps(testbed, x, context)
    finally:
        adapter.detach()
    saved = {p: testbed.unet.get_submodule(p).weight.detach().clone() for p in paths}
    try:
        with torch.no_grad():
            for path in paths:
                lora = adapter.layers[lora_name(path)]
                weight = testbed.unet.get_submodule(path).weight
                weight += adapter.config.scale * (lora.up.flatten(1) @ lora.down.flatten(1)).reshape(weight.shape)
        merged = eps(testbed, x, context)
    finally:
        with torch.no_grad():
            for path, weight in saved.items():
                testbed.unet.get_submodule(path).weight.copy_(weight)
    torch.testing.assert_close(hooked, merged, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(hooked, eps(testbed, x, context), atol=1e-4)


def test_switched_off_strength_zero_and_detached_are_the_plain_model(testbed):
    adapter = trained_looking(GuidanceAdapter.for_layers(testbed.unet, testbed.adapter_layers("attention")))
    x, context = torch.randn(2, 4, 8, 8), testbed.encode_prompts(["a red circle", "a blue square"])
    plain = eps(testbed, x, context)
    adapter.attach(testbed.unet)
    try:
        on = eps(testbed, x, context)
        with adapter.switched_off():
            off = eps(testbed, x, context)
        adapter.strength = 0.0
        zero = eps(testbed, x, context)
    finally:
        adapter.detach()
    assert not torch.equal(on, plain)
    assert torch.equal(off, plain) and torch.equal(zero, plain) and torch.equal(eps(testbed, x, context), plain)


def test_a_new_adapter_leaves_the_model_as_it_was(testbed):
    adapter = GuidanceAdapter.for_layers(testbed.unet, testbed.adapter_layers("attention")).attach(testbed.unet)
    x, context = torch.randn(2, 4, 8, 8), testbed.encode_prompts(["a", "b"])
    try:
        on = eps(testbed, x, context)
    finally:
        adapter.detach()
    assert torch.equal(on, eps(testbed, x, context))


def test_layer_selections_pick_attention_the_whole_transformer_or_the_res_blocks_too(testbed):
    attention, transformer = testbed.adapter_layers("attention"), testbed.adapter_layers("transformer")
    everything = testbed.adapter_layers("all")
    assert attention and set(attention) < set(transformer) < set(everything)
    assert all(p.rsplit(".", 1)[-1] in ("self_qkv", "self_out", "cross_q", "cross_kv", "cross_out") for p in attention)
    assert {p for p in transformer if ".ff." in p} == set(transformer) - set(attention)
    convs = set(everything) - set(transformer)
    assert convs and all(isinstance(testbed.unet.get_submodule(p), nn.Conv2d) and p.endswith((".conv1", ".conv2"))
                         for p in convs)
    with pytest.raises(ValueError, match="adapter layers must be one of attention, transformer, all, got 'convs'"):
        block_layers(testbed.unet, "convs", ("self_qkv",), (), "Transformer")


@pytest.mark.parametrize("selection", ["attention", "all"])
def test_the_file_is_a_kohya_lora_with_metadata_and_loads_back_to_the_same_outputs(testbed, tmp_path, selection):
    paths = testbed.adapter_layers(selection)
    adapter = trained_looking(GuidanceAdapter.for_layers(testbed.unet, paths, AdapterConfig(rank=8, alpha=8.0,
                                                                                            layers=selection)))
    path = tmp_path / "a.safetensors"
    save_adapter(path, adapter, AdapterInfo(model_family="testbed-minilm", base_checkpoint="dice-testbed",
                                            guidance_scale=5.0, training_steps=7))
    loaded = load_adapter(path)
    assert set(loaded.tensors) == {f"{lora_name(p)}.{part}" for p in paths
                                   for part in ("lora_down.weight", "lora_up.weight", "alpha")}
    assert loaded.config == adapter.config and loaded.info.training_steps == 7 and loaded.info.guidance_scale == 5.0
    assert loaded.metadata["format"] == "dice-guidance-adapter" and loaded.metadata["ss_network_dim"] == "8"
    x, context = torch.randn(2, 4, 8, 8), testbed.encode_prompts(["a", "b"])
    adapter.attach(testbed.unet)
    try:
        first = eps(testbed, x, context)
    finally:
        adapter.detach()
    again = loaded.attach_to(testbed.unet)
    try:
        second = eps(testbed, x, context)
    finally:
        again.detach()
    assert torch.equal(first, second)


def test_the_file_gets_the_permissions_of_any_file_the_user_makes(testbed, tmp_path):
    adapter = GuidanceAdapter.for_layers(testbed.unet, testbed.adapter_layers("attention"))
    previous = os.umask(0o022)
    try:
        save_adapter(tmp_path / "a.safetensors", adapter, AdapterInfo())
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.safetensors").stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]  # no temporary left behind


def test_bad_files_are_refused_by_name(testbed, tmp_path):
    adapter = GuidanceAdapter.for_layers(testbed.unet, testbed.adapter_layers("attention"))
    good = tmp_path / "good.safetensors"
    save_adapter(good, adapter, AdapterInfo(model_family="testbed-minilm"))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(AdapterFileError, match="truncated.safetensors: is truncated"):
        load_adapter(truncated)
    pickled = tmp_path / "pickled.safetensors"
    pickled.write_bytes(pickle.dumps({"weights": [1, 2, 3]}, protocol=4))
    with pytest.raises(AdapterFileError, match="pickled.safetensors: is a Python pickle"):
        load_adapter(pickled)
    from safetensors.torch import save_file
    plain = tmp_path / "plain_lora.safetensors"
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(4, 8)}, plain)
    with pytest.raises(AdapterFileError, match="plain_lora.safetensors: is a safetensors file but not a DICE guidance adapter"):
        load_adapter(plain)
    with pytest.raises(AdapterFileError, match="no such file"):
        load_adapter(tmp_path / "missing.safetensors")


def test_a_layer_whose_merge_would_differ_from_the_hook_is_refused_by_path():
    """A grouped or circularly padded convolution, or a norm, has no LoRA whose merged weights give the hooked output."""
    model = nn.Module()
    model.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
    model.circular = nn.Conv2d(8, 8, 3, padding=1, padding_mode="circular")
    model.norm = nn.GroupNorm(2, 8)
    for name in ("grouped", "circular", "norm"):
        with pytest.raises(ValueError, match=f"adapter layer '{name}': an adapter holds linear layers and ungrouped"):
            GuidanceAdapter.for_layers(model, [name])


def test_a_layer_that_is_no_lora_pair_is_refused_by_name(testbed, tmp_path):
    """A linear pair is 2-D, a convolution's (LoCon) 4-D with a 1x1 up: anything else names the layer."""
    from dice_pack.sharpeners.adapter_file import adapter_metadata
    from dice_pack.sharpeners.safefile import write_safetensors
    adapter = GuidanceAdapter.for_layers(testbed.unet, testbed.adapter_layers("all"), AdapterConfig(layers="all"))
    conv = next(n for n, lora in adapter.layers.items() if lora.down.ndim == 4)
    for name, up in ((conv, torch.zeros(64, 8)), (conv, torch.zeros(64, 8, 3, 3))):
        tensors = adapter.lora_tensors()
        tensors[f"{name}.lora_up.weight"] = up
        path = tmp_path / "odd.safetensors"
        write_safetensors(path, tensors, adapter_metadata(adapter.config, AdapterInfo()))
        with pytest.raises(AdapterFileError, match=f"layer {name} is not a rank-8 LoRA pair"):
            load_adapter(path)


def test_an_adapter_for_another_model_is_refused_naming_the_family(testbed, tmp_path):
    other = nn.Module()
    other.attn = nn.Linear(16, 16)
    adapter = GuidanceAdapter({"attn": (16, 16)})
    path = tmp_path / "other.safetensors"
    save_adapter(path, adapter, AdapterInfo(model_family="sdxl", base_checkpoint="xl.safetensors"))
    with pytest.raises(AdapterFileError, match="other.safetensors: 1 of its 1 layers are not in this model .*sdxl"):
        load_adapter(path).attach_to(testbed.unet)
    wrong = nn.Module()
    wrong.attn = nn.Linear(16, 32)
    with pytest.raises(AdapterFileError, match="its layers do not fit this model \\(lora_unet_attn is 16→32 there, 16→16 in the adapter\\); "
                       "it was trained for sdxl"):
        load_adapter(path).attach_to(wrong)
