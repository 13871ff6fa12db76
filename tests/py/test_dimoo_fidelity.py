"""DiMOO prompts and SFT targets as upstream Lumina-DiMOO builds them: the tokenizer's default call
(special tokens as the tokenizer adds them), per-task system prompts, ``</answer>`` + pad answer targets
and ``<uncondition>`` dropout of generation prompts."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pairuni_sidecar.adapters import LoadSpec, load_adapter
from pairuni_sidecar.adapters.dimoo import SFT_UNCOND_PROB, _Text
from pairuni_sidecar.diffusion.tiny_model import TinyMDM, TinyMDMConfig, build_tiny_dimoo, save_tiny_mdm, tiny_layout

BOS, EOS, UNCOND = "<|startoftext|>", "<|endoftext|>", "<uncondition>"
UND_T = "<system>{system}</system><user>{question}{image}</user>"
GEN_T = "<system>{system}</system><user>{prompt}</user>"


def bos_eos_tokenizer():
    """Characters, then BOS, EOS and <uncondition> (ids 96, 97, 98); the default call wraps BOS ... EOS."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    tk = Tokenizer(models.WordLevel(vocab={c: i for i, c in enumerate(chars)}, unk_token="?"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tk.add_special_tokens([BOS, EOS, UNCOND])
    tk.post_processor = processors.TemplateProcessing(single=f"{BOS} $A {EOS}", special_tokens=[(BOS, 96), (EOS, 97)])
    return tk


@pytest.fixture(scope="module")
def tok():
    return bos_eos_tokenizer()


@pytest.fixture(scope="module")
def bos_dir(tmp_path_factory, tok):
    # the layout's <uncondition> is the tokenizer's, as in DiMOO (126351 is both)
    lay = dataclasses.replace(tiny_layout(tok.get_vocab_size(), 16), uncond=tok.token_to_id(UNCOND))
    torch.manual_seed(0)
    return save_tiny_mdm(
        str(tmp_path_factory.mktemp("bos") / "m"),
        TinyMDM(TinyMDMConfig(vocab_size=lay.vocab_size)),
        tok,
        layout=lay,
        grid=(4, 4),
        cell=4,
    )


OPTS = {"und_system_prompt": "Look.", "gen_system_prompt": "Draw it."}


@pytest.fixture(scope="module")
def adapter(bos_dir):
    return load_adapter("dimoo", LoadSpec(path=bos_dir, device="cpu", options=OPTS))


def test_wrap_of_pieces_equals_the_default_call(tok):
    from transformers import PreTrainedTokenizerFast

    for t in (tok, PreTrainedTokenizerFast(tokenizer_object=tok)):
        text = _Text(t, set(), None)
        assert text.prefix == [96] and text.suffix == [97]
        a, b = "<system>x</system><user>", "a red cat</user>"
        default = tok.encode(a + b).ids
        assert default[0] == 96 and default[-1] == 97
        assert text.wrap(text.encode(a) + text.encode(b)) == default


def test_gen_prompt_ids_equal_the_default_call(adapter, tok):
    ids, keep, slots, maskable, (uids, ukeep, uslots) = adapter._gen_rows(["a red cat"])
    n = int(maskable[0].sum())
    want = tok.encode(GEN_T.replace("{system}", "Draw it.").replace("{prompt}", "a red cat")).ids
    assert ids[0, :n].tolist() == want and want[0] == 96 and want[-1] == 97
    assert ids[0, n].item() == adapter.layout.boa and slots[0, 0].item() == n + 2
    # CFG row: upstream tokenizes the prompt with "<uncondition>" as the user text
    u = tok.encode(GEN_T.replace("{system}", "Draw it.").replace("{prompt}", UNCOND)).ids
    assert 98 in u and uids[0, : len(u)].tolist() == u and uslots[0, 0].item() == len(u) + 2


def test_und_prompt_ids_equal_the_default_call_around_the_image(adapter, tok):
    lay = adapter.layout
    ids, keep, slots, _ = adapter._und_rows(torch.zeros(1, 16, dtype=torch.long), ["Which?"], 3)
    row = ids[0].tolist()
    i, j, start = row.index(lay.boi), row.index(lay.eoi), int(slots[0, 0])
    prompt = row[:i] + row[j + 1 : start - 1]
    assert row[start - 1] == lay.boa and j - i - 1 == 4 * (4 + 1)  # 4 rows of 4 codes + NEWLINE
    assert (
        prompt
        == tok.encode(UND_T.replace("{system}", "Look.").replace("{question}", "Which?").replace("{image}", "")).ids
    )
    assert (
        row[i - 1] == ord("?") - 32 and row[j + 1 : start - 1] == tok.encode("</user>").ids[1:]
    )  # image before </user>


def test_tiny_model_keeps_its_empty_prompts_and_ids(tmp_path):
    from pairuni_sidecar.diffusion.tiny_model import char_tokenizer

    a = load_adapter("dimoo", LoadSpec(path=build_tiny_dimoo(str(tmp_path / "m"), seed=0), device="cpu"))
    assert a.system == {"und": "", "gen": ""} and a.text.prefix == [] and a.text.suffix == []
    ids, _, _, maskable, _ = a._gen_rows(["a red cat"])
    enc = lambda s: char_tokenizer().encode(s, add_special_tokens=False).ids  # noqa: E731
    assert ids[0, : int(maskable[0].sum())].tolist() == enc("<system></system><user>") + enc("a red cat") + enc(
        "</user>"
    )
    b = load_adapter("dimoo", LoadSpec(path=str(tmp_path / "m"), device="cpu", options={"gen_system_prompt": "G"}))
    assert b.system == {"und": "", "gen": "G"}


def test_sft_answers_end_in_answer_close_and_pad(adapter, tok):
    lay = adapter.layout
    t = adapter._sft_answers(["ab", "abcd"])
    a, b = ord("a") - 32, ord("b") - 32
    # default call of "ab</answer>": BOS, a, b, </answer>, EOS; then pad ids to the longest
    assert t.tolist()[0] == [96, a, b, lay.eoa, 97, lay.pad, lay.pad]
    assert t.tolist()[1] == [96, a, b, b + 1, b + 2, lay.eoa, 97]
    assert lay.pad != lay.eos and lay.eos not in t.tolist()[0]


def test_sft_drops_generation_prompts_to_the_unconditional_prompt(adapter):
    prompts = [f"shape {i}" for i in range(400)]
    ids0, keep0, slots0, _, (uids, ukeep, uslots) = adapter._gen_rows(prompts)
    torch.manual_seed(5)
    ids, keep, slots, drop = adapter._sft_gen_rows(prompts)
    torch.manual_seed(5)
    assert torch.equal(drop, torch.rand(400) < SFT_UNCOND_PROB)
    assert 20 <= int(drop.sum()) <= 60  # 10% of 400 (binomial sd 6)
    w = uids.shape[1]
    for r in range(400):
        if drop[r]:
            assert ids[r, :w].tolist() == uids[r].tolist() and keep[r].sum() == w and torch.equal(slots[r], uslots[r])
        else:
            n = int(keep0[r].sum())
            assert (
                ids[r, :n].tolist() == ids0[r, :n].tolist() and keep[r].sum() == n and torch.equal(slots[r], slots0[r])
            )


def test_sft_loss_trains_on_upstream_targets(adapter, tmp_path):
    import numpy as np
    from PIL import Image

    from pairuni_sidecar.adapters import SFTExample

    p = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(p)
    torch.manual_seed(0)
    res = adapter.sft_loss(
        [
            SFTExample(side="und", image_path=str(p), text="Which?", target="ab"),
            SFTExample(side="gen", image_path=str(p), text="a red cat", target=""),
        ]
    )
    assert set(res) == {"und", "gen"} and all(torch.isfinite(v) and v.requires_grad for v in res.values())


def _default_und_question() -> str:
    """The understanding text the trainer sends by default: src/grpo/rewards.ts DEFAULT_UND_INSTRUCTION rendered."""
    import json
    import pathlib
    import re

    ts = (pathlib.Path(__file__).parents[2] / "src" / "grpo" / "rewards.ts").read_text()
    literal = re.search(r"DEFAULT_UND_INSTRUCTION =\s*'([^']*)'", ts).group(1)
    template = json.loads('"' + literal.replace('"', '\\"') + '"')  # the TS escapes (\n) are JSON's
    return template.replace("{question}", "Which shape is in the picture?").replace(
        "{choices}", "A. circle\nB. square\nC. triangle\nD. star"
    )


@pytest.fixture(scope="module")
def und_image(tmp_path_factory):
    import numpy as np
    from PIL import Image

    p = tmp_path_factory.mktemp("img") / "a.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(p)
    return str(p)


def test_tiny_model_fits_the_default_prompt_and_answer_length(tmp_path, und_image):
    from pairuni_sidecar.adapters import UndItem
    from pairuni_sidecar.contract import UndSampling

    a = load_adapter("dimoo", LoadSpec(path=build_tiny_dimoo(str(tmp_path / "m"), seed=0), device="cpu"))
    s = UndSampling(seed=1)
    assert s.max_new_tokens == 512  # und.maxNewTokens' default
    b = a.und_rollout([UndItem(und_image, _default_und_question())], 1, s)
    assert tuple(b.out_ids.shape) == (1, 512)


def test_over_long_prompt_names_the_limit_and_a_fix_that_works(tmp_path, und_image):
    import re

    from pairuni_sidecar.adapters import UndItem
    from pairuni_sidecar.contract import UndSampling
    from pairuni_sidecar.adapters.base import AdapterConfigError

    # 256 positions: the size the builder made before, and the pretrained assets/tiny-dimoo-shapes' max_len
    a = load_adapter("dimoo", LoadSpec(path=build_tiny_dimoo(str(tmp_path / "m"), seed=0, max_len=256), device="cpu"))
    q = _default_und_question()
    item = [UndItem(und_image, q)]
    with pytest.raises(AdapterConfigError) as e:
        a.und_rollout(item, 1, UndSampling(seed=1))
    msg = str(e.value)
    room = int(re.search(r"set und\.maxNewTokens to at most (\d+)$", msg).group(1))
    prompt = int(re.search(r"the prompt takes (\d+) tokens", msg).group(1))
    assert "over the tiny model's limit of 256 positions" in msg and prompt + 512 + 1 > 256
    assert room == 256 - prompt - 1 and room >= 1
    assert a.und_rollout(item, 1, UndSampling(seed=1, max_new_tokens=room)).out_ids.shape[1] == room
    with pytest.raises(AdapterConfigError, match=f"to at most {room}$"):
        a.und_rollout(item, 1, UndSampling(seed=1, max_new_tokens=room + 1))

    # A question that alone overflows: the fix is a shorter question, by the count the error gives.
    long_q = q + " Think step by step." * 12
    with pytest.raises(AdapterConfigError) as e:
        a.und_rollout([UndItem(und_image, long_q)], 1, UndSampling(seed=1, max_new_tokens=1))
    cut = int(re.search(r"shorten the question \(und\.instruction\) by at least (\d+) tokens?$", str(e.value)).group(1))
    ok = a.und_rollout([UndItem(und_image, long_q[:-cut])], 1, UndSampling(seed=1, max_new_tokens=1))
    assert ok.out_ids.shape[1] == 1
    with pytest.raises(AdapterConfigError, match="shorten the question"):
        a.und_rollout([UndItem(und_image, long_q[: -(cut - 1)])], 1, UndSampling(seed=1, max_new_tokens=1))


def test_over_long_generation_prompt_names_the_cut_that_fits(tmp_path):
    import re

    from pairuni_sidecar.adapters import GenItem
    from pairuni_sidecar.adapters.base import AdapterConfigError
    from pairuni_sidecar.contract import GenSampling

    a = load_adapter("dimoo", LoadSpec(path=build_tiny_dimoo(str(tmp_path / "m"), seed=0, max_len=256), device="cpu"))
    prompt = "a red circle on a blue ground, " * 8
    with pytest.raises(AdapterConfigError, match="over the tiny model's limit of 256 positions") as e:
        a.gen_rollout([GenItem(prompt)], 1, GenSampling(seed=0, options={"steps": 2}))
    cut = int(re.search(r"shorten the generation prompt by at least (\d+) tokens?$", str(e.value)).group(1))
    fits = a.gen_rollout([GenItem(prompt[:-cut])], 1, GenSampling(seed=0, options={"steps": 2}))
    assert fits.out_ids.shape == (1, 16)
    with pytest.raises(AdapterConfigError, match="by at least 1 token$"):
        a.gen_rollout([GenItem(prompt[: -(cut - 1)])], 1, GenSampling(seed=0, options={"steps": 2}))
