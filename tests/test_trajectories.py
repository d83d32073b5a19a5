"""The pool of CFG sampling-run states: runs in blocks, each state with CFG's prediction there, and a training batch
that only mixes prompts the model can take in one call."""
import pytest
import torch

from dice_pack.training.step import teacher_noise
from dice_pack.training.testbed import model as testbed_model
from dice_pack.training.trajectories import STEP_COUNTS, TrajectoryStates


class GroupedBackend:
    """What the pool asks of a backend: here prompts of two token-count groups (as T5 gives SD3 and PixArt)."""

    def __init__(self, tiles: bool) -> None:
        self.tiles = tiles

    def context_group(self, prompt: str):
        return None if self.tiles else len(prompt.split())


def pool(backend) -> TrajectoryStates:
    states = TrajectoryStates(backend, 5.0, [])
    prompts = ["a fox", "a red fox", "a cat", "a big red fox", "an owl"] * 8
    states.states = [(torch.zeros(1), torch.ones(()), p, "", torch.tensor(5.0), None) for p in prompts]
    return states


def test_where_contexts_do_not_tile_a_batch_is_drawn_from_one_token_group():
    states = pool(GroupedBackend(tiles=False))
    seen_groups = set()
    for seed in range(20):
        picks = states._picks(16, torch.Generator().manual_seed(seed))
        groups = {len(states.states[i][2].split()) for i in picks}
        assert len(groups) == 1 and len(picks) == 16
        seen_groups |= groups
    assert seen_groups == {2, 3, 4}  # every group still gets drawn


def test_where_contexts_tile_the_draw_is_plain_uniform_as_before():
    states = pool(GroupedBackend(tiles=True))
    generator = torch.Generator().manual_seed(3)
    expected = torch.randint(0, len(states.states), (16,), generator=torch.Generator().manual_seed(3)).tolist()
    assert states._picks(16, generator) == expected


@pytest.fixture(scope="module")
def testbed():
    return testbed_model.Testbed.load()


def test_each_state_comes_with_cfgs_prediction_there_for_its_own_scale(testbed):
    """The teacher's call is not made again: what the run predicted at a state is CFG's prediction at that state."""
    for scales in ((1.0, 10.0), None):
        states = TrajectoryStates(testbed, 5.0, ["on a black background"], scales, runs_per_call=3)
        batch = states.draw(12, torch.Generator().manual_seed(4), torch.device("cpu"))
        recomputed = teacher_noise(testbed, {k: v for k, v in batch.items() if k != "teacher"}, 5.0)
        assert batch["teacher"].shape == batch["x"].shape
        assert torch.allclose(batch["teacher"], recomputed, atol=1e-4)
        assert (batch["teacher"] - recomputed).abs().max() < 1e-2 * recomputed.abs().mean()


def test_runs_go_in_blocks_only_when_the_undrawn_states_fall_short(testbed):
    states = TrajectoryStates(testbed, 5.0, [], runs_per_call=2)
    block = 2 * sum(STEP_COUNTS)  # states one block adds: two runs of each step count
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        states.draw(8, generator, torch.device("cpu"))
    blocks = -(-20 * 8 // block)
    assert states.runs == 2 * len(STEP_COUNTS) * blocks  # every state run is drawn about once
    assert states.fresh == blocks * block - 20 * 8


def test_with_draws_per_state_k_a_block_serves_k_times_the_draws(testbed):
    states = TrajectoryStates(testbed, 5.0, [], runs_per_call=2, draws_per_state=3)
    block = 2 * sum(STEP_COUNTS)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        states.draw(8, generator, torch.device("cpu"))
    blocks = -(-20 * 8 // (3 * block))
    assert states.runs == 2 * len(STEP_COUNTS) * blocks
    assert states.fresh == 3 * blocks * block - 20 * 8


def test_a_checkpoints_pool_without_predictions_gets_them_when_loaded(testbed):
    """Checkpoints written before the pool kept CFG's predictions still resume."""
    states = TrajectoryStates(testbed, 5.0, [], (1.0, 10.0), runs_per_call=2)
    states.draw(8, torch.Generator().manual_seed(1), torch.device("cpu"))
    old = {k: v for k, v in states.state_dict().items() if k not in ("teacher", "fresh")}
    resumed = TrajectoryStates(testbed, 5.0, [], (1.0, 10.0), runs_per_call=2)
    resumed.load_state_dict(old)
    assert len(resumed.states) == len(states.states) and resumed.fresh == 0
    for before, after in zip(states.states, resumed.states):
        assert torch.allclose(before[5], after[5], atol=1e-4)


def test_a_mix_of_models_recomputes_the_prediction_with_the_current_model(testbed):
    """A mix changes the model between steps, so a state's stored prediction could be another model's."""
    testbed.at_step = lambda step: None
    try:
        states = TrajectoryStates(testbed, 5.0, [], runs_per_call=2)
        batch = states.draw(8, torch.Generator().manual_seed(2), torch.device("cpu"))
    finally:
        del testbed.at_step
    assert "teacher" not in batch and "teacher" not in states.state_dict()


def test_with_a_guidance_interval_the_runs_teach_cfg_inside_it_and_the_plain_prediction_outside(testbed):
    """--guidance-interval: the runs' states keep the prediction their run made, CFG at the noise levels inside the
    interval and one unguided call outside, and the teacher recomputes the same; the knob's w stays each run's own."""
    from dice_pack.training.step import single_call

    interval = (0.0, 0.5)
    states = TrajectoryStates(testbed, 5.0, [], (1.0, 10.0), runs_per_call=3, interval=interval)
    batch = states.draw(40, torch.Generator().manual_seed(5), torch.device("cpu"))
    inside = (testbed.noise_level(batch["sigma"]) <= 0.5)
    assert 0 < int(inside.sum()) < len(inside)  # both kinds of state drawn, so the check can fail
    plain = teacher_noise(testbed, {k: v for k, v in batch.items() if k != "teacher"}, 5.0)
    limited = teacher_noise(testbed, {k: v for k, v in batch.items() if k != "teacher"}, 5.0, interval)
    unguided = single_call(testbed, batch, batch["c"])
    assert torch.allclose(batch["teacher"], limited, atol=1e-4)
    assert torch.allclose(limited[~inside], unguided[~inside], atol=1e-5)  # outside: the plain prediction
    assert torch.allclose(limited[inside], plain[inside], atol=1e-5)  # inside: CFG at the state's own w
    assert not torch.allclose(limited[~inside], plain[~inside], atol=1e-3)
    assert len(set(batch["w"].tolist())) > 1  # the knob still trains over the range
