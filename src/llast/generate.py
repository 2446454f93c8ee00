"""Generation for a DecodeConfig: THE choice of decoding path, for speech prompts (llast.decode) and text
prompts (two-pass decoding's text pass and the text baselines, llast.llm_text) alike.

    DecodeConfig --> shared prefill (each prompt once) --> llast.beam.beam_search   (the default)
                                                       \\-> transformers' beam search (decode.beam_search
                                                           "transformers", or settings llast.beam lacks)
                 \\-> transformers' generate alone         (decode.share_prefill off)
                 \\-> llama.cpp + llast.beam.beam_search  (--dtype gguf: llast.llamacpp runs the LLM)

The DecodeConfig arrives checked (llast.config.check_decode) and is read as it is; transformers' generate
kwargs are made from it in one place (`_generate_kwargs`), only where transformers' generate runs.
"""

from __future__ import annotations

import torch

from llast import beam
from llast.config import DecodeConfig
from llast.llamacpp import LlamaCppLLM
from llast.model import AUDIO_TOKEN_ID


def generate_ids(model, batch: dict, decode: DecodeConfig, tokenizer) -> torch.Tensor:
    """Token ids of the continuation only, (B, new_tokens), of a left-padded batch of LLaST prompts.

    model     : llast.model.LLaST (its `prefill` and `generate`)
    batch     : the processor's left-padded batch (input_features, audio_lengths, input_ids (B, L), attention_mask)
    tokenizer : gives the end (eos_token_id) and padding (pad_token_id) tokens
    """
    if isinstance(model.llm, LlamaCppLLM):
        return _llama_cpp_ids(model, batch, decode, tokenizer)
    search = _search(model.llm, decode, tokenizer)
    if search is None or batch["input_ids"].shape[1] < 2:
        return model.generate(**batch, **_generate_kwargs(decode, tokenizer))
    embeds, cache = model.prefill(**batch)
    return _continue(model.llm, embeds, batch["attention_mask"], cache, decode, tokenizer, search)


def generate_text_ids(llm, input_ids: torch.Tensor, attention_mask: torch.Tensor, decode: DecodeConfig,
                      tokenizer) -> torch.Tensor:
    """`generate_ids` for a text prompt to a causal LM alone: token ids of the continuation only, (B, new_tokens).

    input_ids, attention_mask : (B, L) left-padded prompt
    """
    if isinstance(llm, LlamaCppLLM):
        rows = [ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask)]
        return llm.generate([(row, None, []) for row in rows], decode, *_eos_pad(tokenizer))
    search = _search(llm, decode, tokenizer)
    if search is None or input_ids.shape[1] < 2:
        out = llm.generate(input_ids=input_ids, attention_mask=attention_mask, **_generate_kwargs(decode, tokenizer))
        return out[:, input_ids.shape[1]:]
    embeds = llm.get_input_embeddings()(input_ids)  # (B, L, H)
    return _continue(llm, embeds, attention_mask, beam.prefill(llm, embeds, attention_mask), decode, tokenizer, search)


def _llama_cpp_ids(model, batch: dict, decode: DecodeConfig, tokenizer) -> torch.Tensor:
    """generate_ids when llama.cpp runs the LLM: the adaptor's outputs (PyTorch) go to llama.cpp as
    embeddings between each prompt's tokens before and after its audio slot; llast.beam's search. (B, new_tokens)"""
    embeds, mask = model.embed_audio(batch.get("input_features"), batch["audio_lengths"], batch.get("encoder_states"))
    prompts = []
    for ids, keep, audio, real in zip(batch["input_ids"], batch["attention_mask"], embeds, mask):
        row = ids[keep.bool()].tolist()
        first = row.index(AUDIO_TOKEN_ID)
        end = first + int(real.sum())
        prompts.append((row[:first], audio[real].float().cpu().numpy(), row[end:]))
    return model.llm.generate(prompts, decode, *_eos_pad(tokenizer))


def _eos_pad(tokenizer) -> tuple[int, int]:
    """The end token and the padding token (the end token where the tokenizer has none)."""
    eos = tokenizer.eos_token_id
    return eos, eos if tokenizer.pad_token_id is None else tokenizer.pad_token_id


def _search(llm, decode: DecodeConfig, tokenizer) -> str | None:
    """Who searches after a shared prefill (each prompt run once, its KV cache shared among the beams):
    "llast" (llast.beam: the same search with fewer passes over the vocabulary, finished clips leaving the
    batch; greedy decoding as its search with one beam, the same tokens, where transformers' greedy generate
    keeps finished rows until the longest ends: 3.9x the time of beam 4 on llast-mini's text pass,
    bench/results/text_pass_beams.json), "transformers" (its beam search, when decode.beam_search says so or
    llast.beam lacks what `decode` asks: llast.beam.supports), or None: no shared prefill (decode.share_prefill
    off, or greedy that llast.beam cannot run): transformers' generate alone, which copies every prompt
    num_beams times BEFORE its prefill. Same outputs every way."""
    if not decode.share_prefill:
        return None
    if decode.beam_search == "llast" and tokenizer.eos_token_id is not None and beam.supports(llm, decode):
        return "llast"
    return "transformers" if decode.num_beams > 1 else None


def _continue(llm, embeds: torch.Tensor, attention_mask: torch.Tensor, cache, decode: DecodeConfig, tokenizer,
              search: str) -> torch.Tensor:
    """The search `search` continuing a shared prefill (`cache`: each prompt but its last position, B rows).
    embeds : (B, L, H) the whole prompts. (B, new_tokens)"""
    if search == "llast":
        eos, pad = _eos_pad(tokenizer)
        return beam.beam_search(llm, embeds[:, -1:], attention_mask, cache, decode, [eos], pad)
    cache.batch_repeat_interleave(decode.num_beams)  # (B, ...) -> (B * num_beams, ...), beams of a clip adjacent
    return llm.generate(inputs_embeds=embeds, attention_mask=attention_mask, past_key_values=cache,
                        **_generate_kwargs(decode, tokenizer))


def _generate_kwargs(decode: DecodeConfig, tokenizer) -> dict:
    """transformers' generate kwargs for `decode`: deterministic (no sampling; the released 2B config samples
    at T=0.1), early_stopping with beams as llast.beam stops."""
    return dict(
        num_beams=decode.num_beams,
        max_new_tokens=decode.max_new_tokens,
        min_new_tokens=decode.min_new_tokens or None,
        length_penalty=decode.length_penalty,
        repetition_penalty=decode.repetition_penalty,
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
        early_stopping=decode.num_beams > 1,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
