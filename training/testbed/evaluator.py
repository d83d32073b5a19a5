"""Does an image show what its prompt names? A rule-based detector standing in for CLIP score.

Each named object is found as the largest connected region of its colour (pixels nearest that palette
colour); its shape is the rendered template (circle, square, triangle) of the same area that overlaps the
object's soft coverage best, its size comes from its extent, its
position from its centroid. A prompt counts as aligned when every named object and attribute is right.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from .data import ANCHORS, BACKGROUNDS, COLOURS, RELATIONS, STYLES, Scene, coverage

PALETTE_NAMES = list(COLOURS) + [f"background:{name}" for name in BACKGROUNDS]
PALETTE = np.array(list(COLOURS.values()) + list(BACKGROUNDS.values()), np.float32)
MIN_AREA = 12
LARGE_EXTENT = 10.0


@dataclass(frozen=True)
class Found:
    """A detected object."""

    shape: str
    size: str
    centre: tuple[float, float]
    position: str
    area: int


def nearest_palette(image: np.ndarray) -> np.ndarray:
    """[H, W] index into PALETTE of each pixel's nearest colour."""
    distances = ((image[:, :, None, :].astype(np.float32) - PALETTE[None, None]) ** 2).sum(-1)
    return distances.argmin(-1)


def largest_region(mask: np.ndarray) -> np.ndarray | None:
    """The largest 4-connected region of mask, or None if mask is empty."""
    seen = np.zeros_like(mask, bool)
    best: list[tuple[int, int]] = []
    height, width = mask.shape
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        seen[start] = True
        region, queue = [], deque([start])
        while queue:
            y, x = queue.popleft()
            region.append((y, x))
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        if len(region) > len(best):
            best = region
    if not best:
        return None
    out = np.zeros_like(mask, bool)
    ys, xs = zip(*best)
    out[list(ys), list(xs)] = True
    return out


def coverage_map(image: np.ndarray, colour: str, background: str) -> np.ndarray:
    """Per-pixel share of colour over background, 0..1, by projecting each pixel on the line between them."""
    bg = np.array(BACKGROUNDS[background], np.float32)
    direction = np.array(COLOURS[colour], np.float32) - bg
    share = ((image.astype(np.float32) - bg) @ direction) / float(direction @ direction)
    return np.clip(share, 0.0, 1.0)


def classify_shape(cover: np.ndarray, region: np.ndarray) -> str:
    """The template (circle, square, triangle) of the same area and centroid that overlaps cover best."""
    soft = cover * binary_dilate(region)
    area = float(soft.sum())
    ys, xs = np.indices(soft.shape)
    cx, cy = float((soft * xs).sum() / area) + 0.5, float((soft * ys).sum() / area) + 0.5
    extents = {"circle": 2 * np.sqrt(area / np.pi), "square": np.sqrt(area) / 0.9, "triangle": np.sqrt(2 * area)}
    # A triangle's centroid sits a sixth of its height below the centre of its box.
    offsets = {"circle": 0.0, "square": 0.0, "triangle": extents["triangle"] / 6}
    scores = {}
    for shape, extent in extents.items():
        template = coverage(shape, cx, cy - offsets[shape], extent)
        scores[shape] = np.minimum(soft, template).sum() / np.maximum(soft, template).sum()
    return max(scores, key=scores.get)


def binary_dilate(mask: np.ndarray) -> np.ndarray:
    """mask grown by one pixel in the four directions, to take in anti-aliased edges."""
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def describe(region: np.ndarray, cover: np.ndarray) -> Found:
    """Shape, size and position of one region."""
    ys, xs = np.nonzero(region)
    height, width = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    shape = classify_shape(cover, region)
    centre = (float(xs.mean()) + 0.5, float(ys.mean()) + 0.5)
    position = min(ANCHORS, key=lambda a: (ANCHORS[a][0] - centre[0]) ** 2 + (ANCHORS[a][1] - centre[1]) ** 2)
    return Found(shape, "large" if max(height, width) >= LARGE_EXTENT else "small", centre, position, len(ys))


def find(image: np.ndarray, colour: str, labels: np.ndarray | None = None) -> Found | None:
    """The object of that colour in image, or None."""
    labels = nearest_palette(image) if labels is None else labels
    region = largest_region(labels == PALETTE_NAMES.index(colour))
    if region is None or region.sum() < MIN_AREA:
        return None
    return describe(region, coverage_map(image, colour, background_of(image)))


def background_of(image: np.ndarray) -> str:
    """The background colour name, from the image's border."""
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).astype(np.float32)
    backgrounds = np.array(list(BACKGROUNDS.values()), np.float32)
    return list(BACKGROUNDS)[int(((np.median(border, 0)[None] - backgrounds) ** 2).sum(-1).argmin())]


def check(image: np.ndarray, scene: Scene) -> dict[str, bool]:
    """Every named attribute → whether the image shows it."""
    labels = nearest_palette(image)
    results: dict[str, bool] = {}
    found = []
    for index, thing in enumerate(scene.things):
        seen = find(image, thing.colour, labels)
        found.append(seen)
        results[f"object{index}.present"] = seen is not None
        results[f"object{index}.shape"] = seen is not None and seen.shape == thing.shape
        if thing.size:
            results[f"object{index}.size"] = seen is not None and seen.size == thing.size
        if thing.position:
            results[f"object{index}.position"] = seen is not None and seen.position == thing.position
    if scene.relation:
        first, second = found
        axis = 0 if scene.relation in ("left of", "right of") else 1
        sign = -1 if RELATIONS[scene.relation][0] in ("left", "top") else 1
        results["relation"] = (first is not None and second is not None
                               and sign * (first.centre[axis] - second.centre[axis]) > 4)
    if scene.background:
        results["background"] = background_of(image) == scene.background
    return results


def alignment(images: np.ndarray, scenes: list[Scene]) -> float:
    """Percentage of images that show everything their prompt names."""
    return 100.0 * float(np.mean([all(check(image, scene).values()) for image, scene in zip(images, scenes)]))


def shows_value(image: np.ndarray, scene: Scene, attribute: str, value: str) -> bool:
    """Whether image shows value of attribute ("background", or the size or position of the scene's first thing); a
    thing that is not found shows neither size nor position."""
    if attribute == "background":
        return background_of(image) == value
    seen = find(image, scene.things[0].colour)
    return seen is not None and getattr(seen, attribute) == value


def style_score(images: np.ndarray, scenes: list[Scene], style: str = "bright") -> float | None:
    """Percentage of the images whose prompt leaves the background open that show style's favourite background (the
    community variants' style; chance is a third); None when no prompt leaves it open."""
    favourite = STYLES[style][0]
    shown = [background_of(image) == favourite for image, scene in zip(images, scenes) if scene.background is None]
    return 100.0 * float(np.mean(shown)) if shown else None
