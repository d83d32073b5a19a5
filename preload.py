"""Automatic1111 / Forge read this before parsing the command line: the extension's own option."""


def preload(parser):
    parser.add_argument("--dice-sharpeners-dir", type=str, default=None,
                        help="DICE: folder of sharpener .safetensors files (default: models/sharpeners)")
