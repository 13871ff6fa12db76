"""Prompt formats of the tiny ShapesWorld Janus: how questions, answers and generation prompts are
laid out as text. Saved next to the weights in ``pairuni_model.json`` so every consumer (the
pretraining script, the eval, the Janus adapter) renders exactly what the model was trained on.

The defaults follow Janus-Pro's DeepSeek chat layout without a system prompt; change them with
``--format FILE.json`` (any subset of the fields) until the adapter README fixes one format.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class PromptFormat:
    # Understanding: "{image}" expands to BOI + N x image_token + EOI; "{text}" is the user text.
    und_template: str = "<|User|>: {image}\n{text}\n\n<|Assistant|>:"
    # User text of an MCQ: question, one line per choice, then the answer rule.
    und_text: str = "{question}\n{choices}\n{instruction}"
    choice_line: str = "{letter}. {choice}"
    instruction: str = "Answer with the option letter in <answer> </answer> tags."
    # The short "think" names the chosen option's text before its letter: perception (image ->
    # "red") and lookup ("red" -> C) become two supervised steps. Letter-only targets left a
    # tiny from-scratch model at chance after 1000 SFT steps.
    answer_template: str = "<think>{choice}</think><answer>{letter}</answer>"
    answer_regex: str = r"<answer>\s*([A-Z])\s*</answer>"
    # Auxiliary pretraining task only (dense grounding): image -> every object, in reading order.
    caption_request: str = "describe the image."
    # Generation: the text before the image tokens; the BOI token follows it.
    gen_template: str = "<|User|>: {prompt}\n\n<|Assistant|>:"

    def und_user_text(self, question: str, choices: list[str] | tuple[str, ...]) -> str:
        lines = "\n".join(self.choice_line.format(letter=LETTERS[i], choice=c) for i, c in enumerate(choices))
        return self.und_text.format(question=question, choices=lines, instruction=self.instruction)

    def und_prompt(self, question: str, choices, image: str) -> str:
        return self.und_template.format(image=image, text=self.und_user_text(question, choices))

    def answer(self, letter: str, choice: str = "") -> str:
        return self.answer_template.format(letter=letter, choice=choice)

    def parse_answer(self, text: str) -> str | None:
        """The chosen letter, or None when the answer is not in the expected format."""
        m = re.search(self.answer_regex, text)
        return m.group(1) if m else None

    def gen_prompt(self, prompt: str) -> str:
        return self.gen_template.format(prompt=prompt)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "PromptFormat":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown prompt-format fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)

    @classmethod
    def load(cls, path: str | None) -> "PromptFormat":
        if path is None:
            return cls()
        with open(path, encoding="utf-8") as f:
            return cls.from_json(json.load(f))
