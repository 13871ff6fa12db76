"""Feature backbones and ops for pairing (pairuni_sidecar.features, ops/features.py)."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from pairuni_sidecar.errors import BadRequest, NotFound, OpFailed
from pairuni_sidecar.features.backbones import BackboneSpec, MissingPackage, WeightsMissing, load_backbone
from pairuni_sidecar.features.resnet import ResNet50
from pairuni_sidecar.ops.features import parquet_to_arrow
from pairuni_sidecar.registry import run_op
from pairuni_sidecar.registry import HandleStore, OpContext


def png(color, size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def blob_of(images: list[bytes]) -> tuple[torch.Tensor, torch.Tensor]:
    offs = np.cumsum([0] + [len(b) for b in images]).astype(np.int64)
    return torch.from_numpy(np.frombuffer(b"".join(images), np.uint8).copy()), torch.from_numpy(offs)


def ctx(state=None) -> OpContext:
    return OpContext("test", 1, None, state if state is not None else {}, HandleStore())


def torchvision_resnet50_keys() -> dict[str, tuple]:
    """The torchvision resnet50 state-dict layout, written out from its architecture."""
    keys: dict[str, tuple] = {"conv1.weight": (64, 3, 7, 7)}

    def bn(p, c):
        for s in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{p}.{s}"] = (c,)
        keys[f"{p}.num_batches_tracked"] = ()

    bn("bn1", 64)
    in_ch = 64
    for li, (w, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3)), start=1):
        for b in range(blocks):
            p = f"layer{li}.{b}"
            keys[f"{p}.conv1.weight"] = (w, in_ch, 1, 1)
            bn(f"{p}.bn1", w)
            keys[f"{p}.conv2.weight"] = (w, w, 3, 3)
            bn(f"{p}.bn2", w)
            keys[f"{p}.conv3.weight"] = (w * 4, w, 1, 1)
            bn(f"{p}.bn3", w * 4)
            if b == 0:
                keys[f"{p}.downsample.0.weight"] = (w * 4, in_ch, 1, 1)
                bn(f"{p}.downsample.1", w * 4)
            in_ch = w * 4
    keys["fc.weight"] = (1000, 2048)
    keys["fc.bias"] = (1000,)
    return keys


def test_resnet50_state_dict_matches_torchvision_layout():
    sd = ResNet50().state_dict()
    want = torchvision_resnet50_keys()
    assert list(sd) == list(want)  # same names, same order
    assert {k: tuple(v.shape) for k, v in sd.items()} == want
    assert sum(p.numel() for p in ResNet50().parameters()) == 25_557_032  # torchvision's resnet50 count


def test_resnet50_loads_a_weights_file_strictly_and_embeds_2048d(tmp_path):
    torch.manual_seed(0)
    m = ResNet50()
    path = tmp_path / "resnet50-test.pth"
    torch.save(m.state_dict(), path)
    bb = load_backbone(BackboneSpec(kind="resnet50", weights=str(path), device="cpu"))
    ims = [Image.new("RGB", (300, 200), c) for c in ((255, 0, 0), (0, 0, 255))]
    f = bb.embed(ims)
    assert f.shape == (2, 2048) and f.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1, atol=1e-6)
    # Same weights through the module directly: features are the pooled output (head not applied).
    with torch.inference_mode():
        ref = m.eval()(bb.prepare(ims))
    np.testing.assert_allclose(f, torch.nn.functional.normalize(ref, dim=1).numpy(), atol=1e-5)
    assert bb.key.startswith("resnet50-")


def functional_resnet50(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """torchvision's resnet50 (v1.5) forward, written from the architecture with functional ops only
    and reading nothing but the state dict: an implementation independent of features/resnet.py."""
    F = torch.nn.functional

    def bn(h, p):  # eval-mode batch norm with torchvision's eps
        return F.batch_norm(
            h, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"], False, 0.0, 1e-5
        )

    h = F.relu(bn(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), "bn1"))
    h = F.max_pool2d(h, 3, stride=2, padding=1)
    for li, (blocks, stride) in enumerate(((3, 1), (4, 2), (6, 2), (3, 2)), start=1):
        for b in range(blocks):
            p = f"layer{li}.{b}"
            s = stride if b == 0 else 1
            out = F.relu(bn(F.conv2d(h, sd[f"{p}.conv1.weight"]), f"{p}.bn1"))
            out = F.relu(
                bn(F.conv2d(out, sd[f"{p}.conv2.weight"], stride=s, padding=1), f"{p}.bn2")
            )  # stride on the 3×3
            out = bn(F.conv2d(out, sd[f"{p}.conv3.weight"]), f"{p}.bn3")
            idt = bn(F.conv2d(h, sd[f"{p}.downsample.0.weight"], stride=s), f"{p}.downsample.1") if b == 0 else h
            h = F.relu(out + idt)
    return h.mean(dim=(2, 3))  # global average pool; the fc head is not applied


def random_resnet50_state(seed: int) -> dict[str, torch.Tensor]:
    """Fixed random weights with non-trivial batch-norm statistics (default init has mean 0, var 1,
    gamma 1, beta 0, which would hide a swapped or missing BN term), scaled to keep activations finite."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in ResNet50().state_dict().items():
        if k.endswith("num_batches_tracked"):
            sd[k] = v
        elif k.endswith("running_var"):
            sd[k] = 0.5 + torch.rand(v.shape, generator=g)
        elif k.endswith("running_mean") or k.endswith(".bias"):
            sd[k] = 0.1 * torch.randn(v.shape, generator=g)
        elif v.ndim == 1:  # BN gamma
            sd[k] = 0.2 + 0.3 * torch.rand(v.shape, generator=g)
        else:  # conv / fc weights, He-scaled by fan-in
            sd[k] = torch.randn(v.shape, generator=g) * (2.0 / v[0].numel()) ** 0.5
    return sd


def test_resnet50_matches_an_independent_functional_implementation(tmp_path):
    sd = random_resnet50_state(3)
    x = torch.randn(2, 3, 72, 56, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    m = ResNet50()
    m.load_state_dict(sd, strict=True)
    with torch.inference_mode():
        got = m.double().eval()(x)
        want = functional_resnet50({k: v.double() if v.is_floating_point() else v for k, v in sd.items()}, x)
    assert got.shape == (2, 2048)
    assert float(want.abs().max()) > 0.1 and float(want.std()) > 0.01  # a real signal, not all zeros
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    # The embedding path (preprocess → module → L2 norm, float32) agrees with the independent forward.
    path = tmp_path / "resnet50-random.pth"
    torch.save(sd, path)
    bb = load_backbone(BackboneSpec(kind="resnet50", weights=str(path), device="cpu"))
    ims = [Image.fromarray(np.random.default_rng(i).integers(0, 255, (90, 120, 3), dtype=np.uint8)) for i in range(2)]
    with torch.inference_mode():
        ref = functional_resnet50(
            {k: v.double() if v.is_floating_point() else v for k, v in sd.items()}, bb.prepare(ims).double()
        )
    np.testing.assert_allclose(bb.embed(ims), torch.nn.functional.normalize(ref, dim=1).numpy(), atol=2e-5)


def test_no_weights_is_an_error_never_random_weights(tmp_path):
    with pytest.raises(WeightsMissing, match="never falls back to random weights"):
        load_backbone(BackboneSpec(kind="resnet50"))
    with pytest.raises(WeightsMissing, match="does not exist"):
        load_backbone(BackboneSpec(kind="resnet50", weights=str(tmp_path / "nope.pth")))
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, bad)
    with pytest.raises(OpFailed, match="not a torchvision resnet50 state dict"):
        load_backbone(BackboneSpec(kind="resnet50", weights=str(bad)))
    # Through the op the same error surfaces with a not_found wire code.
    with pytest.raises(NotFound):
        run_op("features.backbone", ctx(), {"backbone": {"kind": "hf"}}, {})


@pytest.mark.parametrize("kind,pkg", [("torchvision", "torchvision"), ("timm", "timm")])
def test_optional_packages_missing_give_a_clear_error(tmp_path, monkeypatch, kind, pkg):
    w = tmp_path / "w.pth"
    torch.save({}, w)
    monkeypatch.setitem(sys.modules, pkg, None)  # makes `import pkg` raise ImportError
    with pytest.raises(MissingPackage, match=f"needs the {pkg} package"):
        load_backbone(BackboneSpec(kind=kind, name="resnet50", weights=str(w)))


def test_hf_directory_backbone(tmp_path):
    import transformers

    cfg = transformers.DINOv3ViTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=16,
        image_size=64,
        num_register_tokens=0,
    )
    torch.manual_seed(0)
    transformers.DINOv3ViTModel(cfg).save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps({"size": {"height": 64, "width": 64}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3})
    )
    bb = load_backbone(BackboneSpec(kind="hf", weights=str(tmp_path), device="cpu"))
    f = bb.embed([Image.new("RGB", (90, 70), (10, 200, 30)), Image.new("RGB", (50, 50), (200, 10, 30))])
    assert f.shape == (2, 32) and bb.dim == 32
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1, atol=1e-6)
    with pytest.raises(WeightsMissing, match="not a directory"):
        load_backbone(BackboneSpec(kind="hf", weights=str(tmp_path / "model.safetensors")))


def test_pixels_embedder_via_op_and_backbone_reuse():
    state: dict = {}
    red, red2, blue = png((255, 0, 0)), png((255, 0, 0), (20, 20)), png((0, 0, 255))
    blob, offs = blob_of([red, red2, blue])
    r = run_op(
        "features.embed", ctx(state), {"backbone": {"kind": "pixels", "size": 8}}, {"blob": blob, "offsets": offs}
    )
    f = r.tensors["features"]
    assert f.shape == (3, 192) and r.args == {"key": "pixels-v2-8", "dim": 192, "n": 3}
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(f[0], f[1], atol=1e-6)  # same colour, different size
    # zero-mean pixels: pure red (2/3,-1/3,-1/3) vs pure blue (-1/3,-1/3,2/3) per pixel → cosine -1/2
    assert abs(float(f[0] @ f[2]) + 0.5) < 1e-6
    bb = state["features.backbone"][1]
    run_op("features.embed", ctx(state), {"backbone": {"kind": "pixels", "size": 8}}, {"blob": blob, "offsets": offs})
    assert state["features.backbone"][1] is bb  # reused, not reloaded


def test_embed_rejects_undecodable_images_naming_the_index():
    blob, offs = blob_of([png((1, 2, 3)), b"not an image at all"])
    with pytest.raises(BadRequest, match="image #1") as ei:
        run_op("features.embed", ctx(), {"backbone": {"kind": "pixels"}}, {"blob": blob, "offsets": offs})
    assert ei.value.detail == {"index": 1}
    with pytest.raises(BadRequest, match="offsets"):
        run_op(
            "features.embed",
            ctx(),
            {"backbone": {"kind": "pixels"}},
            {"blob": blob, "offsets": torch.tensor([0, 5], dtype=torch.int64)},
        )
    with pytest.raises(BadRequest, match="unknown backbone .vgg."):
        run_op("features.embed", ctx(), {"backbone": {"kind": "vgg"}}, {"blob": blob, "offsets": offs})


def test_parquet_to_arrow_round_trip(tmp_path):
    t = pa.table(
        {
            "id": pa.array(["a", "b"], pa.large_string()),
            "choices": pa.array([["x", "y"], ["p", "q", "r"]], pa.list_(pa.string())),
            "image": pa.array([png((1, 1, 1)), png((2, 2, 2))], pa.large_binary()),
            "caption": pa.array(["c", None]),
        }
    )
    src = tmp_path / "m.parquet"
    pq.write_table(t, src)
    out = tmp_path / "m.arrow"
    info = parquet_to_arrow(str(src), str(out))
    assert info["rows"] == 2 and info["columns"] == ["id", "choices", "image", "caption"]
    back = ipc.open_file(str(out)).read_all()
    assert back.schema.field("id").type == pa.string() and back.schema.field("image").type == pa.binary()
    assert back.column("choices").to_pylist() == [["x", "y"], ["p", "q", "r"]]
    assert back.column("caption").to_pylist() == ["c", None]
    with pytest.raises(NotFound):
        parquet_to_arrow(str(tmp_path / "missing.parquet"), str(out))
    (tmp_path / "junk.parquet").write_bytes(b"junk")
    with pytest.raises(BadRequest, match="not a readable Parquet file"):
        parquet_to_arrow(str(tmp_path / "junk.parquet"), str(out))


# --- weights must fit the model: no silently random layers, unreadable files named ----------------

from pairuni_sidecar.features.backbones import WeightsMismatch, WeightsUnreadable  # noqa: E402


class _TinyNet(torch.nn.Module):
    """A stand-in for a timm / torchvision model: a conv trunk, a pooled feature and a classifier."""

    def __init__(self, num_classes: int = 5, head_attr: str = "head") -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.norm = torch.nn.BatchNorm2d(4)
        self.num_features = 4
        self.head_attr = head_attr
        setattr(self, head_attr, torch.nn.Linear(4, num_classes) if num_classes else torch.nn.Identity())
        self.pretrained_cfg = {
            "classifier": head_attr,
            "input_size": (3, 16, 16),
            "crop_pct": 1.0,
            "mean": (0.5,) * 3,
            "std": (0.5,) * 3,
        }

    def forward(self, x):
        return getattr(self, self.head_attr)(self.norm(self.stem(x)).mean(dim=(2, 3)))


@pytest.fixture
def fake_timm(monkeypatch):
    """A `timm` module whose create_model builds _TinyNet (timm is an optional dependency)."""
    import types

    mod = types.ModuleType("timm")
    mod.create_model = lambda name, pretrained=False, num_classes=5: _TinyNet(num_classes)
    monkeypatch.setitem(sys.modules, "timm", mod)
    return mod


@pytest.fixture
def fake_torchvision(monkeypatch):
    import types

    tv = types.ModuleType("torchvision")
    models = types.ModuleType("torchvision.models")
    models.get_model = lambda name, weights=None: _TinyNet(5, head_attr="fc")
    tv.models = models
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)
    return tv


def _full_checkpoint(seed: int = 1, head_attr: str = "head") -> dict:
    torch.manual_seed(seed)
    return _TinyNet(5, head_attr).state_dict()


def test_timm_weights_whose_keys_match_nothing_are_refused_naming_them(tmp_path, fake_timm):
    w = tmp_path / "other.pth"
    torch.save({f"blocks.{i}.w": torch.zeros(2) for i in range(8)}, w)
    with pytest.raises(WeightsMismatch) as ei:
        load_backbone(BackboneSpec(kind="timm", name="tiny", weights=str(w), device="cpu"))
    msg = str(ei.value)
    assert str(w) in msg and "timm/tiny" in msg
    # every parameter and buffer (torch fills a missing BatchNorm num_batches_tracked counter itself)
    assert "6 missing key(s)" in msg and "norm.running_mean" in msg and "norm.bias" in msg
    assert "8 unexpected key(s)" in msg and "blocks.0.w" in msg and "(+3 more)" in msg  # first five named, then a count
    assert ei.value.detail == {"missing": 6, "unexpected": 8, "mismatched": 0}
    assert ei.value.code == "op_failed"
    # Through the op, the same refusal (no embedding with random weights).
    with pytest.raises(WeightsMismatch):
        run_op(
            "features.backbone",
            ctx(),
            {"backbone": {"kind": "timm", "name": "tiny", "weights": str(w), "device": "cpu"}},
            {},
        )


def test_timm_allows_only_the_removed_head_keys(tmp_path, fake_timm):
    sd = _full_checkpoint()
    w = tmp_path / "full.pth"
    torch.save(sd, w)  # a full checkpoint: head.weight/head.bias are unused with num_classes=0
    bb = load_backbone(BackboneSpec(kind="timm", name="tiny", weights=str(w), device="cpu"))
    loaded = bb.model.state_dict()
    assert all(torch.equal(loaded[k], sd[k]) for k in loaded)  # every trunk weight came from the file
    assert bb.dim == 4 and bb.embed([Image.new("RGB", (20, 20), (9, 90, 200))]).shape == (1, 4)

    extra = dict(sd, **{"blocks.9.proj.weight": torch.zeros(3)})  # not a head key: refused
    torch.save(extra, w)
    with pytest.raises(
        WeightsMismatch, match=r"1 unexpected key\(s\) the model does not have: blocks\.9\.proj\.weight"
    ):
        load_backbone(BackboneSpec(kind="timm", name="tiny", weights=str(w), device="cpu"))

    partial = {k: v for k, v in sd.items() if k != "stem.bias"}
    torch.save(partial, w)
    with pytest.raises(WeightsMismatch, match=r"1 missing key\(s\) .*: stem\.bias"):
        load_backbone(BackboneSpec(kind="timm", name="tiny", weights=str(w), device="cpu"))

    wrong = dict(sd, **{"stem.weight": torch.zeros(4, 3, 5, 5)})
    torch.save(wrong, w)
    with pytest.raises(WeightsMismatch, match=r"wrong shape: stem\.weight \(4, 3, 5, 5\) vs \(4, 3, 3, 3\)"):
        load_backbone(BackboneSpec(kind="timm", name="tiny", weights=str(w), device="cpu"))


def test_torchvision_weights_must_fit_the_model(tmp_path, fake_torchvision):
    sd = _full_checkpoint(head_attr="fc")
    w = tmp_path / "tv.pth"
    torch.save(sd, w)
    bb = load_backbone(BackboneSpec(kind="torchvision", name="tiny", weights=str(w), device="cpu"))
    assert bb.dim == 4 and isinstance(bb.model.fc, torch.nn.Identity)
    torch.save({k: v for k, v in sd.items() if not k.startswith("fc.")} | {"module.x": torch.zeros(1)}, w)
    with pytest.raises(WeightsMismatch) as ei:
        load_backbone(BackboneSpec(kind="torchvision", name="tiny", weights=str(w), device="cpu"))
    assert str(w) in str(ei.value) and "fc.bias, fc.weight" in str(ei.value) and "module.x" in str(ei.value)


def test_resnet50_mismatch_names_the_keys_and_counts(tmp_path):
    w = tmp_path / "r50.pth"
    torch.save({"encoder.conv1.weight": torch.zeros(64, 3, 7, 7)}, w)
    with pytest.raises(WeightsMismatch) as ei:
        load_backbone(BackboneSpec(kind="resnet50", weights=str(w), device="cpu"))
    msg = str(ei.value)
    assert "not a torchvision resnet50 state dict" in msg and str(w) in msg
    n_keys = len([k for k in ResNet50().state_dict() if not k.endswith("num_batches_tracked")])
    assert f"{n_keys} missing key(s)" in msg and "bn1.bias, bn1.running_mean" in msg and "(+262 more)" in msg
    assert "1 unexpected key(s) the model does not have: encoder.conv1.weight" in msg


@pytest.mark.parametrize("kind", ["resnet50", "timm", "torchvision"])
def test_unreadable_weights_file_is_named(tmp_path, fake_timm, fake_torchvision, kind):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x80\x02this is not a pickle nor a zip" * 10)
    spec = dict(kind=kind, name="tiny", device="cpu") if kind != "resnet50" else dict(kind=kind, device="cpu")
    with pytest.raises(WeightsUnreadable, match=f"cannot read weights file '{garbage}'"):
        load_backbone(BackboneSpec(weights=str(garbage), **spec))
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)  # a valid torch file, but not a state dict
    with pytest.raises(WeightsUnreadable, match=f"'{tensor}' holds Tensor, not a state dict"):
        load_backbone(BackboneSpec(weights=str(tensor), **spec))
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"not safetensors")
    with pytest.raises(WeightsUnreadable, match=f"cannot read weights file '{bad_st}'"):
        load_backbone(BackboneSpec(weights=str(bad_st), **spec))


def test_hf_checkpoint_that_leaves_weights_random_is_refused(tmp_path):
    import transformers
    from safetensors.torch import load_file, save_file

    cfg = transformers.DINOv3ViTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=16,
        image_size=64,
        num_register_tokens=0,
    )
    torch.manual_seed(0)
    transformers.DINOv3ViTModel(cfg).save_pretrained(tmp_path)
    st = tmp_path / "model.safetensors"
    sd = load_file(str(st))
    # A task head the base model does not have: unexpected, ignored by transformers, accepted.
    save_file(dict(sd, **{"classifier.weight": torch.zeros(3, 32)}), str(st), metadata={"format": "pt"})
    assert load_backbone(BackboneSpec(kind="hf", weights=str(tmp_path), device="cpu")).kind == "hf"
    # Keys under another prefix: from_pretrained would initialise the whole model at random.
    save_file({"backbone." + k: v for k, v in sd.items()}, str(st), metadata={"format": "pt"})
    with pytest.raises(WeightsMismatch) as ei:
        load_backbone(BackboneSpec(kind="hf", weights=str(tmp_path), device="cpu"))
    msg = str(ei.value)
    assert str(tmp_path) in msg and f"{len(sd)} missing key(s)" in msg and "embeddings.cls_token" in msg
