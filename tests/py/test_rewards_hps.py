"""HPSv2 reward: registry, typed errors without open_clip/checkpoint, and the scoring math with tiny encoders."""

from __future__ import annotations

import builtins
import math

import pytest
import torch

torch.set_num_threads(1)

from pairuni_sidecar.errors import BadRequest  # noqa: E402
from pairuni_sidecar.rewards import list_rewards, make_reward  # noqa: E402
from pairuni_sidecar.rewards.hps import (  # noqa: E402
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    HPSScorer,
    RewardCheckpointMissing,
    RewardDependencyMissing,
    RewardInputError,
    clip_preprocess,
)


def test_registered():
    assert "hps" in list_rewards()


def test_missing_checkpoint_field_is_bad_request():
    with pytest.raises(BadRequest, match="config.checkpoint"):
        make_reward("hps", {})


@pytest.fixture
def no_open_clip(monkeypatch):
    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "open_clip" or name.startswith("open_clip."):
            raise ImportError("No module named 'open_clip'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)


def test_missing_open_clip_names_package_and_checkpoint(no_open_clip, tmp_path):
    ck = str(tmp_path / "HPS_v2.1_compressed.pt")
    with pytest.raises(RewardDependencyMissing) as ei:
        make_reward("hps", {"checkpoint": ck})
    msg = str(ei.value)
    assert "open_clip_torch" in msg and "pairuni-sidecar[hps]" in msg and ck in msg and "does not exist" in msg
    assert ei.value.code == "op_failed" and ei.value.detail["checkpoint_exists"] is False


def test_missing_checkpoint_with_open_clip_present(monkeypatch, tmp_path):
    import sys
    import types

    monkeypatch.setitem(sys.modules, "open_clip", types.ModuleType("open_clip"))
    ck = str(tmp_path / "nope.pt")
    with pytest.raises(RewardCheckpointMissing, match="nope.pt") as ei:
        make_reward("hps", {"checkpoint": ck})
    assert ei.value.code == "not_found"


def test_clip_preprocess_constant_image_and_crop():
    img = torch.full((1, 300, 400, 3), 128, dtype=torch.uint8)
    x = clip_preprocess(img)
    assert x.shape == (1, 3, 224, 224)
    for c in range(3):
        want = (128 / 255 - OPENAI_CLIP_MEAN[c]) / OPENAI_CLIP_STD[c]
        assert torch.allclose(x[0, c], torch.full((224, 224), want), atol=1e-4)
    # centre crop of a wide image keeps the middle: left third black, rest white -> crop is all white
    img = torch.zeros((1, 224, 672, 3), dtype=torch.uint8)
    img[:, :, 224:] = 255
    x = clip_preprocess(img)
    assert torch.allclose(x[0, 0], torch.full((224, 224), (1 - OPENAI_CLIP_MEAN[0]) / OPENAI_CLIP_STD[0]), atol=1e-3)


def test_scores_are_cosines_of_injected_encoders():
    # image encoder: mean of each normalised channel -> a 3-vector; text encoder: fixed vectors per prompt
    vec = {"red": torch.tensor([1.0, 0.0, 0.0]), "grey": torch.tensor([1.0, 1.0, 1.0])}
    s = HPSScorer(lambda x: x.mean(dim=(2, 3)), lambda ps: torch.stack([vec[p] for p in ps]), batch_size=1)
    red = torch.zeros((1, 224, 224, 3), dtype=torch.uint8)
    red[..., 0] = 255
    imgs = torch.cat([red, red])
    out = s.score(imgs, ["red", "grey"])
    f = torch.tensor(
        [
            (1 - OPENAI_CLIP_MEAN[0]) / OPENAI_CLIP_STD[0],
            -OPENAI_CLIP_MEAN[1] / OPENAI_CLIP_STD[1],
            -OPENAI_CLIP_MEAN[2] / OPENAI_CLIP_STD[2],
        ]
    )
    cos_red = float(f[0] / f.norm())
    cos_grey = float(f.sum() / (f.norm() * math.sqrt(3)))
    assert out.dtype == torch.float32 and out.shape == (2,)
    assert out.tolist() == pytest.approx([cos_red, cos_grey], abs=1e-4)


def test_bad_images_are_typed_errors():
    s = HPSScorer(lambda x: x.mean(dim=(2, 3)), lambda ps: torch.ones(len(ps), 3))
    with pytest.raises(RewardInputError, match="uint8"):
        s.score(torch.zeros((1, 8, 8, 3)), ["a"])
    with pytest.raises(RewardInputError, match="2 images but 1 prompts"):
        s.score(torch.zeros((2, 8, 8, 3), dtype=torch.uint8), ["a"])
