"""bench/frontier.py's verdicts on the issue's bar, on made-up rows (the bench itself is run by hand)."""
import importlib.util
import sys

from conftest import PACK_ROOT


def frontier():
    sys.path.insert(0, str(PACK_ROOT / "bench"))
    try:
        spec = importlib.util.spec_from_file_location("frontier_bench", PACK_ROOT / "bench" / "frontier.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(PACK_ROOT / "bench"))


def rows(dice_10, dice_20, cfg_fd_20_steps=300.0):
    """alignment, FD pairs for DICE at 10 and 20 calls against fixed peers."""
    table = [("unguided", 20, 20, 24.0, 500.0), ("cfg", 5, 10, 27.0, 560.0), ("cfg", 10, 20, 42.0, 420.0),
             ("cfg", 20, 40, 44.0, cfg_fd_20_steps), ("dice", 10, 10, *dice_10), ("dice", 20, 20, *dice_20)]
    return [dict(method=m, steps=s, calls=c, alignment=a, fd=f) for m, s, c, a, f in table]


def test_a_dice_that_beats_equal_cost_cfg_and_closes_the_gaps_meets_every_line():
    lines = frontier().bar_verdicts(rows((30.0, 450.0), (43.0, 310.0)), "dice")
    assert len(lines) == 3 and not any("NOT met" in line for line in lines), lines


def test_lower_alignment_than_cfg_at_half_the_steps_is_not_met():
    lines = frontier().bar_verdicts(rows((30.0, 450.0), (34.0, 310.0)), "dice")
    assert "NOT met" not in lines[0] and "NOT met" in lines[1] and "NOT met" in lines[2], lines


def test_when_cfg_worsens_fd_beating_cfg_counts_as_closing_that_gap():
    # CFG at 20 steps has a worse FD (580) than unguided sampling (500): no gap to close; DICE at 450 is past it.
    lines = frontier().bar_verdicts(rows((30.0, 450.0), (43.5, 450.0), cfg_fd_20_steps=580.0), "dice")
    assert "NOT met" not in lines[2], lines
