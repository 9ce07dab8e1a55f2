"""The learners, found by file: every module of this package that defines a
:class:`~metalearn.algorithms.base.MetaLearner` subclass with a ``name`` adds that learner, and
``make`` builds one by name. A new learner is one new file here (docs/learners.md "Add a learner").

>>> learner = make("adjoint", steps=50, inner_lr=0.01, scheme="heun")
>>> adapted = learner.adapt(loss_fn, params, support)                # doctest: +SKIP
>>> grads = learner.meta_grad(loss_fn, params, support, query)       # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any

from metalearn.algorithms.base import Fitted, MetaLearner, Option


def _discover() -> dict[str, type[MetaLearner]]:
    found: dict[str, type[MetaLearner]] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, MetaLearner) and cls.__module__ == module.__name__:
                name = getattr(cls, "name", None)
                if name is None:
                    continue
                if name in found and found[name] is not cls:
                    raise ImportError(
                        f"two learners are named {name!r}: {found[name].__module__} and "
                        f"{module.__name__}; rename one (its class's name attribute)"
                    )
                found[name] = cls
    return dict(sorted(found.items()))


#: Every learner by name, in the order of the names.
REGISTRY: dict[str, type[MetaLearner]] = _discover()
NAMES: tuple[str, ...] = tuple(REGISTRY)
#: The meta-learners, and the baselines they are compared with.
META_LEARNERS: tuple[str, ...] = tuple(n for n, cls in REGISTRY.items() if not cls.baseline)
BASELINES: tuple[str, ...] = tuple(n for n, cls in REGISTRY.items() if cls.baseline)


def make(name: str, steps: int, inner_lr: float, **options: Any) -> MetaLearner:
    """Build the learner ``name`` (one of :data:`NAMES`) with K = ``steps`` inner steps of size
    ``inner_lr``. ``adapt_keys`` (parameter names or dotted prefixes) restricts the inner loop to
    those parameters; the other options are the learner's own (its class's ``options``)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown learner {name!r}; valid learners: {', '.join(NAMES)}")
    return REGISTRY[name](steps=steps, inner_lr=inner_lr, **options)


__all__ = ["BASELINES", "META_LEARNERS", "NAMES", "REGISTRY", "Fitted", "MetaLearner", "Option"]
__all__ += ["make"]
