"""The transformer testbed: a flow-matching DiT on the first testbed's data, text encoder and autoencoder."""
import numpy as np
import pytest
import torch

from dice_pack.sharpeners import load_sharpener
from dice_pack.training.cli import main
from dice_pack.training.hashing import file_sha256
from dice_pack.training.testbed.model import DIT_WEIGHTS, WEIGHTS, Testbed
from dice_pack.training.testbed.schedule import FlowSchedule
from dice_pack.training.testbed.teefusion import GuidanceStudent


@pytest.fixture(scope="module")
def testbed():
    return Testbed.load(DIT_WEIGHTS)


def test_the_flow_schedule_maps_timesteps_as_comfyuis_shifted_flow_sampling():
    schedule = FlowSchedule(shift=3.0)
    t = torch.tensor([0.1, 0.5, 0.9])
    sigma = schedule.sigma(t)
    assert torch.allclose(sigma, 3 * t / (1 + 2 * t))
    assert torch.allclose(schedule.timestep(sigma), 1000 * t)
    sigmas = schedule.sampling_sigmas(5)
    assert sigmas[0] == 1.0 and sigmas[-1] == 0.0 and bool((sigmas[1:] < sigmas[:-1]).all())


def test_the_committed_dit_loads_and_shares_the_first_testbeds_autoencoder(testbed):
    first = Testbed.load(WEIGHTS)
    assert testbed.flow and not first.flow and type(testbed.unet).__name__ == "DiT"
    assert testbed.embed_dim == 384 and testbed.latent_shape == (4, 8, 8)
    assert testbed.latent_scale == first.latent_scale
    assert all(torch.equal(a, b) for a, b in zip(testbed.autoencoder.state_dict().values(),
                                                 first.autoencoder.state_dict().values()))
    assert (DIT_WEIGHTS / "model_card.md").is_file() and (DIT_WEIGHTS / "dit.safetensors").stat().st_size < 5_000_000


def test_training_inputs_are_flow_noised_and_the_prediction_is_the_velocity(testbed):
    x0, noise, sigma = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([0.25, 0.75])
    x = testbed.noised(x0, noise, sigma)
    assert torch.allclose(x, (1 - sigma.view(-1, 1, 1, 1)) * x0 + sigma.view(-1, 1, 1, 1) * noise)
    context = testbed.encode_prompts(["a small red circle on the left", "a cyan box above a red triangle"])
    velocity = testbed.predict_noise(x, sigma, context)
    assert torch.allclose(velocity, testbed.unet(x, testbed.schedule.timestep(sigma), context))


def test_sampling_is_deterministic_and_cfg_changes_the_image(testbed):
    context = testbed.encode_prompts(["a small red circle on the left", "a blue square above a yellow triangle"])
    first = testbed.generate(context, [3, 4], steps=6)
    assert first.shape == (2, 32, 32, 3) and np.array_equal(first, testbed.generate(context, [3, 4], steps=6))
    assert not np.array_equal(first, testbed.generate(context, [3, 4], steps=6, cfg_scale=5.0))


def test_an_untrained_teefusion_student_at_w_one_is_the_dit(testbed):
    x, sigma = torch.randn(2, 4, 8, 8), torch.tensor([0.3, 0.9])
    context = testbed.encode_prompts(["a small red circle on the left", "a blue square above a yellow triangle"])
    got = GuidanceStudent(testbed.unet).predict_noise(testbed, x, sigma, context,
                                                      testbed.null_embedding().expand_as(context), torch.ones(2))
    assert torch.allclose(got, testbed.predict_noise(x, sigma, context), atol=1e-6)


def test_the_build_trains_the_dit_stage_and_reloads_it(tmp_path):
    from dice_pack.training.testbed import build

    config = dict(build.CONFIG, dit_width=32, dit_depth=1, dit_steps=2, dit_batch=4, dit_warmup=1)
    inputs = (torch.randn(8, 4, 8, 8), torch.randn(3, 77, 384).half(), torch.tensor([0, 1] * 4))
    trained = build.build_dit(tmp_path, *inputs, config)
    assert trained.config.width == 32 and len(trained.blocks) == 1
    reloaded = build.build_dit(tmp_path, *inputs, config)
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), reloaded.state_dict().values()))


def test_the_trainer_writes_a_flow_sharpener_for_the_dit_testbed(tmp_path):
    out = tmp_path / "dit.safetensors"
    summary = main(["--testbed", "dit", "--runs", str(tmp_path / "runs"), "--sample-every", "0", "--threads", "2",
                    "--steps", "3", "--batch", "8", "--eval-batch", "8", "--out", str(out)])
    assert summary["out"] == str(out)
    info = load_sharpener(out).info
    assert info.prediction_type == "flow" and info.base_checkpoint == "dice-testbed-dit"
    assert info.base_checkpoint_sha256 == file_sha256(DIT_WEIGHTS / "dit.safetensors")


def test_the_dit_testbeds_adapter_learns_cfg_in_its_guidance_interval_and_the_file_says_so(tmp_path):
    from dice_pack.sharpeners.adapter_file import load_adapter

    flags = ["--testbed", "dit", "--train", "adapter", "--sample-every", "0", "--threads", "2", "--steps", "2",
             "--batch", "8", "--eval-batch", "8"]
    default, everywhere = tmp_path / "default.safetensors", tmp_path / "everywhere.safetensors"
    main([*flags, "--runs", str(tmp_path / "a"), "--out", str(default)])
    main([*flags, "--runs", str(tmp_path / "b"), "--out", str(everywhere), "--guidance-interval", "none"])
    assert load_adapter(default).info.guidance_interval == "0,0.8"  # the transformer testbed's default
    assert load_adapter(everywhere).info.guidance_interval == ""
    limited, plain = load_adapter(default).tensors, load_adapter(everywhere).tensors
    assert any(not torch.equal(limited[name], plain[name]) for name in limited)  # another teacher, other weights
