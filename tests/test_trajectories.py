"""The pool of CFG sampling-run states: a training batch only mixes prompts the model can take in one call."""
import torch

from dice_pack.training.trajectories import TrajectoryStates


class GroupedBackend:
    """What the pool asks of a backend: here prompts of two token-count groups (as T5 gives SD3 and PixArt)."""

    def __init__(self, tiles: bool) -> None:
        self.tiles = tiles

    def context_group(self, prompt: str):
        return None if self.tiles else len(prompt.split())


def pool(backend) -> TrajectoryStates:
    states = TrajectoryStates(backend, 5.0, [])
    prompts = ["a fox", "a red fox", "a cat", "a big red fox", "an owl"] * 8
    states.states = [(torch.zeros(1), torch.ones(()), p, "", torch.tensor(5.0)) for p in prompts]
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
