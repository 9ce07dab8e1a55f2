"""Test-session settings."""

import torch

# The tests' models are tiny: with one thread per core, torch's OpenMP threads mostly spin
# (measured ~30x slower on a 2-core machine), so the suite runs single-threaded.
torch.set_num_threads(1)
