"""The real Lumina-DiMOO loader on a tiny checkpoint in the upstream layout, with a stand-in for the
upstream model code (same module paths, relative imports and constructor signature)."""

from __future__ import annotations

import json
import os
import textwrap

import numpy as np
import pytest
import torch

from pairuni_sidecar.adapters import CheckpointNotFound, GenItem, LoadSpec, UndItem, load_adapter
from pairuni_sidecar.adapters.dimoo import CODE_ENV, DimooCodeError, IncompatibleCheckpoint
from pairuni_sidecar.contract import GenSampling, UndSampling

pytest.importorskip("diffusers")

CONFIG = textwrap.dedent("""
    class LLaDAConfig:
        model_type = "llada"

        def __init__(self, d_model=16, vocab_size=134548, embedding_dropout=0.1, **kwargs):
            self.d_model, self.vocab_size, self.embedding_dropout = d_model, vocab_size, embedding_dropout
            for k, v in kwargs.items():
                setattr(self, k, v)
""")
MODELING = textwrap.dedent("""
    from types import SimpleNamespace

    import torch

    from .configuration_llada import LLaDAConfig


    class LLaDAForMultiModalGeneration(torch.nn.Module):
        config_class = LLaDAConfig

        def __init__(self, config: LLaDAConfig, *args, **kwargs):
            super().__init__()
            self.config = config
            self.model = torch.nn.ModuleDict({
                "wte": torch.nn.Embedding(config.vocab_size, config.d_model),
                "mix": torch.nn.Linear(config.d_model, config.d_model),
                "ff_out": torch.nn.Linear(config.d_model, config.vocab_size),
            })
            self.drop = torch.nn.Dropout(config.embedding_dropout)

        def forward(self, input_ids=None, labels=None, infer=False, **kwargs):
            h = self.drop(self.model["wte"](input_ids))
            h = h + self.model["mix"](h.mean(1, keepdim=True))  # every position sees every other
            return SimpleNamespace(logits=self.model["ff_out"](h))
""")


def write_code(root, modeling=MODELING):
    os.makedirs(os.path.join(root, "model"))
    for name, text in (("__init__.py", ""), ("configuration_llada.py", CONFIG), ("modeling_xllmx_dimoo.py", modeling)):
        with open(os.path.join(root, "model", name), "w") as f:
            f.write(text)
    return str(root)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    from diffusers import VQModel
    from safetensors.torch import save_file

    from pairuni_sidecar.adapters.tiny import tiny_tokenizer

    code = write_code(tmp_path_factory.mktemp("code"))
    ckpt = str(tmp_path_factory.mktemp("ckpt"))
    torch.manual_seed(0)
    raw = {"d_model": 16, "vocab_size": 134548, "embedding_dropout": 0.1}
    with open(os.path.join(ckpt, "config.json"), "w") as f:
        json.dump(raw, f)
    # weights in the stand-in's naming, written without importing it here (the loader must do that)
    d, v = 16, 134548
    state = {
        "model.wte.weight": torch.randn(v, d),
        "model.mix.weight": torch.randn(d, d) * 0.1,
        "model.mix.bias": torch.zeros(d),
        "model.ff_out.weight": torch.randn(v, d) * 0.3,
        "model.ff_out.bias": torch.zeros(v),
    }
    save_file(state, os.path.join(ckpt, "model.safetensors"))
    VQModel(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        vq_embed_dim=4,
        num_vq_embeddings=8192,
        norm_num_groups=4,
        layers_per_block=1,
        sample_size=8,
        lookup_from_codebook=True,
    ).save_pretrained(os.path.join(ckpt, "vqvae"))
    tiny_tokenizer().save_pretrained(ckpt)
    return code, ckpt


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    from PIL import Image

    p = tmp_path_factory.mktemp("img") / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(p)
    return str(p)


def test_loads_and_rolls_out_with_the_dimoo_layout(upstream, image):
    code, ckpt = upstream
    a = load_adapter("dimoo", LoadSpec(path=ckpt, device="cpu", options={"code_dir": code, "image_size": 8}))
    d = a.describe()
    assert d["source"] == "lumina-dimoo" and d["grid"] == [4, 4] and d["vocab_size"] == 134548
    assert d["special_ids"]["mask"] == 126336 and d["special_ids"]["code_base"] == 126356
    assert all(m.p == 0.0 for m in a.model.modules() if isinstance(m, torch.nn.Dropout))
    assert a.model.config.embedding_dropout == 0.0
    b = a.und_rollout([UndItem(image, "Which?")], 2, UndSampling(seed=1, max_new_tokens=2, est_seeds=[3]))
    g = a.gen_rollout([GenItem("red")], 2, GenSampling(seed=1, options={"steps": 3}, est_seeds=[3]))
    assert g.images.shape == (2, 8, 8, 3) and int(g.out_ids.max()) < 8192
    assert not ((b.out_ids >= 126356) & (b.out_ids < 126356 + 8192)).any() and not (b.out_ids == 126336).any()
    for batch in (b, g):
        lp, mask = a.token_logprobs(batch, torch.arange(batch.size), est_seed=3, grad=False)
        assert torch.equal(lp, batch.old_logp_for(3) * mask) and torch.isfinite(lp).all()


def test_real_checkpoint_prompts_are_upstreams(upstream):
    from transformers import AutoTokenizer

    from pairuni_sidecar.adapters.dimoo import UPSTREAM_SYSTEM_PROMPTS

    code, ckpt = upstream
    a = load_adapter("dimoo", LoadSpec(path=ckpt, device="cpu", options={"code_dir": code, "image_size": 8}))
    assert a.system == UPSTREAM_SYSTEM_PROMPTS
    assert UPSTREAM_SYSTEM_PROMPTS["gen"] == "Generate an image according to the text prompt."
    ids, _, _, maskable, _ = a._gen_rows(["red"])
    text = "<system>Generate an image according to the text prompt.</system><user>red</user>"
    assert ids[0, : int(maskable[0].sum())].tolist() == AutoTokenizer.from_pretrained(ckpt)(text)["input_ids"]


def test_code_dir_from_the_environment(upstream, monkeypatch):
    code, ckpt = upstream
    monkeypatch.setenv(CODE_ENV, code)
    a = load_adapter("dimoo", LoadSpec(path=ckpt, device="cpu", options={"image_size": 8}))
    assert a.describe()["source"] == "lumina-dimoo"


def test_missing_code_dir_says_what_to_pass(upstream, monkeypatch):
    _, ckpt = upstream
    monkeypatch.delenv(CODE_ENV, raising=False)
    with pytest.raises(DimooCodeError, match=f"model.options.code_dir or set {CODE_ENV}"):
        load_adapter("dimoo", LoadSpec(path=ckpt, device="cpu", options={"image_size": 8}))


def test_incomplete_checkout_names_the_missing_file(upstream, tmp_path):
    _, ckpt = upstream
    code = write_code(tmp_path / "code")
    os.remove(os.path.join(code, "model", "modeling_xllmx_dimoo.py"))
    with pytest.raises(DimooCodeError, match="model/modeling_xllmx_dimoo.py"):
        load_adapter("dimoo", LoadSpec(path=ckpt, device="cpu", options={"code_dir": code, "image_size": 8}))


def test_checkout_without_the_class_is_named(upstream, tmp_path):
    _, ckpt = upstream
    code = write_code(tmp_path / "code", modeling="X = 1\n")
    with pytest.raises(DimooCodeError, match="defines no LLaDAForMultiModalGeneration"):
        load_adapter("dimoo", LoadSpec(path=ckpt, device="cpu", options={"code_dir": code, "image_size": 8}))


def test_weights_that_do_not_fit_name_the_keys(upstream, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    code, ckpt = upstream
    broken = str(tmp_path / "ckpt")
    shutil.copytree(ckpt, broken)
    st = load_file(os.path.join(broken, "model.safetensors"))
    st["model.mixer.weight"] = st.pop("model.mix.weight")
    save_file(st, os.path.join(broken, "model.safetensors"))
    with pytest.raises(
        IncompatibleCheckpoint, match=r"missing \['model.mix.weight'\], unexpected \['model.mixer.weight'\]"
    ):
        load_adapter("dimoo", LoadSpec(path=broken, device="cpu", options={"code_dir": code, "image_size": 8}))
    shutil.rmtree(os.path.join(broken, "vqvae"))
    with pytest.raises(CheckpointNotFound, match="vqvae/config.json"):
        load_adapter("dimoo", LoadSpec(path=broken, device="cpu", options={"code_dir": code, "image_size": 8}))
    for f in os.listdir(broken):
        if f.endswith(".safetensors"):
            os.remove(os.path.join(broken, f))
    with pytest.raises(CheckpointNotFound, match="no model weights"):
        load_adapter("dimoo", LoadSpec(path=broken, device="cpu", options={"code_dir": code, "image_size": 8}))
