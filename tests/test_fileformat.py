import os
import pickle
import stat
import struct
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file, save_file

from dice_pack.sharpeners import (
    Sharpener, SharpenerConfig, SharpenerFileError, TrainingInfo, load_sharpener, read_metadata, save_sharpener,
)
from dice_pack.sharpeners import fileformat

INFO = TrainingInfo(model_family="sd15", base_checkpoint="dreamshaper_8.safetensors",
                    base_checkpoint_sha256="ab" * 32, guidance_scale=7.5, clip_skip=2, prediction_type="eps",
                    trained_with_negatives=True, default_alpha=0.8, training_steps=8000)


@pytest.fixture
def saved(sharpener, tmp_path):
    path = tmp_path / "good.safetensors"
    save_sharpener(path, sharpener, INFO)
    return path


def rewrite(source, target, tensors=None, metadata=None):
    """Save a variant of a good file with changed tensors or metadata."""
    save_file(tensors if tensors is not None else load_file(source),
              target, metadata=metadata if metadata is not None else read_metadata(source))
    return target


def test_round_trip_keeps_weights_and_training_info(sharpener, saved):
    loaded = load_sharpener(saved)
    assert loaded.info == INFO
    assert loaded.network.config == sharpener.config
    for name, tensor in sharpener.state_dict().items():
        assert torch.equal(loaded.network.state_dict()[name], tensor)
    assert not any(p.requires_grad for p in loaded.network.parameters())


def test_round_trip_for_an_sdxl_width_sharpener(tmp_path):
    network = Sharpener(SharpenerConfig(embed_dim=2048))
    path = tmp_path / "sdxl.safetensors"
    save_sharpener(path, network, replace(INFO, model_family="sdxl"))
    assert load_sharpener(path).network.config.embed_dim == 2048


def test_attention_over_the_prompt_survives_the_round_trip(tmp_path):
    network = Sharpener(SharpenerConfig(attention_context="prompt+reference"))
    path = tmp_path / "prompt.safetensors"
    save_sharpener(path, network, INFO)
    assert read_metadata(path)["attention_context"] == "prompt+reference"
    assert load_sharpener(path).network.config.attention_context == "prompt+reference"


def test_a_file_from_before_attention_context_loads_as_the_papers_network(saved, tmp_path):
    metadata = read_metadata(saved)
    del metadata["attention_context"]
    loaded = load_sharpener(rewrite(saved, tmp_path / "older.safetensors", metadata=metadata))
    assert loaded.network.config.attention_context == "reference"


def test_metadata_says_what_the_network_is_and_what_it_was_trained_for(saved):
    values = read_metadata(saved)
    assert values["format"] == "dice-sharpener" and values["format_version"] == "1"
    assert (values["embed_dim"], values["hidden_dim"], values["num_heads"]) == ("768", "512", "8")
    assert values["base_checkpoint_sha256"] == "ab" * 32 and values["trained_with_negatives"] == "true"
    assert values["guidance_scale"] == "7.5" and values["clip_skip"] == "2" and values["default_alpha"] == "0.8"


def test_half_precision_file_loads_as_float32(saved, tmp_path):
    half = {k: v.half() for k, v in load_file(saved).items()}
    loaded = load_sharpener(rewrite(saved, tmp_path / "half.safetensors", tensors=half))
    assert next(loaded.network.parameters()).dtype == torch.float32


def test_save_leaves_no_temporary_file_and_never_a_half_written_target(sharpener, saved, monkeypatch):
    before = saved.read_bytes()

    def failing_replace(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileformat.os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        save_sharpener(saved, Sharpener(), INFO)
    assert saved.read_bytes() == before
    assert os.listdir(saved.parent) == [saved.name]


def test_missing_file_is_named(tmp_path):
    with pytest.raises(SharpenerFileError, match="no such file"):
        load_sharpener(tmp_path / "absent.safetensors")


@pytest.mark.parametrize("keep", [0, 5, 100, -10])
def test_truncated_file_is_refused(saved, tmp_path, keep):
    data = saved.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:keep] if keep >= 0 else data[:keep])
    with pytest.raises(SharpenerFileError, match="cut.safetensors: .*(too short|truncated|not a readable)"):
        load_sharpener(tmp_path / "cut.safetensors")


def test_torch_save_pickle_renamed_to_safetensors_is_refused_without_unpickling(sharpener, tmp_path):
    path = tmp_path / "pickled.safetensors"
    torch.save(sharpener.state_dict(), path)
    with pytest.raises(SharpenerFileError, match="pickle archive.*never unpickles"):
        load_sharpener(path)


class Explodes:
    def __reduce__(self):
        return (os.mkdir, ("should-never-exist",))


def test_raw_pickle_renamed_to_safetensors_is_refused_and_never_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"model": Explodes()}))
    with pytest.raises(SharpenerFileError, match="Python pickle"):
        load_sharpener(path)
    assert not (tmp_path / "should-never-exist").exists()


@pytest.mark.parametrize("header_length", [0x480, 0x580])
def test_a_sharpener_whose_header_length_starts_like_a_pickle_still_loads(sharpener, tmp_path, header_length):
    # Headers of 1152 and 1408 bytes (a sharpener's is about 1,100) are stored as 80 04 00… and 80 05 00…, the
    # bytes a pickle of protocol 4 or 5 starts with.
    path = tmp_path / "lucky.safetensors"

    def header_with(name: str) -> int:
        save_sharpener(path, sharpener, TrainingInfo(base_checkpoint=name))
        return struct.unpack("<Q", path.read_bytes()[:8])[0]

    # Each character of the checkpoint name adds one byte to the header (then padded to a multiple of 8).
    shortfall = header_length - header_with("")
    name = next(n for n in ("x" * (shortfall - k) for k in range(8)) if header_with(n) == header_length)
    info = TrainingInfo(base_checkpoint=name)
    assert path.read_bytes()[:2] == bytes([0x80, header_length >> 8])
    assert load_sharpener(path).info.base_checkpoint == info.base_checkpoint


def test_garbage_with_a_plausible_length_field_is_refused(tmp_path):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(struct.pack("<Q", 10) + b"not json!!" + b"\0" * 20)
    with pytest.raises(SharpenerFileError, match="not a readable safetensors"):
        load_sharpener(path)


def test_safetensors_without_dice_metadata_is_refused_as_another_kind_of_file(tmp_path):
    path = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down.weight": torch.zeros(4, 4)}, path)
    with pytest.raises(SharpenerFileError, match="not a DICE sharpener.*checkpoint or a LoRA"):
        load_sharpener(path)


def test_wrong_tensor_shape_is_refused_naming_the_tensor(saved, tmp_path):
    tensors = load_file(saved)
    tensors["fc2.weight"] = torch.zeros(1024, 512)
    with pytest.raises(SharpenerFileError, match=r"'fc2.weight' is \[1024, 512\], expected \[768, 512\]"):
        load_sharpener(rewrite(saved, tmp_path / "shape.safetensors", tensors=tensors))


def test_metadata_that_disagrees_with_the_tensors_is_refused(saved, tmp_path):
    metadata = dict(read_metadata(saved), embed_dim="2048")
    with pytest.raises(SharpenerFileError, match="do not match the network its metadata describes"):
        load_sharpener(rewrite(saved, tmp_path / "meta.safetensors", metadata=metadata))


def test_missing_and_unexpected_tensors_are_named(saved, tmp_path):
    tensors = load_file(saved)
    tensors["extra.weight"] = tensors.pop("attention.to_q.weight")
    with pytest.raises(SharpenerFileError, match="missing 'attention.to_q.weight'.*unexpected 'extra.weight'"):
        load_sharpener(rewrite(saved, tmp_path / "names.safetensors", tensors=tensors))


@pytest.mark.parametrize(("key", "value", "message"), [
    ("embed_dim", "wide", "'embed_dim' should be an integer, found 'wide'"),
    ("num_heads", "0", "'num_heads' should be at least 1"),
    ("num_heads", "7", "impossible network.*divisible"),
    ("format_version", "2", "format 2; this pack reads up to 1: update the pack"),
    ("guidance_scale", "nan", "'guidance_scale' should be finite"),
    ("guidance_scale", "0.5", "'guidance_scale' should be at least 1"),
    ("trained_with_negatives", "maybe", "'trained_with_negatives' should be true or false"),
    ("prediction_type", "sample", "'prediction_type' should be one of"),
    ("default_alpha", "strong", "'default_alpha' should be a number"),
    ("attention_context", "everything", "impossible network.*attention_context must be one of"),
])
def test_bad_metadata_values_are_refused_naming_the_key(saved, tmp_path, key, value, message):
    metadata = dict(read_metadata(saved), **{key: value})
    with pytest.raises(SharpenerFileError, match=message):
        load_sharpener(rewrite(saved, tmp_path / "bad.safetensors", metadata=metadata))


@pytest.mark.parametrize("key", ["hidden_dim", "clip_skip", "base_checkpoint", "format_version"])
def test_missing_metadata_key_is_named(saved, tmp_path, key):
    metadata = read_metadata(saved)
    del metadata[key]
    with pytest.raises(SharpenerFileError, match=f"metadata lacks '{key}'"):
        load_sharpener(rewrite(saved, tmp_path / "lacking.safetensors", metadata=metadata))


def test_non_finite_weights_are_refused(saved, tmp_path):
    tensors = load_file(saved)
    tensors["fc1.bias"][3] = float("nan")
    with pytest.raises(SharpenerFileError, match="'fc1.bias' holds NaN"):
        load_sharpener(rewrite(saved, tmp_path / "nan.safetensors", tensors=tensors))


def test_integer_weights_are_refused(saved, tmp_path):
    tensors = load_file(saved)
    tensors["fc1.bias"] = tensors["fc1.bias"].to(torch.int32)
    with pytest.raises(SharpenerFileError, match="'fc1.bias' is torch.int32"):
        load_sharpener(rewrite(saved, tmp_path / "int.safetensors", tensors=tensors))


def test_saving_refuses_training_info_it_could_not_read_back(sharpener, tmp_path):
    with pytest.raises(SharpenerFileError, match="prediction_type"):
        save_sharpener(tmp_path / "x.safetensors", sharpener, replace(INFO, prediction_type="velocity"))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_a_written_sharpener_gets_the_permissions_of_any_file_the_user_makes(sharpener, tmp_path, umask):
    previous = os.umask(umask)
    try:
        path = tmp_path / "shared.safetensors"
        save_sharpener(path, sharpener, TrainingInfo())
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    finally:
        os.umask(previous)
