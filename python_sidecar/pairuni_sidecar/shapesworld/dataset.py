"""Writing ShapesWorld as JSONL manifests (UnderstandingRecord / GenerationRecord) plus PNG images.

Layout under ``out``::

    shapesworld.json              what was built (seed, sizes, vocabulary)
    u_train.jsonl  u_eval.jsonl   understanding records (caption = the scene's generation prompt)
    g_train.jsonl  g_eval.jsonl   generation records (question/choices/answer = the scene's MCQ)
    images/<split>/<index>.png    referenced by relative path from the manifests

U and G come from the same scene distribution (independent streams), so every U scene has
look-alike G scenes: retrieval pairing finds genuinely related partners. Re-running with the
same arguments rewrites identical bytes, so an interrupted build is resumed by running it again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from PIL import Image

from ..fsutil import atomic_write_json, atomic_write_text
from .render import render
from .scenes import Item, make_item
from .vocab import CATEGORIES, COLORS, COUNT_WORDS, IMAGE_SIZE, RELATIONS, SHAPES

DEFAULT_SIZES = {"u_train": 960, "g_train": 960, "u_eval": 300, "g_eval": 300}
FORMAT = "shapesworld/1"


def u_record(split: str, index: int, item: Item, image_rel: str) -> dict:
    return {
        "id": f"{split}-{index:06d}",
        "image": image_rel,
        "question": item.question,
        "choices": list(item.choices),
        "answer": item.answer,
        "caption": item.prompt,
        "category": item.category,
    }


def g_record(split: str, index: int, item: Item, image_rel: str) -> dict:
    return {
        "id": f"{split}-{index:06d}",
        "image": image_rel,
        "prompt": item.prompt,
        "question": item.question,
        "choices": list(item.choices),
        "answer": item.answer,
        "category": item.category,
    }


def build_dataset(
    out: str | os.PathLike,
    seed: int = 0,
    sizes: dict[str, int] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    check: Callable[[], None] | None = None,
) -> dict:
    """Write all splits; returns the metadata also saved as ``shapesworld.json``."""
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    unknown = set(sizes) - set(DEFAULT_SIZES)
    if unknown:
        raise ValueError(f"unknown splits {sorted(unknown)}; expected {sorted(DEFAULT_SIZES)}")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    total, done = sum(sizes.values()), 0
    manifests = {}
    for split, n in sizes.items():
        img_dir = root / "images" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        to_record = u_record if split.startswith("u_") else g_record
        lines = []
        for i in range(n):
            if check is not None and i % 64 == 0:
                check()
            item = make_item(seed, split, i)
            rel = f"images/{split}/{i:06d}.png"
            Image.fromarray(render(item.objects)).save(root / rel, format="PNG")
            lines.append(json.dumps(to_record(split, i, item, rel)))
            done += 1
            if progress is not None and (done % 100 == 0 or done == total):
                progress(done, total, f"shapesworld: {split} {i + 1}/{n}")
        atomic_write_text(root / f"{split}.jsonl", "".join(line + "\n" for line in lines))
        manifests[split] = str(root / f"{split}.jsonl")
    meta = {
        "format": FORMAT,
        "seed": seed,
        "sizes": sizes,
        "image_size": IMAGE_SIZE,
        "categories": list(CATEGORIES),
        "shapes": list(SHAPES),
        "colors": list(COLORS),
        "counts": list(COUNT_WORDS.values()),
        "relations": list(RELATIONS),
    }
    atomic_write_json(root / "shapesworld.json", meta, indent=2)
    return {**meta, "manifests": manifests}
