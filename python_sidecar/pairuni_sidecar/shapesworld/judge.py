"""GenEval-style checking of a prompt spec against a list of objects (detected or ground truth).

Each prompt becomes a list of named constraints; the graded reward is the fraction satisfied and
the binary reward is whether all are. Partial credit (right shape, wrong colour; right objects,
wrong count) gives RL a denser signal than GenEval's 0/1.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from .prompts import Phrase, PromptSpec
from .scenes import relation_of


class ObjLike(Protocol):
    shape: str
    color: str
    row: int
    col: int


def _matches(o: ObjLike, p: Phrase, *, use_color: bool = True) -> bool:
    return o.shape == p.shape and (not use_color or p.color is None or o.color == p.color)


def constraints(spec: PromptSpec, objects: Sequence[ObjLike]) -> list[tuple[str, bool]]:
    """(name, satisfied) for every constraint the prompt implies."""
    out: list[tuple[str, bool]] = []
    for k, p in enumerate(spec.phrases):
        if p.color is not None:  # partial credit for the right shape in the wrong colour
            out.append((f"p{k}:shape_present", any(_matches(o, p, use_color=False) for o in objects)))
        n = sum(_matches(o, p) for o in objects)
        out.append((f"p{k}:present", n >= 1))
        out.append((f"p{k}:count=={p.count}", n == p.count))
    total = sum(p.count for p in spec.phrases)
    out.append((f"total=={total}", len(objects) == total))
    if spec.relation is not None:
        a_p, b_p = spec.phrases
        ok = any(
            relation_of(a, b) == spec.relation
            for a in objects
            if _matches(a, a_p)
            for b in objects
            if _matches(b, b_p) and b is not a
        )
        out.append((f"relation:{spec.relation}", ok))
    return out


def judge(spec: PromptSpec, objects: Sequence[ObjLike]) -> tuple[float, bool]:
    """(graded score in [0, 1], all satisfied)."""
    cs = constraints(spec, objects)
    sat = sum(ok for _, ok in cs)
    return sat / len(cs), sat == len(cs)
