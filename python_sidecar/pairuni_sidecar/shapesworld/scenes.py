"""Scenes and their text: sampling a scene per category, the generation prompt (caption) and the
multiple-choice question that both describe the same scene.

Every item is drawn from its own ``numpy`` generator seeded by (seed, split salt, index), so items
are reproducible one by one and splits never share a random stream. Each split draws only the items
its role admits (``heldout.py``): evaluation splits hold reserved prompts or scenes that no
training split can produce.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .heldout import admissible
from .vocab import CATEGORIES, COLORS, COUNT_WORDS, GRID, PLURALS, RELATIONS, SHAPES

COLOR_NAMES = tuple(COLORS)
LETTERS = "ABCD"


@dataclass(frozen=True)
class Obj:
    shape: str
    color: str
    row: int
    col: int


@dataclass(frozen=True)
class Item:
    """One scene with both task views: a caption for generation and an MCQ for understanding."""

    category: str
    objects: tuple[Obj, ...]
    prompt: str
    question: str
    choices: tuple[str, ...]
    answer: str  # letter


def relation_of(a, b) -> str | None:
    """Where ``a`` (anything with ``row``/``col``) is relative to ``b`` by the dominant axis; None on a
    diagonal tie (ambiguous). Scenes and the reward judge share this one definition."""
    dx, dy = a.col - b.col, a.row - b.row
    if abs(dx) == abs(dy):
        return None
    if abs(dx) > abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


def _cells(rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
    flat = rng.choice(GRID * GRID, size=n, replace=False)
    return [(int(i) // GRID, int(i) % GRID) for i in flat]


def _pick(rng: np.random.Generator, seq, n: int = 1, exclude=()):
    pool = [x for x in seq if x not in exclude]
    idx = rng.choice(len(pool), size=n, replace=False)
    return [pool[int(i)] for i in idx]


def _mcq(rng: np.random.Generator, correct: str, pool: list[str]) -> tuple[tuple[str, ...], str]:
    """Four choices in the pool's canonical order: ``correct`` plus three distinct distractors.

    Canonical (not shuffled) order keeps the letter a fixed function of the answer for each
    question type, so a tiny model learns to *see* the answer instead of first having to learn a
    text-matching lookup (with shuffled options it stayed at chance after 1500 SFT steps).
    """
    distractors = _pick(rng, pool, 3, exclude=(correct,))
    choices = tuple(sorted([correct, *distractors], key=pool.index))
    return choices, LETTERS[choices.index(correct)]


def _noun(shape: str, n: int) -> str:
    return shape if n == 1 else PLURALS[shape]


def sample_item(rng: np.random.Generator, category: str) -> Item:
    if category == "single_object":
        (shape,), (color,) = _pick(rng, SHAPES), _pick(rng, COLOR_NAMES)
        objs = [Obj(shape, color, *_cells(rng, 1)[0])]
        prompt = f"a {shape}"
        question = "what shape is in the image?"
        choices, ans = _mcq(rng, shape, list(SHAPES))
    elif category == "colors":
        (shape,), (color,) = _pick(rng, SHAPES), _pick(rng, COLOR_NAMES)
        objs = [Obj(shape, color, *_cells(rng, 1)[0])]
        prompt = f"a {color} {shape}"
        question = f"what color is the {shape}?"
        choices, ans = _mcq(rng, color, list(COLOR_NAMES))
    elif category == "two_object":
        s1, s2 = _pick(rng, SHAPES, 2)
        c1, c2 = (_pick(rng, COLOR_NAMES)[0] for _ in range(2))
        (p1, p2) = _cells(rng, 2)
        objs = [Obj(s1, c1, *p1), Obj(s2, c2, *p2)]
        prompt = f"a {s1} and a {s2}"
        question = "which two shapes are in the image?"
        # Pair names use a canonical order so "circle and square" is one option, not two.
        pairs = [f"{a} and {b}" for i, a in enumerate(SHAPES) for b in SHAPES[i + 1 :]]
        a, b = sorted((s1, s2), key=SHAPES.index)
        choices, ans = _mcq(rng, f"{a} and {b}", pairs)
    elif category == "color_attr":
        s1, s2 = _pick(rng, SHAPES, 2)
        c1, c2 = _pick(rng, COLOR_NAMES, 2)
        (p1, p2) = _cells(rng, 2)
        objs = [Obj(s1, c1, *p1), Obj(s2, c2, *p2)]
        prompt = f"a {c1} {s1} and a {c2} {s2}"
        # Ask about either object so the answer needs binding colour to shape, not just any colour.
        target = objs[int(rng.integers(2))]
        question = f"what color is the {target.shape}?"
        choices, ans = _mcq(rng, target.color, list(COLOR_NAMES))
    elif category == "counting":
        (shape,), (color,) = _pick(rng, SHAPES), _pick(rng, COLOR_NAMES)
        n = int(rng.integers(1, 5))
        objs = [Obj(shape, color, *p) for p in _cells(rng, n)]
        prompt = f"{COUNT_WORDS[n]} {_noun(shape, n)}"
        question = f"how many {PLURALS[shape]} are in the image?"
        choices, ans = _mcq(rng, COUNT_WORDS[n], list(COUNT_WORDS.values()))
    elif category == "position":
        s1, s2 = _pick(rng, SHAPES, 2)
        c1, c2 = (_pick(rng, COLOR_NAMES)[0] for _ in range(2))
        while True:  # rejection-sample until one relation clearly dominates
            p1, p2 = _cells(rng, 2)
            a, b = Obj(s1, c1, *p1), Obj(s2, c2, *p2)
            rel = relation_of(a, b)
            if rel is not None:
                break
        objs = [a, b]
        prompt = f"a {s1} {rel} a {s2}"
        question = f"where is the {s1} relative to the {s2}?"
        choices, ans = _mcq(rng, rel, list(RELATIONS))
    else:
        raise ValueError(f"unknown category {category!r}; expected one of {CATEGORIES}")
    return Item(category, tuple(objs), prompt, question, choices, ans)


# Salts keep the random streams of different splits disjoint for the same user seed.
SPLIT_SALTS = {"u_train": 11, "g_train": 12, "u_eval": 21, "g_eval": 22, "pretrain": 31, "pretrain_val": 32}


def item_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), SPLIT_SALTS[split], int(index)])


MAX_DRAWS = 1000


def make_item(seed: int, split: str, index: int, categories=CATEGORIES) -> Item:
    """Item ``index`` of ``split``: categories cycle so every split is balanced; items are redrawn from
    the same stream until the split's role admits one (``heldout.admissible``)."""
    rng = item_rng(seed, split, index)
    category = categories[index % len(categories)]
    for _ in range(MAX_DRAWS):
        item = sample_item(rng, category)
        if admissible(split, item.prompt, item.objects):
            return item
    raise ValueError(f"no {category} item admissible in split {split!r} after {MAX_DRAWS} draws")
