"""The Automatic1111 / Forge extension's glue (scripts/dice_webui.py is the host's side)."""
