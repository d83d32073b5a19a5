"""Training data a user has: captioned image folders (with kohya-style N_name repeats), metadata.jsonl,
COCO captions, or just prompts. Bad files are named and skipped; an unusable dataset is a clear error."""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
REPEAT_FOLDER = re.compile(r"^(\d+)_(.+)$")


@dataclass(frozen=True)
class Example:
    """One training example: an image (None when the model makes it from the prompt) and its caption."""

    caption: str
    image: Path | None = None


class DatasetError(ValueError):
    """The dataset cannot be used; the message names the path and what is wrong."""


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        logging.warning("DICE: skipping %s: its caption cannot be read (%s)", path, error)
        return None


def from_folder(folder: Path) -> list[Example]:
    """Images with same-name .txt captions; a subfolder '10_name' repeats its images 10 times."""
    examples = []
    for image in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        caption_file = image.with_suffix(".txt")
        if not caption_file.exists():
            logging.warning("DICE: skipping %s: no caption file %s", image, caption_file.name)
            continue
        caption = _read_text(caption_file)
        if not caption:
            continue
        repeats = 1
        for parent in image.relative_to(folder).parents:
            match = REPEAT_FOLDER.match(parent.name)
            if match:
                repeats = int(match.group(1))
                break
        examples += [Example(caption, image)] * max(repeats, 1)
    return examples


def from_metadata_jsonl(path: Path) -> list[Example]:
    """Hugging Face imagefolder's metadata.jsonl: {"file_name": ..., "text": ...} per line."""
    examples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            image, caption = path.parent / record["file_name"], str(record.get("text") or record.get("caption"))
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            logging.warning("DICE: skipping %s line %d: %s", path, number, error)
            continue
        examples.append(Example(caption, image))
    return examples


def from_coco(path: Path) -> list[Example]:
    """COCO captions (captions_train2017.json); images next to it, one level up, or in ../<split>/."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        files = {image["id"]: image["file_name"] for image in document["images"]}
        annotations = document["annotations"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise DatasetError(f"{path}: not a COCO captions file ({error})") from None
    split = path.stem.split("_")[-1]
    folders = [path.parent, path.parent.parent, path.parent.parent / split, path.parent / split]
    examples = []
    for annotation in annotations:
        name = files.get(annotation.get("image_id"))
        found = next((folder / name for folder in folders if name and (folder / name).exists()), None)
        if found is None:
            logging.warning("DICE: skipping COCO image %s: not found near %s", name, path)
            continue
        examples.append(Example(str(annotation["caption"]).strip(), found))
    return examples


def from_prompts(path: Path) -> list[Example]:
    """A text file of prompts, one a line: the checkpoint itself will draw the training images (with CFG)."""
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [Example(line) for line in lines if line and not line.startswith("#")]


def load_examples(data: str | Path) -> list[Example]:
    """Whatever --data points at, as examples; raises DatasetError when nothing usable is there."""
    path = Path(data).expanduser()
    if not path.exists():
        raise DatasetError(f"--data {path}: no such file or folder")
    if path.is_dir():
        jsonl = path / "metadata.jsonl"
        examples = from_metadata_jsonl(jsonl) if jsonl.exists() else from_folder(path)
    elif path.suffix == ".jsonl":
        examples = from_metadata_jsonl(path)
    elif path.suffix == ".json":
        examples = from_coco(path)
    elif path.suffix == ".txt":
        examples = from_prompts(path)
    else:
        raise DatasetError(f"--data {path}: expected a folder, a metadata.jsonl, a COCO .json or a prompts .txt")
    if not examples:
        raise DatasetError(f"--data {path}: no usable examples (images need a same-name .txt caption)")
    return examples
