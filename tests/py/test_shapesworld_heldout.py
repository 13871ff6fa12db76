"""Held-out ShapesWorld: evaluation splits share no item or prompt with any training split."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from pairuni_sidecar.shapesworld.dataset import build_dataset
from pairuni_sidecar.shapesworld.heldout import RULES, pretraining_pool, reserved_prompt, reserved_scene, split_overlap
from pairuni_sidecar.shapesworld.scenes import Obj, make_item
from pairuni_sidecar.shapesworld.vocab import CATEGORIES

SIZES = {"u_train": 120, "g_train": 120, "u_eval": 240, "g_eval": 120}


def test_built_world_and_pretraining_pool_have_no_overlap_with_evaluation(tmp_path):
    build_dataset(tmp_path, seed=0, sizes=SIZES)
    o = split_overlap(tmp_path, pretrain_seed=0, pretrain_n=3000)
    assert (o["u_duplicates"], o["g_verbatim"]) == (0, 0)
    assert (o["u_eval"], o["g_eval"]) == (240, 120)
    # a real check: the pools are large and the evaluation prompts cover every category
    assert o["train_u_items"] > 1500 and o["train_prompts"] > 100 and o["g_eval_distinct_prompts"] >= 20


def test_overlap_counts_an_evaluation_item_copied_into_training(tmp_path):
    build_dataset(tmp_path, seed=0, sizes=SIZES)
    u_eval = [json.loads(x) for x in (tmp_path / "u_eval.jsonl").read_text().splitlines()]
    g_eval = [json.loads(x) for x in (tmp_path / "g_eval.jsonl").read_text().splitlines()]
    leak_u = {**u_eval[0], "id": "leak-u"}
    leak_g = {**g_eval[0], "id": "leak-g"}
    with open(tmp_path / "u_train.jsonl", "a") as f:
        f.write(json.dumps(leak_u) + "\n")
    with open(tmp_path / "g_train.jsonl", "a") as f:
        f.write(json.dumps(leak_g) + "\n")
    o = split_overlap(tmp_path)
    pix = lambda r: np.asarray(Image.open(tmp_path / r["image"]).convert("RGB"))  # noqa: E731
    same_u = sum(
        np.array_equal(pix(r), pix(u_eval[0]))
        and (r["question"], r["choices"], r["answer"])
        == (u_eval[0]["question"], u_eval[0]["choices"], u_eval[0]["answer"])
        for r in u_eval
    )
    assert o["u_duplicates"] == same_u >= 1
    assert o["g_verbatim"] == sum(r["prompt"] == g_eval[0]["prompt"] for r in g_eval) >= 1


def test_reservation_reads_the_request_not_its_wording():
    # the same request in other words falls on the same side
    assert reserved_prompt("a circle") and reserved_prompt("one circle") and reserved_prompt("a photo of a circle")
    assert not reserved_prompt("a square") and not reserved_prompt("one square")
    assert reserved_prompt("two crosses") and not reserved_prompt("two circles")
    assert reserved_prompt("a circle and a cross") and reserved_prompt("a cross and a circle")
    assert not reserved_prompt("a circle and a square")
    for a, rel, b in [("circle", "above", "triangle"), ("cross", "left of", "circle"), ("square", "below", "cross")]:
        inverse = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}[rel]
        assert reserved_prompt(f"a {a} {rel} a {b}") == reserved_prompt(f"a {b} {inverse} a {a}")
    assert reserved_prompt("a circle above a triangle") and not reserved_prompt("a circle below a triangle")
    # held shape×colour pairs: one per shape and per colour
    assert reserved_prompt("a red circle") and reserved_prompt("a blue square and a yellow square")
    assert not reserved_prompt("a green circle and a red square")
    assert reserved_scene([Obj("circle", "red", 0, 0)]) and not reserved_scene([Obj("circle", "red", 0, 1)])


def test_every_category_has_evaluation_items_and_training_never_draws_them():
    for split in ("u_train", "g_train", "pretrain"):
        for i in range(240):
            it = make_item(1, split, i)
            assert not reserved_prompt(it.prompt) and not reserved_scene(it.objects)
    g = [make_item(1, "g_eval", i) for i in range(120)]
    u = [make_item(1, "u_eval", i) for i in range(120)]
    assert all(reserved_prompt(it.prompt) for it in g)
    assert all(reserved_scene(it.objects) and not reserved_prompt(it.prompt) for it in u)
    assert {it.category for it in g} == {it.category for it in u} == set(CATEGORIES)


def test_a_pretraining_pool_is_checked_only_when_drawn_under_these_rules():
    cfg = {"seed": 3, "n_items": 500}
    assert pretraining_pool({"pretrain": {"config": cfg, "heldout_rules": RULES}}) == (3, 500, None)
    seed, n, caveat = pretraining_pool({"pretrain": {"config": cfg}})
    assert (seed, n) == (None, 0) and "before the held-out rules" in caveat
    seed, n, caveat = pretraining_pool({"family": "janus"})
    assert (seed, n) == (None, 0) and "no ShapesWorld pretraining pool" in caveat
