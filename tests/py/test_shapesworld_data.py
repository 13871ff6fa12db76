"""ShapesWorld generator: determinism, record format, MCQ correctness, U/G content overlap."""

from __future__ import annotations

import collections
import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from pairuni_sidecar.shapesworld.dataset import build_dataset
from pairuni_sidecar.shapesworld.judge import judge
from pairuni_sidecar.shapesworld.prompts import parse_prompt
from pairuni_sidecar.shapesworld.render import render
from pairuni_sidecar.shapesworld.scenes import make_item, relation_of
from pairuni_sidecar.shapesworld.vocab import CATEGORIES, IMAGE_SIZE, PLURALS, WORD_COUNTS

SIZES = {"u_train": 60, "g_train": 60, "u_eval": 24, "g_eval": 24}


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_build_is_byte_identical_for_a_seed_and_differs_across_seeds(tmp_path):
    a = build_dataset(tmp_path / "a", seed=3, sizes=SIZES)
    build_dataset(tmp_path / "b", seed=3, sizes=SIZES)
    build_dataset(tmp_path / "c", seed=4, sizes=SIZES)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    assert a["sizes"] == SIZES and len(_read(tmp_path / "a" / "u_train.jsonl")) == 60


def test_records_follow_the_shared_schemas_and_images_resolve(tmp_path):
    build_dataset(tmp_path, seed=0, sizes=SIZES)
    for split in SIZES:
        recs = _read(tmp_path / f"{split}.jsonl")
        assert len(recs) == SIZES[split] and len({r["id"] for r in recs}) == len(recs)
        for r in recs:
            keys = {"id", "image", "question", "choices", "answer", "category"}
            keys |= {"caption"} if split.startswith("u_") else {"prompt"}
            assert set(r) == keys
            assert len(r["choices"]) == 4 and len(set(r["choices"])) == 4 and r["answer"] in "ABCD"
            assert not Path(r["image"]).is_absolute()
            img = np.asarray(Image.open(tmp_path / r["image"]))
            assert img.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and img.dtype == np.uint8
        # categories cycle, so each split is balanced
        counts = collections.Counter(r["category"] for r in recs)
        assert set(counts) == set(CATEGORIES) and max(counts.values()) - min(counts.values()) <= 1


def _answer_is_right(item) -> bool:
    choice = item.choices["ABCD".index(item.answer)]
    objs = item.objects
    if item.category == "single_object":
        return choice == objs[0].shape
    if item.category == "colors":
        return choice == objs[0].color
    if item.category == "counting":
        noun = item.question.split()[2]
        return WORD_COUNTS[choice] == len(objs) and all(PLURALS[o.shape] == noun for o in objs)
    if item.category == "two_object":
        return set(choice.split(" and ")) == {o.shape for o in objs}
    if item.category == "color_attr":
        shape = item.question.split()[-1].rstrip("?")
        return [o.color for o in objs if o.shape == shape] == [choice]
    if item.category == "position":
        a, b = objs
        return relation_of(a, b) == choice and f"where is the {a.shape} relative to the {b.shape}?" == item.question
    raise AssertionError(item.category)


def test_every_mcq_answer_and_caption_is_true_of_its_scene():
    letters = collections.Counter()
    for split in ("u_train", "g_eval"):
        for i in range(600):
            item = make_item(0, split, i)
            assert _answer_is_right(item), item
            # the caption (generation prompt) is satisfied by the very same scene
            assert judge(parse_prompt(item.prompt), item.objects) == (1.0, True), item
            letters[item.answer] += 1
    # answers are spread over letters (no position bias a model could exploit)
    assert all(0.18 < letters[c] / 1200 < 0.32 for c in "ABCD"), letters


def test_distractors_are_false_of_the_scene():
    for i in range(300):
        item = make_item(1, "u_eval", i)
        for j, c in enumerate(item.choices):
            if "ABCD"[j] == item.answer:
                continue
            fake = item.__class__(item.category, item.objects, item.prompt, item.question, item.choices, "ABCD"[j])
            assert not _answer_is_right(fake), (item, c)


def test_u_and_g_overlap_in_content_but_not_in_streams():
    u = [make_item(0, "u_train", i) for i in range(960)]
    g = [make_item(0, "g_train", i) for i in range(960)]
    # different random streams: scenes at the same index differ most of the time
    same = sum(a.objects == b.objects for a, b in zip(u, g))
    assert same < 0.1 * len(u)
    # same content distribution: nearly every G prompt is also a U caption (retrieval has partners)
    captions = {x.prompt for x in u}
    covered = sum(x.prompt in captions for x in g) / len(g)
    assert covered > 0.9, covered


def test_render_draws_exactly_the_scene_objects():
    item = make_item(0, "u_train", 2)  # a counting scene
    img = render(item.objects)
    lit = (img != img[0, 0]).any(-1).sum()  # pixels that differ from the background
    from pairuni_sidecar.shapesworld.render import SHAPE_MASKS

    assert lit == sum(SHAPE_MASKS[o.shape].sum() for o in item.objects)
