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
from llast.config import DataSource, DecodeConfig
from llast.data import Sample, drop_empty, read_source, transcription_of
from llast.errors import AudioError, ConfigError
from llast.processor import Example

CHUNK = 256  # clips loaded and decoded at a time; results are written after each chunk


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


def group_sets(
    specs: list[str], task: str, limit: int | None, skipped: list[str] | None = None, empty: dict | None = None,
) -> dict[tuple[str, str, str], list[Sample]]:
    """Samples grouped by (src, tgt, task), from every --data spec. With a `skipped` list, clips whose
    header cannot be read (or that are missing) are left out and their errors appended to it
    (--skip-bad). Samples with an empty reference are always left out, with a warning, and counted
    per set in `empty`."""
    sets: dict[tuple[str, str, str], list[Sample]] = {}
    for spec in specs:
        for s in read_source(data_source(spec, limit), skipped=skipped):
            if task == "transcribe" and s.task != "transcribe":
                s = transcription_of(s)
            sets.setdefault((s.src_lang, s.tgt_lang, s.task), []).append(s)
    for key, samples in sets.items():
        sets[key], n = drop_empty(samples, f"{'-'.join(key[:2])}.{key[2]}")
        if empty is not None and n:
            empty[key] = empty.get(key, 0) + n
    return sets


def set_name(src: str, tgt: str, task: str) -> str:
    """The file-name stem of a set's outputs; codes were checked when read, and anything but letters,
    digits and dashes is replaced all the same (names made from data never leave --out)."""
    return re.sub(r"[^A-Za-z0-9-]", "_", f"{src}-{tgt}") + "." + re.sub(r"[^a-z]", "_", task)


def _load(sample: Sample, max_seconds: float | None) -> np.ndarray:
    return load_audio(sample.audio, offset=sample.offset, duration=sample.duration, max_seconds=max_seconds)


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
             max_seconds: float | None = 30.0, progress: bool = True, meta: dict | None = None,
             empty: dict | None = None) -> dict:
    """Decode every set with `generate(examples, on_batch=callback) -> texts`, score, and write OUT/.

    Results are written after every chunk and every set, so an error (a corrupt clip without
    `skip_bad`) loses nothing already decoded; the error names the clip. `empty`: {(src, tgt, task):
    samples left out for an empty reference}, reported per set as skipped_empty.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir}: exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    scores: dict = {"meta": meta or {}, "sets": {}}
    score_file = out_dir / "score.json"
    for (src, tgt, task), samples in sets.items():
        name = set_name(src, tgt, task)
        files = {k: open(out_dir / f"{name}.{k}.txt", "w", encoding="utf-8") for k in ("hyp", "ref", "ids")}
        hyps, refs, skipped = [], [], []
        t0 = time.time()
        audio_seconds = 0.0
        bar = tqdm(total=len(samples), desc=name, unit="clip", disable=not progress, file=sys.stderr)
        try:
            for start in range(0, len(samples), CHUNK):
                chunk, examples, error = [], [], None
                for s in samples[start : start + CHUNK]:
                    try:
                        audio = _load(s, max_seconds)
                    except AudioError as e:
                        if not skip_bad:
                            error = (s, e)
                            break  # decode and write what is loaded, then stop
                        skipped.append({"id": s.id, "reason": str(e)})
                        bar.update(1)
                        continue
                    audio_seconds += len(audio) / 16000
                    chunk.append(s)
                    examples.append(Example(audio, src, tgt, task))
                texts = generate(examples, on_batch=bar.update) if examples else []
                for s, t in zip(chunk, texts):
                    files["hyp"].write(_line(t) + "\n")  # one line per sample, whatever the text holds
                    files["ref"].write(_line(s.target_text) + "\n")
                    files["ids"].write(_line(s.id) + "\n")
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
            skipped=len(skipped), skipped_samples=skipped[:50], skipped_empty=(empty or {}).get((src, tgt, task), 0),
            decode_seconds=round(elapsed, 2),
            audio_seconds=round(audio_seconds, 2), real_time_factor=round(elapsed / max(audio_seconds, 1e-9), 4),
        )
        scores["sets"][name] = result
        score_file.write_text(json.dumps(scores, indent=2, ensure_ascii=False))
    return scores


def _line(text: str) -> str:
    return " ".join(text.splitlines())


def print_scores(scores: dict) -> None:
    for name, r in scores["sets"].items():
        line = f"{name}: n={r['n']}"
        if "bleu" in r:
            line += f"  BLEU {r['bleu']:.2f}  chrF {r['chrf']:.2f}"
        if "wer" in r:
            line += f"  WER {r['wer']:.3f}  CER {r['cer']:.3f}"
        if r.get("skipped"):
            line += f"  (skipped {r['skipped']} unreadable clips)"
        if r.get("skipped_empty"):
            line += f"  (left out {r['skipped_empty']} empty references)"
        print(line)
        if "bleu_signature" in r:
            print(f"  {r['bleu_signature']}")
    unreadable = scores.get("meta", {}).get("skipped_while_reading", 0)
    if unreadable:
        print(f"skipped {unreadable} clips whose audio is missing or unreadable while reading the data (--skip-bad)")


def _load_translator(spec: str, dtype: str = "auto"):
    """A checkpoint directory, or a YAML config: the UNTRAINED model it describes (a baseline)."""
    from llast.checkpoint import load_model

    if spec.endswith((".yaml", ".yml")):
        import torch

        from llast.config import load_config
        from llast.decode import Translator
        from llast.checkpoint import build_named_model
        from llast.lora import apply_lora

        cfg = load_config(spec)
        torch.manual_seed(cfg.train.seed)  # the untrained adaptor's initialisation
        model = build_named_model(cfg.model)
        apply_lora(model, cfg.model)
        return Translator(model, cfg, dtype=dtype)
    return load_model(spec, dtype=dtype)


def evaluate_cli(args, overrides: dict) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    unreadable: list[str] | None = [] if args.skip_bad else None
    empty: dict = {}
    sets = group_sets(args.data, args.task, args.limit, skipped=unreadable, empty=empty)
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
    if unreadable:
        meta["skipped_while_reading"] = len(unreadable)
        meta["skipped_while_reading_samples"] = unreadable[:50]
    scores = evaluate(generate, sets, args.out, lowercase=args.lowercase, skip_bad=args.skip_bad, max_seconds=max_seconds,
                      meta=meta, empty=empty)
    print_scores(scores)
    print(f"wrote {Path(args.out) / 'score.json'}")
    return 0
