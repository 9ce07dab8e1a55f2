"""The adjoint learner keeps no autograd graph across inner steps: its peak memory does not grow
with K (checkpoint: sqrt(K) states; reverse: O(1)), while MAML's does (the control)."""

import json
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, resource, torch
torch.set_num_threads(1)  # the tests run single-threaded (conftest.py); 2 threads spin on this VM
from metalearn.algorithms import make
torch.manual_seed(0)
width, n = 384, 64  # about 150k float64 parameters: 1.2 MB a state
params = {
    "l1.weight": torch.randn(width, 4, dtype=torch.float64) / 2,
    "l1.bias": torch.zeros(width, dtype=torch.float64),
    "l2.weight": torch.randn(width, width, dtype=torch.float64) / width**0.5,
    "l2.bias": torch.zeros(width, dtype=torch.float64),
    "head.weight": torch.randn(1, width, dtype=torch.float64) / width**0.5,
    "head.bias": torch.zeros(1, dtype=torch.float64),
}
def loss(p, batch):
    x, y = batch
    h = torch.tanh(x @ p["l1.weight"].T + p["l1.bias"])
    h = torch.tanh(h @ p["l2.weight"].T + p["l2.bias"])
    return ((h @ p["head.weight"].T + p["head.bias"]).squeeze(-1) - y).pow(2).mean()
x = torch.randn(n, 4, dtype=torch.float64)
task = (x, x.sin().sum(-1))
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
def grow(name, steps, **opts):
    before = peak_mb()
    make(name, steps=steps, inner_lr=0.01, **opts).meta_grad(loss, params, task, task)
    return peak_mb() - before
out = {}
for trajectory in ("reverse", "checkpoint"):
    grow("adjoint", 2, trajectory=trajectory)  # warm-up: allocator and torch.func caches
    out[trajectory] = grow("adjoint", 200, trajectory=trajectory)
out["maml"] = grow("maml", 200)
print(json.dumps(out))
"""


@pytest.mark.slow
def test_adjoint_memory_is_flat_in_steps_while_maml_grows():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=300
    )
    growth = json.loads(result.stdout.strip().splitlines()[-1])
    # measured: maml ~1200 MB, checkpoint ~70 MB (2 sqrt(K) states + allocator slack), reverse ~5 MB
    assert growth["maml"] > 300, growth  # K=200 unrolled: the test can see a graph
    assert growth["checkpoint"] < 0.1 * growth["maml"], growth
    assert growth["reverse"] < 20, growth
