"""Training and inference loops, optimisation, checkpoints."""
