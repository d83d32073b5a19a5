"""What the testbed benchmarks share: importing the pack, scoring images, the gap-closure figure."""
from __future__ import annotations

import sys
from pathlib import Path


def load_pack():
    """Import the pack as a package, as ComfyUI does, with the trainer's own loader."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
    from train import load_pack as load_as_package

    load_as_package()


def closure(value: float, unguided: float, cfg: float) -> float:
    """The fraction of the unguided-to-CFG gap that value closes (1 = as good as CFG)."""
    return (value - unguided) / (cfg - unguided) if cfg != unguided else float("nan")


class Scorer:
    """Alignment and Fréchet distance of generated images for the first `count` held-out prompts."""

    def __init__(self, testbed, count: int, prompt_seed: int = 1234) -> None:
        from dice_pack.training.testbed.features import image_features
        from dice_pack.training.testbed.model import evaluation_prompts

        self.testbed, self.count = testbed, count
        # FD compares against 5,000 real images at least, so small prompt counts do not inflate it.
        self.captions, self.named, self.real = evaluation_prompts(max(count, 5000), prompt_seed)
        self.real_features = image_features(testbed.features, self.real)

    def score(self, images) -> dict:
        from dice_pack.training.testbed.evaluator import alignment
        from dice_pack.training.testbed.features import frechet_distance, image_features

        return {"alignment": alignment(images, self.named[:self.count]),
                "fd": frechet_distance(image_features(self.testbed.features, images), self.real_features)}


def add_testbed_arguments(parser) -> None:
    """The options every testbed bench takes."""
    parser.add_argument("--sharpener", required=True, help="a sharpener trained on the testbed")
    parser.add_argument("--prompts", type=int, default=1000, help="held-out prompts (seeds 0…N-1)")
    parser.add_argument("--steps", type=int, default=20, help="DPM-Solver++(2M) steps")


class TestbedBench:
    """The testbed, a sharpener, the scorer and the held-out prompts' embeddings, as the options ask."""

    def __init__(self, options) -> None:
        load_pack()
        from dice_pack.sharpeners import load_sharpener
        from dice_pack.training.testbed.model import Testbed

        self.testbed = Testbed.load()
        self.sharpener = load_sharpener(options.sharpener).network
        self.count, self.steps = options.prompts, options.steps
        self.scorer = Scorer(self.testbed, self.count)
        self.prompts = self.scorer.captions[:self.count]
        self.context, self.null = self.testbed.encode_prompts(self.prompts), self.testbed.null_embedding()
        self.seeds = list(range(self.count))
