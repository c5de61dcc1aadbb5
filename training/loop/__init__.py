"""The training loop: one step, its state, losses, devices under torchrun, progress and Ctrl-C."""
