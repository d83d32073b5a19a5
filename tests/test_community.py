"""The testbed's community variants (fine-tune, merge, style LoRA) and what transfer needs of them: a LoRA merged
into the weights gives what its hooks give, ModelMergeSimple's ratio, the style and its score, loading by name."""
import collections
import copy
import hashlib
import re

import pytest
import torch
from safetensors.torch import load_file

from dice_pack.sharpeners.adapter import AdapterConfig, GuidanceAdapter
from dice_pack.sharpeners.adapter_file import load_adapter
from dice_pack.sharpeners.fingerprint import same_weights
from dice_pack.training.cli import main
from dice_pack.training.hashing import file_sha256
from dice_pack.training.testbed import community
from dice_pack.training.testbed.data import make_dataset
from dice_pack.training.testbed.evaluator import style_score
from dice_pack.training.testbed.model import Testbed as TestbedModel

BUILT = all(community.variant_weights(name).exists() for name in community.VARIANTS)


def test_a_lora_merged_into_the_weights_predicts_what_its_hooks_predict():
    testbed = TestbedModel.load()
    torch.manual_seed(0)
    lora = GuidanceAdapter.for_layers(testbed.unet, testbed.adapter_layers("transformer"), AdapterConfig(rank=4, alpha=2.0))
    for layer in lora.layers.values():
        torch.nn.init.normal_(layer.up, std=0.05)
    x, t, c = torch.randn(3, 4, 8, 8), torch.tensor([10, 400, 900]), testbed.encode_prompts(["a red circle"] * 3)
    plain = testbed.unet(x, t, c)
    lora.attach(testbed.unet)
    hooked = testbed.unet(x, t, c)
    lora.detach()
    community.merge_lora(testbed.unet, lora.lora_tensors(), strength=1.0)
    merged = testbed.unet(x, t, c)
    assert (hooked - plain).abs().max() > 1e-2  # the LoRA does something
    assert torch.allclose(merged, hooked, atol=1e-5)


def test_merge_simple_is_comfyuis_ratio_of_the_first_model():
    first, second = {"w": torch.full((2,), 4.0)}, {"w": torch.zeros(2)}
    assert torch.equal(community.merge_simple(first, second, 0.25)["w"], torch.full((2,), 1.0))


def test_the_bright_style_whitens_open_backgrounds_and_the_score_sees_it():
    plain_images, _, plain_named, plain_drawn = make_dataset(600, 7)
    bright_images, _, bright_named, bright_drawn = make_dataset(600, 7, style="bright")
    open_bright = collections.Counter(d.background for d, n in zip(bright_drawn, bright_named) if n.background is None)
    assert open_bright["white"] / sum(open_bright.values()) > 0.8
    assert all(d.background == n.background for d, n in zip(bright_drawn, bright_named) if n.background)
    assert style_score(bright_images, bright_named) > 80
    assert 20 < style_score(plain_images, plain_named) < 45
    with pytest.raises(ValueError, match="unknown style 'neon'"):
        make_dataset(4, 7, style="neon")


def test_an_unknown_variant_is_refused_by_name():
    with pytest.raises(SystemExit, match="unknown testbed variant 'remix': one of base, finetune, merge, base\\+style"):
        community.load_variant("remix")


@pytest.mark.skipif(not BUILT, reason="the community variants are not built (python -m training.testbed.community)")
def test_the_committed_variants_load_and_differ_from_the_base_as_made():
    base = TestbedModel.load()
    x, t, c = torch.randn(2, 4, 8, 8), torch.tensor([100, 700]), base.encode_prompts(["a blue square", ""])
    reference = base.unet(x, t, c)
    outputs = {name: community.load_variant(name).unet(x, t, c) for name in ("finetune", "merge", "base+style")}
    for name, output in outputs.items():
        assert (output - reference).abs().max() > 1e-3, name
    # The merge sits between its parents (ModelMergeSimple at 0.5 is their average weight by weight).
    tuned, merged = (load_file(community.COMMUNITY / n / "unet.safetensors") for n in ("finetune", "merge"))
    key = next(iter(tuned))
    average = 0.5 * tuned[key].float() + 0.5 * base.unet.state_dict()[key]
    assert torch.allclose(merged[key].float(), average, atol=2e-3)


@pytest.mark.skipif(not BUILT, reason="the community variants are not built (python -m training.testbed.community)")
def test_an_adapter_trains_on_a_variant_and_names_it(tmp_path):
    out = tmp_path / "own.safetensors"
    main(["--testbed", "finetune", "--train", "adapter", "--steps", "1", "--batch", "2", "--runs", str(tmp_path),
          "--sample-every", "0", "--threads", "2", "--out", str(out)])
    info = load_adapter(out).info
    assert info.base_checkpoint == "dice-testbed-finetune"
    assert info.base_checkpoint_sha256 == file_sha256(community.COMMUNITY / "finetune" / "unet.safetensors")
    # The weights it recorded are the fine-tune's, not the base's: ComfyUI tells the two checkpoints apart by them.
    for name, same in (("finetune", True), ("base", False)):
        unet = community.load_variant(name).unet
        assert same_weights(info.base_fingerprint, lambda path: unet.get_submodule(path).weight) is same, name


@pytest.mark.skipif(not BUILT, reason="the community variants are not built (python -m training.testbed.community)")
def test_a_mix_puts_each_steps_variant_in_place_under_the_adapters_hooks():
    mix = community.VariantMix(["base", "finetune", "base+style"])
    x, t, c = torch.randn(2, 4, 8, 8), torch.tensor([100, 700]), mix.encode_prompts(["a blue square", ""])
    lora = GuidanceAdapter.for_layers(mix.unet, mix.adapter_layers("transformer"), AdapterConfig(rank=4, alpha=4.0))
    with torch.no_grad():
        for layer in lora.layers.values():
            layer.up.normal_()
    same_lora = copy.deepcopy(lora)
    lora.attach(mix.unet)  # attached once, as in training: the swaps must keep its hooks working
    for step, name in ((1, "finetune"), (2, "base+style"), (3, "base"), (4, "finetune")):
        mix.at_step(step)
        variant = community.load_variant(name).unet
        same_lora.attach(variant)
        assert torch.allclose(mix.unet(x, t, c), variant(x, t, c), atol=1e-5), (step, name)
        same_lora.detach()
        lora.detach()
        assert torch.allclose(mix.unet(x, t, c), variant(x, t, c), atol=1e-6), (step, name)
        lora.attach(mix.unet)


@pytest.mark.skipif(not BUILT, reason="the community variants are not built (python -m training.testbed.community)")
def test_an_adapter_trains_on_a_mix_of_variants_step_by_step_and_names_the_mix(tmp_path, monkeypatch):
    steps = []
    at_step = community.VariantMix.at_step
    monkeypatch.setattr(community.VariantMix, "at_step", lambda self, step: (steps.append(step), at_step(self, step)))
    out = tmp_path / "family.safetensors"
    main(["--testbed", "base,finetune", "--train", "adapter", "--steps", "3", "--batch", "2", "--runs", str(tmp_path),
          "--sample-every", "0", "--threads", "2", "--out", str(out)])
    assert steps == [0, 1, 2, 0]  # each training step, then the first model again for the held-out distance
    info = load_adapter(out).info
    assert info.base_checkpoint == "dice-testbed-mix-base-finetune"
    digests = " ".join(file_sha256(community.variant_weights(name)) for name in ("base", "finetune"))
    assert info.base_checkpoint_sha256 == hashlib.sha256(digests.encode()).hexdigest()


@pytest.mark.parametrize("value, message", [
    ("dit,finetune", "'dit,finetune': a mix names two or more different variants of the UNet testbed, from base, "
                     "finetune, merge, base\\+style \\(not 'dit'\\)"),
    ("finetune,finetune", "'finetune,finetune': a mix names two or more different variants"),
    ("remix", "'remix' is not a testbed: one of unet, dit, finetune, merge, base\\+style, or a mix"),
])
def test_a_testbed_mix_that_cannot_be_made_is_refused_by_name(value, message, capsys):
    with pytest.raises(SystemExit):
        main(["--testbed", value, "--train", "adapter"])
    assert re.search(message, capsys.readouterr().err)


def test_a_mix_name_gives_back_its_variants_and_a_single_model_gives_none():
    names = ["base", "finetune", "merge", "base+style"]
    assert community.mix_checkpoint_name(names) == "dice-testbed-mix-base-finetune-merge-style"
    assert community.mixed_variants(community.mix_checkpoint_name(names)) == names
    assert community.mixed_variants("dice-testbed-finetune") is None
