"""The committed testbed loads offline and samples deterministically."""
import numpy as np
import pytest
import torch

from dice_pack.training.testbed.model import WEIGHTS, Testbed


@pytest.fixture(scope="module")
def testbed():
    return Testbed.load()


def test_the_committed_weights_load_offline_without_any_hub(testbed, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert (WEIGHTS / "model_card.md").is_file()
    assert testbed.embed_dim == 384 and testbed.latent_shape == (4, 8, 8)
    assert sum(f.stat().st_size for f in WEIGHTS.glob("*.safetensors")) < 30_000_000


def test_sampling_is_deterministic_per_seed(testbed):
    context = testbed.encode_prompts(["a small red circle on the left", "a blue square above a yellow triangle"])
    first = testbed.generate(context, [3, 4], steps=6, cfg_scale=5.0)
    again = testbed.generate(context, [3, 4], steps=6, cfg_scale=5.0)
    assert first.dtype == np.uint8 and first.shape == (2, 32, 32, 3)
    assert np.array_equal(first, again)
    assert not np.array_equal(first[0], testbed.generate(context[:1], [5], steps=6, cfg_scale=5.0)[0])


def test_cfg_then_sharpened_hands_over_within_one_schedule(testbed):
    context = testbed.encode_prompts(["a small red circle on the left", "a blue square above a yellow triangle"])
    then = 1.5 * context  # any other context stands in for a sharpened one
    # No CFG steps: exactly the single-call run on the second context.
    assert np.array_equal(testbed.generate_cfg_then(context, then, [3, 4], 6, 0, 5.0), testbed.generate(then, [3, 4], steps=6))
    handed_over = testbed.generate_cfg_then(context, then, [3, 4], 6, 4, 5.0)
    assert np.array_equal(handed_over, testbed.generate_cfg_then(context, then, [3, 4], 6, 4, 5.0))
    # The first steps are CFG's: another guidance scale there changes the image.
    assert not np.array_equal(handed_over, testbed.generate_cfg_then(context, then, [3, 4], 6, 4, 1.0))


def test_predict_noise_takes_a_batch_of_noise_levels(testbed):
    x = torch.randn(3, 4, 8, 8)
    sigma = testbed.schedule.sigmas[torch.tensor([10, 500, 999])]
    eps = testbed.predict_noise(x, sigma, testbed.encode_prompts(["a", "b", "c"]))
    assert eps.shape == x.shape and torch.isfinite(eps).all()


def tiny_unet_stage():
    """A 2-step, 16/32-wide UNet config and made-up latents and captions for it."""
    from dice_pack.training.testbed import build

    config = dict(build.CONFIG, unet_channels=(16, 32), unet_steps=2, unet_batch=4, unet_warmup=1)
    return config, (torch.randn(8, 4, 8, 8), torch.randn(3, 77, 384).half(), torch.tensor([0, 1] * 4))


def test_the_build_trains_the_configured_unet_width_and_reloads_it(tmp_path):
    from dice_pack.training.testbed import build

    # The width is part of the build's config, so a variant's weights reload into the same shape.
    config, inputs = tiny_unet_stage()
    trained = build.build_unet(tmp_path, *inputs, config)
    assert trained.config.channels == (16, 32)
    reloaded = build.build_unet(tmp_path, *inputs, config)
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), reloaded.state_dict().values()))


def test_a_build_stage_starts_from_the_same_weights_whatever_ran_before_it(tmp_path):
    from dice_pack.training.testbed import build

    # A rerun that loads cached earlier stages must train the same network as a run that made them.
    config = dict(build.CONFIG, autoencoder_steps=0)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    images = np.zeros((4, 32, 32, 3), np.uint8)
    torch.manual_seed(123)
    first = build.build_autoencoder(tmp_path / "a", images, config)
    torch.randn(1000)
    second = build.build_autoencoder(tmp_path / "b", images, config)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


def test_a_build_stage_made_with_other_settings_is_made_again(tmp_path):
    from dice_pack.training.testbed import build

    # Changing the config and rerunning must not silently reuse a stage trained with the old settings.
    config, inputs = tiny_unet_stage()
    short = build.build_unet(tmp_path, *inputs, config)
    assert build.stage_is_current(tmp_path, "unet.safetensors", config)
    longer = dict(config, unet_steps=3)
    assert not build.stage_is_current(tmp_path, "unet.safetensors", longer)
    retrained = build.build_unet(tmp_path, *inputs, longer)
    assert not all(torch.equal(a, b) for a, b in zip(short.state_dict().values(), retrained.state_dict().values()))
    assert build.stage_is_current(tmp_path, "unet.safetensors", longer)
    # A change upstream (the data) makes the UNet stale too.
    assert not build.stage_is_current(tmp_path, "unet.safetensors", dict(longer, train_images=123))
