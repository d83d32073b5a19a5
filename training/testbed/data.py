"""Seeded captioned images with compositional content: coloured shapes, sizes, positions, relations.

Every image comes with a Scene (the ground truth the evaluator checks) and a caption drawn from several
templates and synonyms, so that understanding the text encoder's embedding matters.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

SIZE = 32
SUPERSAMPLE = 4
COLOURS = {
    "red": (220, 35, 35), "green": (35, 185, 55), "blue": (45, 80, 235),
    "yellow": (240, 215, 35), "purple": (150, 55, 205), "cyan": (35, 200, 215),
}
BACKGROUNDS = {"black": (15, 15, 15), "white": (235, 235, 235), "gray": (110, 110, 110)}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 8.0, "large": 13.0}
ANCHORS = {"center": (16, 16), "left": (8, 16), "right": (24, 16), "top": (16, 8), "bottom": (16, 24)}
RELATIONS = {"left of": ("left", "right"), "right of": ("right", "left"), "above": ("top", "bottom"),
             "below": ("bottom", "top")}

COLOUR_WORDS = {"red": ["red", "crimson", "scarlet"], "green": ["green", "emerald"], "blue": ["blue", "cobalt"],
                "yellow": ["yellow", "golden"], "purple": ["purple", "violet"], "cyan": ["cyan", "turquoise"]}
SHAPE_WORDS = {"circle": ["circle", "disc", "round dot"], "square": ["square", "box", "block"],
               "triangle": ["triangle", "pyramid shape", "triangular shape"]}
SIZE_WORDS = {"small": ["small", "tiny", "little"], "large": ["large", "big", "huge"]}
POSITION_WORDS = {"center": ["in the center", "in the middle"], "left": ["on the left", "at the left side"],
                  "right": ["on the right", "at the right side"], "top": ["at the top", "near the top"],
                  "bottom": ["at the bottom", "near the bottom"]}
RELATION_WORDS = {"left of": ["to the left of", "left of"], "right of": ["to the right of", "right of"],
                  "above": ["above", "over"], "below": ["below", "under"]}
BACKGROUND_WORDS = {"black": ["on a black background", "against black"],
                    "white": ["on a white background", "against white"],
                    "gray": ["on a gray background", "against gray"]}


@dataclass(frozen=True)
class Thing:
    """One object: what it is and where; None means the caption does not say (the image still has one)."""

    shape: str
    colour: str
    size: str | None
    position: str | None


@dataclass(frozen=True)
class Scene:
    """What a caption claims: one or two things, a relation between two, maybe a background."""

    things: tuple[Thing, ...]
    relation: str | None = None
    background: str | None = None


def _thing_phrase(rng: random.Random, thing: Thing) -> str:
    words = []
    if thing.size:
        words.append(rng.choice(SIZE_WORDS[thing.size]))
    words += [rng.choice(COLOUR_WORDS[thing.colour]), rng.choice(SHAPE_WORDS[thing.shape])]
    return "a " + " ".join(words)


def caption(rng: random.Random, scene: Scene) -> str:
    """One of several phrasings of scene."""
    background = f" {rng.choice(BACKGROUND_WORDS[scene.background])}" if scene.background else ""
    if scene.relation:
        first, second = (_thing_phrase(rng, t) for t in scene.things)
        relation = rng.choice(RELATION_WORDS[scene.relation])
        template = rng.choice(["{a} {r} {b}{bg}", "{a} placed {r} {b}{bg}", "a picture of {a} {r} {b}{bg}"])
        return template.format(a=first, r=relation, b=second, bg=background)
    thing = scene.things[0]
    phrase = _thing_phrase(rng, thing)
    if not thing.position:
        return rng.choice(["{t}{bg}", "a picture of {t}{bg}"]).format(t=phrase, bg=background)
    position = rng.choice(POSITION_WORDS[thing.position])
    template = rng.choice(["{t} {p}{bg}", "{p}, {t}{bg}", "a picture of {t} {p}{bg}"])
    return template.format(t=phrase, p=position, bg=background)


def random_named_scene(rng: random.Random) -> Scene:
    """What a caption says: one thing (some attributes left out) or two things and a relation."""
    background = rng.choice(list(BACKGROUNDS)) if rng.random() < 0.5 else None
    maybe = lambda options: rng.choice(options) if rng.random() < 0.8 else None  # noqa: E731
    if rng.random() < 0.5:
        thing = Thing(rng.choice(SHAPES), rng.choice(list(COLOURS)), maybe(list(SIZES)), maybe(list(ANCHORS)))
        return Scene((thing,), None, background)
    colours = rng.sample(list(COLOURS), 2)
    things = tuple(Thing(rng.choice(SHAPES), colour, maybe(list(SIZES)), None) for colour in colours)
    return Scene(things, rng.choice(list(RELATIONS)), background)


# A style of the community variants (training/testbed/community.py): what it draws where a caption leaves the
# background open, as (background, its share; the rest drawn uniformly). The testbed's autoencoder keeps the
# palette but flattens tints and gradients, so a style here is a preference among what it can show.
STYLES = {"plain": None, "bright": ("white", 0.85)}


def realise(rng: random.Random, named: Scene, style: str = "plain") -> Scene:
    """A full scene consistent with named: what the caption leaves out is drawn at random (the background as style
    prefers)."""
    anchors = RELATIONS[named.relation] if named.relation else [None]
    things = tuple(
        Thing(t.shape, t.colour, t.size or rng.choice(list(SIZES)), anchor or t.position or rng.choice(list(ANCHORS)))
        for t, anchor in zip(named.things, anchors)
    )
    return Scene(things, named.relation, named.background or open_background(rng, style))


def open_background(rng: random.Random, style: str) -> str:
    """The background of a caption that names none: uniform, or style's favourite at its share."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}: one of {', '.join(STYLES)}")
    if STYLES[style] and rng.random() < STYLES[style][1]:
        return STYLES[style][0]
    return rng.choice(list(BACKGROUNDS))


def coverage(shape: str, cx: float, cy: float, extent: float) -> np.ndarray:
    """Anti-aliased [SIZE, SIZE] coverage of one shape, by supersampling."""
    n = SIZE * SUPERSAMPLE
    coords = (np.arange(n) + 0.5) / SUPERSAMPLE
    x, y = np.meshgrid(coords, coords)
    half = extent / 2
    if shape == "circle":
        inside = (x - cx) ** 2 + (y - cy) ** 2 <= half ** 2
    elif shape == "square":
        inside = (np.abs(x - cx) <= half * 0.9) & (np.abs(y - cy) <= half * 0.9)
    else:  # an upright triangle whose base and height are the extent
        top, bottom = cy - half, cy + half
        t = np.clip((y - top) / extent, 0, 1)
        inside = (y >= top) & (y <= bottom) & (np.abs(x - cx) <= t * half)
    return inside.reshape(SIZE, SUPERSAMPLE, SIZE, SUPERSAMPLE).mean(axis=(1, 3))


def render(rng: random.Random, scene: Scene) -> np.ndarray:
    """An image of scene, uint8 [SIZE, SIZE, 3], with a little jitter in place, size and colour."""
    image = np.empty((SIZE, SIZE, 3), np.float32)
    image[:] = np.array(BACKGROUNDS[scene.background], np.float32) + rng.uniform(-8, 8)
    for thing in scene.things:
        ax, ay = ANCHORS[thing.position]
        extent = SIZES[thing.size] * rng.uniform(0.9, 1.1)
        jitter = 1.0 if scene.relation else 1.5
        cover = coverage(thing.shape, ax + rng.uniform(-jitter, jitter), ay + rng.uniform(-jitter, jitter), extent)[..., None]
        colour = np.array(COLOURS[thing.colour], np.float32) + np.array([rng.uniform(-12, 12) for _ in range(3)])
        image = image * (1 - cover) + np.clip(colour, 0, 255) * cover
    return np.clip(image + np.array([[rng.gauss(0, 2) for _ in range(3)]]), 0, 255).round().astype(np.uint8)


def make_dataset(count: int, seed: int, images_per_caption: int = 1, style: str = "plain"
                 ) -> tuple[np.ndarray, list[str], list[Scene], list[Scene]]:
    """count images [N, SIZE, SIZE, 3] uint8, their captions, the named scenes and the drawn scenes.

    Each caption is drawn images_per_caption times with different unnamed details.
    """
    rng = random.Random(seed)
    images = np.empty((count, SIZE, SIZE, 3), np.uint8)
    captions, named_scenes, drawn_scenes = [], [], []
    for index in range(count):
        if index % images_per_caption == 0:
            named = random_named_scene(rng)
            text = caption(rng, named)
        drawn = realise(rng, named, style)
        images[index] = render(rng, drawn)
        captions.append(text)
        named_scenes.append(named)
        drawn_scenes.append(drawn)
    return images, captions, named_scenes, drawn_scenes


# What a negative prompt can name of what a caption leaves open: the attribute, its values and their words.
NEGATABLE = {"background": BACKGROUND_WORDS, "size": SIZE_WORDS, "position": POSITION_WORDS}


@dataclass(frozen=True)
class NegationCase:
    """A prompt that leaves one attribute open, and a negative prompt naming one value of it."""

    caption: str
    scene: Scene
    attribute: str  # "background", "size" or "position"
    value: str  # the value the negative names ("black", "large", "left")
    negative: str  # its words ("on a black background", "huge", "on the left")


def leaves_open(scene: Scene, attribute: str) -> bool:
    """Whether the caption of scene leaves attribute open (size and position: of a prompt's single thing)."""
    if attribute == "background":
        return scene.background is None
    single = len(scene.things) == 1
    return single and getattr(scene.things[0], attribute) is None


def negation_cases(count: int, seed: int) -> list[NegationCase]:
    """count prompts, each leaving one attribute open (drawn in turn: background, size, position), with a negative
    prompt that names one of its values in one of the captions' own phrasings."""
    rng = random.Random(seed)
    cases = []
    for index in range(count):
        attribute = list(NEGATABLE)[index % len(NEGATABLE)]
        scene = random_named_scene(rng)
        while not leaves_open(scene, attribute):
            scene = random_named_scene(rng)
        value = rng.choice(list(NEGATABLE[attribute]))
        cases.append(NegationCase(caption(rng, scene), scene, attribute, value, rng.choice(NEGATABLE[attribute][value])))
    return cases
