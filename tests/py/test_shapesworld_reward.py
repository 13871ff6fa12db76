"""The `shapes` generation reward: accuracy on ground truth, chance-level on shuffled pairs,
graded partial credit, robustness to decoding noise, and the registry contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pairuni_sidecar.errors import BadRequest
from pairuni_sidecar.rewards import list_rewards, make_reward
from pairuni_sidecar.shapesworld.reward import ShapesScorer
from pairuni_sidecar.shapesworld.judge import judge
from pairuni_sidecar.shapesworld.prompts import PromptError, parse_prompt
from pairuni_sidecar.shapesworld.render import render
from pairuni_sidecar.shapesworld.scenes import Obj, make_item

N = 600  # held-out items: 100 per category


@pytest.fixture(scope="module")
def heldout():
    items = [make_item(0, "g_eval", i) for i in range(N)]
    images = torch.from_numpy(np.stack([render(it.objects) for it in items]))
    return items, images


def test_ground_truth_images_score_full_marks(heldout):
    items, images = heldout
    graded, binary = ShapesScorer().score_both(images, [it.prompt for it in items])
    assert graded.dtype == torch.float32 and graded.shape == (N,)
    assert binary.mean().item() >= 0.95
    assert graded.mean().item() >= 0.98


def test_noisy_ground_truth_still_scores(heldout):
    items, images = heldout
    rng = np.random.default_rng(0)
    noisy = np.clip(images.numpy().astype(np.float32) + rng.normal(0, 10, images.shape), 0, 255).astype(np.uint8)
    _, binary = ShapesScorer().score_both(torch.from_numpy(noisy), [it.prompt for it in items])
    assert binary.mean().item() >= 0.95


def test_shuffled_pairs_score_near_chance_and_agree_with_the_symbolic_truth(heldout):
    items, images = heldout
    perm = np.random.default_rng(1).permutation(N)
    prompts = [items[j].prompt for j in perm]
    graded, binary = ShapesScorer().score_both(images, prompts)
    # the truth: does scene i satisfy prompt perm[i]? (judged on the scene objects, no pixels)
    truth = np.array([judge(parse_prompt(p), it.objects)[1] for p, it in zip(prompts, items)])
    assert (binary.numpy().astype(bool) == truth).mean() >= 0.99
    assert binary.mean().item() <= truth.mean() + 0.02 and binary.mean().item() < 0.15
    assert graded.mean().item() < 0.6


def _score(prompt, objs, mode="graded"):
    img = torch.from_numpy(render(objs))[None]
    return ShapesScorer(mode).score(img, [prompt]).item()


def test_graded_partial_credit_is_the_fraction_of_constraints():
    # wrong colour on the second object: 5 of 7 constraints hold
    objs = [Obj("circle", "red", 0, 0), Obj("square", "green", 2, 3)]
    assert _score("a red circle and a blue square", objs) == pytest.approx(5 / 7)
    assert _score("a red circle and a blue square", objs, "binary") == 0.0
    # wrong relation: 5 of 6
    objs = [Obj("circle", "red", 1, 3), Obj("square", "blue", 1, 0)]
    assert _score("a circle left of a square", objs) == pytest.approx(5 / 6)
    assert _score("a circle right of a square", objs) == 1.0
    # one triangle short: present only, 1 of 3
    objs = [Obj("triangle", "blue", 0, 0), Obj("triangle", "blue", 3, 3)]
    assert _score("three triangles", objs) == pytest.approx(1 / 3)
    assert _score("two triangles", objs) == 1.0
    # an extra object breaks only the total count: 2 of 3
    assert _score("a square", [Obj("square", "red", 0, 0), Obj("cross", "red", 3, 3)]) == pytest.approx(2 / 3)
    # an empty canvas satisfies nothing
    assert _score("a yellow cross", []) == 0.0


def test_unknown_blobs_count_as_junk():
    img = render([Obj("square", "red", 0, 0)])
    img[20:30, 17:31] = (40, 190, 60)  # a big green rectangle: not a ShapesWorld shape
    g, b = ShapesScorer().score_both(torch.from_numpy(img)[None], ["a square"])
    assert g.item() == pytest.approx(2 / 3) and b.item() == 0.0


def test_registry_contract_and_input_errors():
    # registered by the toy world's own PLUGINS (shapesworld/plugins.py), without importing it here
    assert "shapes" in list_rewards()
    scorer = make_reward("shapes", {"mode": "binary"})
    img = torch.from_numpy(render([Obj("cross", "yellow", 2, 2)]))[None]
    assert scorer.score(img, ["a yellow cross"]).tolist() == [1.0]
    with pytest.raises(BadRequest):
        make_reward("shapes", {"mode": "sometimes"})
    with pytest.raises(BadRequest):
        scorer.score(img, ["a purple elephant"])
    with pytest.raises(BadRequest):
        scorer.score(img.float(), ["a cross"])
    with pytest.raises(BadRequest):
        scorer.score(img, ["a cross", "a circle"])


def test_prompt_parser_reads_the_grammar():
    s = parse_prompt("a photo of a red circle left of a blue square")
    assert s.relation == "left of" and [(p.count, p.color, p.shape) for p in s.phrases] == [
        (1, "red", "circle"),
        (1, "blue", "square"),
    ]
    assert [(p.count, p.shape) for p in parse_prompt("four crosses").phrases] == [(4, "cross")]
    for bad in ("", "three", "a red", "a circle beside a square", "a circle and a square and"):
        with pytest.raises(PromptError):
            parse_prompt(bad)
