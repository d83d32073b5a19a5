"""Image features for the Fréchet distance (standing in for FID's Inception), and the distance itself."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import ANCHORS, BACKGROUNDS, COLOURS, SHAPES, SIZES

HEADS = {"colour": len(COLOURS), "shape": len(SHAPES), "size": len(SIZES), "position": len(ANCHORS),
         "background": len(BACKGROUNDS)}


class FeatureNet(nn.Module):
    """A small CNN trained to name the attributes of single-object images; its 128-d penultimate layer is the feature."""

    def __init__(self, width: int = 128) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 16, width), nn.ReLU(),
        )
        self.heads = nn.ModuleDict({name: nn.Linear(width, classes) for name, classes in HEADS.items()})

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [N, 32, 32, 3] → [N, width]."""
        return self.body(images.permute(0, 3, 1, 2).float() / 127.5 - 1)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(images)
        return {name: head(h) for name, head in self.heads.items()}


def attribute_targets(scenes) -> dict[str, torch.Tensor]:
    """Class indices of the (single) object's attributes and the background."""
    lists = {name: [] for name in HEADS}
    for scene in scenes:
        thing = scene.things[0]
        lists["colour"].append(list(COLOURS).index(thing.colour))
        lists["shape"].append(SHAPES.index(thing.shape))
        lists["size"].append(list(SIZES).index(thing.size))
        lists["position"].append(list(ANCHORS).index(thing.position))
        lists["background"].append(list(BACKGROUNDS).index(scene.background))
    return {name: torch.tensor(values) for name, values in lists.items()}


def attribute_loss(outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
    return sum(F.cross_entropy(outputs[name], targets[name]) for name in HEADS)


@torch.no_grad()
def image_features(network: FeatureNet, images: np.ndarray, batch: int = 500) -> np.ndarray:
    """float64 [N, width] features of uint8 images."""
    parts = [network.features(torch.from_numpy(images[i:i + batch])).double().numpy() for i in range(0, len(images), batch)]
    return np.concatenate(parts)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """‖μa − μb‖² + tr(Σa + Σb − 2(Σa^½ Σb Σa^½)^½) between two feature sets."""
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    return float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.sqrt(np.clip(middle, 0, None)).sum())
