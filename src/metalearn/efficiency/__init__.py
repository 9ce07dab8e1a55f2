"""Efficiency of the meta-gradients (issue 6): time and peak memory of one batched meta-gradient
against the inner steps K, its accuracy against exact MAML, and throughput against ``higher``.

The problems have the shapes of two benchmarks, with seeded random data (time and memory do
not depend on the values, and accuracy is relative to MAML on the same data):

* ``cf_mlp``: the collaborative-filtering MLP (100 item features -> 40 -> 40 -> 1, tanh, MSE),
  10 support and 15 query ratings per task (MovieLens 10shot-15val);
* ``omniglot_conv4``: Conv4 (64 filters, 28 x 28, 5 classes, cross-entropy) on 5-way 1-shot
  tasks with one query image per class, as in the MAML protocol's meta-training.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` minus the allocation before the call;
on CPU each point runs in a fresh process (:func:`run_point`): the kernel's peak resident set
size of that process (``VmHWM``, reset through ``/proc/self/clear_refs`` once torch is loaded)
over building the problem and its first meta-gradient, minus the resident size at that reset:

The package, one job per module: :mod:`~metalearn.efficiency.problems` (the problems, and each
learner as meta-training starts it),
:mod:`~metalearn.efficiency.time_memory` (time and peak memory, a point per process),
:mod:`~metalearn.efficiency.grad_accuracy` (error against exact MAML),
:mod:`~metalearn.efficiency.throughput` (steps per second against the peers and a reference),
:mod:`~metalearn.efficiency.references` (each learner written independently: the hand-written
``torch.func`` reference and the peer libraries' forms),
:mod:`~metalearn.efficiency.summary` (the targets and the Markdown summary),
:mod:`~metalearn.efficiency.plots` (the figures; matplotlib only there) and
:mod:`~metalearn.efficiency.stage` (the stage and ``python -m metalearn.efficiency``).
"""

from metalearn.efficiency.grad_accuracy import accuracy, accuracy_sweep
from metalearn.efficiency.plots import plot_accuracy, plot_time_memory
from metalearn.efficiency.problems import PROBLEMS, Problem, first_iteration, make_problem
from metalearn.efficiency.references import higher_maml, reference
from metalearn.efficiency.stage import main, run_stage, variant_specs
from metalearn.efficiency.summary import summary_markdown, targets, write_summary
from metalearn.efficiency.throughput import forms, max_rel_diff, peers, steps_per_second
from metalearn.efficiency.time_memory import measure, run_point, sweep

__all__ = [
    "PROBLEMS",
    "Problem",
    "accuracy",
    "accuracy_sweep",
    "first_iteration",
    "forms",
    "higher_maml",
    "main",
    "make_problem",
    "max_rel_diff",
    "measure",
    "peers",
    "plot_accuracy",
    "plot_time_memory",
    "reference",
    "run_point",
    "run_stage",
    "steps_per_second",
    "summary_markdown",
    "sweep",
    "targets",
    "variant_specs",
    "write_summary",
]
