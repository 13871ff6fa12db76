"""The tiny ShapesWorld DiMOO: its exact image codec and its pretraining (seeded, resumable)."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file

from pairuni_sidecar.shapesworld.codec import ShapesCodec
from pairuni_sidecar.shapesworld.pretrain_dimoo import DimooPretrainConfig, pretrain_dimoo
from pairuni_sidecar.shapesworld.render import render
from pairuni_sidecar.shapesworld.scenes import make_item
from pairuni_sidecar.shapesworld.vq import scene_codes


def test_codec_decodes_to_the_renderer_and_encodes_back():
    c = ShapesCodec()
    items = [make_item(0, "u_eval", i) for i in range(24)]
    codes = torch.stack([scene_codes(it.objects) for it in items])
    imgs = c.decode(codes)
    assert imgs.shape == (24, 32, 32, 3)
    assert all(torch.equal(imgs[i], torch.from_numpy(render(it.objects))) for i, it in enumerate(items))
    assert torch.equal(c.encode(imgs), codes)


class Stop(Exception):
    pass


def test_pretraining_is_seeded_and_resumes_to_the_same_weights(tmp_path):
    cfg = DimooPretrainConfig(
        steps=4,
        n_items=24,
        und_batch=4,
        gen_batch=4,
        ckpt_every=2,
        d_model=32,
        n_layers=1,
        n_heads=2,
        d_ff=64,
        eval_n=6,
        eval_samples=1,
    )
    a = pretrain_dimoo(tmp_path / "a", cfg, log=lambda s: None)
    assert 0.0 <= a["metrics"]["gen_reward"] <= 1.0
    seen = []

    def stop_at_3():
        seen.append(1)
        if len(seen) == 4:  # before step 4: state was saved after step 2
            raise Stop

    with pytest.raises(Stop):
        pretrain_dimoo(tmp_path / "b", cfg, log=lambda s: None, check=stop_at_3)
    assert (tmp_path / "b.work" / "state.pt").exists() and not (tmp_path / "b").exists()
    lines = []
    pretrain_dimoo(tmp_path / "b", cfg, log=lines.append)
    assert "resuming at step 2" in lines
    wa, wb = (load_file(os.path.join(tmp_path / d, "model.safetensors")) for d in ("a", "b"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not (tmp_path / "b.work").exists()
