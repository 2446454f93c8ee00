"""Text translation with an instruct LLM: the text side of the cascade and of the text ceiling.

The LLM gets LLaST's own instruction (``PromptConfig.translate``, "Translate the German sentence into
English.") with the source sentence on the next line, rendered through the tokenizer's chat template,
as LLaST renders its audio prompt (there the audio comes before the instruction; a text LLM is asked
the usual way, instruction first). Batches are sorted by prompt length and left padded; decoding is
deterministic (greedy or beam search, ``DecodeConfig``, through llast.generate as speech prompts are).
Training a text adapter on sentence pairs is llast.text_adapter's.

    translator = TextTranslator.load("qwen2.5-coder-0.5b-instruct")
    translator.translate(["Guten Morgen."], src="de", tgt="en", decode=DecodeConfig(num_beams=1))
"""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llast.config import DecodeConfig, PromptConfig
from llast.generate import generate_text_ids
from llast.model import inference_dtype, resolve_name
from llast.processor import instruction

# System message of the cascade and text baselines (`--llm-system`). With it, Qwen2.5-Coder scored 15.25 BLEU on
# the synthetic de->en test sentences, 13.79 with its template's own default (docs/quality_baselines.md).
TRANSLATION_ONLY = "Reply with the translation only."


class TextTranslator:
    """An instruct LLM that translates sentences, batched.

    model     : a transformers causal LM (a peft-wrapped one works too)
    tokenizer : its tokenizer; its chat template renders the prompt (PromptConfig.use_chat_template)
    prompt    : instruction wording and system message (the same dataclass as LLaST's prompt)
    """

    def __init__(self, model, tokenizer, prompt: PromptConfig | None = None, device=None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.prompt = prompt or PromptConfig()
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.use_template = self.prompt.use_chat_template and bool(getattr(tokenizer, "chat_template", None))

    @classmethod
    def load(cls, name: str, prompt: PromptConfig | None = None, device: str | None = None,
             dtype: str = "auto") -> "TextTranslator":
        """A bundled model name, hub id or local directory; dtype as `llast.model.inference_dtype`."""
        path = resolve_name(name)
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = AutoModelForCausalLM.from_pretrained(path, dtype=inference_dtype(dtype, dev)).to(dev)
        return cls(model, AutoTokenizer.from_pretrained(path), prompt, dev)

    def render(self, text: str, src: str, tgt: str) -> str:
        """The whole prompt for one sentence, up to where the translation starts."""
        user = f"{instruction(self.prompt, src, tgt, 'translate')}\n{text.strip()}"
        if not self.use_template:
            return (self.tokenizer.bos_token or "") + user + "\n"
        messages = [{"role": "user", "content": user}]
        if self.prompt.system is not None:
            messages.insert(0, {"role": "system", "content": self.prompt.system})
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def prompt_ids(self, text: str, src: str, tgt: str) -> list[int]:
        return self.tokenizer(self.render(text, src, tgt), add_special_tokens=False)["input_ids"]

    @torch.no_grad()
    def translate(self, texts: list[str], src: str, tgt: str, decode: DecodeConfig | None = None,
                  on_batch=None) -> list[str]:
        """Translations of `texts` (src -> tgt), in input order; `on_batch(n)` after each batch of n.
        An empty text (Whisper heard nothing) gets an empty translation without asking the LLM."""
        decode = decode or DecodeConfig()
        rows = [self.prompt_ids(t, src, tgt) if t.strip() else [] for t in texts]
        order = sorted((i for i, r in enumerate(rows) if r), key=lambda i: len(rows[i]), reverse=True)
        out: list[str] = [""] * len(rows)
        if on_batch is not None and len(order) < len(rows):
            on_batch(len(rows) - len(order))
        for start in range(0, len(order), decode.batch_size):
            idx = order[start : start + decode.batch_size]
            input_ids, attention_mask = _left_pad([rows[i] for i in idx], self.tokenizer.pad_token_id)
            ids = generate_text_ids(self.model, input_ids.to(self.device), attention_mask.to(self.device), decode,
                                    self.tokenizer)  # (B, new)
            new = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
            for i, t in zip(idx, new):
                out[i] = t.strip()
            if on_batch is not None:
                on_batch(len(idx))
        return out


def _left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) input ids and attention mask, padding on the left."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        attention_mask[i, width - len(r) :] = 1
    return input_ids, attention_mask
