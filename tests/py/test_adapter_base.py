"""What every adapter shares (adapters/base.py): dropout off, autocast, and the generic request fields
each family declares it honours, so a field it would ignore is refused by name instead of dropped."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from pairuni_sidecar.adapters import base, bagel, dimoo, janus
from pairuni_sidecar.adapters.base import GENERIC_FIELDS, UnhonouredField, disable_dropout
from pairuni_sidecar.contract.generated import GenSampling, UndSampling
from pairuni_sidecar.registry import HandleStore, OpContext, run_op

ROOT = Path(__file__).resolve().parents[2]


class _Attention(torch.nn.Module):
    """HF-style attention: its rates are floats handed to functional dropout, not nn.Dropout modules."""

    def __init__(self) -> None:
        super().__init__()
        self.attention_dropout = 0.5
        self.dropout = 0.5
        self.proj = torch.nn.Linear(8, 8)

    def forward(self, x):
        a = torch.nn.functional.dropout(self.proj(x), p=self.attention_dropout, training=self.training)
        return torch.nn.functional.dropout(a, p=self.dropout, training=self.training)


def test_disable_dropout_makes_train_mode_forwards_deterministic():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Dropout(0.5), _Attention()).train()
    x = torch.randn(4, 8)
    assert not torch.equal(model(x), model(x))  # dropout is live before
    with torch.no_grad():
        expected = model.eval()(x)
    model.train()
    disable_dropout(model)
    # The rates themselves are zero (nn.Dropout.p and the functional ones), so train mode == eval mode.
    assert model[1].p == 0.0 and model[2].attention_dropout == 0.0 and model[2].dropout == 0.0
    assert torch.equal(model(x), model(x)) and torch.equal(model(x), expected)


def test_every_family_uses_the_one_copy_of_the_shared_helpers():
    for mod in (janus, dimoo):
        assert mod.disable_dropout is base.disable_dropout and not hasattr(mod, "_disable_dropout")
    for mod in (janus, bagel):
        assert mod.ImageReadError is base.ImageReadError
    for cls in (janus.JanusAdapter, dimoo.DimooAdapter, bagel.BagelAdapter):
        assert cls._autocast is base.PolicyAdapter._autocast


def test_autocast_follows_the_adapters_amp():
    class A:
        device = torch.device("cpu")
        amp = None
        _autocast = base.PolicyAdapter._autocast

    a, x = A(), torch.ones(2, 2)
    with a._autocast():
        assert (x @ x).dtype == torch.float32
    a.amp = torch.bfloat16
    with a._autocast():
        assert (x @ x).dtype == torch.bfloat16


def test_generic_fields_are_the_contracts_sampling_fields_with_their_defaults():
    assert GENERIC_FIELDS == {
        "und": {"temperature": 1, "max_new_tokens": 512, "old_logp": "auto", "est_seeds": [0]},
        "gen": {"temperature": 1, "cfg_weight": 5, "logp": "cfg", "old_logp": "auto", "est_seeds": [0]},
    }


NON_DEFAULT = {
    "temperature": 0.7,
    "max_new_tokens": 9,
    "old_logp": "rollout",
    "est_seeds": [3, 4],
    "cfg_weight": 2.5,
    "logp": "cond",
}
SAMPLING = {"und": UndSampling, "gen": GenSampling}


def _sampling(side, **fields):
    return SAMPLING[side](seed=0, **fields)


def test_janus_honours_every_generic_field():
    # Janus acts on each of them (exact log-probs: any est_seeds give the same estimate), so none is refused.
    for side, fields in GENERIC_FIELDS.items():
        for f in fields:
            janus.JanusAdapter.check_honoured(side, _sampling(side, **{f: NON_DEFAULT[f]}))


@pytest.mark.parametrize("side", ["und", "gen"])
def test_dimoo_refuses_old_logp_rollout_by_name(side):
    s = _sampling(side, old_logp="rollout")
    with pytest.raises(UnhonouredField) as ei:
        dimoo.DimooAdapter.check_honoured(side, s)
    msg = str(ei.value)
    assert f"dimoo adapter does not honour {side}.old_logp='rollout'" in msg and f"config {side}.oldLogp" in msg
    assert "'auto' or 'recompute'" in msg
    assert ei.value.detail == {"field": "sampling.old_logp", "family": "dimoo", "value": "rollout"}
    assert ei.value.to_wire()["code"] == "bad_request"
    for ok in ("auto", "recompute"):  # what DiMOO does: the estimator's log-probs, recomputed
        dimoo.DimooAdapter.check_honoured(side, _sampling(side, old_logp=ok))
    for f in GENERIC_FIELDS[side]:
        if f != "old_logp":
            dimoo.DimooAdapter.check_honoured(side, _sampling(side, **{f: NON_DEFAULT[f]}))


def test_bagel_refuses_a_gen_temperature_and_honours_the_rest():
    # The flow sampler has no temperature (its noise is gen.options.noise_level): any other value is refused by name.
    with pytest.raises(UnhonouredField, match=r"the bagel adapter does not honour gen\.temperature=0\.7 .*it takes 1"):
        bagel.BagelAdapter.check_honoured("gen", _sampling("gen", temperature=0.7))
    for side, fields in GENERIC_FIELDS.items():
        for f in fields:
            if (side, f) != ("gen", "temperature"):
                bagel.BagelAdapter.check_honoured(side, _sampling(side, **{f: NON_DEFAULT[f]}))


def test_a_field_added_to_the_contract_is_refused_until_a_family_claims_it(monkeypatch):
    monkeypatch.setitem(GENERIC_FIELDS, "und", {**GENERIC_FIELDS["und"], "top_p": 1.0})

    @dataclasses.dataclass
    class WithTopP(UndSampling):
        top_p: float = 1.0

    janus.JanusAdapter.check_honoured("und", WithTopP(seed=0))
    with pytest.raises(UnhonouredField, match=r"janus adapter does not honour und\.top_p=0\.9"):
        janus.JanusAdapter.check_honoured("und", WithTopP(seed=0, top_p=0.9))


def test_the_rollout_op_refuses_before_sampling(tmp_path):
    # The shipped tiny DiMOO (its image codec is ShapesWorld's, found through the registry).
    ctx = OpContext("test", 1, None, {}, HandleStore())
    model = {"adapter": "dimoo", "path": str(ROOT / "assets" / "tiny-dimoo-shapes"), "device": "cpu"}
    assert run_op("train.load", ctx, {"model": model, "optim": {}, "seed": 0})["adapter"] == "dimoo"
    items = [{"image_path": str(tmp_path / "never-read.png"), "text": "what colour is the square?"}]
    with pytest.raises(UnhonouredField, match="dimoo adapter does not honour und.old_logp='rollout'"):
        run_op("train.und_rollout", ctx, {"n": 2, "items": items, "sampling": {"seed": 0, "old_logp": "rollout"}})
    assert ctx.handles.owned("rollout") == []
