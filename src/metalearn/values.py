"""What a ``params.yaml`` key allows, as types pydantic validates: the config's sections and the
learners' own options (:class:`metalearn.algorithms.base.Option`) use the same ones.

Strict: no bool for a number, no float for an integer, no string for either (an integer is
accepted for a float); NaN and infinity are rejected where the section says so."""

import re
from typing import Annotated

from pydantic import AfterValidator, Field, Strict

Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]
AtLeast1 = Annotated[Int, Field(ge=1)]
NonNegative = Annotated[Int, Field(ge=0)]
Positive = Annotated[Float, Field(gt=0, allow_inf_nan=False)]
Fraction = Annotated[Float, Field(gt=0, lt=1)]
Weight = Annotated[Float, Field(ge=0, allow_inf_nan=False)]  # a shrinkage or a decay: >= 0
#: One or more numbers >= 0, e.g. a grid of candidates a fitted baseline chooses from.
Grid = Annotated[list[Weight], Field(min_length=1)]


def _plain(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError("must be a plain name (letters, digits, '-', '_'), never a path")
    return name


#: What a name that becomes part of a file path may be: letters, digits, '-' and '_'.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
#: A name that becomes part of a file path (a dataset, setting, benchmark or learner).
Name = Annotated[Str, AfterValidator(_plain)]
