"""Held-out evaluation: MCQ accuracy and generation reward per category, through the policy adapter.

``evaluate_adapter(adapter, fmt, ...)`` uses only ``PolicyAdapter.greedy_answers`` and
``PolicyAdapter.sample_images``, so every model family with an adapter gets the same evaluation.
``evaluate_model_dir`` loads a model directory's adapter (family and options from its
``pairuni_model.json``); ``evaluate(model, tok, fmt, ...)`` wraps an in-memory Janus (pretraining).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from ..adapters.base import PolicyAdapter
from .reward import ShapesScorer
from .formats import PromptFormat
from .render import render
from .scenes import make_item


def heldout_items(
    data: str | None, seed: int, n: int, n_und: int | None = None
) -> tuple[list[dict], list[dict], torch.Tensor]:
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


def load_eval_adapter(model_dir: str | os.PathLike, *, device: str = "cpu") -> tuple[PolicyAdapter, PromptFormat]:
    """(adapter, prompt format) for a model directory with a ``pairuni_model.json`` card: the adapter
    of the card's ``family`` with its ``adapter_options``, inference only (fp32, no checkpointing).
    Raises FileNotFoundError when the card is missing."""
    from ..adapters import LoadSpec, list_adapters, load_adapter
    from .model import MODEL_CARD

    card_path = Path(model_dir) / MODEL_CARD
    if not card_path.is_file():
        raise FileNotFoundError(f"{card_path} not found: not a pairuni model directory")
    card = json.loads(card_path.read_text())
    family = str(card.get("family", "janus"))
    if family not in list_adapters():  # outside the sidecar (the CLI): the built-in plug-ins
        from ..registry import load_plugins

        load_plugins()
    spec = LoadSpec(
        adapter=family,
        path=str(model_dir),
        device=device,
        autocast="off",
        train_modules=["language_model"],
        gradient_checkpointing=False,
        options=dict(card.get("adapter_options") or {}),
        ref_model_dir=None,
    )
    return load_adapter(family, spec), PromptFormat.from_json(card["prompt_format"])


def evaluate_model_dir(model_dir: str | os.PathLike, *, device: str = "cpu", **kw) -> dict:
    """``evaluate_adapter`` on a model directory (see ``load_eval_adapter``); ``kw`` as ``evaluate_adapter``."""
    adapter, fmt = load_eval_adapter(model_dir, device=device)
    return evaluate_adapter(adapter, fmt, **kw)


def evaluate(model, tok, fmt: PromptFormat, **kw) -> dict:
    """``evaluate_adapter`` on an in-memory Janus model (``JanusAdapter.from_model``, prompts laid out as
    the model card's ``adapter_options`` say); ``kw`` as ``evaluate_adapter``."""
    from ..adapters.janus import JanusAdapter
    from .model import adapter_options

    return evaluate_adapter(JanusAdapter.from_model(model, tok, options=adapter_options(fmt)), fmt, **kw)


@torch.no_grad()
def evaluate_adapter(
    adapter: PolicyAdapter,
    fmt: PromptFormat,
    *,
    data: str | None = None,
    seed: int = 0,
    n: int = 300,
    n_und: int | None = None,
    samples: int = 2,
    cfg_weight: float = 3.0,
    temperature: float = 1.0,
    sample_seed: int = 0,
    progress: Callable[[int, int, str], None] | None = None,
    grid: str | None = None,
    grid_n: int = 16,
) -> dict:
    """Greedy MCQ accuracy on the first ``n_und`` (default ``n``) held-out understanding items and the
    shapes reward of ``samples`` images for each of the first ``n`` held-out prompts (CFG
    ``cfg_weight``, ``temperature``, seed ``sample_seed``). ``fmt`` renders each MCQ's user text and
    parses the answers. ``grid``: also write the first sample of the first ``grid_n`` prompts as a PNG
    there (the same prompts and sampling seed for every model, so grids of two models compare image by
    image)."""
    adapter.train_mode(False)
    und, gen, imgs = heldout_items(data, seed, n, n_und)
    texts = adapter.greedy_answers(imgs, [fmt.und_user_text(r["question"], r["choices"]) for r in und])
    picked = [fmt.parse_answer(t) for t in texts]
    correct = [p == r["answer"] for p, r in zip(picked, und)]
    if progress:
        progress(1, 2, "eval: understanding done")
    prompts = [r["prompt"] for r in gen]
    images = adapter.sample_images(prompts, samples, cfg_weight=cfg_weight, temperature=temperature, seed=sample_seed)
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
        "n_und": len(und),
        "n_gen_prompts": len(gen),
        "samples_per_prompt": samples,
        "cfg_weight": cfg_weight,
        "temperature": temperature,
        **(
            {
                "grid": grid,
                "grid_prompts": prompts[:grid_n],
                "grid_rewards": [round(float(x), 3) for x in graded[::samples][:grid_n]],
            }
            if grid
            else {}
        ),
    }
