"""Is it the voices or the sentences? A character-level CTC probe over the frozen encoder's cached states.

    python bench/hearing_probe.py --config configs/mini-ctc.yaml --minutes 8 --out bench/results/hearing_probe.json

A small head (a 1-D convolution over time, then a linear layer onto characters) learns to read the source
text from the cached Whisper states of the training clips (CTC). 5 % of the training clips are held out:
their voices were heard in training but their sentences were not. The dev split has unseen voices AND
unseen sentences. The character error rate on each, side by side, says what the encoder's features carry
for speech it never heard, independently of the LLM and of the token vocabulary:

- heard voices ~= unseen voices: the features generalise across voices; a bad speech model comes from the
  way it is taught (objective, vocabulary, data size), not from the encoder;
- unseen voices much worse: the frozen features do not carry the content across voices; the encoder has
  to adapt (S-LoRA) or the voices must vary more.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import jiwer
import torch
import torch.nn as nn
import torch.nn.functional as F

from llast.config import load_config
from llast.data import build_samples
from llast.features import cache_key, entry_path, load_entry
from llast.train import spell


class Probe(nn.Module):
    """(B, T, D) states -> (B, T, K) character log-probabilities (index 0 = CTC blank)."""

    def __init__(self, dim: int, n_chars: int, width: int = 256, kernel: int = 5):
        super().__init__()
        self.conv = nn.Conv1d(dim, width, kernel, padding=kernel // 2)
        self.out = nn.Linear(width, n_chars)

    def forward(self, x):
        return self.out(F.gelu(self.conv(x.transpose(1, 2)).transpose(1, 2))).log_softmax(-1)


def load(samples, cfg, cache_dir):
    rows = []
    for s in samples:
        p = entry_path(cache_dir, cache_key(s, cfg.model))
        if p.is_file():
            states, _ = load_entry(p)
            rows.append((torch.from_numpy(states.astype("float32")), spell(s.source_text), s.audio))
    return rows


def batches(rows, size, shuffle, rng):
    order = list(range(len(rows)))
    if shuffle:
        rng.shuffle(order)
    for i in range(0, len(order), size):
        yield [rows[j] for j in order[i : i + size]]


def collate(batch, table):
    width = max(r[0].shape[0] for r in batch)
    x = torch.zeros(len(batch), width, batch[0][0].shape[1])
    for i, r in enumerate(batch):
        x[i, : r[0].shape[0]] = r[0]
    lengths = torch.tensor([r[0].shape[0] for r in batch])
    targets = [torch.tensor([table[c] for c in r[1] if c in table]) for r in batch]
    return x, lengths, targets


@torch.no_grad()
def cer(model, rows, table, limit=200):
    inv = {i: c for c, i in table.items()}
    hyps, refs = [], []
    for batch in batches(rows[:limit], 32, False, None):
        x, lengths, _ = collate(batch, table)
        best = model(x).argmax(-1)
        for row, n, r in zip(best, lengths, batch):
            ids = torch.unique_consecutive(row[:n]).tolist()
            hyps.append(" ".join("".join(inv[i] for i in ids if i).split()))
            refs.append(r[1])
    return 100 * jiwer.cer(refs, hyps), 100 * jiwer.wer(refs, hyps), hyps[:2], refs[:2]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/mini-ctc.yaml")
    ap.add_argument("--minutes", type=float, default=8)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    cfg = load_config(args.config)
    cache_dir = cfg.data.feature_cache
    asr = [s for s in build_samples(cfg.data.train, asr_augment=True) if s.task == "transcribe"]
    dev = [s for s in build_samples(cfg.data.dev, asr_augment=True) if s.task == "transcribe"]
    rng = random.Random(0)
    rng.shuffle(asr)
    n_held = len(asr) // 20
    held, train = load(asr[:n_held], cfg, cache_dir), load(asr[n_held:], cfg, cache_dir)
    dev = load(dev, cfg, cache_dir)
    letters = sorted({c for r in train for c in r[1]})
    table = {c: i + 1 for i, c in enumerate(letters)}
    print(f"{len(train)} train clips, {len(held)} held out (heard voices), {len(dev)} dev (unseen voices), "
          f"{len(table)} characters", flush=True)
    torch.manual_seed(0)
    model = Probe(train[0][0].shape[1], len(table) + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    start, step, curve = time.time(), 0, []
    while time.time() - start < args.minutes * 60:
        for batch in batches(train, 32, True, rng):
            x, lengths, targets = collate(batch, table)
            logp = model(x)
            loss = F.ctc_loss(logp.transpose(0, 1), torch.cat(targets), lengths,
                              torch.tensor([len(t) for t in targets]), zero_infinity=True)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step % 100 == 0:
                model.eval()
                point = {"step": step, "loss": round(loss.item(), 3),
                         "held_cer": round(cer(model, held, table)[0], 1), "dev_cer": round(cer(model, dev, table)[0], 1)}
                model.train()
                curve.append(point)
                print(point, flush=True)
            if time.time() - start > args.minutes * 60:
                break
    model.eval()
    result = {"steps": step, "train_clips": len(train), "curve": curve}
    for name, rows in (("train", train), ("held_out_heard_voices", held), ("dev_unseen_voices", dev)):
        c, w, hyps, refs = cer(model, rows, table)
        result[name] = {"cer": round(c, 1), "wer": round(w, 1), "examples": list(zip(refs, hyps))}
        print(name, result[name], flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
