"""Reading and writing .safetensors files safely: a rename makes a write atomic, and a pickle or a truncated file is
refused by name before safetensors sees it. Shared by the sharpener and the guidance adapter."""
from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save as safetensors_bytes


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_safetensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write tensors and metadata to path atomically: a temporary file in the same folder, then a rename."""
    payload = safetensors_bytes(tensors, metadata=metadata)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(payload)
            out.flush()
            os.fsync(out.fileno())
        # mkstemp (and safetensors' own save_file) make the file private; ours get the permissions of any file the user makes.
        os.chmod(temporary, 0o666 & ~_current_umask())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def sniff_safetensors(path: str, error: type[Exception]) -> None:
    """Refuse pickles and truncated files before safetensors sees them, raising error with a message a user can act on."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(9)
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except OSError as failure:
        raise error(f"{path}: cannot be read ({failure.strerror or failure})") from None
    if head[:4] == b"PK\x03\x04":
        raise error(
            f"{path}: is a PyTorch pickle archive (torch.save) renamed to .safetensors; "
            "DICE never unpickles files because a pickle can run code. Use a .safetensors file."
        )
    # A safetensors header is JSON right after its length; a length such as 1152 (bytes 80 04 00…) looks like a
    # pickle's opening, so only a file without that JSON brace counts as one.
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05") and head[8:9] != b"{":
        raise error(f"{path}: is a Python pickle, not safetensors; DICE never unpickles files because a pickle can run code")
    if size < 8:
        raise error(f"{path}: is {size} bytes, too short to be a safetensors file")
    (header_length,) = struct.unpack("<Q", head[:8])
    if header_length > size - 8:
        raise error(
            f"{path}: is truncated or not safetensors (its header claims {header_length} bytes, "
            f"the file holds {size - 8} after the length field)"
        )
