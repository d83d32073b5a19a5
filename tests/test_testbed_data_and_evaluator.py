import numpy as np
import pytest

from dice_pack.training.testbed.data import COLOUR_WORDS, SHAPE_WORDS, Scene, Thing, make_dataset
from dice_pack.training.testbed.evaluator import alignment, check


@pytest.fixture(scope="module")
def held_out():
    return make_dataset(300, seed=99)


def test_dataset_is_deterministic_per_seed():
    a, b, c = make_dataset(20, seed=5), make_dataset(20, seed=5), make_dataset(20, seed=6)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]
    assert not np.array_equal(a[0], c[0])


def test_captions_name_each_objects_colour_and_shape_with_a_synonym(held_out):
    _, captions, named, _ = held_out
    for text, scene in zip(captions, named):
        for thing in scene.things:
            assert any(word in text for word in COLOUR_WORDS[thing.colour])
            assert any(word in text for word in SHAPE_WORDS[thing.shape])


def test_several_images_per_caption_differ_in_what_the_caption_leaves_out():
    images, captions, _, _ = make_dataset(40, seed=3, images_per_caption=4)
    assert captions[0] == captions[3] != captions[4]
    assert not np.array_equal(images[0], images[1])


def test_the_evaluator_scores_real_held_out_images_as_right(held_out):
    images, _, named, _ = held_out
    assert alignment(images, named) >= 98.0


def test_the_evaluator_scores_noise_and_blank_images_as_wrong(held_out):
    images, _, named, _ = held_out
    noise = np.random.default_rng(0).integers(0, 256, images.shape, dtype=np.uint8)
    assert alignment(noise, named) == 0.0
    assert alignment(np.full_like(images, 110), named) == 0.0


def test_the_evaluator_notices_a_wrong_shape_colour_size_or_position(held_out):
    images, _, _, drawn = held_out
    index = next(i for i, s in enumerate(drawn) if len(s.things) == 1)
    thing, scene = drawn[index].things[0], drawn[index]
    assert all(check(images[index], scene).values())
    wrong = {
        "shape": Thing("square" if thing.shape != "square" else "circle", thing.colour, thing.size, thing.position),
        "colour": Thing(thing.shape, "green" if thing.colour != "green" else "red", thing.size, thing.position),
        "size": Thing(thing.shape, thing.colour, "small" if thing.size == "large" else "large", thing.position),
        "position": Thing(thing.shape, thing.colour, thing.size, "center" if thing.position != "center" else "left"),
    }
    for name, other in wrong.items():
        assert not all(check(images[index], Scene((other,), None, scene.background)).values()), name
