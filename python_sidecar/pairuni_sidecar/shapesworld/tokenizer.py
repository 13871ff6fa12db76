"""A word-level tokenizer for ShapesWorld text plus the Janus special tokens.

Every word the generator and the prompt format can write gets one id, so a tiny LLM spends no
capacity on sub-word spelling. Special-token names are Janus-Pro's, and the low ids follow the
tiny-config recipe (PAD=0, BOS=1, EOS=2, IMG=3, BOI=4, EOI=5). ``encode`` prepends BOS like Janus.
"""

from __future__ import annotations

from tokenizers import Tokenizer, models, pre_tokenizers, processors

from .formats import LETTERS, PromptFormat
from .scenes import make_item
from .vocab import CATEGORIES, COLORS, COUNT_WORDS, PLURALS, RELATIONS, SHAPES

PAD, BOS, EOS, IMAGE, BOI, EOI = (
    "<｜▁pad▁｜>",
    "<｜begin▁of▁sentence｜>",
    "<｜end▁of▁sentence｜>",
    "<image_placeholder>",
    "<begin_of_image>",
    "<end_of_image>",
)
UNK = "<unk>"
CHAT_TOKENS = ("<|User|>", "<|Assistant|>", "<answer>", "</answer>", "<think>", "</think>")
SPECIALS = (PAD, BOS, EOS, IMAGE, BOI, EOI, UNK)
ALL_ADDED = (*SPECIALS, *CHAT_TOKENS)

_PRE = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])


def _words(text: str) -> list[str]:
    for tok in ALL_ADDED:  # added tokens are matched whole before pre-tokenisation
        text = text.replace(tok, " ")
    return [w for w, _ in _PRE.pre_tokenize_str(text)]


def corpus(fmt: PromptFormat, n_items: int = 3000) -> list[str]:
    """Every kind of string the model will read: sampled items rendered with ``fmt`` + vocab tables."""
    texts = [
        " ".join(SHAPES),
        " ".join(PLURALS.values()),
        " ".join(COLORS),
        " ".join(COUNT_WORDS.values()),
        " ".join(RELATIONS),
        " ".join(LETTERS[:4]),
        "a an and photo of",
        " ".join(CATEGORIES),
    ]
    for i in range(n_items):
        it = make_item(0, "pretrain", i)
        from .sft import describe

        texts += [
            fmt.caption_request,
            describe(it.objects),
            fmt.und_prompt(it.question, it.choices, ""),
            fmt.answer(it.answer, " ".join(it.choices)),
            fmt.gen_prompt(it.prompt),
        ]
    return texts


def build_tokenizer(fmt: PromptFormat, vocab_size: int | None = None) -> Tokenizer:
    """A deterministic word-level tokenizer (sorted words after the specials)."""
    words = sorted({w for t in corpus(fmt) for w in _words(t)})
    vocab = {tok: i for i, tok in enumerate(ALL_ADDED)}
    for w in words:
        vocab.setdefault(w, len(vocab))
    if vocab_size is not None and len(vocab) > vocab_size:
        raise ValueError(f"vocabulary has {len(vocab)} entries, more than vocab_size={vocab_size}")
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = _PRE
    tok.add_special_tokens(list(SPECIALS))
    # Chat/answer tags are ordinary added tokens: matched whole, but kept by skip_special_tokens.
    tok.add_tokens(list(CHAT_TOKENS))
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return tok


def to_hf(tok: Tokenizer):
    """Wrap as a transformers fast tokenizer with Janus' special-token attributes set."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        extra_special_tokens={"image_token": IMAGE, "boi_token": BOI, "eoi_token": EOI},
        model_max_length=256,
        padding_side="left",
    )
