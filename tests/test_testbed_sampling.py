import torch

from dice_pack.training.testbed.features import frechet_distance
from dice_pack.training.sampler import sample
from dice_pack.training.testbed.schedule import DiscreteSchedule

SCHEDULE = DiscreteSchedule()


def point_mass(target):
    """The exact noise prediction when all data sits at target: eps = (x − target)/σ."""
    return lambda x, sigma, context: (x - target) / sigma.view(-1, 1, 1, 1)


def test_timestep_inverts_the_schedule():
    t = torch.tensor([0, 10, 500, 999])
    torch.testing.assert_close(SCHEDULE.timestep(SCHEDULE.sigmas[t]), t.float(), atol=1e-3, rtol=0)


def test_sampling_sigmas_fall_from_sigma_max_to_zero():
    sigmas = SCHEDULE.sampling_sigmas(20)
    assert len(sigmas) == 21 and abs(float(sigmas[0]) - SCHEDULE.sigma_max) < 1e-4 and sigmas[-1] == 0
    assert (sigmas[1:] < sigmas[:-1]).all()


def test_both_samplers_reach_the_data_when_the_denoiser_is_exact():
    target = torch.full((1, 2, 2, 2), 0.7)
    context = torch.zeros(3, 4, 8)
    for method in ("euler", "dpmpp_2m"):
        out = sample(point_mass(target), context, SCHEDULE.sampling_sigmas(10), [0, 1, 2], (2, 2, 2), method=method)
        torch.testing.assert_close(out, target.expand(3, -1, -1, -1), atol=1e-4, rtol=0)


def toy_predictor(x, sigma, context):
    return torch.tanh(x + context.mean(dim=(1, 2)).view(-1, 1, 1, 1)) * 0.5


def test_a_sample_depends_on_its_seed_not_its_batch():
    context = torch.randn(3, 4, 8)
    sigmas = SCHEDULE.sampling_sigmas(5)
    batch = sample(toy_predictor, context, sigmas, [7, 8, 9], (2, 2, 2))
    alone = sample(toy_predictor, context[2:], sigmas, [9], (2, 2, 2))
    torch.testing.assert_close(batch[2:], alone)
    assert not torch.equal(batch[0], batch[1])


def test_cfg_combines_cond_and_uncond_and_scale_one_is_unguided():
    context, null = torch.randn(2, 4, 8), torch.randn(1, 4, 8)
    sigmas = SCHEDULE.sampling_sigmas(5)
    plain = sample(toy_predictor, context, sigmas, [1, 2], (2, 2, 2))
    assert torch.equal(sample(toy_predictor, context, sigmas, [1, 2], (2, 2, 2), null=null, cfg_scale=1.0), plain)
    assert not torch.allclose(sample(toy_predictor, context, sigmas, [1, 2], (2, 2, 2), null=null, cfg_scale=5.0), plain)


def test_frechet_distance_is_zero_for_one_set_and_grows_with_a_shift():
    features = torch.randn(2000, 8, generator=torch.Generator().manual_seed(0)).double().numpy()
    assert abs(frechet_distance(features, features)) < 1e-6
    assert frechet_distance(features, features + 1.0) > 7.9


def test_guide_at_makes_one_unguided_call_outside_the_interval_and_cfg_inside():
    from dice_pack.training.sampler import guided, in_interval

    calls = []

    def predict(x, sigma, context):
        calls.append(len(x))
        return context.mean(dim=(1, 2)).view(-1, 1) * x + sigma.view(-1, 1)

    context, null, x = torch.ones(2, 3, 4), torch.zeros(1, 3, 4), torch.ones(2, 5)
    step = guided(predict, context, null, 5.0, guide_at=lambda sigma: bool(in_interval(sigma[:1], (0.0, 0.5))))
    outside = step(x, torch.full((2,), 0.9))
    assert calls == [2] and torch.equal(outside, predict(x, torch.full((2,), 0.9), context))
    calls.clear()
    inside = step(x, torch.full((2,), 0.3))
    assert sum(calls) == 4  # cond and uncond
    assert torch.allclose(inside, 5.0 * x + 0.3)  # CFG: uncond 0.3 + 5 · (x + 0.3 − 0.3)
