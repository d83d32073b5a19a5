"""Developer tools: fixture checkpoints, example-workflow generation, UI→API workflow conversion."""
