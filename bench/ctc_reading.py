"""How well a CTC-stage adaptor (train.objective=ctc) reads the dev clips: greedy CTC, then CER and WER.

    python bench/ctc_reading.py --config configs/recipes/llast-mini/1-chars.yaml --checkpoint runs/mini-chars/final [key=value ...]

The adaptor's embeddings are scored against the LLM's input embeddings of the stage's units (letters
or word pieces) exactly as in training (LLaST.ctc_loss); the best unit per embedding, repeats and blanks
removed, is its reading. Scored against the normalised transcript (llast.train.spell) of each dev clip:
voices and sentences never seen in training.
"""

from __future__ import annotations

import argparse
import json

import jiwer
import torch

from llast.checkpoint import load_adaptor
from llast.config import load_config
from llast.data import SpeechDataset
from llast.model import audio_embed_length
from llast.train import Collator, ctc_collapse, ctc_speller, ctc_vocabulary, spell


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--out", default=None)
    ap.add_argument("overrides", nargs="*", help="config overrides as for llast train (key=value), e.g. the run's S-LoRA")
    args = ap.parse_args()
    cfg = load_config(args.config, args.overrides)
    from llast.data import build_samples
    from llast.lora import build_lora_model
    from llast.processor import build_processor

    model = build_lora_model(cfg.model)
    load_adaptor(model, args.checkpoint)
    model.eval()
    processor = build_processor(cfg.model, encoder_config=model.encoder_config)
    speller = ctc_speller(cfg, processor)
    def transcripts(sources):
        return [s for s in build_samples(sources, asr_augment=True) if s.task == "transcribe"]

    dev = transcripts(cfg.data.dev)
    vocab = ctc_vocabulary(transcripts(cfg.data.train) + dev, processor.tokenizer, speller)  # as in training
    dataset = SpeechDataset(dev, cfg.model.encoder.max_seconds, feature_cache=cfg.data.feature_cache, model_cfg=cfg.model)
    collate = Collator(processor, speller)
    hyps = []
    with torch.no_grad():
        for start in range(0, len(dev), 16):  # in order: hypothesis i is dev clip i
            batch, _ = collate([dataset[i] for i in range(start, min(start + 16, len(dev)))])
            out = model.ctc_loss(batch["audio_lengths"], batch["labels"], vocab, batch.get("input_features"),
                                 batch.get("encoder_states"), ctc_targets=batch.get("ctc_targets"))
            n_embeds = audio_embed_length(batch["audio_lengths"], model.encoder_config, cfg.model).tolist()
            for i, row in enumerate(out.logits.argmax(-1).tolist()):
                hyps.append(spell(processor.tokenizer.decode(ctc_collapse(row[: int(n_embeds[i])], vocab))))
    refs = [spell(s.source_text) for s in dev]
    langs = [s.src_lang for s in dev]
    report = {"checkpoint": args.checkpoint, "clips": len(hyps),
              "cer": round(100 * jiwer.cer(refs, hyps), 1), "wer": round(100 * jiwer.wer(refs, hyps), 1), "per_language": {}}
    for lang in sorted(set(langs)):
        r = [x for x, g in zip(refs, langs) if g == lang]
        h = [x for x, g in zip(hyps, langs) if g == lang]
        report["per_language"][lang] = {"cer": round(100 * jiwer.cer(r, h), 1), "wer": round(100 * jiwer.wer(r, h), 1)}
    report["examples"] = list(zip(refs[:6], hyps[:6]))
    print(json.dumps(report, indent=1, ensure_ascii=False))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
