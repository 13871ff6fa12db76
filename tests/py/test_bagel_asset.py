"""The shipped assets/tiny-bagel-shapes (scripts/pretrain-tiny-bagel.sh): what its card says it is, a VAE
whose reconstructions the ShapesWorld detector reads, understanding above chance and generation above a
random-init model's, measured here on held-out items."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("nemo_automodel.components.models.bagel")

from pairuni_sidecar.adapters import LoadSpec  # noqa: E402
from pairuni_sidecar.adapters.bagel import BagelAdapter  # noqa: E402
from pairuni_sidecar.adapters.tiny_bagel import build_tiny_bagel  # noqa: E402
from pairuni_sidecar.ops.option_eval import option_accuracy  # noqa: E402
from pairuni_sidecar.shapesworld.dataset import build_dataset  # noqa: E402
from pairuni_sidecar.shapesworld.evaluate import load_eval_adapter  # noqa: E402
from pairuni_sidecar.shapesworld.heldout import RULES  # noqa: E402
from pairuni_sidecar.shapesworld.pretrain_bagel import UND_INSTRUCTION, recon_detected  # noqa: E402
from pairuni_sidecar.shapesworld.reward import ShapesScorer  # noqa: E402
from pairuni_sidecar.shapesworld.scenes import make_item  # noqa: E402

ASSET = Path(__file__).resolve().parents[2] / "assets" / "tiny-bagel-shapes"
CARD = json.loads((ASSET / "pairuni_model.json").read_text())
CATEGORIES = ("color_attr", "colors", "counting", "position", "single_object", "two_object")


@pytest.fixture(scope="module")
def policy():
    """The asset through the adapter its card names, with the card's options (as the demo loads it)."""
    torch.set_num_threads(1)
    adapter, _ = load_eval_adapter(ASSET)
    return adapter


def test_directory_is_complete_small_and_described_by_its_card():
    files = {p.name for p in ASSET.iterdir()}
    assert {"llm_config.json", "vit_config.json", "ae.safetensors", "ema.safetensors", "pairuni_bagel.json"} <= files
    assert "model.safetensors" not in files  # the EMA file holds the live weights: no second copy
    assert sum(p.stat().st_size for p in ASSET.iterdir()) <= 20 * 2**20
    assert CARD["family"] == "bagel" and CARD["format"] == "pairuni-model/1"
    assert CARD["adapter_options"] == {
        "vit_image_size": 56,
        "vae_image_size": 32,
        "timestep_shift": 1.0,
        "text_cond_dropout": 0.1,
    }
    assert CARD["und_instruction"] == UND_INSTRUCTION
    pre = CARD["pretrain"]
    assert pre["split"] == "pretrain" and pre["heldout_rules"] == RULES and pre["torch"].startswith("2.")
    assert pre["seconds"] > 0 and pre["config"]["seed"] == 0 and pre["config"]["n_items"] > 0
    llm = json.loads((ASSET / "llm_config.json").read_text())
    assert (llm["hidden_size"], llm["num_hidden_layers"]) == (pre["config"]["hidden"], pre["config"]["layers"])
    geo = json.loads((ASSET / "pairuni_bagel.json").read_text())["ae"]
    assert (geo["shift_factor"], geo["scale_factor"]) == (pre["vae"]["shift_factor"], pre["vae"]["scale_factor"])
    held = pre["heldout"]
    assert set(held["und_accuracy_by_category"]) == set(CATEGORIES) == set(held["gen_reward_by_category"])
    # four options per question everywhere: chance is 0.25 in every category
    assert min(held["und_accuracy_by_category"].values()) > 0.25, held["und_accuracy_by_category"]


def test_the_vae_reads_back_heldout_scenes(policy):
    items = [make_item(0, "u_eval", i) for i in range(100)]  # the card measured the first 300
    got = recon_detected(policy.vae, items)
    assert got >= 0.6 and abs(got - CARD["pretrain"]["vae"]["recon_detected"]) <= 0.12, got


def test_understanding_is_above_chance_on_heldout_items(policy, tmp_path):
    data = tmp_path / "world"
    build_dataset(data, seed=0, sizes={"u_train": 0, "g_train": 0, "u_eval": 120, "g_eval": 1})
    m = option_accuracy(policy, str(data), 120, UND_INSTRUCTION)  # 20 per category, the card's first 120
    assert m["n_und"] == 120
    assert m["und_accuracy"] >= 0.35, m  # chance 0.25 (30 of 120); 42+ correct is beyond a lucky guesser


def test_generation_beats_a_random_init_model(policy, tmp_path):
    prompts = [make_item(0, "g_eval", i).prompt for i in range(12)]
    cfg = CARD["pretrain"]["config"]
    build_tiny_bagel(str(tmp_path / "init"), seed=0, hidden=cfg["hidden"], layers=cfg["layers"])
    init = BagelAdapter(
        LoadSpec(
            adapter="bagel", path=str(tmp_path / "init"), device="cpu", autocast="off", options=CARD["adapter_options"]
        )
    )
    rewards = []
    for a in (policy, init):
        images = a.sample_images(prompts, 2, cfg_weight=4.0, temperature=1.0, seed=0, options={"num_timesteps": 10})
        assert images.shape == (24, 32, 32, 3) and images.dtype == torch.uint8
        rewards.append(float(ShapesScorer().score(images, [p for p in prompts for _ in range(2)]).mean()))
    pretrained, random_init = rewards
    assert pretrained >= random_init + 0.1, rewards
    assert np.isfinite(pretrained) and pretrained <= 1


class Stop(Exception):
    pass


def test_pretraining_is_seeded_and_resumes_to_the_same_weights_in_either_phase(tmp_path):
    from safetensors.torch import load_file

    from pairuni_sidecar.shapesworld.pretrain_bagel import BagelPretrainConfig, pretrain_bagel

    torch.set_num_threads(1)
    cfg = BagelPretrainConfig(
        n_items=24,
        ae_steps=4,
        ae_l1_from=2,
        ae_batch=4,
        ae_stat_n=16,
        ae_eval_n=4,
        hidden=32,
        layers=1,
        steps=4,
        batch_pairs=2,
        warmup=2,
        ckpt_every=2,
        eval_n=6,
        eval_gen=2,
        eval_samples=1,
        eval_timesteps=3,
    )
    a = pretrain_bagel(tmp_path / "a", cfg, log=lambda s: None)
    assert 0.0 <= a["metrics"]["gen_reward"] <= 1.0 and 0.0 <= a["vae"]["recon_detected"] <= 1.0
    card = json.loads((tmp_path / "a" / "pairuni_model.json").read_text())
    assert card["pretrain"]["config"]["ae_steps"] == 4 and card["pretrain"]["vae"] == a["vae"]
    # before VAE step 3 (saved after 2); then, resumed at VAE step 2, 2 + 4 checks: before SFT step 3 (saved after 2)
    for stop_at in (4, 6):
        calls = []

        def check():
            calls.append(1)
            if len(calls) == stop_at:
                raise Stop

        with pytest.raises(Stop):
            pretrain_bagel(tmp_path / "b", cfg, log=lambda s: None, check=check)
        assert not (tmp_path / "b").exists()
        if stop_at == 4:
            assert (tmp_path / "b.work" / "ae_state.pt").exists()
    lines = []
    pretrain_bagel(tmp_path / "b", cfg, log=lines.append)
    assert "sft: resuming at step 2" in lines
    for f in ("ema.safetensors", "ae.safetensors"):
        wa, wb = (load_file(tmp_path / d / f) for d in ("a", "b"))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), f
    assert not (tmp_path / "b.work").exists()
    with pytest.raises(ValueError, match="other settings"):
        (tmp_path / "c.work").mkdir()
        (tmp_path / "c.work" / "settings.json").write_text("{}")
        pretrain_bagel(tmp_path / "c", cfg, log=lambda s: None)
