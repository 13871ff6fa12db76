"""Held-out multiple-choice accuracy without a sampler: the option letter with the highest
teacher-forced log-likelihood is the answer (``PolicyAdapter.option_logprobs``; the Bagel adapter has
it). Items come from the dataset API's held-out split (``shapesworld.evaluate.heldout_items``)."""
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
        lp = adapter.option_logprobs(str(Path(data) / r["image"]), render_question(r["question"], r["choices"], instruction), letters)
        correct.append(float(letters[max(range(len(lp)), key=lp.__getitem__)] == r["answer"]))
        cats.append(r.get("category", "all"))
        if progress is not None:
            progress(i + 1, len(und), "option scoring")
    return {"und_accuracy": round(sum(correct) / len(correct), 4), "und_accuracy_by_category": _per_category(cats, correct),
            "n_und": len(und)}


@op("shapesworld.eval_options")
def eval_options(ctx, args, tensors):
    t0 = time.perf_counter()
    adapter = load_adapter(args["model"]["adapter"], LoadSpec(**args["model"]))
    res = option_accuracy(adapter, args["data"], args["n_und"], args["instruction"],
                          progress=lambda d, n, m: ctx.progress(d, n, m))
    return {**res, "elapsed_s": time.perf_counter() - t0}
