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


def rows(dice_10, dice_20, dice_16=(41.0, 500.0), name="dice"):
    """alignment, FD pairs for a shipped method at 10, 16 and 20 calls against fixed peers."""
    table = [("unguided", 20, 20, 24.0, 500.0), ("cfg", 5, 10, 27.0, 560.0), ("cfg", 8, 16, 40.0, 550.0),
             ("cfg", 10, 20, 42.0, 420.0), ("cfg", 20, 40, 44.0, 580.0), (name, 10, 10, *dice_10),
             (name, 16, 16, *dice_16), (name, 20, 20, *dice_20)]
    return [dict(method=m, steps=s, calls=c, alignment=a, fd=f) for m, s, c, a, f in table]


def test_a_method_that_beats_half_step_cfg_and_closes_90_percent_meets_every_line():
    lines = frontier().bar_verdicts(rows((30.0, 450.0), (43.0, 410.0)), "dice")
    assert len(lines) == 3 and not any("NOT met" in line for line in lines), lines


def test_lower_alignment_or_worse_fd_than_cfg_at_half_the_steps_is_not_met():
    lines = frontier().bar_verdicts(rows((26.0, 450.0), (43.0, 410.0), dice_16=(41.0, 600.0)), "dice")
    assert all("NOT met" in line for line in lines[:2]) and "NOT met" not in lines[2], lines


def test_at_20_calls_less_than_90_percent_of_the_gain_is_not_met():
    # (41 - 24) / (44 - 24) = 85 % of CFG's alignment gain.
    lines = frontier().bar_verdicts(rows((30.0, 450.0), (41.0, 410.0)), "dice")
    assert "NOT met" in lines[2] and "85%" in lines[2], lines


def test_at_20_calls_an_fd_worse_than_cfg_at_10_steps_is_not_met_even_when_cfg_at_20_is_worse():
    # CFG at 20 steps has FD 580 and CFG at 10 steps 420: the bar compares with the latter.
    lines = frontier().bar_verdicts(rows((30.0, 450.0), (43.5, 450.0)), "dice")
    assert "NOT met" in lines[2], lines


def test_the_bar_reads_every_dice_and_adapter_row_but_not_the_negative_prompt_rows():
    table = rows((30.0, 450.0), (43.0, 410.0), name="adapter") + [
        dict(method="dice α=0.75", steps=20, calls=20, alignment=30.0, fd=400.0),
        dict(method="dice-negatives β=0", steps=20, calls=20, alignment=30.0, fd=400.0, negative="x")]
    assert frontier().shipped_methods(table) == ["adapter", "dice α=0.75"]
