"""The TeEFusion-style peer of the frontier bench: a guidance-conditioned testbed UNet, its training and its file."""
import pytest
import torch

from dice_pack.training.testbed.model import Testbed
from dice_pack.training.testbed.teefusion import (GuidanceStudent, load_student, save_student, train_student)


@pytest.fixture(scope="module")
def testbed():
    return Testbed.load()


def inputs(testbed):
    torch.manual_seed(0)
    x = torch.randn(2, *testbed.latent_shape)
    sigma = testbed.schedule.sigmas[torch.tensor([200, 900])]
    context = testbed.encode_prompts(["a small red circle on the left", "a blue square above a yellow triangle"])
    return x, sigma, context, testbed.null_embedding().expand_as(context)


def test_an_untrained_student_at_w_one_is_the_testbed_unet(testbed):
    x, sigma, context, null = inputs(testbed)
    student = GuidanceStudent(testbed.unet)
    got = student.predict_noise(testbed, x, sigma, context, null, torch.ones(2))
    assert torch.allclose(got, testbed.predict_noise(x, sigma, context), atol=1e-6)


def test_training_moves_the_student_towards_cfg_and_the_file_round_trips(testbed, tmp_path):
    x, sigma, context, null = inputs(testbed)
    w = torch.full((2,), 5.0)
    eps = testbed.predict_noise(torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([context, null]))
    conditional, unconditional = eps.chunk(2)
    teacher = unconditional + 5.0 * (conditional - unconditional)

    def distance(student):
        return float((student.predict_noise(testbed, x, sigma, context, null, w) - teacher).abs().mean())

    before = distance(GuidanceStudent(testbed.unet))
    student = train_student(testbed, steps=30, batch=16, lr=1e-3, log=lambda text: None)
    assert distance(student) < before
    path = tmp_path / "student.safetensors"
    save_student(student, path, 30)
    assert distance(load_student(testbed, path)) == pytest.approx(distance(student), abs=1e-6)


def test_a_file_of_another_kind_is_refused_by_name(testbed, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(1)}, str(path), metadata={"kind": "something-else"})
    with pytest.raises(ValueError, match="not a TeEFusion-style testbed student"):
        load_student(testbed, path)
