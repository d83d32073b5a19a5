"""The weights an adapter records of its base model (sharpeners.fingerprint) and what the hosts say with them: the same
checkpoint in any dtype is recognised, a fine-tune or a merge is another checkpoint, and a file without them says
nothing."""
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from dice_pack.sharpeners.adapter import AdapterConfig, GuidanceAdapter
from dice_pack.sharpeners.adapter_file import AdapterInfo, load_adapter, save_adapter
from dice_pack.sharpeners.fingerprint import same_weights, weight_fingerprint
from dice_pack.webui import glue

PATHS = [f"blocks.{i}.attn" for i in range(6)]


def model(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {path: torch.randn(32, 24, generator=generator) * 0.05 for path in PATHS}


def reader(weights: dict[str, torch.Tensor]):
    return lambda path: weights.get(path)


def test_the_same_weights_are_recognised_in_the_dtype_a_host_loads_them_in():
    base = model(0)
    recorded = weight_fingerprint(reader(base), PATHS)
    assert recorded.startswith("float32;") and recorded.count(";") == 4  # four layers spread over the model
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        assert same_weights(recorded, reader({p: w.to(dtype) for p, w in base.items()})) is True, dtype
    # Recorded from a half-precision copy, it still recognises the full-precision one.
    half = weight_fingerprint(reader({p: w.half() for p, w in base.items()}), PATHS)
    assert same_weights(half, reader(base)) is True


def test_a_fine_tune_and_a_merge_are_other_checkpoints():
    base, other = model(0), model(1)
    recorded = weight_fingerprint(reader(base), PATHS)
    generator = torch.Generator().manual_seed(2)
    tuned = {p: w + 1e-3 * torch.randn(w.shape, generator=generator) for p, w in base.items()}
    merged = {p: 0.5 * base[p] + 0.5 * other[p] for p in PATHS}
    assert same_weights(recorded, reader(tuned)) is False
    assert same_weights(recorded, reader(merged)) is False
    assert same_weights(recorded, reader({p: w.half() for p, w in tuned.items()})) is False


def test_it_cannot_tell_without_a_fingerprint_or_the_layers():
    base = model(0)
    recorded = weight_fingerprint(reader(base), PATHS)
    assert same_weights("", reader(base)) is None
    assert same_weights("float99;x:1", reader(base)) is None
    assert same_weights(recorded, reader({})) is None


def adapter_file(tmp_path, sha: str, fingerprint: str = ""):
    shapes = {path: (24, 32) for path in PATHS}
    path = tmp_path / "base_adapter.safetensors"
    save_adapter(path, GuidanceAdapter(shapes, AdapterConfig(rank=2, alpha=2.0)),
                 AdapterInfo(base_checkpoint="dreamshaper_8", base_checkpoint_sha256=sha, base_fingerprint=fingerprint))
    return load_adapter(path)


def test_the_note_names_the_adapters_checkpoint_and_only_when_it_is_another(tmp_path):
    adapter = adapter_file(tmp_path, "ab" * 32, weight_fingerprint(reader(model(0)), PATHS))
    assert adapter.info.base_fingerprint.startswith("float32;")
    assert adapter.other_checkpoint_note(True) is None and adapter.other_checkpoint_note(None) is None
    note = adapter.other_checkpoint_note(False)
    assert "another checkpoint, dreamshaper_8 (sha256 abababababab)" in note and "--train adapter --init-adapter base_adapter.safetensors" in note
    # The webuis know their checkpoint's sha256: the note and the infotext appear for another one only.
    assert glue.other_checkpoint_notes([adapter], "AB" * 32) == ([], None)
    assert glue.other_checkpoint_notes([adapter], None) == ([], None)
    notes, bases = glue.other_checkpoint_notes([adapter], "cd" * 32)
    assert len(notes) == 1 and bases == "dreamshaper_8 (sha256 abababababab)"


def test_an_adapter_written_before_fingerprints_still_loads_and_says_nothing(tmp_path):
    path = Path(adapter_file(tmp_path, "").path)
    with safe_open(path, framework="pt") as f:
        metadata = {k: v for k, v in f.metadata().items() if k != "base_fingerprint"}
    save_file(load_file(path), path, metadata=metadata)  # as the files of 2026-11 were written
    adapter = load_adapter(path)
    assert adapter.info.base_fingerprint == ""
    assert adapter.other_checkpoint_note(same_weights(adapter.info.base_fingerprint, reader(model(0)))) is None
    assert glue.other_checkpoint_notes([adapter], "cd" * 32) == ([], None)


def test_a_layer_of_more_than_2_to_the_24_weights_is_fingerprinted_to_its_last_weight():
    # Chroma's single blocks hold 37.7 M weights a layer: float32 indices rounded the last one past the end.
    weight = torch.zeros(37_748_736, dtype=torch.float16)
    weight[-1] = 1.0
    recorded = weight_fingerprint(lambda path: weight, ["linear1"])
    assert recorded.split(",")[-1] == "1"
    assert same_weights(recorded, lambda path: weight) is True
