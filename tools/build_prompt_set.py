"""Write training/prompts/sd_prompts.txt: the prompts `train.py --ckpt` trains on when no --data is given.

    python tools/build_prompt_set.py [--count 3000] [--seed 2026]

Prompts the way people write them for SD1.5 and SDXL checkpoints: tag lists with quality words, photographic
prompts with camera terms, plain sentences, one or two words, and long prompts past CLIP's 75 tokens; subjects from
portraits to food, styles from photographs to pixel art. No real person's or living artist's name. The same seed
writes the same file.
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "training" / "prompts" / "sd_prompts.txt"

PEOPLE = ["a young woman", "an old man", "a little girl", "a teenage boy", "a middle-aged woman", "a bearded man",
          "an elderly woman", "a young man", "a child", "a grandmother", "a dancer", "a fisherman", "a chef",
          "a street musician", "a farmer", "a scientist", "a nurse", "a blacksmith", "a ballerina", "a monk",
          "a skateboarder", "a violinist", "a firefighter", "a gardener", "a painter", "a surfer", "a mountaineer",
          "a bride", "a soldier", "a librarian", "a boxer", "a tailor", "a shepherd", "a pilot", "a detective"]
CHARACTERS = ["a knight in ornate armor", "a wizard with a glowing staff", "an elven archer", "a cyberpunk hacker",
              "an astronaut", "a samurai", "a pirate captain", "a steampunk inventor", "a witch", "a viking warrior",
              "a space marine", "a forest druid", "a necromancer", "a paladin", "a desert nomad", "a ninja",
              "a mermaid", "a vampire countess", "a robot butler", "an android girl", "a goblin merchant",
              "a dwarven smith", "a fairy", "a sorceress", "a bounty hunter", "a masked assassin", "a clockwork soldier",
              "a sky pirate", "a shaman", "a valkyrie", "an alchemist", "a mecha pilot", "a magical girl"]
ANIMALS = ["a red fox", "a tabby cat", "a golden retriever", "a snowy owl", "a tiger", "an elephant", "a hummingbird",
           "a wolf", "a panda", "a horse", "a koala", "a peacock", "a chameleon", "a corgi", "a lion", "a polar bear",
           "a jellyfish", "a sea turtle", "a raccoon", "a deer", "a hedgehog", "a parrot", "an octopus", "a husky",
           "a black cat", "a rabbit", "a frog", "a butterfly", "a whale", "a flamingo", "a bulldog", "a squirrel",
           "a barn owl", "a snow leopard", "a dragonfly", "a goldfish", "a tortoise", "a crow", "an otter"]
CREATURES = ["a dragon", "a phoenix", "a griffin", "a unicorn", "a kraken", "a forest spirit", "a stone golem",
             "a tiny dragon", "a kitsune", "a giant mech", "a sea serpent", "a slime monster", "a treant",
             "a cute robot", "an alien creature", "a chimera", "a wyvern", "a ghost", "a mushroom creature"]
PLACES = ["a misty mountain valley", "a lighthouse on a rocky coast", "a neon-lit city street at night",
          "a quiet japanese garden", "a medieval castle on a hill", "a tropical beach", "a desert with sand dunes",
          "a snowy pine forest", "an underwater coral reef", "a futuristic megacity", "a cozy cabin in the woods",
          "a waterfall in a jungle", "a field of sunflowers", "an abandoned factory", "a venetian canal",
          "a cherry blossom park", "a volcanic landscape", "a frozen lake", "a bustling market", "a rainy london street",
          "an ancient temple ruin", "a floating island in the sky", "a lavender field", "a canyon at sunset",
          "a small fishing village", "a mountain lake with reflections", "a space station interior",
          "an alien planet with two moons", "a gothic cathedral", "a bamboo forest", "a foggy harbor",
          "a rooftop garden", "a subway station", "a wheat field under storm clouds", "a northern town in winter",
          "a swamp at dawn", "a cliffside monastery", "a suburban street in autumn", "a train station at dusk",
          "a sunken ship", "a crystal cave", "a savanna at golden hour", "a hot air balloon festival"]
INTERIORS = ["a cozy living room", "a library with tall bookshelves", "a modern kitchen", "a cluttered workshop",
             "an old bookstore", "a minimalist bedroom", "a greenhouse full of plants", "a coffee shop",
             "a throne room", "a wizard's study", "a laboratory", "a bathroom with marble tiles", "an attic",
             "a jazz bar", "a classroom", "a museum hall", "a spaceship cockpit", "a bakery", "a tea house"]
OBJECTS = ["a vintage camera", "a bowl of fruit", "a glass of red wine", "a stack of old books", "a pocket watch",
           "a pair of sneakers", "a bouquet of roses", "a steaming cup of coffee", "a potted cactus", "a sports car",
           "a vintage motorcycle", "a sailing ship", "a steam locomotive", "a typewriter", "an electric guitar",
           "a chess board", "a perfume bottle", "a leather backpack", "a ceramic vase", "a mechanical keyboard",
           "a crystal ball", "a treasure chest", "a lantern", "an old map", "a wristwatch", "a teapot",
           "a bicycle", "a red umbrella", "a pickup truck", "a fighter jet", "a skateboard", "a violin"]
FOODS = ["a slice of chocolate cake", "a bowl of ramen", "a stack of pancakes with syrup", "a margherita pizza",
         "sushi on a wooden board", "a cheeseburger with fries", "fresh croissants", "a bowl of salad",
         "tacos on a plate", "a fruit tart", "dumplings in a bamboo steamer", "a cup of matcha latte",
         "a loaf of sourdough bread", "ice cream in a waffle cone", "a plate of pasta", "macarons in pastel colors",
         "a breakfast of eggs and bacon", "a bowl of curry", "a cocktail with a lime slice", "a birthday cake"]
ACTIONS = ["standing", "sitting on a bench", "walking", "running", "reading a book", "looking at the viewer",
           "smiling", "laughing", "holding an umbrella", "drinking tea", "playing the guitar", "dancing",
           "looking over the shoulder", "sleeping", "riding a bicycle", "in a heroic pose", "casting a spell",
           "holding a sword", "leaning against a wall", "waving", "crouching", "jumping", "eating an apple"]
HAIR = ["long silver hair", "short black hair", "curly red hair", "blonde braids", "a messy bun", "blue hair",
        "pink twintails", "a shaved head", "wavy brown hair", "white hair", "green hair", "a ponytail"]
CLOTHES = ["a red dress", "a leather jacket", "a school uniform", "a kimono", "a hoodie", "a business suit",
           "a summer dress", "a trench coat", "a knitted sweater", "armor", "a wedding dress", "a raincoat",
           "a denim jacket", "a hanfu", "a military uniform", "a tracksuit", "a ball gown", "overalls"]
ADJECTIVES = ["beautiful", "majestic", "cute", "mysterious", "ancient", "futuristic", "tiny", "giant", "ethereal",
              "cozy", "abandoned", "colorful", "elegant", "fierce", "whimsical", "dramatic", "serene", "haunted",
              "glowing", "rusty", "ornate", "fluffy", "sleek", "weathered", "magical", "lonely", "playful"]
WEATHER_TIME = ["at sunset", "at dawn", "at night", "in the rain", "in the snow", "in the fog", "at golden hour",
                "under a starry sky", "at blue hour", "during a thunderstorm", "on a sunny day", "in autumn",
                "in spring", "at midnight", "under the northern lights", "on an overcast day", "in summer"]
LIGHTING = ["cinematic lighting", "soft lighting", "volumetric lighting", "rim light", "dramatic shadows",
            "backlit", "studio lighting", "natural light", "neon lights", "god rays", "candlelight",
            "moody lighting", "warm light", "harsh sunlight", "bioluminescent glow", "diffused light"]
COMPOSITION = ["close-up", "full body", "portrait", "wide shot", "aerial view", "from below", "from above",
               "side view", "upper body", "macro shot", "symmetrical composition", "rule of thirds", "panorama",
               "isometric view", "extreme close-up", "cowboy shot", "dutch angle", "establishing shot"]
CAMERA = ["85mm lens", "35mm", "50mm f/1.8", "shallow depth of field", "bokeh", "film grain", "kodak portra 400",
          "shot on a DSLR", "long exposure", "tilt-shift", "wide-angle lens", "telephoto lens", "f/2.8",
          "ISO 100", "fujifilm", "polaroid", "35mm film photo", "sharp focus", "high dynamic range"]
ART_STYLES = ["oil painting", "watercolor painting", "digital painting", "concept art", "anime style",
              "studio anime screenshot", "3d render", "pixel art", "ink drawing", "pencil sketch", "charcoal drawing",
              "ukiyo-e woodblock print", "art nouveau poster", "low poly", "claymation", "stained glass",
              "vector illustration", "comic book style", "cel shaded", "impressionist painting", "pop art",
              "isometric 3d render", "gouache illustration", "children's book illustration", "fantasy art",
              "matte painting", "synthwave art", "vaporwave", "baroque painting", "paper cutout art",
              "origami", "chibi", "cyberpunk art", "surrealist painting", "line art", "tarot card illustration",
              "retro 80s poster", "dark fantasy art", "storybook illustration", "papercraft diorama"]
MEDIUM_WORDS = ["trending on artstation", "highly detailed", "intricate details", "octane render", "unreal engine",
                "8k", "4k", "ultra detailed", "sharp focus", "award winning", "professional", "hyperrealistic",
                "photorealistic", "smooth", "elegant", "detailed background", "depth of field", "vibrant colors",
                "pastel colors", "muted colors", "high contrast", "monochrome", "black and white", "sepia"]
QUALITY = ["masterpiece", "best quality", "high quality", "ultra detailed", "absurdres", "highres", "8k wallpaper",
           "extremely detailed", "official art", "beautiful detailed eyes", "perfect lighting"]
COLORS = ["red", "blue", "green", "golden", "purple", "white", "black", "orange", "teal", "pink", "silver"]


def pick(rng: random.Random, words: list[str], low: int, high: int) -> list[str]:
    return rng.sample(words, rng.randint(low, high))


def subject(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.3:
        person = rng.choice(PEOPLE + CHARACTERS)
        extras = [f"with {rng.choice(HAIR)}"] if rng.random() < 0.4 else []
        extras += [f"wearing {rng.choice(CLOTHES)}"] if rng.random() < 0.4 else []
        extras += [rng.choice(ACTIONS)] if rng.random() < 0.5 else []
        return " ".join([person, *extras])
    if kind < 0.5:
        animal = rng.choice(ANIMALS + CREATURES)
        return f"{rng.choice(ADJECTIVES)} {animal.split(' ', 1)[1]}" if rng.random() < 0.4 else animal
    if kind < 0.7:
        return rng.choice(PLACES + INTERIORS)
    if kind < 0.85:
        return rng.choice(OBJECTS)
    return rng.choice(FOODS)


def tag_prompt(rng: random.Random) -> str:
    """The SD1.5 community's comma-separated tags, quality words first."""
    parts = pick(rng, QUALITY, 1, 3) + [subject(rng)]
    parts += pick(rng, LIGHTING, 0, 1) + pick(rng, COMPOSITION, 0, 1) + pick(rng, MEDIUM_WORDS, 1, 3)
    if rng.random() < 0.3:
        parts.append(rng.choice(WEATHER_TIME))
    return ", ".join(parts)


def photo_prompt(rng: random.Random) -> str:
    opener = rng.choice(["RAW photo of", "a photo of", "photograph of", "a candid photo of", "professional photo of",
                         "a street photograph of", "a portrait photo of", "a product photo of", "a wildlife photo of"])
    parts = [f"{opener} {subject(rng)}"] + pick(rng, WEATHER_TIME, 0, 1) + pick(rng, CAMERA, 1, 3)
    parts += pick(rng, LIGHTING, 0, 1) + pick(rng, ["detailed skin", "realistic", "sharp focus", "8k uhd",
                                                   "high quality", "natural colors", "editorial"], 0, 2)
    return ", ".join(parts)


def art_prompt(rng: random.Random) -> str:
    style = rng.choice(ART_STYLES)
    form = rng.random()
    if form < 0.5:
        head = f"{style} of {subject(rng)}"
    elif form < 0.8:
        head = f"{subject(rng)}, {style}"
    else:
        head = f"{subject(rng)} in the style of {rng.choice(['a renaissance fresco', 'a vintage travel poster', 'a medieval manuscript', 'a 90s anime', 'a pulp magazine cover', 'a japanese woodblock print', 'a victorian engraving', 'a soviet propaganda poster', 'a video game cutscene', 'a hand-drawn animated film'])}"
    return ", ".join([head] + pick(rng, WEATHER_TIME, 0, 1) + pick(rng, MEDIUM_WORDS, 0, 3) + pick(rng, LIGHTING, 0, 1))


def sentence_prompt(rng: random.Random) -> str:
    """SDXL's natural-language habit: a sentence or two."""
    first = f"{subject(rng)} {rng.choice(WEATHER_TIME)}".strip()
    first = first[0].upper() + first[1:]
    details = rng.choice([
        f"The scene is lit by {rng.choice(LIGHTING)} and the colors are {rng.choice(['warm', 'cool', 'muted', 'vivid', 'pastel', 'earthy'])}.",
        f"In the background there is {rng.choice(PLACES + INTERIORS)}.",
        f"Shot as a {rng.choice(COMPOSITION)} with {rng.choice(CAMERA)}.",
        f"Everything is {rng.choice(COLORS)} and {rng.choice(COLORS)}, {rng.choice(ART_STYLES)}.",
        f"A {rng.choice(ADJECTIVES)} mood, {rng.choice(MEDIUM_WORDS)}.",
        "",
    ])
    return f"{first}. {details}".strip()


def short_prompt(rng: random.Random) -> str:
    """One subject and little else, as newcomers type."""
    return rng.choice([subject(rng), f"{rng.choice(ADJECTIVES)} {rng.choice(PLACES)}", rng.choice(ANIMALS),
                       f"{rng.choice(COLORS)} {rng.choice(OBJECTS).split(' ', 1)[1]}", rng.choice(FOODS)])


def long_prompt(rng: random.Random) -> str:
    """Past CLIP's 75 tokens: ComfyUI encodes it in chunks of 77."""
    parts = pick(rng, QUALITY, 2, 4) + [subject(rng), subject(rng)] + pick(rng, LIGHTING, 2, 3)
    parts += pick(rng, COMPOSITION, 1, 2) + pick(rng, CAMERA, 2, 3) + pick(rng, MEDIUM_WORDS, 4, 7)
    parts += [rng.choice(WEATHER_TIME), rng.choice(ART_STYLES), f"{rng.choice(COLORS)} and {rng.choice(COLORS)} palette"]
    parts += pick(rng, ADJECTIVES, 2, 4)
    return ", ".join(parts)


KINDS = [(tag_prompt, 0.30), (photo_prompt, 0.20), (art_prompt, 0.22), (sentence_prompt, 0.15), (short_prompt, 0.08),
         (long_prompt, 0.05)]


def build(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    makers, weights = zip(*KINDS)
    prompts: dict[str, None] = {}
    while len(prompts) < count:
        prompts[rng.choices(makers, weights)[0](rng)] = None
    return list(prompts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=2026)
    options = parser.parse_args()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# {options.count} prompts for training a DICE sharpener without a dataset (train.py --ckpt with no "
              f"--data).\n# Written by tools/build_prompt_set.py --count {options.count} --seed {options.seed}; "
              "lines starting with # are skipped.\n")
    OUT.write_text(header + "\n".join(build(options.count, options.seed)) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
