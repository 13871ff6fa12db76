"""PairGRPO update, checkpoints and the train.* ops, in-process on a tiny random-init Janus."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

from pairuni_sidecar.adapters import CheckpointNotFound, GenItem, LoadSpec, UndItem, load_adapter  # noqa: E402
from pairuni_sidecar.contract import GenSampling, UndSampling  # noqa: E402
from pairuni_sidecar.adapters.janus import _positions  # noqa: E402
from pairuni_sidecar.adapters.tiny import build_tiny_janus  # noqa: E402
from pairuni_sidecar.errors import BadRequest  # noqa: E402
from pairuni_sidecar.policy import (  # noqa: E402
    LossCfg,
    NonFiniteError,
    OptimCfg,
    Policy,
    SideInput,
    clipped_surrogate,
    load_policy,
    read_policy_meta,
    save_policy,
    traj_coefficients,
)
from pairuni_sidecar.contract import validate_reply  # noqa: E402
from pairuni_sidecar.registry import HandleStore, OpContext, run_op  # noqa: E402
from pairuni_sidecar.rewards import list_rewards, reward  # noqa: E402

UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_janus(str(tmp_path_factory.mktemp("janus") / "tiny"), seed=0)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    from PIL import Image

    p = tmp_path_factory.mktemp("img") / "a.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(p)
    return str(p)


def group_adv(r: torch.Tensor, k: int) -> torch.Tensor:
    g = r.view(-1, k)
    return ((g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + 1e-4)).view(-1)


def p_first_upper(a, items) -> float:
    """Exact probability (full softmax) that the first answer token is an uppercase letter."""
    b = a.und_rollout(items, 1, UndSampling(max_new_tokens=1, seed=0))
    ids = [a._enc(c)[0] for c in UPPER]
    x = b.extra
    with torch.no_grad():
        lg = a.model(
            inputs_embeds=a._und_embeds(a.model, x["prompt_ids"], x["feats"][b.group]),
            attention_mask=x["prompt_mask"],
            position_ids=_positions(x["prompt_mask"]),
            logits_to_keep=1,
        ).logits[:, -1]
    return float(torch.softmax(lg.float(), -1)[:, ids].sum(-1).mean())


def p_even_codes(a, prompts, w=5.0) -> float:
    """Mean probability, under the guided distribution, that the next image code is even (teacher-forced
    on a fixed evaluation rollout, every position)."""
    b = a.gen_rollout([GenItem(p) for p in prompts], 2, GenSampling(seed=0, cfg_weight=w))
    m = a.model
    with torch.no_grad():
        ids, pm = b.extra["prompt_ids"].flatten(0, 1), b.extra["prompt_mask"].flatten(0, 1)
        codes = b.out_ids.repeat_interleave(2, 0)
        emb = torch.cat([m.get_input_embeddings()(ids), m.prepare_embeddings_for_image_generation(codes)], 1)
        mask = torch.cat([pm, torch.ones_like(codes)], 1)
        h = m.model.language_model(
            inputs_embeds=emb, attention_mask=mask, position_ids=_positions(mask)
        ).last_hidden_state
        lg = m.model.generation_head(h[:, ids.shape[1] - 1 : -1]).float()
        z = lg[1::2] + w * (lg[0::2] - lg[1::2])
        return float(torch.softmax(z, -1)[..., 0::2].sum(-1).mean())


def test_update_moves_policy_towards_rewarded_answers(model_dir, image):
    """A reward favouring one kind of answer (und: uppercase first letter; gen: even image codes) raises its probability."""
    a = load_adapter("janus", LoadSpec(path=model_dir, device="cpu"))
    pol = Policy(a, OptimCfg(lr=5e-3))
    items = [UndItem(image, f"Question {i}? A. x B. y") for i in range(3)]
    prompts = ["a red circle", "a blue square", "two dots"]
    u0, g0 = p_first_upper(a, items), p_even_codes(a, prompts)
    K = 8
    for step in range(6):
        ub = a.und_rollout(items, K, UndSampling(max_new_tokens=3, seed=100 + step))
        ur = torch.tensor([1.0 if t[:1].isupper() else 0.0 for t in ub.texts])
        gb = a.gen_rollout([GenItem(p) for p in prompts], K, GenSampling(seed=200 + step))
        gr = (gb.out_ids % 2 == 0).float().mean(-1)  # share of even codes
        m = pol.update([SideInput(ub, group_adv(ur, K)), SideInput(gb, group_adv(gr, K))], LossCfg(), micro_batch=12)
        assert np.isfinite(m["grad_norm"]) and m["und/ratio_mean"] == pytest.approx(1.0, abs=1e-5)
    u1, g1 = p_first_upper(a, items), p_even_codes(a, prompts)
    print("P(upper first)", u0, "->", u1, "; P(even code)", g0, "->", g1)
    assert u1 > u0 + 0.05, (u0, u1)
    assert g1 > g0 + 0.015, (g0, g1)


def test_negative_advantage_pushes_the_other_way(model_dir, image):
    a = load_adapter("janus", LoadSpec(path=model_dir, device="cpu"))
    pol = Policy(a, OptimCfg(lr=3e-3))
    items = [UndItem(image, "Q?")]
    u0 = p_first_upper(a, items)
    for step in range(4):
        ub = a.und_rollout(items, 8, UndSampling(max_new_tokens=2, seed=300 + step))
        ur = torch.tensor([0.0 if t[:1].isupper() else 1.0 for t in ub.texts])  # penalise uppercase
        pol.update([SideInput(ub, group_adv(ur, 8))], LossCfg(), micro_batch=8)
    assert p_first_upper(a, items) < u0


def _weights(a):
    return {n: p.detach().clone() for n, p in a.trainable_parameters()}


def test_micro_batching_does_not_change_the_step(model_dir, image):
    # Compared on the gradient the optimizer receives, not on the weights after it: Adam divides by
    # sqrt(v), so a rounding-level difference in a near-zero gradient becomes a whole-step difference
    # whose size depends on the CPU's float kernels (seen: 2e-6 on one machine, 0 on another).
    res = []
    for mb in (1, 16):
        a = load_adapter("janus", LoadSpec(path=model_dir, device="cpu"))
        pol = Policy(a, OptimCfg(lr=1e-3))
        grads: dict[str, torch.Tensor] = {}
        step = pol.optimizer.step

        def capture(*args, _step=step, _grads=grads, _pol=pol, **kw):
            _grads.update(
                {n: p.grad.detach().clone() for n, p in zip(_pol.param_names, _pol.params) if p.grad is not None}
            )
            return _step(*args, **kw)

        pol.optimizer.step = capture
        ub = a.und_rollout([UndItem(image, "Q1"), UndItem(image, "Q2")], 4, UndSampling(max_new_tokens=4, seed=7))
        gb = a.gen_rollout([GenItem("p")], 4, GenSampling(seed=8))
        adv_u = torch.tensor([1.0, -1.0, 0.5, -0.5, 0.0, 2.0, -2.0, 0.0])
        adv_g = torch.tensor([0.3, -0.3, 1.0, -1.0])
        m = pol.update([SideInput(ub, adv_u), SideInput(gb, adv_g)], LossCfg(), micro_batch=mb)
        res.append((m, grads))
    (m1, g1), (m2, g2) = res
    assert m1["loss"] == pytest.approx(m2["loss"], abs=1e-6)
    assert m1["grad_norm"] == pytest.approx(m2["grad_norm"], rel=1e-5)
    assert g1.keys() == g2.keys() and g1
    for k in g1:
        scale = float(g1[k].abs().max())
        assert float((g1[k] - g2[k]).abs().max()) <= 1e-5 * scale + 1e-9, k  # fp32 summation order only


def test_token_sum_update_sums_tokens_and_averages_over_items(model_dir, image):
    # At ratio 1 every token term is -A_i, so eq. 2's literal loss is -(sum_i A_i * |o_i|) / items.
    a = load_adapter("janus", LoadSpec(path=model_dir, device="cpu"))
    pol = Policy(a, OptimCfg(lr=1e-3))
    ub = a.und_rollout([UndItem(image, "Q1"), UndItem(image, "Q2")], 3, UndSampling(max_new_tokens=4, seed=11))
    adv = torch.tensor([1.0, -0.5, 0.25, 2.0, -1.0, 0.5])
    lens = ub.out_mask.sum(-1).double()
    m = pol.update([SideInput(ub, adv)], LossCfg(agg="token_sum", norm="side"))
    assert m["loss"] == pytest.approx(float(-(adv.double() * lens).sum() / 2), abs=1e-4)


def test_grad_cosine_matches_separate_gradients(model_dir, image):
    a = load_adapter("janus", LoadSpec(path=model_dir, device="cpu"))
    ub = a.und_rollout([UndItem(image, "Q")], 4, UndSampling(max_new_tokens=3, seed=1))
    gb = a.gen_rollout([GenItem("p")], 4, GenSampling(seed=2))
    au, ag = torch.tensor([1.0, -1.0, 0.5, -0.5]), torch.tensor([0.5, -0.5, 1.0, -1.0])
    cu, cg = traj_coefficients([ub.out_mask, gb.out_mask], LossCfg())
    grads = []
    for b, adv, c in ((ub, au, cu), (gb, ag, cg)):
        lp, mask = a.token_logprobs(b, torch.arange(4), est_seed=0, grad=True)
        loss, _ = clipped_surrogate(lp, b.old_logp, adv, mask, c, LossCfg())
        g = torch.autograd.grad(loss, [p for _, p in a.trainable_parameters()], allow_unused=True)
        grads.append(
            torch.cat(
                [
                    (x if x is not None else torch.zeros_like(p)).flatten()
                    for x, (_, p) in zip(g, a.trainable_parameters())
                ]
            )
        )
    want = float(torch.nn.functional.cosine_similarity(grads[0].double(), grads[1].double(), dim=0))
    m = Policy(a, OptimCfg(lr=1e-3)).update([SideInput(ub, au), SideInput(gb, ag)], LossCfg(), grad_cosine=True)
    assert m["grad_cos"] == pytest.approx(want, abs=1e-6)


def test_nan_advantages_and_gradients_apply_nothing(model_dir, image, monkeypatch):
    a = load_adapter("janus", LoadSpec(path=model_dir, device="cpu"))
    pol = Policy(a, OptimCfg(lr=1e-3))
    ub = a.und_rollout([UndItem(image, "Q")], 2, UndSampling(max_new_tokens=2, seed=1))
    before = _weights(a)
    with pytest.raises(NonFiniteError, match="advantages"):
        pol.update([SideInput(ub, torch.tensor([float("nan"), 1.0]))], LossCfg())
    orig = a.token_logprobs

    def poisoned(*args, **kw):
        lp, m = orig(*args, **kw)
        return lp * float("nan"), m

    monkeypatch.setattr(a, "token_logprobs", poisoned)
    with pytest.raises(NonFiniteError, match="not applied"):
        pol.update([SideInput(ub, torch.tensor([1.0, -1.0]))], LossCfg())
    after = _weights(a)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert pol.step_count == 0 and not pol.optimizer.state
    with pytest.raises(BadRequest, match="shape"):
        pol.update([SideInput(ub, torch.tensor([1.0]))], LossCfg())


def test_reference_model_kl(model_dir, image):
    a = load_adapter("janus", LoadSpec(path=model_dir, device="cpu", ref_model_dir=model_dir))
    pol = Policy(a, OptimCfg(lr=5e-3))
    items = [UndItem(image, "Q")]
    kls = []
    for step in range(3):
        ub = a.und_rollout(items, 4, UndSampling(max_new_tokens=3, seed=step))
        m = pol.update([SideInput(ub, torch.tensor([1.0, -1.0, 0.5, -0.5]))], LossCfg(beta=0.04))
        kls.append(m["und/kl_ref"])
    assert kls[0] == pytest.approx(0.0, abs=1e-7)  # the policy equals the reference before its first step
    assert kls[2] > 0
    b = load_adapter("janus", LoadSpec(path=model_dir, device="cpu"))
    ub = b.und_rollout(items, 4, UndSampling(max_new_tokens=3, seed=0))
    with pytest.raises(BadRequest, match="reference"):
        Policy(b, OptimCfg()).update([SideInput(ub, torch.ones(4))], LossCfg(beta=0.1))


def _one_step(pol, image, seed):
    a = pol.adapter
    ub = a.und_rollout([UndItem(image, "Q1"), UndItem(image, "Q2")], 4, UndSampling(max_new_tokens=4, seed=seed))
    gb = a.gen_rollout([GenItem("p1"), GenItem("p2")], 4, GenSampling(seed=seed + 1))
    ur = torch.tensor([float(len(t) % 2) for t in ub.texts])
    gr = gb.images.float().mean(dim=(1, 2, 3))
    return pol.update([SideInput(ub, group_adv(ur, 4)), SideInput(gb, group_adv(gr, 4))], LossCfg(), micro_batch=4)


def test_save_resume_gives_identical_next_step(model_dir, image, tmp_path):
    spec = LoadSpec(path=model_dir, device="cpu")
    optim = OptimCfg(lr=2e-3)
    pol = load_policy("janus", spec, optim)
    _one_step(pol, image, 10)
    ck = save_policy(pol, "janus", str(tmp_path / "ck" / "policy"))
    assert read_policy_meta(ck)["optimizer_step"] == 1
    assert sorted(os.listdir(ck)) == ["policy.json", "state"]  # no HF export unless asked for
    assert not [f for f in os.listdir(tmp_path / "ck") if ".tmp-" in f]
    m_cont = _one_step(pol, image, 20)
    w_cont = _weights(pol.adapter)
    resumed = load_policy("janus", spec, optim, resume_dir=ck)
    assert resumed.step_count == 1
    m_res = _one_step(resumed, image, 20)
    assert m_res == {**m_cont, "update_s": m_res["update_s"]}
    w_res = _weights(resumed.adapter)
    assert all(torch.equal(w_cont[k], w_res[k]) for k in w_cont)
    with pytest.raises(BadRequest, match="trainable"):
        load_policy(
            "janus",
            LoadSpec(path=model_dir, device="cpu", train_modules=("language_model", "gen_head")),
            optim,
            resume_dir=ck,
        )
    with pytest.raises(CheckpointNotFound, match="missing' does not exist"):
        load_policy("janus", spec, optim, resume_dir=str(tmp_path / "missing"))


def test_failed_save_keeps_previous_checkpoint(model_dir, image, tmp_path, monkeypatch):
    pol = load_policy("janus", LoadSpec(path=model_dir, device="cpu"), OptimCfg(lr=1e-3))
    ck = save_policy(pol, "janus", str(tmp_path / "policy"))
    before = sorted(os.listdir(ck))

    import torch.distributed.checkpoint as dcp

    real = dcp.save

    def boom(sd, checkpoint_id):  # some shards written, then the disk fills up
        real(sd, checkpoint_id=checkpoint_id)
        raise OSError("disk full")

    monkeypatch.setattr(dcp, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_policy(pol, "janus", ck)
    assert sorted(os.listdir(ck)) == before
    assert os.listdir(tmp_path) == ["policy"]  # no tmp leftovers


# -- ops, in-process ---------------------------------------------------------------------------


class Ctx(OpContext):
    def __init__(self, state, handles):
        super().__init__("test", 1, None, state, handles)


def call(state, handles, name, args, tensors=None):
    return run_op(name, Ctx(state, handles), args, tensors)


def load_args(model_dir, **optim):
    return {"model": {"path": model_dir, "device": "cpu"}, "optim": optim, "seed": 0}


@reward("test_nan")
def _nan_reward(config):
    class S:
        def score(self, images, prompts):
            r = torch.ones(images.shape[0])
            r[0] = float("nan")
            return r

    return S()


def test_ops_round_trip(model_dir, image, tmp_path):
    state, handles = {}, HandleStore()
    info = call(state, handles, "train.load", load_args(model_dir, lr=1e-3))
    assert info["num_image_tokens"] == 16 and info["optimizer_step"] == 0 and info["elapsed_s"] >= 0
    assert set(info["capabilities"]) >= {"und_rollout", "gen_rollout", "sft"}
    ru = call(
        state,
        handles,
        "train.und_rollout",
        {"n": 2, "items": [{"image_path": image, "text": "Q"}], "sampling": {"max_new_tokens": 3, "seed": 1}},
    )
    assert ru["size"] == 2 and len(ru["texts"]) == 2 and len(ru["lengths"]) == 2
    rg = call(state, handles, "train.gen_rollout", {"n": 2, "items": [{"prompt": "p"}], "sampling": {"seed": 2}})
    rep = call(state, handles, "train.reward", {"handle": rg["handle"], "reward": {"name": "brightness"}})
    r = rep.tensors["rewards"]
    assert r.shape == (2,) and r.dtype == torch.float32
    imgs = handles.get(rg["handle"]).images
    assert torch.allclose(r, imgs.float().mean(dim=(1, 2, 3)) / 255)
    im = call(state, handles, "train.rollout_images", {"handle": rg["handle"]})
    validate_reply("train.rollout_images", im.args)
    assert im.args["size"] == 2 and im.args["prompts"] == ["p", "p"]
    assert im.tensors["images"].shape == (2, 16, 16, 3)
    assert im.tensors["images"].dtype == torch.uint8 and torch.equal(im.tensors["images"], imgs)
    with pytest.raises(BadRequest, match="holds a 'und' rollout, not generated images"):
        call(state, handles, "train.rollout_images", {"handle": ru["handle"]})
    lp = call(state, handles, "train.logprobs", {"handle": ru["handle"]})
    assert (lp.tensors["logp"] - lp.tensors["old_logp"]).abs().max() <= 1e-5
    m = call(
        state,
        handles,
        "train.update",
        {"handles": {"und": ru["handle"], "gen": rg["handle"]}, "grad_cosine": True, "loss": {}, "est_seed": 0},
        {"adv_und": torch.tensor([1.0, -1.0]), "adv_gen": torch.tensor([-1.0, 1.0])},
    )
    assert m["optimizer_step"] == 1 and "grad_cos" in m and m["und/tokens"] > 0
    validate_reply("train.update", m)  # the metric record the TS side declares
    g = call(
        state, handles, "train.grid", {"handle": rg["handle"], "path": str(tmp_path / "s" / "grid.png"), "nrow": 2}
    )
    from PIL import Image

    assert Image.open(g["path"]).size == (g["width"], g["height"]) == (2 * 18 + 2, 18 + 2)
    s = call(state, handles, "train.save", {"dir": str(tmp_path / "ck")})
    assert read_policy_meta(s["dir"])["optimizer_step"] == 1
    sft = call(
        state,
        handles,
        "train.sft",
        {
            "examples": [
                {"side": "und", "image_path": image, "text": "Q", "target": "A"},
                {"side": "gen", "image_path": image, "text": "a prompt"},
            ]
        },
    )
    validate_reply("train.sft", sft)
    assert sft["optimizer_step"] == 2 and sft["und/sft_loss"] > 0 and sft["gen/sft_loss"] > 0
    assert call(state, handles, "handles.free", {"handles": [ru["handle"], rg["handle"]]})["freed"] == 2
    assert "brightness" in call(state, handles, "info", {})["plugins"]["reward"]


def test_sft_step_lowers_the_loss_on_a_fixed_set(model_dir, image):
    state, handles = {}, HandleStore()
    call(state, handles, "train.load", load_args(model_dir, lr=3e-3))
    ex = {
        "examples": [
            {"side": "und", "image_path": image, "text": "What is it?", "target": "A red square"},
            {"side": "gen", "image_path": image, "text": "a red square"},
        ]
    }
    first = call(state, handles, "train.sft", ex)
    for _ in range(5):
        last = call(state, handles, "train.sft", ex)
    assert last["und/sft_loss"] < first["und/sft_loss"] and last["gen/sft_loss"] < first["gen/sft_loss"]


def test_ops_bad_input(model_dir, image, tmp_path):
    state, handles = {}, HandleStore()
    with pytest.raises(BadRequest, match="train.load first"):
        call(
            state,
            handles,
            "train.und_rollout",
            {"n": 1, "items": [{"image_path": image, "text": "Q"}], "sampling": {"seed": 0}},
        )
    with pytest.raises(CheckpointNotFound) as ei:
        call(state, handles, "train.load", load_args(str(tmp_path / "none")))
    assert ei.value.code == "not_found"
    with pytest.raises(BadRequest, match="unknown field.*lr") as ei:
        call(state, handles, "train.load", {**load_args(model_dir), "lr": 1})
    assert ei.value.detail["field"] == "lr"
    with pytest.raises(BadRequest, match="missing field.*seed"):
        call(state, handles, "train.load", {"model": {"path": model_dir}, "optim": {}})
    with pytest.raises(BadRequest, match="janus model.options: unknown field.*templat"):
        call(
            state,
            handles,
            "train.load",
            {**load_args(model_dir), "model": {"path": model_dir, "options": {"templat": "x"}}},
        )
    call(state, handles, "train.load", load_args(model_dir))
    with pytest.raises(BadRequest, match="items"):
        call(state, handles, "train.und_rollout", {"n": 1, "items": [], "sampling": {"seed": 0}})
    with pytest.raises(BadRequest, match="janus gen.options: unknown field.*steps"):
        call(
            state,
            handles,
            "train.gen_rollout",
            {"n": 1, "items": [{"prompt": "x"}], "sampling": {"seed": 0, "options": {"steps": 2}}},
        )
    rg = call(state, handles, "train.gen_rollout", {"n": 2, "items": [{"prompt": "p"}], "sampling": {"seed": 0}})
    assert "test_nan" in list_rewards()
    with pytest.raises(NonFiniteError, match="test_nan") as ei:
        call(state, handles, "train.reward", {"handle": rg["handle"], "reward": {"name": "test_nan"}})
    assert ei.value.detail["rows"] == [0]
    with pytest.raises(BadRequest, match="unknown reward 'nope'"):
        call(state, handles, "train.reward", {"handle": rg["handle"], "reward": {"name": "nope"}})
    with pytest.raises(BadRequest, match="missing payload 'adv_gen'"):
        call(state, handles, "train.update", {"handles": {"gen": rg["handle"]}, "loss": {}, "est_seed": 0})
    with pytest.raises(BadRequest, match="payload 'adv_gen' must have dtype f32"):
        call(
            state,
            handles,
            "train.update",
            {"handles": {"gen": rg["handle"]}, "loss": {}, "est_seed": 0},
            {"adv_gen": torch.zeros(2, dtype=torch.float64)},
        )
    with pytest.raises(BadRequest, match="holds a 'gen' rollout"):
        call(
            state,
            handles,
            "train.update",
            {"handles": {"und": rg["handle"]}, "loss": {}, "est_seed": 0},
            {"adv_und": torch.zeros(2)},
        )


def test_ops_rollout_on_corrupt_checkpoint_names_it(model_dir, image, tmp_path):
    """A resumed checkpoint whose weights went NaN: the rollout op fails with a typed op_failed error
    that names the checkpoint's model directory and the side, on the wire too."""
    state, handles = {}, HandleStore()
    call(state, handles, "train.load", load_args(model_dir))
    ck = str(tmp_path / "ck")
    with torch.no_grad():  # a diverged policy: its checkpoint holds NaN weights
        dict(state["train"].adapter.model.named_parameters())["model.language_model.norm.weight"].fill_(float("nan"))
    call(state, handles, "train.save", {"dir": ck})

    call(state, handles, "train.load", {**load_args(model_dir), "resume_dir": ck})
    for op, items, side in (
        ("train.und_rollout", [{"image_path": image, "text": "Q"}], "und"),
        ("train.gen_rollout", [{"prompt": "p"}], "gen"),
    ):
        with pytest.raises(NonFiniteError, match=re.escape(f"janus {side}: the model loaded from '{ck}'")) as ei:
            call(
                state,
                handles,
                op,
                {"n": 2, "items": items, "sampling": {"max_new_tokens": 3, "seed": 0}}
                if side == "und"
                else {"n": 2, "items": items, "sampling": {"seed": 0}},
            )
        wire = ei.value.to_wire()
        assert wire["code"] == "op_failed" and wire["detail"]["type"] == "NonFiniteError"
        assert wire["detail"]["model"] == ck and wire["detail"]["side"] == side
    assert len(handles) == 0  # nothing of the failed rollouts stays behind
