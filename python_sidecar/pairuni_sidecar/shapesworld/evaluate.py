"""Held-out evaluation of a model directory: MCQ accuracy and generation reward per category."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from ..rewards.shapes import ShapesScorer
from .render import render
from .scenes import make_item


def heldout_items(data: str | None, seed: int, n: int, n_und: int | None = None) -> tuple[list[dict], list[dict], torch.Tensor]:
    """(und records, gen records, und images): the first ``n_und`` (default ``n``) understanding and
    ``n`` generation items. From a built dataset's ``u_eval``/``g_eval`` manifests when ``data`` is
    given, else the same items generated in memory for ``seed``."""
    n_und = n if n_und is None else n_und
    if data is not None:
        root = Path(data)
        und = [json.loads(x) for x in (root / "u_eval.jsonl").read_text().splitlines()][:n_und]
        gen = [json.loads(x) for x in (root / "g_eval.jsonl").read_text().splitlines()][:n]
        if len(und) < n_und or len(gen) < n:
            raise ValueError(f"{root} holds {len(und)} u_eval / {len(gen)} g_eval items; asked for {n_und} / {n}")
        imgs = np.stack([np.asarray(Image.open(root / r["image"]).convert("RGB")) for r in und])
        return und, gen, torch.from_numpy(imgs)
    und, gen, imgs = [], [], []
    for i in range(n_und):
        u = make_item(seed, "u_eval", i)
        und.append({"question": u.question, "choices": list(u.choices), "answer": u.answer, "category": u.category})
        imgs.append(render(u.objects))
    for i in range(n):
        g = make_item(seed, "g_eval", i)
        gen.append({"prompt": g.prompt, "category": g.category})
    return und, gen, torch.from_numpy(np.stack(imgs))


def _per_category(cats: list[str], values) -> dict[str, float]:
    acc: dict[str, list[float]] = defaultdict(list)
    for c, v in zip(cats, values):
        acc[c].append(float(v))
    return {c: round(float(np.mean(v)), 4) for c, v in sorted(acc.items())}


@torch.no_grad()
def evaluate(
    model, tok, fmt, *, data: str | None = None, seed: int = 0, n: int = 300, n_und: int | None = None, samples: int = 2,
    cfg_weight: float = 3.0, temperature: float = 1.0, sample_seed: int = 0,
    progress: Callable[[int, int, str], None] | None = None, grid: str | None = None, grid_n: int = 16,
) -> dict:
    """``grid``: also write the first sample of the first ``grid_n`` prompts as a PNG there (the same
    prompts and sampling seed for every model, so grids of two models compare image by image)."""
    from .sampling import answer_mcq, sample_images

    model.eval()
    und, gen, imgs = heldout_items(data, seed, n, n_und)
    texts = answer_mcq(model, tok, fmt, imgs, [r["question"] for r in und], [r["choices"] for r in und])
    picked = [fmt.parse_answer(t) for t in texts]
    correct = [p == r["answer"] for p, r in zip(picked, und)]
    if progress:
        progress(1, 2, "eval: understanding done")
    g = torch.Generator().manual_seed(sample_seed)
    prompts = [r["prompt"] for r in gen]
    _, images = sample_images(model, tok, fmt, prompts, n=samples, cfg_weight=cfg_weight, temperature=temperature, generator=g)
    graded, binary = ShapesScorer().score_both(images, [p for p in prompts for _ in range(samples)])
    if grid:
        from ..imaging import save_grid

        first = images[::samples][:grid_n]
        save_grid(first, grid, nrow=min(8, grid_n), max_images=grid_n, scale=3)
    gcats = [r.get("category", "all") for r in gen for _ in range(samples)]
    ucats = [r.get("category", "all") for r in und]
    if progress:
        progress(2, 2, "eval: generation done")
    return {
        "und_accuracy": round(float(np.mean(correct)), 4),
        "und_format_rate": round(float(np.mean([p is not None for p in picked])), 4),
        "und_accuracy_by_category": _per_category(ucats, correct),
        "gen_reward": round(float(graded.mean()), 4),
        "gen_binary": round(float(binary.mean()), 4),
        "gen_reward_by_category": _per_category(gcats, graded.tolist()),
        "gen_binary_by_category": _per_category(gcats, binary.tolist()),
        "n_und": len(und), "n_gen_prompts": len(gen), "samples_per_prompt": samples,
        "cfg_weight": cfg_weight, "temperature": temperature,
        **({"grid": grid, "grid_prompts": prompts[:grid_n],
            "grid_rewards": [round(float(x), 3) for x in graded[::samples][:grid_n]]} if grid else {}),
    }
