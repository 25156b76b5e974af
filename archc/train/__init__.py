"""Training and evaluation: recipes, the loop, checkpoints, multi-process."""
