"""Parsing ShapesWorld generation prompts into structured specs (the reward's view of a prompt).

Grammar (lower-cased, whitespace-separated; an optional leading "a photo of" is ignored):
    prompt := phrase [ ("and" | RELATION) phrase ]
    phrase := QUANTITY [COLOR] SHAPE
"""

from __future__ import annotations

from dataclasses import dataclass

from .vocab import COLORS, RELATIONS, SHAPES, SINGULARS, WORD_COUNTS

_QUANTITY = {"a": 1, "an": 1, **WORD_COUNTS}


@dataclass(frozen=True)
class Phrase:
    count: int
    color: str | None
    shape: str


@dataclass(frozen=True)
class PromptSpec:
    phrases: tuple[Phrase, ...]
    relation: str | None = None  # between phrases[0] and phrases[1]


class PromptError(ValueError):
    """A prompt outside the ShapesWorld grammar."""


def _phrase(words: list[str], i: int, prompt: str) -> tuple[Phrase, int]:
    if i >= len(words) or words[i] not in _QUANTITY:
        raise PromptError(f"expected a quantity (a/one..four) at word {i} of {prompt!r}")
    count, i = _QUANTITY[words[i]], i + 1
    color = None
    if i < len(words) and words[i] in COLORS:
        color, i = words[i], i + 1
    if i >= len(words):
        raise PromptError(f"missing shape at the end of {prompt!r}")
    w = words[i]
    shape = w if w in SHAPES else SINGULARS.get(w)
    if shape is None:
        raise PromptError(f"unknown shape {w!r} in {prompt!r}; known: {list(SHAPES)}")
    return Phrase(count, color, shape), i + 1


def parse_prompt(prompt: str) -> PromptSpec:
    words = prompt.lower().replace(",", " ").replace(".", " ").split()
    if words[:3] == ["a", "photo", "of"]:
        words = words[3:]
    first, i = _phrase(words, 0, prompt)
    if i == len(words):
        return PromptSpec((first,))
    relation = None
    if words[i] == "and":
        i += 1
    else:
        for rel in RELATIONS:
            parts = rel.split()
            if words[i : i + len(parts)] == parts:
                relation, i = rel, i + len(parts)
                break
        else:
            raise PromptError(f"expected 'and' or a relation {list(RELATIONS)} at word {i} of {prompt!r}")
    second, i = _phrase(words, i, prompt)
    if i != len(words):
        raise PromptError(f"trailing words {words[i:]} in {prompt!r}")
    return PromptSpec((first, second), relation)
