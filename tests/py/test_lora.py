"""LoRA on the RL families (adapters/lora.py through the Janus and DiMOO adapters), on their tiny models:
only the factors train, a fresh adapter computes the base model, exports merge W + (alpha/r) B A and load
with the family's own loader, and policy checkpoints resume the factors with their AdamW state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

from pairuni_sidecar.adapters import AdapterConfigError, GenItem, LoadSpec, UndItem, load_adapter  # noqa: E402
from pairuni_sidecar.adapters.tiny import build_tiny_janus  # noqa: E402
from pairuni_sidecar.contract import GenSampling, UndSampling  # noqa: E402
from pairuni_sidecar.diffusion.tiny_model import build_tiny_dimoo  # noqa: E402
from pairuni_sidecar.errors import BadRequest  # noqa: E402
from pairuni_sidecar.policy import LossCfg, OptimCfg, SideInput, export_policy, load_policy, save_policy  # noqa: E402

LORA = {"lora_rank": 4, "lora_alpha": 8}  # scale alpha / r = 2
LOSS = LossCfg(eps_low=0.2, eps_high=0.2, beta=0.0, agg="seq_mean", norm="side")


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    from PIL import Image

    p = tmp_path_factory.mktemp("img") / "a.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(p)
    return str(p)


@pytest.fixture(scope="module")
def janus_dir(tmp_path_factory):
    return build_tiny_janus(str(tmp_path_factory.mktemp("janus") / "m"), seed=0)


@pytest.fixture(scope="module")
def dimoo_dir(tmp_path_factory):
    return build_tiny_dimoo(str(tmp_path_factory.mktemp("dimoo") / "m"), seed=0)


def _janus(path, **kw):
    return LoadSpec(adapter="janus", path=str(path), device="cpu", autocast="off", **kw)


def _dimoo(path, **kw):
    return LoadSpec(adapter="dimoo", path=str(path), device="cpu", autocast="off", **kw)


def _janus_batches(a, image, seed):
    # old log-probs recomputed by the scoring forward: the first update's ratio is then exactly 1
    ub = a.und_rollout(
        [UndItem(image, "Q1"), UndItem(image, "Q2")], 2, UndSampling(max_new_tokens=3, seed=seed, old_logp="recompute")
    )
    gb = a.gen_rollout([GenItem("p1")], 2, GenSampling(seed=seed + 1, old_logp="recompute"))
    return [(ub, torch.tensor([1.0, -1.0, 0.5, -0.5])), (gb, torch.tensor([1.0, -1.0]))]


def _dimoo_batches(a, image, seed):
    ub = a.und_rollout([UndItem(image, "Which?")], 2, UndSampling(seed=seed, max_new_tokens=4, est_seeds=[11]))
    gb = a.gen_rollout([GenItem("red")], 2, GenSampling(seed=seed + 1, options={"steps": 4}, est_seeds=[11]))
    return [(ub, torch.tensor([1.0, -1.0])), (gb, torch.tensor([1.0, -1.0]))]


FAMILIES = {
    # family: (spec, batches, est_seed, adapted modules (default targets), one of them)
    "janus": (_janus, _janus_batches, 0, 2 * 7, "model.language_model.layers.1.mlp.down_proj"),
    "dimoo": (_dimoo, _dimoo_batches, 11, 2 * 4, "blocks.0.qkv"),
}


def _logps(a, batches, est_seed):
    return [a.token_logprobs(b, torch.arange(b.size), est_seed=est_seed, grad=False)[0] for b, _ in batches]


@pytest.mark.parametrize("family", ["janus", "dimoo"])
def test_lora_update_changes_only_factors_and_the_export_merges_them(family, request, image, tmp_path):
    spec, make, est, n_modules, layer = FAMILIES[family]
    path = request.getfixturevalue(f"{family}_dir")
    pol = load_policy(family, spec(path, options=LORA), OptimCfg(lr=1e-2, micro_batch=4))
    a = pol.adapter
    assert len(a.lora) == n_modules and a.describe()["lora"] == {"rank": 4, "alpha": 8.0, "modules": n_modules}
    assert pol.param_names == [f"lora:{n}.{w}" for n in a.lora for w in ("a", "b")]
    assert not any(p.requires_grad for p in a.model.parameters())
    base = {k: v.clone() for k, v in a.model.state_dict().items()}

    batches = make(a, image, 5)
    # B starts at zero: the adapted model computes exactly what the base model does
    plain = load_adapter(family, spec(path))
    assert all(torch.equal(x, y) for x, y in zip(_logps(a, batches, est), _logps(plain, batches, est)))
    m = pol.update([SideInput(b, adv) for b, adv in batches], LOSS, est_seed=est)
    for side in ("und", "gen"):
        assert m[f"{side}/ratio_min"] == 1.0 and m[f"{side}/ratio_max"] == 1.0
    assert m["grad_norm"] > 0
    after = a.model.state_dict()
    assert set(after) == set(base) and all(torch.equal(after[k], base[k]) for k in base)  # base bit-identical
    A, B = a.lora[layer]
    assert float(B.detach().abs().max()) > 0  # the factors did move
    live = _logps(a, batches, est)
    assert not all(torch.equal(x, y) for x, y in zip(live, _logps(plain, batches, est)))

    out = export_policy(pol, str(tmp_path / "export"))
    merged = load_adapter(family, spec(out))  # the family's loader, no LoRA: plain merged weights
    assert merged.lora is None
    w = merged.model.state_dict()[f"{layer}.weight"]
    hand = base[f"{layer}.weight"] + 2.0 * (B.detach() @ A.detach())  # W + (alpha / r) B A
    assert torch.allclose(w, hand, rtol=0, atol=1e-6)
    untouched = [k for k in base if not any(k == f"{n}.weight" for n in a.lora)]
    sd = merged.model.state_dict()
    assert all(torch.equal(sd[k], base[k]) for k in untouched)
    for x, y in zip(live, _logps(merged, batches, est)):
        assert torch.allclose(x, y, rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", ["janus", "dimoo"])
def test_lora_resume_restores_factors_and_adam_state(family, request, image, tmp_path):
    spec, make, est, _, _ = FAMILIES[family]
    path = request.getfixturevalue(f"{family}_dir")
    optim = OptimCfg(lr=1e-2, micro_batch=4)
    torch.manual_seed(1)
    pol = load_policy(family, spec(path, options=LORA), optim)
    batches = make(pol.adapter, image, 7)
    pol.update([SideInput(b, adv) for b, adv in batches], LOSS, est_seed=est)
    ck = save_policy(pol, family, str(tmp_path / "ck"))
    torch.manual_seed(2)  # a different fresh draw of A: the checkpoint's factors must replace it
    back = load_policy(family, spec(path, options=LORA), optim, resume_dir=ck)
    assert back.step_count == 1 and back.param_names == pol.param_names
    for (n, p), q in zip(zip(pol.param_names, pol.params), back.params):
        assert torch.equal(p, q), n
        sa, sb = pol.optimizer.state[p], back.optimizer.state[q]
        assert sorted(sa) == sorted(sb) == ["exp_avg", "exp_avg_sq", "step"]
        assert all(torch.equal(sa[k], sb[k]) for k in sa), n
    assert all(torch.equal(x, y) for x, y in zip(_logps(pol.adapter, batches, est), _logps(back.adapter, batches, est)))
    # resuming with LoRA off is a different set of trainable parameters: refused by name
    with pytest.raises(BadRequest, match="different set of trainable parameters"):
        load_policy(family, spec(path), optim, resume_dir=ck)


def test_lora_targets(janus_dir, dimoo_dir):
    a = load_adapter("janus", _janus(janus_dir, options={**LORA, "lora_targets": ["q_proj", "mlp.down_proj"]}))
    assert sorted(a.lora) == [
        f"model.language_model.layers.{i}.{m}" for i in (0, 1) for m in ("mlp.down_proj", "self_attn.q_proj")
    ]
    # LoRA on a vision Linear: image features then carry a graph to it
    v = load_adapter(
        "janus", _janus(janus_dir, train_modules=["vision"], options={**LORA, "lora_targets": ["aligner.fc1"]})
    )
    assert list(v.lora) == ["model.aligner.fc1"] and v._vision_trainable
    d = load_adapter("dimoo", _dimoo(dimoo_dir, options={**LORA, "lora_targets": ["head"]}))
    assert list(d.lora) == ["head"]


def test_lora_on_modules_without_linear_layers_is_a_typed_error(janus_dir, dimoo_dir):
    with pytest.raises(AdapterConfigError, match="train_modules selects no Linear layer") as e:
        load_adapter("janus", _janus(janus_dir, train_modules=["model.language_model.embed_tokens"], options=LORA))
    assert e.value.detail == {"field": "train_modules"}
    with pytest.raises(AdapterConfigError, match="train_modules selects no Linear layer") as e:
        load_adapter("dimoo", _dimoo(dimoo_dir, train_modules=["tok."], options=LORA))
    assert e.value.detail == {"field": "train_modules"}
    # Linear layers selected, but the default targets (the LLM's projections) are not among them
    with pytest.raises(AdapterConfigError, match="default lora_targets") as e:
        load_adapter("janus", _janus(janus_dir, train_modules=["gen_head"], options=LORA))
    assert e.value.detail == {"field": "options.lora_targets"}
    with pytest.raises(AdapterConfigError, match=r"lora_targets \['nope'\]"):
        load_adapter("dimoo", _dimoo(dimoo_dir, options={**LORA, "lora_targets": ["nope"]}))


@pytest.mark.parametrize("family", ["janus", "dimoo"])
def test_lora_kl_reference_is_the_base_with_factors_off(family, request, image):
    """beta > 0 with ref_model_dir = model.path: no second copy of the weights is loaded; the reference
    passes run the policy's own (frozen) base with the factors switched off, i.e. the policy before any
    update, and equal a plain adapter's log-probs after the factors have moved."""
    spec, make, est, _, _ = FAMILIES[family]
    path = request.getfixturevalue(f"{family}_dir")
    pol = load_policy(family, spec(path, options=LORA, ref_model_dir=str(path)), OptimCfg(lr=1e-2, micro_batch=4))
    a = pol.adapter
    assert a.ref_model is None and a.ref_is_base and a.describe()["ref_model"] == "lora-base"
    plain = load_adapter(family, spec(path))
    batches = make(a, image, 5)
    kl = LossCfg(eps_low=0.2, eps_high=0.2, beta=0.1, agg="seq_mean", norm="side")
    first = pol.update([SideInput(b, adv) for b, adv in batches], kl, est_seed=est)
    assert first["und/kl_ref"] == 0.0 and first["gen/kl_ref"] == 0.0  # B = 0: policy = reference
    second = pol.update([SideInput(b, adv) for b, adv in make(a, image, 7)], kl, est_seed=est)
    assert second["und/kl_ref"] > 0 or second["gen/kl_ref"] > 0  # the factors moved away from the base
    for b, _ in batches:
        rows = torch.arange(b.size)
        ref = a.token_logprobs(b, rows, est_seed=est, grad=False, ref=True)[0]
        assert torch.equal(ref, plain.token_logprobs(b, rows, est_seed=est, grad=False)[0])
        assert not torch.equal(ref, a.token_logprobs(b, rows, est_seed=est, grad=False)[0])
    assert a.lora.enabled  # switched back on after the reference passes
    other = load_adapter(family, spec(path, options=LORA, ref_model_dir=str(path) + "/."))
    assert other.ref_is_base and other.ref_model is None  # the same directory spelt another way
    assert load_adapter(family, spec(path, ref_model_dir=str(path))).ref_model is not None  # no LoRA: a copy
