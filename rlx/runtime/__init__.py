"""What a run needs around the training math: checkpoints, torchrun processes (``dist``), fault injection,
speed settings and the console view. Imports nothing above the models."""
