"""Prompts' conditioning in a file (training/text_embeddings.py): what encode_prompts.py writes and train.py
--text-embeddings reads, for text encoders too large to load beside the model. The real ComfyUI runs are in
tests/test_trainer_comfyui_dit.py."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from dice_pack.training.cli import main
from dice_pack.training.text_embeddings import TextEmbeddingsFile, as_conditioning, write_text_embeddings


def encodings() -> dict[str, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return {"": {"tensor": torch.randn(1, 5, 3584, generator=generator)},
            "a red fox": {"tensor": torch.randn(1, 8, 3584, generator=generator)},
            "a masked one": {"tensor": torch.randn(1, 4, 2304, generator=generator),
                             "attention_mask": torch.ones(1, 4), "pooled": torch.randn(1, 2048, generator=generator)}}


def test_each_prompts_encoding_comes_back_as_written_with_its_extras(tmp_path):
    path = tmp_path / "prompts.safetensors"
    written = encodings()
    write_text_embeddings(path, written, "qwen_image", ["qwen_2.5_vl_7b.safetensors"])
    read = TextEmbeddingsFile(path)
    assert set(read.index) == set(written) and read.clip_type == "qwen_image"
    assert read.text_encoders == ["qwen_2.5_vl_7b.safetensors"]
    for prompt, entry in written.items():
        assert read.encode(prompt).keys() == entry.keys()
        for name, tensor in entry.items():
            assert torch.equal(read.encode(prompt)[name], tensor)
    assert read.token_shape("a red fox") == (8,) and read.token_shape("") == (5,)
    assert not list(tmp_path.glob(".*.tmp"))  # written under a temporary name, then renamed


def test_the_conditioning_is_what_clip_text_encode_outputs():
    entry = encodings()["a masked one"]
    [[tensor, options]] = as_conditioning(entry)
    assert torch.equal(tensor, entry["tensor"]) and torch.equal(options["pooled_output"], entry["pooled"])
    assert options["attention_mask"].dtype == torch.long  # in integers, as the encoder gives it (Lumina 2 counts it)
    [[_, plain]] = as_conditioning(encodings()["a red fox"])
    assert plain == {"pooled_output": None}


def test_a_prompt_the_file_lacks_is_named_with_the_command_that_encodes_it(tmp_path):
    path = tmp_path / "prompts.safetensors"
    write_text_embeddings(path, encodings(), "qwen_image", [])
    with pytest.raises(SystemExit, match="holds no conditioning for the prompt 'a blue heron'.*encode_prompts.py"):
        TextEmbeddingsFile(path).encode("a blue heron")


def test_files_that_are_not_text_embeddings_are_refused_by_name(tmp_path):
    other = tmp_path / "adapter.safetensors"
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, str(other))
    with pytest.raises(SystemExit, match="adapter.safetensors: not a text embeddings file"):
        TextEmbeddingsFile(other)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not safetensors")
    with pytest.raises(SystemExit, match="broken.safetensors: not a readable safetensors file"):
        TextEmbeddingsFile(broken)
    with pytest.raises(SystemExit, match="absent.safetensors: not a readable safetensors file"):
        TextEmbeddingsFile(tmp_path / "absent.safetensors")


def test_text_embeddings_go_with_unet_and_in_place_of_the_text_encoder_flags(tmp_path):
    with pytest.raises(SystemExit, match="--text-embeddings and --vae go with --unet"):
        main(["--testbed", "--text-embeddings", str(tmp_path / "p.safetensors")])
    for flags in (["--clip", "t5.safetensors"], ["--clip-type", "qwen_image"], ["--clip-skip", "2"]):
        with pytest.raises(SystemExit, match="give --clip, --clip-type and --clip-skip to python "
                                             "training/encode_prompts.py"):
            main(["--unet", "model.safetensors", "--vae", "vae.safetensors", "--text-embeddings",
                  str(tmp_path / "p.safetensors"), *flags])
