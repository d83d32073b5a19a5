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


def test_predict_noise_takes_a_batch_of_noise_levels(testbed):
    x = torch.randn(3, 4, 8, 8)
    sigma = testbed.schedule.sigmas[torch.tensor([10, 500, 999])]
    eps = testbed.predict_noise(x, sigma, testbed.encode_prompts(["a", "b", "c"]))
    assert eps.shape == x.shape and torch.isfinite(eps).all()
