"""`llast evaluate`: batched decoding of held-out sets and scores as the paper and its peers report them.

BLEU is SacreBLEU corpus BLEU, CASED by default (`--lowercase` for LLaST's released, case-insensitive
scorer), tokenized by target language: 13a, `zh` for Chinese, `ja-mecab` for Japanese. chrF too, and
the SacreBLEU signature always. The transcription task gets WER and CER (jiwer) as well.

    OUT/
      {src}-{tgt}.{task}.hyp.txt / .ref.txt / .ids.txt   one line per sample, in corpus order
      score.json                                         per set: n, skipped, bleu, chrf, signature, (wer, cer)
"""

from __future__ import annotations

import json
import re
import string
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from llast.audio import load_audio
from llast.segment import SegmentOptions, plan_segments, segment_audio
from llast.config import DataSource, DecodeConfig
from llast.data import Sample, read_source, transcription_of
from llast.errors import AudioError, ConfigError
from llast.processor import Example

CHUNK = 256  # clips loaded and decoded at a time; results are written after each chunk
CHUNK_SECONDS = 600  # ... or fewer, once their audio reaches this many seconds (long clips)


def bleu_tokenizer(tgt_lang: str) -> str:
    """SacreBLEU tokenizer for a target language: zh for Chinese, ja-mecab for Japanese, else 13a."""
    lang = tgt_lang.lower()
    if lang.startswith("zh"):
        return "zh"
    if lang.startswith("ja"):
        return "ja-mecab"
    return "13a"


def _normalise_for_wer(text: str) -> str:
    text = text.lower()
    text = re.sub(f"[{re.escape(string.punctuation)}¿¡«»“”„’‘…。、，！？]", " ", text)
    return " ".join(text.split())


def score(hyps: list[str], refs: list[str], tgt_lang: str, task: str = "translate", lowercase: bool = False) -> dict:
    """Corpus scores of `hyps` against `refs` (one reference each)."""
    import sacrebleu

    bleu = sacrebleu.BLEU(tokenize=bleu_tokenizer(tgt_lang), lowercase=lowercase)
    chrf = sacrebleu.CHRF(lowercase=lowercase)
    b = bleu.corpus_score(hyps, [refs])
    c = chrf.corpus_score(hyps, [refs])
    out = {
        "n": len(hyps),
        "bleu": round(b.score, 2),
        "bleu_signature": str(bleu.get_signature()),
        "chrf": round(c.score, 2),
        "chrf_signature": str(chrf.get_signature()),
    }
    if task == "transcribe":
        import jiwer

        h = [_normalise_for_wer(x) for x in hyps]
        r = [_normalise_for_wer(x) for x in refs]
        keep = [i for i, x in enumerate(r) if x]
        if keep:
            out["wer"] = round(jiwer.wer([r[i] for i in keep], [h[i] for i in keep]), 4)
            out["cer"] = round(jiwer.cer([r[i] for i in keep], [h[i] for i in keep]), 4)
            out["wer_normalisation"] = "lowercase, punctuation removed"
    return out


def data_source(spec: str, limit: int | None = None) -> DataSource:
    """A --data argument: a CoVoST TSV, a JSONL manifest or a MuST-C split folder."""
    p = Path(spec)
    if p.is_dir():
        return DataSource(format="mustc", path=spec, limit=limit)
    if p.suffix == ".jsonl":
        return DataSource(format="jsonl", path=spec, limit=limit)
    if p.suffix == ".tsv":
        return DataSource(format="covost", path=spec, limit=limit)
    raise ConfigError(f"{spec}: expected a CoVoST .tsv, a .jsonl manifest or a MuST-C split folder")


def group_sets(specs: list[str], task: str, limit: int | None) -> dict[tuple[str, str, str], list[Sample]]:
    """Samples grouped by (src, tgt, task), from every --data spec."""
    sets: dict[tuple[str, str, str], list[Sample]] = {}
    for spec in specs:
        for s in read_source(data_source(spec, limit)):
            if task == "transcribe" and s.task != "transcribe":
                s = transcription_of(s)
            sets.setdefault((s.src_lang, s.tgt_lang, s.task), []).append(s)
    return sets


def _load_segments(sample: Sample, opts: SegmentOptions) -> list[np.ndarray]:
    """A sample's audio: one clip, or, when longer than opts.max_seconds, its speech segments as
    `llast translate` cuts them (llast.segment); their hypotheses are joined into one."""
    plan = plan_segments(sample.audio, opts, offset=sample.offset, duration=sample.duration)
    if len(plan) == 1 and plan[0].start == 0.0:  # a clip within the limit: read as it is
        return [load_audio(sample.audio, offset=sample.offset, duration=sample.duration, max_seconds=opts.max_seconds)]
    return [segment_audio(sample.audio, seg, offset=sample.offset) for seg in plan]


class WhisperBaseline:
    """Whisper's own translate/transcribe task through transformers (the paper's Table 2 baseline)."""

    def __init__(self, name: str, decode: DecodeConfig, device: str | None = None, dtype: str = "auto"):
        import torch
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        from llast.model import inference_dtype, resolve_name

        path = resolve_name(name)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = inference_dtype(dtype, self.device)
        self.model = WhisperForConditionalGeneration.from_pretrained(path).to(self.device, self.dtype).eval()
        self.processor = WhisperProcessor.from_pretrained(path)
        self.decode = decode

    def generate(self, examples: list[Example], progress: bool = False, on_batch=None) -> list[str]:
        import torch

        out = []
        for i in tqdm(range(0, len(examples), self.decode.batch_size), desc="whisper", disable=not progress, file=sys.stderr):
            chunk = examples[i : i + self.decode.batch_size]
            ex = chunk[0]
            if ex.task == "translate" and ex.tgt_lang != "en":
                raise ConfigError(f"Whisper's translate task only produces English, not {ex.tgt_lang}")
            feats = self.processor.feature_extractor([e.audio for e in chunk], sampling_rate=16000, return_tensors="pt")
            language = ex.src_lang.split("-")[0]  # zh-CN -> zh
            kwargs = {}
            if getattr(self.model.generation_config, "is_multilingual", True) is not False:
                kwargs = {"language": language, "task": ex.task}
            with torch.no_grad():
                ids = self.model.generate(
                    feats.input_features.to(self.device, self.dtype), num_beams=self.decode.num_beams,
                    max_new_tokens=min(self.decode.max_new_tokens, 440), **kwargs,
                )
            out.extend(t.strip() for t in self.processor.batch_decode(ids, skip_special_tokens=True))
            if on_batch is not None:
                on_batch(len(chunk))
        return out


def evaluate(generate, sets, out_dir: str | Path, lowercase: bool = False, skip_bad: bool = False,
             max_seconds: float | None = 30.0, progress: bool = True, meta: dict | None = None) -> dict:
    """Decode every set with `generate(examples, on_batch=callback) -> texts`, score, and write OUT/.

    A clip longer than `max_seconds` is cut into speech segments as `llast translate` cuts it; the texts
    of its segments are joined into its one hypothesis (`on_batch` then counts segments).

    Results are written after every chunk and every set, so an error (a corrupt clip without
    `skip_bad`) loses nothing already decoded; the error names the clip.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    opts = SegmentOptions(max_seconds=max_seconds or 30.0)
    scores: dict = {"meta": meta or {}, "sets": {}}
    score_file = out_dir / "score.json"
    for (src, tgt, task), samples in sets.items():
        name = f"{src}-{tgt}.{task}"
        files = {k: open(out_dir / f"{name}.{k}.txt", "w", encoding="utf-8") for k in ("hyp", "ref", "ids")}
        hyps, refs, skipped = [], [], []
        t0 = time.time()
        audio_seconds = 0.0
        bar = tqdm(total=len(samples), desc=name, unit="clip", disable=not progress, file=sys.stderr)
        try:
            pending = list(reversed(samples))
            while pending:
                chunk, examples, owner, error, loaded = [], [], [], None, 0
                # At most CHUNK clips and about CHUNK_SECONDS of audio in memory at a time.
                while pending and len(chunk) < CHUNK and loaded < CHUNK_SECONDS * 16000:
                    s = pending.pop()
                    try:
                        audios = _load_segments(s, opts)
                    except AudioError as e:
                        if not skip_bad:
                            error = (s, e)
                            break  # decode and write what is loaded, then stop
                        skipped.append({"id": s.id, "reason": str(e)})
                        bar.update(1)
                        continue
                    audio_seconds += sum(len(a) for a in audios) / 16000
                    loaded += sum(len(a) for a in audios)
                    chunk.append(s)
                    examples += [Example(a, src, tgt, task) for a in audios]
                    owner += [len(chunk) - 1] * len(audios)
                    if len(audios) != 1:
                        bar.total += len(audios) - 1
                segment_texts = generate(examples, on_batch=bar.update) if examples else []
                parts: list[list[str]] = [[] for _ in chunk]
                for t, o in zip(segment_texts, owner):
                    if t:
                        parts[o].append(t)
                texts = [" ".join(p) for p in parts]
                for s, t in zip(chunk, texts):
                    files["hyp"].write(t.replace("\n", " ") + "\n")
                    files["ref"].write(s.target_text + "\n")
                    files["ids"].write(s.id + "\n")
                    hyps.append(t)
                    refs.append(s.target_text)
                for f in files.values():
                    f.flush()
                if error is not None:
                    s, e = error
                    raise AudioError(
                        f"{e} (sample {s.id}; the {len(hyps)} hypotheses before it are in {out_dir}; "
                        "use --skip-bad to skip such clips)"
                    )
        finally:
            bar.close()
            for f in files.values():
                f.close()
        elapsed = time.time() - t0
        result = score(hyps, refs, tgt, task, lowercase) if hyps else {"n": 0}
        result.update(
            skipped=len(skipped), skipped_samples=skipped[:50], decode_seconds=round(elapsed, 2),
            audio_seconds=round(audio_seconds, 2), real_time_factor=round(elapsed / max(audio_seconds, 1e-9), 4),
        )
        scores["sets"][name] = result
        score_file.write_text(json.dumps(scores, indent=2, ensure_ascii=False))
    return scores


def print_scores(scores: dict) -> None:
    for name, r in scores["sets"].items():
        line = f"{name}: n={r['n']}"
        if "bleu" in r:
            line += f"  BLEU {r['bleu']:.2f}  chrF {r['chrf']:.2f}"
        if "wer" in r:
            line += f"  WER {r['wer']:.3f}  CER {r['cer']:.3f}"
        if r.get("skipped"):
            line += f"  (skipped {r['skipped']} unreadable clips)"
        print(line)
        if "bleu_signature" in r:
            print(f"  {r['bleu_signature']}")


def _load_translator(spec: str, dtype: str = "auto"):
    """A checkpoint directory, or a YAML config: the UNTRAINED model it describes (a baseline)."""
    from llast.checkpoint import load_model

    if spec.endswith((".yaml", ".yml")):
        import torch

        from llast.config import load_config
        from llast.decode import Translator
        from llast.lora import apply_lora
        from llast.model import build_model

        cfg = load_config(spec)
        torch.manual_seed(cfg.train.seed)  # the untrained adaptor's initialisation
        model = build_model(cfg.model)
        apply_lora(model, cfg.model)
        return Translator(model, cfg, dtype=dtype)
    return load_model(spec, dtype=dtype)


def evaluate_cli(args, overrides: dict) -> int:
    sets = group_sets(args.data, args.task, args.limit)
    if args.baseline == "whisper":
        import dataclasses

        from llast.checkpoint import read_checkpoint_config

        name = args.model
        if (Path(args.model) / "llast.json").is_file():
            name = read_checkpoint_config(args.model).model.encoder.name
        decode = dataclasses.replace(DecodeConfig(), **overrides)
        baseline = WhisperBaseline(name, decode, dtype=args.dtype)
        generate = baseline.generate
        meta = {"system": f"whisper baseline ({name})", "num_beams": decode.num_beams, "dtype": str(baseline.dtype)}
        max_seconds = 30.0
    else:
        translator = _load_translator(args.model, args.dtype)
        decode = translator.decode_config(**overrides)
        def generate(examples, on_batch=None):
            return translator.generate(examples, decode, on_batch=on_batch)

        meta = {"system": f"llast checkpoint {args.model}", "num_beams": decode.num_beams,
                "dtype": str(next(translator.model.parameters()).dtype)}
        max_seconds = translator.cfg.model.encoder.max_seconds
    meta["lowercase"] = args.lowercase
    scores = evaluate(generate, sets, args.out, lowercase=args.lowercase, skip_bad=args.skip_bad, max_seconds=max_seconds, meta=meta)
    print_scores(scores)
    print(f"wrote {Path(args.out) / 'score.json'}")
    return 0
