"""Beam search for a decoder-only LM fed with embeddings, with the prompt's KV cache already filled.

The same search as transformers' `generate(num_beams=K, early_stopping=True)` (its vectorised beam search:
the 2K best continuations per clip, finished hypotheses scored with the length penalty, a clip done once
K hypotheses are finished) with three differences in HOW, not in what:

* the prompt is prefilled once per clip and its cache repeated for the beams (LLaST.prefill does the
  prefill; the first step here runs one row per clip and only then repeats the cache K times);
* the candidates are found without materialising the (B*K, V) log-probability tensor several times:
  log p = logit - logsumexp(logits) is a per-row shift, so each beam's top 2K logits hold its top 2K
  continuations, and the clip's top 2K come from those K*2K. transformers copies the logits to fp32,
  writes log_softmax, masks, adds the beam scores and runs top-k over K*V: about twice the passes over
  the vocabulary per step, which is a quarter of a batched CPU step with a 49k vocabulary;
* a clip whose K hypotheses are finished leaves the batch (its cache rows are dropped), so a batch costs
  what its unfinished clips cost, not what its longest clip costs.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from llast.config import DecodeConfig

NEG = -1.0e9  # transformers' "impossible" score


@torch.no_grad()
def prefill(llm, embeds: torch.Tensor, attention_mask: torch.Tensor):
    """KV cache of each left-padded prompt but its last position, B rows, for `beam_search` to continue from.

    embeds : (B, L, H) prompt embeddings; attention_mask : (B, L)
    """
    cache = DynamicCache(config=llm.config)
    mask = attention_mask[:, :-1]
    position_ids = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)  # as generate() computes them
    # The decoder body only: the prefill is for the cache, its logits would be thrown away (and
    # the LM head on a strided (B, 1, H) slice makes torch expand its weight B times on CPU).
    llm.get_decoder()(inputs_embeds=embeds[:, :-1], attention_mask=mask, position_ids=position_ids,
                      past_key_values=cache, use_cache=True)
    return cache


@torch.no_grad()
def beam_search(
    llm,
    last_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    cache,
    decode: DecodeConfig,
    eos_token_ids: list[int],
    pad_token_id: int,
) -> torch.Tensor:
    """Best hypothesis per clip, (B, T) token ids (EOS included, then pad), T <= decode.max_new_tokens.

    llm            : a transformers causal LM (`supports(llm, decode)`: nothing asked that this search lacks)
    last_embeds    : (B, 1, H) embedding of each prompt's last position (the rest is in `cache`)
    attention_mask : (B, L) of the whole (left-padded) prompt, last position included
    cache          : a transformers Cache holding the prompt minus its last position, B rows
    decode         : num_beams (1: greedy, the same tokens), max_new_tokens, min_new_tokens, length_penalty
    """
    B, K, T = last_embeds.shape[0], decode.num_beams, decode.max_new_tokens
    min_new_tokens, length_penalty = decode.min_new_tokens, decode.length_penalty
    device = last_embeds.device
    eos = torch.tensor(eos_token_ids, device=device)
    keep = max(2, 1 + len(eos_token_ids)) * K  # candidates per clip, as transformers keeps
    top_k_mask = torch.arange(keep, device=device) < K  # only the K best may finish a hypothesis
    embed = llm.get_input_embeddings()

    # Per clip still in the batch ("alive"): running beams and finished hypotheses, as in transformers.
    alive = torch.arange(B, device=device)  # original clip index of each batch row
    run_seq = torch.full((B, K, T), pad_token_id, dtype=torch.long, device=device)
    run_score = torch.full((B, K), NEG, device=device)
    run_score[:, 0] = 0.0
    fin_seq = torch.full((B, K, T), pad_token_id, dtype=torch.long, device=device)
    fin_score = torch.full((B, K), NEG, device=device)
    fin_len = torch.zeros((B, K), dtype=torch.long, device=device)
    fin_done = torch.zeros((B, K), dtype=torch.bool, device=device)
    out_seq = torch.full((B, T), pad_token_id, dtype=torch.long, device=device)
    out_len = torch.zeros(B, dtype=torch.long, device=device)

    mask = attention_mask
    inputs = last_embeds  # step 0: one row per clip; afterwards K rows per clip
    for t in range(T):
        n = alive.numel()
        top_lp, top_tok = _step(llm, inputs, mask, cache, keep, eos if t < min_new_tokens else None)
        cand, beam_of, tok = _candidates(top_lp, top_tok, run_score, first_step=t == 0)
        seq = run_seq.gather(1, beam_of[:, :, None].expand(n, keep, T))  # a new tensor: safe to write
        seq[:, :, t] = tok
        # a candidate stops at EOS, and every candidate stops at the length limit
        stops = torch.isin(tok, eos) | (t + 1 >= T)

        # running beams for the next step: the K best that did not stop
        r_score, r_pick = (cand + stops.float() * NEG).topk(K, dim=-1)
        run_seq = seq.gather(1, r_pick[:, :, None].expand(n, K, T))
        run_score = r_score
        src_beam = beam_of.gather(1, r_pick)  # (n, K): which beam each new beam continues

        fin_score, fin_seq, fin_len, fin_done = _finished(
            (fin_score, fin_seq, fin_len, fin_done), cand, seq, stops & top_k_mask, t + 1, length_penalty)

        # clips with K finished hypotheses are done (early_stopping=True): record them, drop their rows
        done = fin_done.all(-1) | (t + 1 >= T)
        if bool(done.any()):
            out_seq[alive[done]] = fin_seq[done, 0]
            out_len[alive[done]] = fin_len[done, 0]
        if bool(done.all()):
            break
        # the cache row each new beam continues: row i at step 0 (one per clip), i*K + beam afterwards
        first = torch.arange(n, device=device)[:, None]
        rows = first.expand(n, K) if t == 0 else first * K + src_beam
        live = ~done
        if not bool(live.all()):
            alive, run_seq, run_score, rows = alive[live], run_seq[live], run_score[live], rows[live]
            fin_seq, fin_score, fin_len, fin_done = fin_seq[live], fin_score[live], fin_len[live], fin_done[live]
            mask = mask.view(n, -1, mask.shape[-1])[live].view(-1, mask.shape[-1])  # (rows of live clips, L)
        rows = rows.reshape(-1)  # (alive * K,) cache rows the new beams continue
        cache.reorder_cache(rows)  # gathers (and drops) rows: index_select over the batch dimension
        if t == 0:
            mask = mask.repeat_interleave(K, dim=0)
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
        inputs = embed(run_seq[:, :, t].reshape(-1, 1))
    return out_seq[:, : int(out_len.max())]


def _step(llm, inputs: torch.Tensor, mask: torch.Tensor, cache, keep: int, banned: torch.Tensor | None):
    """One decoding step: each row's `keep` best continuations, (log-probabilities, tokens), (rows, keep) each;
    `banned` tokens (EOS before min_new_tokens) are never among them.

    inputs : (rows, 1, H) embedding of each row's newest position; mask : (rows, L) its attention mask so far
    """
    positions = mask.long().sum(-1, keepdim=True) - 1
    logits = llm(inputs_embeds=inputs, attention_mask=mask, position_ids=positions, past_key_values=cache,
                 use_cache=True).logits[:, -1].float()  # (rows, V)
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)  # log p = logits - lse
    if banned is not None:
        logits[:, banned] = float("-inf")
    top_val, top_tok = logits.topk(keep, dim=-1)  # (rows, keep): a row's best logits are its best log p
    return top_val - lse, top_tok


def _candidates(top_lp: torch.Tensor, top_tok: torch.Tensor, run_score: torch.Tensor, first_step: bool):
    """The `keep` best continuations of each clip: (scores, beam each continues, token), each (n, keep).

    top_lp, top_tok : (n * K, keep) each running beam's best log-probabilities and their tokens
    run_score       : (n, K) the running beams' scores
    """
    n, K = run_score.shape
    keep = top_lp.shape[-1]
    if first_step:  # all beams of a clip are still the same: candidates come from its one row
        return top_lp.view(n, keep), torch.zeros((n, keep), dtype=torch.long, device=top_lp.device), top_tok.view(n, keep)
    acc = (top_lp.view(n, K, keep) + run_score[:, :, None]).view(n, K * keep)
    cand, pick = acc.topk(keep, dim=-1)  # (n, keep), sorted best first
    return cand, pick // keep, top_tok.view(n, K * keep).gather(1, pick)


def _finished(fin: tuple, cand: torch.Tensor, seq: torch.Tensor, may_finish: torch.Tensor, length: int,
              length_penalty: float) -> tuple:
    """The K best finished hypotheses per clip after this step: the kept ones and the candidates that
    finish now (`may_finish`: stopped, among the K best), scored with the length penalty; a clip that
    already has K stays as it is. fin = (score (n, K), seq (n, K, T), length (n, K), done (n, K))."""
    fin_score, fin_seq, fin_len, fin_done = fin
    n, K, T = fin_seq.shape
    full = fin_done.all(-1, keepdim=True)
    f_cand = cand / (length ** length_penalty) + full.float() * NEG + (~may_finish).float() * NEG
    m_score = torch.cat([fin_score, f_cand], dim=1)
    m_seq = torch.cat([fin_seq, seq], dim=1)
    m_len = torch.cat([fin_len, torch.full_like(f_cand, length, dtype=torch.long)], dim=1)
    m_done = torch.cat([fin_done, may_finish & ~full], dim=1)
    score, pick = m_score.topk(K, dim=-1)
    return score, m_seq.gather(1, pick[:, :, None].expand(n, K, T)), m_len.gather(1, pick), m_done.gather(1, pick)


# Settings of the LLM's generation config that add logits processors this search does not implement.
_PROCESSORS = ("no_repeat_ngram_size", "bad_words_ids", "suppress_tokens", "begin_suppress_tokens", "forced_bos_token_id",
               "forced_eos_token_id", "sequence_bias", "exponential_decay_length_penalty")


def supports(llm, decode: DecodeConfig) -> bool:
    """Whether `beam_search` runs what `decode` asks of `llm` (deterministic beam search or greedy, no
    repetition penalty, no logits processor from the LLM's generation config but min_new_tokens); else
    transformers' search must (llast.generate)."""
    gc = llm.generation_config
    if decode.repetition_penalty != 1.0 or getattr(gc, "repetition_penalty", 1.0) not in (None, 1.0):
        return False
    return all(getattr(gc, name, None) in (None, 0, []) for name in _PROCESSORS)
