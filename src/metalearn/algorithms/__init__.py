"""The meta-learners behind one interface, and ``make`` to build one by name.

>>> learner = make("adjoint", steps=50, inner_lr=0.01, scheme="heun")
>>> adapted = learner.adapt(loss_fn, params, support)                # doctest: +SKIP
>>> grads = learner.meta_grad(loss_fn, params, support, query)       # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from metalearn.algorithms.adjoint import AdjointMAML
from metalearn.algorithms.base import MetaLearner
from metalearn.algorithms.baselines import Pretrain, Scratch
from metalearn.algorithms.bias import Bias
from metalearn.algorithms.fomaml import FOMAML
from metalearn.algorithms.imaml import IMAML
from metalearn.algorithms.maml import MAML
from metalearn.algorithms.reptile import Reptile

REGISTRY: dict[str, type[MetaLearner]] = {
    cls.name: cls for cls in (MAML, FOMAML, Reptile, IMAML, AdjointMAML, Pretrain, Scratch, Bias)
}
NAMES: tuple[str, ...] = tuple(REGISTRY)


def make(name: str, steps: int, inner_lr: float, **options: Any) -> MetaLearner:
    """Build the learner ``name`` (one of :data:`NAMES`) with K = ``steps`` inner steps of size
    ``inner_lr``. ``adapt_keys`` (parameter names or dotted prefixes) restricts the inner loop to
    those parameters; the other options are the learner's own (see its class)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown learner {name!r}; valid learners: {', '.join(NAMES)}")
    cls = REGISTRY[name]
    allowed = ("adapt_keys", *cls.options)
    for key, value in options.items():
        if key not in allowed:
            raise ValueError(
                f"unknown option {key}={value!r} for learner {name!r}; "
                f"its options: steps, inner_lr, {', '.join(allowed)}"
            )
    return cls(steps=steps, inner_lr=inner_lr, **options)


__all__ = ["NAMES", "REGISTRY", "MetaLearner", "make"]
