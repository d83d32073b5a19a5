"""Adapters from ComfyUI's types to sharpeners/; mappings.py (which imports ComfyUI) registers the nodes."""
