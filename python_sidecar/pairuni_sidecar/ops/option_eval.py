"""Held-out multiple-choice accuracy without a sampler: the option letter with the highest
teacher-forced log-likelihood is the answer (``PolicyAdapter.option_logprobs``; the Bagel adapter has
it). Items come from the dataset API's held-out split (``shapesworld.evaluate.heldout_items``).
With ``n_gen > 0`` the same op also scores generation: the shapes reward of images sampled for the
first ``n_gen`` held-out prompts (``PolicyAdapter.sample_images``), per category."""

from __future__ import annotations

import time
from pathlib import Path

from ..adapters import LoadSpec, load_adapter
from ..adapters.base import CapabilityError
from ..registry import op


def letter(i: int) -> str:
    return chr(65 + i)


def render_question(question: str, choices: list[str], instruction: str) -> str:
    """The same text the trainer's ``renderQuestion`` (src/grpo/rewards.ts) builds."""
    lines = "\n".join(f"{letter(i)}. {c}" for i, c in enumerate(choices))
    return instruction.replace("{question}", question).replace("{choices}", lines)


def option_accuracy(adapter, data: str, n_und: int, instruction: str, progress=None) -> dict:
    from ..shapesworld.evaluate import _per_category, heldout_items

    if not hasattr(adapter, "option_logprobs"):
        raise CapabilityError(f"{type(adapter).__name__} has no option scoring (option_logprobs)")
    und, _, _ = heldout_items(data, 0, 1, n_und)
    correct, cats = [], []
    for i, r in enumerate(und):
        letters = [letter(j) for j in range(len(r["choices"]))]
        lp = adapter.option_logprobs(
            str(Path(data) / r["image"]), render_question(r["question"], r["choices"], instruction), letters
        )
        correct.append(float(letters[max(range(len(lp)), key=lp.__getitem__)] == r["answer"]))
        cats.append(r.get("category", "all"))
        if progress is not None:
            progress(i + 1, len(und), "option scoring")
    return {
        "und_accuracy": round(sum(correct) / len(correct), 4),
        "und_accuracy_by_category": _per_category(cats, correct),
        "n_und": len(und),
    }


def generation_reward(
    adapter,
    data: str,
    n_gen: int,
    *,
    samples: int,
    cfg_weight: float,
    seed: int,
    options: dict,
    grid: str | None = None,
    grid_n: int = 16,
) -> dict:
    """Mean graded / binary shapes reward of ``samples`` images per held-out prompt, overall and per
    category; ``grid``: the first sample of the first ``grid_n`` prompts as a PNG there."""
    from ..shapesworld.reward import ShapesScorer
    from ..shapesworld.evaluate import _per_category, heldout_items

    _, gen, _ = heldout_items(data, 0, n_gen, 1)
    prompts = [r["prompt"] for r in gen]
    images = adapter.sample_images(prompts, samples, cfg_weight=cfg_weight, temperature=1.0, seed=seed, options=options)
    graded, binary = ShapesScorer().score_both(images, [p for p in prompts for _ in range(samples)])
    cats = [r.get("category", "all") for r in gen for _ in range(samples)]
    out = {
        "gen_reward": round(float(graded.mean()), 4),
        "gen_binary": round(float(binary.mean()), 4),
        "gen_reward_by_category": _per_category(cats, graded.tolist()),
        "gen_binary_by_category": _per_category(cats, binary.tolist()),
        "n_gen_prompts": len(prompts),
        "samples_per_prompt": samples,
    }
    if grid:
        from ..imaging import save_grid

        save_grid(images[::samples][:grid_n], grid, nrow=min(8, grid_n), max_images=grid_n, scale=3)
    return out


@op("shapesworld.eval_options")
def eval_options(ctx, args, tensors):
    t0 = time.perf_counter()
    adapter = load_adapter(args["model"]["adapter"], LoadSpec(**args["model"]))
    res = option_accuracy(
        adapter, args["data"], args["n_und"], args["instruction"], progress=lambda d, n, m: ctx.progress(d, n, m)
    )
    if args["n_gen"] > 0:
        res.update(
            generation_reward(
                adapter,
                args["data"],
                args["n_gen"],
                samples=args["samples"],
                cfg_weight=args["cfg_weight"],
                seed=args["sample_seed"],
                options=args["gen_options"],
                grid=args.get("grid"),
            )
        )
    return {**res, "elapsed_s": time.perf_counter() - t0}
