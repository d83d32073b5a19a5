"""CFG's two controls at one call per step: the adapter's cfg knob (strength per CFG scale, trained over a range) and
negative prompts through NAG; the testbed's negation cases and their scoring."""
import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from dice_pack.sharpeners.adapter import AdapterConfig, GuidanceAdapter, strength_for_guidance
from dice_pack.sharpeners.adapter_file import AdapterFileError, AdapterInfo, load_adapter, save_adapter
from dice_pack.sharpeners.nag import NAGSettings, normalized_attention_guidance
from dice_pack.training.cli import main
from dice_pack.training.sampler import cfg_noise
from dice_pack.training.step import teacher_noise
from dice_pack.training.testbed.data import NEGATABLE, Scene, leaves_open, negation_cases, realise, render
from dice_pack.training.testbed.evaluator import shows_value
from dice_pack.training.testbed.model import Testbed as TestbedModel


@pytest.fixture(scope="module")
def testbed():
    return TestbedModel.load()


def run(tmp_path, *args):
    return main(["--testbed", "--runs", str(tmp_path / "runs"), "--sample-every", "0", "--threads", "2", *args])


def trained_looking(adapter: GuidanceAdapter) -> GuidanceAdapter:
    torch.manual_seed(3)
    for lora in adapter.layers.values():
        lora.up.data.normal_(0, 0.05)
    return adapter


def test_the_knob_maps_cfg_1_to_the_plain_model_and_the_reference_scale_to_strength_1():
    assert strength_for_guidance(1.0, 5.0) == 0.0
    assert strength_for_guidance(5.0, 5.0) == 1.0
    assert strength_for_guidance(9.0, 5.0) == 2.0
    assert torch.equal(strength_for_guidance(torch.tensor([3.0, 7.0]), 5.0), torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match="above 1"):
        strength_for_guidance(3.0, 1.0)


def test_a_strength_per_sample_gives_each_sample_what_its_strength_alone_gives(testbed):
    adapter = trained_looking(GuidanceAdapter.for_layers(testbed.unet, testbed.adapter_layers("transformer")))
    x, sigma = torch.randn(3, 4, 8, 8), torch.full((3,), 2.0)
    context = testbed.encode_prompts(["a red circle", "a blue square", "a green triangle"])
    adapter.attach(testbed.unet)
    try:
        adapter.strength = torch.tensor([0.0, 0.5, 2.0])
        together = testbed.predict_noise(x, sigma, context)
        alone = []
        for i, strength in enumerate((0.0, 0.5, 2.0)):
            adapter.strength = strength
            alone.append(testbed.predict_noise(x[i:i + 1], sigma[i:i + 1], context[i:i + 1]))
    finally:
        adapter.detach()
    torch.testing.assert_close(together, torch.cat(alone), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(alone[1], alone[2], atol=1e-4)


def test_the_teacher_takes_each_samples_own_cfg_scale(testbed):
    x, sigma = torch.randn(2, 4, 8, 8), torch.full((2,), 3.0)
    c, null = testbed.encode_prompts(["a red circle", "a blue square"]), testbed.null_embedding().expand(2, -1, -1)
    batch = {"x": x, "sigma": sigma, "c": c, "c_ref": null, "w": torch.tensor([2.0, 7.0])}
    together = teacher_noise(testbed, batch, 5.0)
    for i, w in enumerate((2.0, 7.0)):
        alone = cfg_noise(testbed.predict_noise, x[i:i + 1], sigma[i:i + 1], c[i:i + 1], null[i:i + 1], w)
        torch.testing.assert_close(together[i:i + 1], alone, atol=1e-5, rtol=1e-4)


def knob_file(testbed, tmp_path, **info) -> str:
    adapter = trained_looking(GuidanceAdapter.for_layers(testbed.unet, testbed.adapter_layers("attention"),
                                                         AdapterConfig(layers="attention")))
    path = tmp_path / "knob.safetensors"
    save_adapter(path, adapter, AdapterInfo(model_family="testbed-minilm", **info))
    return str(path)


def test_a_knob_file_maps_cfg_to_strength_and_warns_outside_its_range(testbed, tmp_path):
    loaded = load_adapter(knob_file(testbed, tmp_path, guidance_min=1.0, guidance_max=10.0))
    assert loaded.has_knob and loaded.trained_scales() == "1–10"
    assert loaded.strength_at(5.0) == (1.0, None)
    assert loaded.strength_at(3.0, strength=0.5) == (0.25, None)
    strength, warning = loaded.strength_at(12.0)
    assert strength == pytest.approx(2.75) and "outside the scales it was trained for (1–10)" in warning
    for bad in (0.5, float("nan")):
        with pytest.raises(AdapterFileError, match="a CFG scale of 1 or more"):
            loaded.strength_at(bad)


def test_an_adapter_written_before_the_knob_still_loads_and_gives_strength_1_at_its_scale(testbed, tmp_path):
    path = knob_file(testbed, tmp_path, guidance_scale=5.0)
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        metadata = {k: v for k, v in f.metadata().items()
                    if k not in ("guidance_min", "guidance_max", "knob", "nag_scale", "nag_tau", "nag_alpha")}
    save_file(load_file(path), path, metadata=metadata)  # as the files of 2026-11 were written
    loaded = load_adapter(path)
    assert not loaded.has_knob and loaded.info.nag_scale == 0.0
    assert loaded.strength_at(5.0) == (1.0, None)
    strength, warning = loaded.strength_at(3.0)
    assert strength == 0.5 and "retrain with --guidance-range" in warning


def test_a_knob_run_learns_writes_its_range_and_resumes_exactly(tmp_path):
    common = ["--train", "adapter", "--guidance-range", "1,10", "--batch", "8", "--save-every", "2"]
    straight, paused = tmp_path / "straight.safetensors", tmp_path / "paused.safetensors"
    summary = run(tmp_path, "--steps", "4", "--name", "straight", "--out", str(straight), *common)
    assert summary["held_out_after"]["ratio"] < 1.0
    loaded = load_adapter(straight)
    assert (loaded.info.guidance_min, loaded.info.guidance_max, loaded.info.guidance_scale) == (1.0, 10.0, 5.0)
    run(tmp_path, "--steps", "2", "--name", "paused", "--out", str(paused), *common)
    run(tmp_path, "--steps", "4", "--name", "paused", "--out", str(paused), "--resume", *common)
    a, b = load_file(straight), load_file(paused)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(SystemExit, match="trained with --guidance-range 1,10, this run asks for --guidance-range none"):
        run(tmp_path, "--train", "adapter", "--steps", "6", "--batch", "8", "--name", "paused", "--resume",
            "--guidance-range", "none")


def test_an_adapter_trains_the_knob_by_default_and_none_trains_one_scale(tmp_path):
    knob, single = tmp_path / "knob.safetensors", tmp_path / "single.safetensors"
    run(tmp_path, "--train", "adapter", "--steps", "1", "--batch", "2", "--name", "k", "--out", str(knob))
    run(tmp_path, "--train", "adapter", "--steps", "1", "--batch", "2", "--name", "s", "--out", str(single),
        "--guidance-range", "none")
    info = load_adapter(knob).info
    assert (info.guidance_min, info.guidance_max, info.knob_exponent) == (1.0, 10.0, 0.5)
    assert not load_adapter(single).has_knob


def test_a_sampling_exponent_is_what_the_hosts_read_and_the_trained_one_what_a_run_from_the_file_needs(tmp_path):
    plain, read = tmp_path / "plain.safetensors", tmp_path / "read.safetensors"
    run(tmp_path, "--train", "adapter", "--steps", "1", "--batch", "2", "--name", "p", "--out", str(plain))
    run(tmp_path, "--train", "adapter", "--steps", "1", "--batch", "2", "--name", "r", "--out", str(read),
        "--knob-sampling-exponent", "0.4")
    a, b = load_file(plain), load_file(read)
    assert all(torch.equal(a[k], b[k]) for k in a)  # the training is the same; only how the knob reads it differs
    loaded = load_adapter(read)
    assert (loaded.info.knob_exponent, loaded.trained_knob_exponent) == (0.4, 0.5)
    assert loaded.strength_at(2.0)[0] == pytest.approx(0.25 ** 0.4)  # more strength below cfg 5 than 0.25 ** 0.5
    assert load_adapter(plain).strength_at(2.0)[0] == pytest.approx(0.5)
    assert load_adapter(plain).trained_knob_exponent == 0.5
    # A run from the file trains with the exponent it was trained with, not the one the hosts read.
    run(tmp_path, "--train", "adapter", "--steps", "1", "--batch", "2", "--name", "i", "--init-adapter", str(read),
        "--out", str(tmp_path / "from.safetensors"))
    with pytest.raises(SystemExit, match="was trained with --knob-exponent 0.5, this run asks for --knob-exponent 0.4"):
        run(tmp_path, "--train", "adapter", "--steps", "1", "--batch", "2", "--name", "j", "--init-adapter", str(read),
            "--knob-exponent", "0.4")


@pytest.mark.parametrize("args, message", [
    (["--guidance-range", "2,9"], "--guidance-range trains the adapter's cfg knob: add --train adapter"),
    (["--knob-sampling-exponent", "0.4"], "--knob-sampling-exponent trains the adapter's cfg knob: add --train"),
    (["--train", "adapter", "--guidance-range", "none", "--knob-sampling-exponent", "0.4"],
     "--knob-sampling-exponent goes with a"),
    (["--train", "adapter", "--knob-sampling-exponent", "0"], "--knob-sampling-exponent 0: the knob's exponent must"),
    (["--knob-exponent", "0.5"], "--knob-exponent trains the adapter's cfg knob: add --train adapter"),
    (["--train", "adapter", "--guidance-range", "none", "--knob-exponent", "0.5"], "--knob-exponent goes with a"),
    (["--train", "adapter", "--guidance-range", "9,2"], "needs 1 <= LOW < HIGH"),
    (["--train", "adapter", "--guidance-range", "two"], "give the lowest and highest CFG scale as LOW,HIGH"),
    (["--train", "adapter", "--adapter-out", "a.safetensors"], "with --train adapter .* name it with --out a.safetensors"),
    (["--train", "adapter", "--nag", "3,2.5,0.5"], "--nag teaches an adapter negative prompts"),
    (["--negative-share", "0.5"], "--negative-share goes with --negatives"),
    (["--anchor-share", "0.5"], "--anchor-share trains the adapter's cfg knob: add --train adapter"),
    (["--train", "adapter", "--guidance-range", "none", "--anchor-share", "0.5"], "--anchor-share goes with a"),
    (["--train", "adapter", "--anchor-share", "1"], "--anchor-share 1: must be at least 0 and below 1"),
    (["--train", "adapter", "--guidance-range", "6,9", "--anchor-share", "0.5"], "with --guidance 5 inside"),
    (["--extra-anchor", "8,0.2"], "--extra-anchor trains the adapter's cfg knob: add --train adapter"),
    (["--train", "adapter", "--extra-anchor", "12,0.2"], "--extra-anchor 12,0.2: its scale must lie in --guidance-range"),
    (["--train", "adapter", "--extra-anchor", "8,0.5"], "with --anchor-share 0.5 below 1 together"),
    (["--train", "adapter", "--extra-anchor", "eight"], "give a CFG scale and its share of the samples as SCALE,SHARE"),
    (["--draws-per-state", "2"], "--draws-per-state 2: only --inputs cfg-runs draws states of runs"),
    (["--train", "adapter", "--draws-per-state", "0"], "--draws-per-state 0: must be 1 or more"),
])
def test_flags_a_mode_does_not_use_are_refused_naming_the_flag(tmp_path, args, message):
    with pytest.raises(SystemExit, match=message):
        run(tmp_path, "--steps", "1", "--batch", "2", *args)


def test_an_anchor_share_draws_that_share_at_the_reference_scale_and_the_rest_over_the_range():
    from dice_pack.training.step import draw_guidance

    w = draw_guidance(20000, torch.Generator().manual_seed(0), (1.0, 10.0), ((5.0, 0.4),))["w"]
    at_anchor = (w == 5.0).float().mean().item()
    assert abs(at_anchor - 0.4) < 0.02
    rest = w[w != 5.0]
    assert rest.min() >= 1.0 and rest.max() <= 10.0 and abs(rest.mean().item() - 5.5) < 0.1
    plain = draw_guidance(1000, torch.Generator().manual_seed(0), (1.0, 10.0))["w"]
    assert torch.equal(plain, draw_guidance(1000, torch.Generator().manual_seed(0), (1.0, 10.0), ((5.0, 0.0),))["w"])


def test_an_extra_anchor_takes_its_share_from_the_uniform_draws_and_leaves_the_first_anchor_as_it_was():
    from dice_pack.training.step import draw_guidance

    one = draw_guidance(20000, torch.Generator().manual_seed(0), (1.0, 10.0), ((5.0, 0.5),))["w"]
    two = draw_guidance(20000, torch.Generator().manual_seed(0), (1.0, 10.0), ((5.0, 0.5), (8.0, 0.2)))["w"]
    assert torch.equal(one == 5.0, two == 5.0)  # the same samples at the first anchor, with or without the second
    assert abs((two == 8.0).float().mean().item() - 0.2) < 0.02
    assert abs(((two != 5.0) & (two != 8.0)).float().mean().item() - 0.3) < 0.02


def test_nag_is_the_positive_output_at_scale_1_or_alpha_0_and_caps_the_norm():
    torch.manual_seed(0)
    z_pos, z_neg = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    assert torch.equal(normalized_attention_guidance(z_pos, z_neg, NAGSettings(scale=1.0, alpha=1.0)), z_pos)
    assert torch.equal(normalized_attention_guidance(z_pos, z_neg, NAGSettings(scale=8.0, alpha=0.0)), z_pos)
    capped = normalized_attention_guidance(z_pos, z_neg, NAGSettings(scale=50.0, tau=2.0, alpha=1.0))
    ratio = capped.norm(p=1, dim=-1) / z_pos.norm(p=1, dim=-1)
    assert torch.all(ratio <= 2.0 + 1e-4) and torch.all(ratio > 1.9)
    with pytest.raises(ValueError, match="NAG alpha must be at most 1"):
        NAGSettings(alpha=1.5)


def test_nag_on_the_testbed_is_one_call_a_step_and_a_negative_equal_to_the_prompt_changes_nothing(testbed):
    prompts = ["a red circle", "a blue square on a black background"]
    context, seeds = testbed.encode_prompts(prompts), [0, 1]
    calls = []
    handle = testbed.unet.register_forward_pre_hook(lambda module, args: calls.append(len(args[0])))
    try:
        plain = testbed.generate(context, seeds, steps=4)
        same = testbed.generate(context, seeds, steps=4, nag=NAGSettings(scale=4.0), negative=context)
        calls.clear()
        black = testbed.generate(context, seeds, steps=4, nag=NAGSettings(scale=4.0),
                                 negative=testbed.encode_prompts(["on a black background"] * 2))
    finally:
        handle.remove()
    assert calls == [2] * 4  # one call of the batch per step, no second pass
    assert np.abs(same.astype(int) - plain.astype(int)).max() <= 1
    assert np.abs(black.astype(int) - plain.astype(int)).max() > 10
    assert all(block.attention_patch is None for block in testbed.unet.modules() if hasattr(block, "cross_kv"))


def test_negation_cases_leave_their_attribute_open_and_name_one_of_its_values():
    cases = negation_cases(60, seed=5)
    assert [c.attribute for c in cases[:3]] == ["background", "size", "position"]
    for case in cases:
        assert leaves_open(case.scene, case.attribute)
        assert case.negative in NEGATABLE[case.attribute][case.value]
    assert negation_cases(60, seed=5) == cases and negation_cases(60, seed=6) != cases


def test_the_negated_value_is_read_off_images_of_known_scenes():
    rng = random.Random(0)
    for case in negation_cases(45, seed=9):
        drawn = realise(rng, case.scene)
        image = render(rng, drawn)
        shown = drawn.background if case.attribute == "background" else getattr(drawn.things[0], case.attribute)
        assert shows_value(image, case.scene, case.attribute, shown), case
        others = [v for v in NEGATABLE[case.attribute] if v != shown]
        assert not any(shows_value(image, case.scene, case.attribute, v) for v in others), case
    assert not shows_value(np.zeros((32, 32, 3), np.uint8), Scene(()), "background", "white")


def test_a_run_from_an_init_adapter_takes_its_rank_and_layers_unless_the_flags_ask_for_others(tmp_path):
    first, second = tmp_path / "first.safetensors", tmp_path / "second.safetensors"
    common = ["--train", "adapter", "--batch", "4", "--guidance-range", "none"]
    run(tmp_path, "--steps", "1", "--name", "first", "--out", str(first), "--adapter-rank", "4", "--adapter-layers", "all",
        *common)
    run(tmp_path, "--steps", "1", "--name", "second", "--out", str(second), "--init-adapter", str(first), *common)
    made = load_adapter(second)
    assert (made.config.rank, made.config.layers) == (4, "all")
    assert sorted(made.names) == sorted(load_adapter(first).names)
    with pytest.raises(SystemExit, match="was trained with --adapter-layers all, this run asks for --adapter-layers "
                                         "transformer; pass --adapter-layers all"):
        run(tmp_path, "--steps", "1", "--name", "third", "--adapter-layers", "transformer", "--init-adapter", str(first),
            *common)


def test_an_adapter_run_starts_from_an_init_adapter_and_records_it(tmp_path):
    first, second = tmp_path / "first.safetensors", tmp_path / "second.safetensors"
    common = ["--train", "adapter", "--batch", "4", "--guidance-range", "none"]
    trained = run(tmp_path, "--steps", "3", "--lr", "0.01", "--name", "first", "--out", str(first), *common)
    started = run(tmp_path, "--steps", "1", "--name", "second", "--out", str(second), "--init-adapter", str(first), *common)
    # The second run's adapter before its first step is the first run's trained one, not LoRA's zero start.
    assert started["held_out_before"]["ratio"] == pytest.approx(trained["held_out_after"]["ratio"], abs=1e-6)
    assert abs(started["held_out_before"]["ratio"] - 1.0) > 1e-3  # a fresh adapter starts at exactly 1
    assert load_adapter(second).info.init_adapter.startswith("first.safetensors sha256:")
    with pytest.raises(SystemExit, match="was trained with --adapter-rank 8, this run asks for --adapter-rank 4; "
                                         "pass --adapter-rank 8"):
        run(tmp_path, "--steps", "1", "--name", "third", "--adapter-rank", "4", "--init-adapter", str(first), *common)
    with pytest.raises(SystemExit, match="was trained with --guidance-range none, this run asks for --guidance-range 1,10"):
        run(tmp_path, "--steps", "1", "--name", "third", "--train", "adapter", "--init-adapter", str(first))
    with pytest.raises(SystemExit, match="--init-adapter starts a guidance adapter from a file: add --train adapter"):
        run(tmp_path, "--steps", "1", "--name", "third", "--init-adapter", str(first))


def test_a_run_from_an_init_adapter_defaults_to_a_fraction_of_a_run_from_zero():
    from dice_pack.training.cli import parse_args, run_defaults

    for source, scratch, tuned in ((["--testbed"], 3200, 400), (["--ckpt", "dreamshaper_8.safetensors"], 4000, 1600)):
        adapter = [*source, "--train", "adapter"]
        assert run_defaults(parse_args(adapter))["steps"] == scratch
        from_file = run_defaults(parse_args([*adapter, "--init-adapter", "base_adapter.safetensors"]))
        assert from_file["steps"] == tuned and from_file["batch"] == run_defaults(parse_args(adapter))["batch"]
