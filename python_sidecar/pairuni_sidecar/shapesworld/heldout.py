"""What ShapesWorld keeps for evaluation only, and a measurement of train/eval overlap.

Two reservations, both pure functions of content (not of the seed or the split), so no training
split of any seed can produce an evaluation item:

- **Reserved prompts** (attribute combinations): a generation prompt is reserved when it names a
  held-out shape×colour pair (``colors``, ``color_attr``), a held-out count×shape (``counting``;
  count one also covers ``single_object``'s "a circle"), a held-out unordered shape pair
  (``two_object``) or a held-out (shape pair, relation) (``position``). The rule reads the parsed
  prompt, so "a circle" / "one circle" and "a circle left of a square" / "a square right of a
  circle" (the same request in other words) always fall on the same side.
- **Reserved scenes**: a scene is reserved when some object sits in a held-out
  (shape, colour, cell) state: every shape×colour pair and every cell appears in training scenes,
  only not every pairing of them.

Training items (``u_train``, ``g_train``, the pretraining pool) have neither. Generation
evaluation (``g_eval``) uses reserved prompts only: none was ever a training prompt (U captions
included: PairUG trains them as generation prompts of aligned pairs). Understanding evaluation
(``u_eval``) uses reserved scenes whose prompt is *not* reserved: a never-seen image, asking about
attribute combinations whose answers training does teach (a reserved "a circle" would make
"circle" an answer ``single_object`` never trains).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

import numpy as np

from .prompts import parse_prompt
from .vocab import COLORS, RELATIONS, SHAPES

COLOR_NAMES = tuple(COLORS)
# Written into a pretrained model's card: its pretraining pool was drawn under these rules.
RULES = "heldout/1"
# Inverse relations: "a left of b" is "b right of a".
_INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def held_pair(shape: str, color: str) -> bool:
    """One shape×colour pair per shape and per colour (a Latin diagonal)."""
    return (SHAPES.index(shape) + COLOR_NAMES.index(color)) % 4 == 0


def reserved_prompt(prompt: str) -> bool:
    spec = parse_prompt(prompt)
    phrases = spec.phrases
    if any(p.color is not None and held_pair(p.shape, p.color) for p in phrases):
        return True
    if len(phrases) == 1:
        p = phrases[0]
        # one circle (= "a circle"), two crosses, three triangles, four squares
        return p.color is None and (p.count - 1 + SHAPES.index(p.shape)) % 4 == 0
    a, b = (SHAPES.index(p.shape) for p in phrases)
    if spec.relation is None:
        # uncoloured pairs: {circle, cross} and {square, triangle}; coloured: only held pairs (above)
        return all(p.color is None for p in phrases) and a + b == 3
    rel = spec.relation if a < b else _INVERSE[spec.relation]  # as seen from the lower-index shape
    return (a + b + RELATIONS.index(rel)) % 4 == 0


def reserved_scene(objects: Iterable) -> bool:
    return any((SHAPES.index(o.shape) + COLOR_NAMES.index(o.color) + o.row + o.col) % 4 == 0 for o in objects)


# Which items each split draws: the role of a split decides the rule.
def admissible(split: str, prompt: str, objects) -> bool:
    if split == "g_eval":
        return reserved_prompt(prompt)
    if split == "u_eval":
        return reserved_scene(objects) and not reserved_prompt(prompt)
    return not reserved_scene(objects) and not reserved_prompt(prompt)


# -- measuring it ------------------------------------------------------------------------------------


def _u_key(pixels: np.ndarray, question: str, choices, answer: str) -> tuple:
    return (hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest(), question, tuple(choices), answer)


def _manifest(root: Path, split: str) -> list[dict]:
    path = root / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a built ShapesWorld dataset (run `shapesworld build`)")
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _pixels(root: Path, rel: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(root / rel).convert("RGB"))


def pretraining_pool(card: dict) -> tuple[int | None, int, str | None]:
    """(seed, n_items, caveat) of the pretraining pool a model card describes. A model pretrained before
    these rules (no ``heldout_rules`` in its card) drew its pool from every scene and prompt: regenerating
    it now would not reproduce it, so it is not checked and the caveat says so."""
    pre = card.get("pretrain") or {}
    cfg = pre.get("config") or {}
    if "seed" not in cfg or "n_items" not in cfg:
        return None, 0, "the model card names no ShapesWorld pretraining pool: only the dataset's splits were checked"
    if pre.get("heldout_rules") != RULES:
        return (
            None,
            0,
            (
                f"the model was pretrained before the held-out rules ({RULES}): its pretraining pool may hold "
                "evaluation items and was not checked; regenerate it with its scripts/pretrain-tiny-*.sh"
            ),
        )
    return int(cfg["seed"]), int(cfg["n_items"]), None


def split_overlap(data: str | Path, pretrain_seed: int | None = None, pretrain_n: int = 0) -> dict:
    """Train/eval overlap of a built dataset (and of a pretraining pool, when given).

    ``u_duplicates``: ``u_eval`` items whose (image pixels, question, choices, answer) equal a
    training understanding item: ``u_train``, the MCQs that ``g_train`` records carry (PairUG trains
    them on aligned pairs) and the pretraining pool. ``g_verbatim``: ``g_eval`` prompts that equal a
    training prompt: ``g_train`` prompts, ``u_train`` captions and the pretraining pool's prompts.
    """
    from .render import render
    from .scenes import make_item

    root = Path(data)
    u_tr, g_tr = _manifest(root, "u_train"), _manifest(root, "g_train")
    u_ev, g_ev = _manifest(root, "u_eval"), _manifest(root, "g_eval")
    train_u = {_u_key(_pixels(root, r["image"]), r["question"], r["choices"], r["answer"]) for r in u_tr}
    train_u |= {
        _u_key(_pixels(root, r["image"]), r["question"], r["choices"], r["answer"]) for r in g_tr if r.get("question")
    }
    train_p = {r["prompt"] for r in g_tr} | {r["caption"] for r in u_tr if r.get("caption")}
    if pretrain_seed is not None:
        for i in range(pretrain_n):
            it = make_item(pretrain_seed, "pretrain", i)
            train_u.add(_u_key(render(it.objects), it.question, it.choices, it.answer))
            train_p.add(it.prompt)
    u_dup = sum(_u_key(_pixels(root, r["image"]), r["question"], r["choices"], r["answer"]) in train_u for r in u_ev)
    g_verb = sum(r["prompt"] in train_p for r in g_ev)
    return {
        "u_eval": len(u_ev),
        "u_duplicates": u_dup,
        "g_eval": len(g_ev),
        "g_verbatim": g_verb,
        "train_u_items": len(train_u),
        "train_prompts": len(train_p),
        "g_eval_distinct_prompts": len({r["prompt"] for r in g_ev}),
        "pretrain": {"seed": pretrain_seed, "n_items": pretrain_n} if pretrain_seed is not None else None,
    }
