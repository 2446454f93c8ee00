"""`llast evaluate`: batched decoding of held-out sets and scores as the paper and its peers report them.

BLEU is SacreBLEU corpus BLEU, CASED by default (`--lowercase` for LLaST's released, case-insensitive
scorer), tokenized by target language: 13a, `zh` for Chinese, `ja-mecab` for Japanese. chrF too, and
the SacreBLEU signature always. The transcription task gets WER and CER (jiwer) as well.

    OUT/
      {src}-{tgt}.{task}.hyp.txt / .ref.txt / .ids.txt   one line per sample, in corpus order
      score.json                                         per set: n, skipped, bleu, chrf, signature, (wer, cer)
"""

from __future__ import annotations

import dataclasses
import json
import re
import string
import sys
import time
from pathlib import Path

import jiwer
import numpy as np
import sacrebleu
import torch
from tqdm import tqdm
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from llast import outdir
from llast.checkpoint import read_checkpoint_config
from llast.audio import SAMPLE_RATE, load_audio
from llast.config import DataSource, DecodeConfig, PromptConfig
from llast.data import Sample, drop_empty, read_source, transcription_of
from llast.errors import AudioError, ConfigError, DataError
from llast.llm_text import TRANSLATION_ONLY, TextTranslator
from llast.model import inference_dtype, load_encoder_config, resolve_name
from llast.processor import Example
from llast.segment import SegmentOptions, plan_segments, segment_audio

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
        # Share of distinct hypotheses (after case folding): a model that does not listen answers many
        # clips with one and the same sentence.
        "distinct": round(len({h.strip().casefold() for h in hyps}) / max(len(hyps), 1), 4),
    }
    if task == "transcribe":
        out.update(word_error_rates(hyps, refs))
    return out


def word_error_rates(hyps: list[str], refs: list[str]) -> dict:
    """WER and CER (jiwer) after lowercasing and removing punctuation; {} when every reference is empty."""
    h = [_normalise_for_wer(x) for x in hyps]
    r = [_normalise_for_wer(x) for x in refs]
    keep = [i for i, x in enumerate(r) if x]
    if not keep:
        return {}
    return {"wer": round(jiwer.wer([r[i] for i in keep], [h[i] for i in keep]), 4),
            "cer": round(jiwer.cer([r[i] for i in keep], [h[i] for i in keep]), 4),
            "wer_normalisation": "lowercase, punctuation removed"}


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
        path = resolve_name(name)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = inference_dtype(dtype, self.device)
        self.model = WhisperForConditionalGeneration.from_pretrained(path).to(self.device, self.dtype).eval()
        self.processor = WhisperProcessor.from_pretrained(path)
        self.decode = decode

    def generate(self, examples: list[Example], progress: bool = False, on_batch=None) -> list[str]:
        out = []
        for i in tqdm(range(0, len(examples), self.decode.batch_size), desc="whisper", disable=not progress, file=sys.stderr):
            chunk = examples[i : i + self.decode.batch_size]
            ex = chunk[0]
            if ex.task == "translate" and ex.tgt_lang != "en":
                raise ConfigError(f"Whisper's translate task only produces English, not {ex.tgt_lang}")
            feats = self.processor.feature_extractor([e.audio for e in chunk], sampling_rate=SAMPLE_RATE, return_tensors="pt")
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
             empty: dict | None = None, first_pass: bool = False) -> dict:
    """Decode every set with `generate(examples, on_batch=callback) -> texts`, score, and write OUT/.

    first_pass: `generate` also takes `heard=list` and fills it with what a two-pass model heard (its
    transcript of each example); the translate sets then get `{name}.heard.txt` and its WER and CER
    against the source sentences (asr_wer, asr_cer: the keys of the cascade's ASR half), from the same run.

    A clip longer than `max_seconds` is cut into speech segments as `llast translate` cuts it; the texts
    of its segments are joined into its one hypothesis (`on_batch` then counts segments).

    Results are written after every chunk and every set, so an error (a corrupt clip without
    `skip_bad`) loses nothing already decoded; the error names the clip. `empty`: {(src, tgt, task):
    samples left out for an empty reference}, reported per set as skipped_empty.
    """
    out_dir = outdir.claim(out_dir, "evaluate")
    opts = SegmentOptions(max_seconds=max_seconds or 30.0)
    scores: dict = {"meta": meta or {}, "sets": {}}
    score_file = out_dir / "score.json"
    for (src, tgt, task), samples in sets.items():
        name = set_name(src, tgt, task)
        listens = first_pass and task == "translate"
        kinds = ("hyp", "ref", "ids") + (("heard",) if listens else ())
        files = {k: open(out_dir / f"{name}.{k}.txt", "w", encoding="utf-8") for k in kinds}
        hyps, refs, skipped, heard = [], [], [], []
        t0 = time.time()
        audio_seconds = 0.0
        bar = tqdm(total=len(samples), desc=name, unit="clip", disable=not progress, file=sys.stderr)
        try:
            pending = list(reversed(samples))
            while pending:
                chunk, examples, owner, error, audio_seconds = _next_chunk(
                    pending, opts, (src, tgt, task), skip_bad, skipped, bar, audio_seconds)
                segment_heard: list[str] = []
                extra = {"heard": segment_heard} if listens else {}
                on_batch, credit = _clip_progress(bar, len(chunk), len(examples))
                segment_texts = generate(examples, on_batch=on_batch, **extra) if examples else []
                credit()  # every clip of the chunk is done
                texts = _join_segments(segment_texts, owner, len(chunk))
                if listens:
                    if len(segment_heard) != len(examples):
                        raise RuntimeError(f"first_pass: generate returned {len(segment_heard)} transcripts for "
                                           f"{len(examples)} clips (is the model decoding in two passes?)")
                    for s, t in zip(chunk, _join_segments(segment_heard, owner, len(chunk))):
                        files["heard"].write(_line(t) + "\n")
                        heard.append((t, s.source_text))
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
        if heard:  # the same keys as the cascade's ASR half (add_asr_scores)
            asr = word_error_rates([h for h, _ in heard], [r for _, r in heard])
            result.update(asr_wer=asr.get("wer"), asr_cer=asr.get("cer"))
        scores["sets"][name] = result
        score_file.write_text(json.dumps(scores, indent=2, ensure_ascii=False))
    return scores


def _clip_progress(bar, n_clips: int, n_segments: int):
    """(on_batch, finish) for a chunk of `n_clips` clips cut into `n_segments` segments: the bar counts
    clips (its total never changes), advanced in proportion to the segments decoded."""
    state = {"segments": 0, "credited": 0}

    def advance(clips: int) -> None:
        bar.update(clips - state["credited"])
        state["credited"] = clips

    def on_batch(n: int) -> None:
        state["segments"] += n
        advance(min(n_clips, state["segments"] * n_clips // max(n_segments, 1)))

    return on_batch, lambda: advance(n_clips)


def _join_segments(segment_texts: list[str], owner: list[int], n: int) -> list[str]:
    """The text of each of n samples from the texts of its segments (`owner`: the sample of each)."""
    parts: list[list[str]] = [[] for _ in range(n)]
    for t, o in zip(segment_texts, owner):
        if t:
            parts[o].append(t)
    return [" ".join(p) for p in parts]


def _next_chunk(pending: list, opts: SegmentOptions, direction: tuple[str, str, str], skip_bad: bool, skipped: list,
                bar, audio_seconds: float) -> tuple[list, list, list, tuple | None, float]:
    """The next samples of `pending` (taken from its end) to decode together: at most CHUNK clips and about
    CHUNK_SECONDS of audio in memory. Returns (samples, examples: one per segment, the sample of each
    example, (sample, AudioError) that stops the set or None, `audio_seconds` plus what was loaded).
    With `skip_bad`, unreadable clips are appended to `skipped` instead."""
    chunk, examples, owner, error, loaded = [], [], [], None, 0
    while pending and len(chunk) < CHUNK and loaded < CHUNK_SECONDS * SAMPLE_RATE:
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
        audio_seconds += sum(len(a) for a in audios) / SAMPLE_RATE
        loaded += sum(len(a) for a in audios)
        chunk.append(s)
        examples += [Example(a, *direction) for a in audios]
        owner += [len(chunk) - 1] * len(audios)
    return chunk, examples, owner, error, audio_seconds


def _line(text: str) -> str:
    return " ".join(text.splitlines())


def print_scores(scores: dict) -> None:
    for name, r in scores["sets"].items():
        line = f"{name}: n={r['n']}"
        if "bleu" in r:
            line += f"  BLEU {r['bleu']:.2f}  chrF {r['chrf']:.2f}"
        if "wer" in r:
            line += f"  WER {r['wer']:.3f}  CER {r['cer']:.3f}"
        if r.get("asr_wer") is not None:
            line += f"  (first pass: WER {r['asr_wer']:.3f}  CER {r['asr_cer']:.3f})"
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


# ----------------------------------------------------------------------------- cascade and text baselines


def evaluate_text(translate, sets, inputs: dict[str, str], out_dir: str | Path, lowercase: bool = False,
                  skipped: dict[str, str] | None = None, progress: bool = True, meta: dict | None = None) -> dict:
    """Translate a text per sample with `translate(texts, src, tgt, on_batch=callback) -> texts`, score,
    and write OUT/ in evaluate()'s layout, plus `{name}.src.txt`: the text each hypothesis translates.

    inputs  : sample id -> the text to translate (the gold source sentence, or a transcript)
    skipped : sample id -> why it has no input (an unreadable clip); counted as evaluate() counts them
    """
    out_dir = outdir.claim(out_dir, "evaluate")
    skipped = skipped or {}
    scores: dict = {"meta": meta or {}, "sets": {}}
    for (src, tgt, task), samples in sets.items():
        name = f"{src}-{tgt}.{task}"
        todo = [s for s in samples if s.id not in skipped]
        files = {k: open(out_dir / f"{name}.{k}.txt", "w", encoding="utf-8") for k in ("hyp", "ref", "ids", "src")}
        hyps, refs, t0 = [], [], time.time()
        bar = tqdm(total=len(todo), desc=name, unit="sentence", disable=not progress, file=sys.stderr)
        try:
            for start in range(0, len(todo), CHUNK):
                chunk = todo[start : start + CHUNK]
                texts = translate([inputs[s.id] for s in chunk], src, tgt, on_batch=bar.update)
                for s, t in zip(chunk, texts):
                    for key, value in (("hyp", t), ("ref", s.target_text), ("ids", s.id), ("src", inputs[s.id])):
                        files[key].write(value.replace("\n", " ") + "\n")
                    hyps.append(t)
                    refs.append(s.target_text)
                for f in files.values():
                    f.flush()
        finally:
            bar.close()
            for f in files.values():
                f.close()
        result = score(hyps, refs, tgt, task, lowercase) if hyps else {"n": 0}
        gone = [{"id": s.id, "reason": skipped[s.id]} for s in samples if s.id in skipped]
        result.update(skipped=len(gone), skipped_samples=gone[:50], decode_seconds=round(time.time() - t0, 2))
        scores["sets"][name] = result
        (out_dir / "score.json").write_text(json.dumps(scores, indent=2, ensure_ascii=False))
    return scores


def gold_sources(sets, skip_bad: bool = False) -> tuple[dict[str, str], dict[str, str]]:
    """The text baseline's inputs: each sample's source sentence. A sample without one is an error
    naming it, or with `skip_bad` a counted skip. Returns (inputs, skipped)."""
    inputs, skipped = {}, {}
    for samples in sets.values():
        for s in samples:
            if s.source_text.strip():
                inputs[s.id] = s.source_text
            elif skip_bad:
                skipped[s.id] = "no source text"
            else:
                raise DataError(f"sample {s.id} ({s.audio}): no source text to translate (use --skip-bad to skip such samples)")
    return inputs, skipped


def transcribe_sources(asr, sets, out_dir: Path, skip_bad: bool = False, lowercase: bool = False,
                       meta: dict | None = None) -> tuple[dict, dict, dict]:
    """The cascade's first half: `asr` (a WhisperBaseline) transcribes every clip of `sets`, scored with
    evaluate() into OUT/asr/ (WER, CER). Returns read_transcripts(OUT/asr, ...)."""
    asr_sets: dict[tuple[str, str, str], list[Sample]] = {}
    for (src, _tgt, _task), samples in sets.items():
        seen = {s.id for s in asr_sets.get((src, src, "transcribe"), [])}
        asr_sets.setdefault((src, src, "transcribe"), []).extend(
            dataclasses.replace(transcription_of(s), id=s.id) for s in samples if s.id not in seen)
    outdir.claim(out_dir, "evaluate")  # OUT is the cascade's output (its asr/ goes inside): marked before asr/ exists
    evaluate(asr.generate, asr_sets, out_dir / "asr", lowercase=lowercase, skip_bad=skip_bad, meta=meta)
    return read_transcripts(out_dir / "asr", sets)


def read_transcripts(asr_dir: str | Path, sets) -> tuple[dict, dict, dict]:
    """Transcripts of the clips of `sets` from an evaluation folder of the transcribe task (a cascade's
    OUT/asr/, or `evaluate --baseline whisper --task transcribe`'s OUT/). Returns (sample id -> transcript,
    sample id -> why skipped, ASR scores by source language). A clip it lacks is an error naming it."""
    asr_dir = Path(asr_dir)
    try:
        asr_scores = json.loads((asr_dir / "score.json").read_text(encoding="utf-8"))["sets"]
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{asr_dir}: not an evaluation folder of the transcribe task ({e})") from None
    transcripts, skipped, by_src = {}, {}, {}
    for src, _tgt, _task in sets:
        name = f"{src}-{src}.transcribe"
        if name in by_src or name not in asr_scores:
            continue
        by_src[src] = asr_scores[name]
        ids = (asr_dir / f"{name}.ids.txt").read_text(encoding="utf-8").splitlines()
        hyps = (asr_dir / f"{name}.hyp.txt").read_text(encoding="utf-8").splitlines()
        transcripts.update((i.removesuffix("-asr"), h) for i, h in zip(ids, hyps))  # --task transcribe ids end in -asr
        skipped.update((x["id"].removesuffix("-asr"), x["reason"]) for x in asr_scores[name]["skipped_samples"])
    for (src, _tgt, _task), samples in sets.items():
        for s in samples:
            if s.id not in transcripts and s.id not in skipped:
                raise DataError(f"{asr_dir}: no {src} transcript of sample {s.id}")
    return transcripts, skipped, by_src


def add_asr_scores(scores: dict, sets, asr_scores: dict) -> None:
    """Each cascade set gets its source language's ASR WER/CER and the time of both halves."""
    for src, tgt, task in sets:
        r, a = scores["sets"][f"{src}-{tgt}.{task}"], asr_scores[src]
        r.update(asr_wer=a.get("wer"), asr_cer=a.get("cer"), asr_decode_seconds=a["decode_seconds"],
                 audio_seconds=a["audio_seconds"])
        r["decode_seconds"] = round(r["decode_seconds"] + a["decode_seconds"], 2)
        r["real_time_factor"] = round(r["decode_seconds"] / max(a["audio_seconds"], 1e-9), 4)


# --- the baselines of `llast evaluate`: Whisper's own task, the cascade, the LLM's text ceiling ---------------------


def whisper_baseline(model: str, decode: DecodeConfig, dtype: str | None = None) -> tuple:
    """(generate, meta, max_seconds) of `llast evaluate --baseline whisper`: `model` is a Whisper name, hub id
    or folder, or a llast checkpoint whose encoder's Whisper to use."""
    name = model
    if (Path(model) / "llast.json").is_file():
        name = read_checkpoint_config(model).model.encoder.name
    baseline = WhisperBaseline(name, decode, dtype=dtype)
    meta = {"system": f"whisper baseline ({name})", "num_beams": decode.num_beams, "dtype": str(baseline.dtype)}
    return baseline.generate, meta, 30.0


def llm_baseline_parts(model: str | None = None, asr: str | None = None, llm: str | None = None) -> tuple:
    """(ASR name, LLM name, prompt) of the cascade and text baselines: `asr` and `llm`, else the parts of
    checkpoint `model` (and its instruction wording), else whisper-base and the bundled Qwen."""
    parts = ("whisper-base", "qwen2.5-coder-0.5b-instruct", PromptConfig())
    if model is not None:
        cfg = read_checkpoint_config(model)
        parts = (cfg.model.encoder.name, cfg.model.llm.name, cfg.model.prompt)
    return asr or parts[0], llm or parts[1], parts[2]


def evaluate_llm_baseline(kind: str, data: list[str], out_dir: str | Path, decode: DecodeConfig, *,
                          model: str | None = None, asr: str | None = None, llm: str | None = None,
                          llm_system: str | None = None, transcripts: str | None = None, dtype: str | None = None,
                          limit: int | None = None, skip_bad: bool = False, lowercase: bool = False) -> tuple[dict, str]:
    """(scores, what transcribed) of `llast evaluate --baseline cascade|text`: an instruct LLM translates
    Whisper's transcripts (cascade; or the `transcripts` of an earlier run) or the gold source sentences
    (text: the ceiling of any speech model on that LLM). `llm_system`: None = TRANSLATION_ONLY, "template" =
    the chat template's own default. Writes out_dir as `evaluate` does."""
    asr_name, llm_name, prompt = llm_baseline_parts(model, asr, llm)
    system = {None: TRANSLATION_ONLY, "template": None}.get(llm_system, llm_system)
    prompt = dataclasses.replace(prompt, system=system)
    if kind == "cascade" and not transcripts and load_encoder_config(asr_name).model_type != "whisper":
        raise ConfigError(f"--asr {asr_name}: not a Whisper model (the cascade transcribes with Whisper's decoder)")
    sets = group_sets(data, "translate", limit)
    out = Path(out_dir)
    if kind == "cascade" and transcripts:
        inputs, skipped, asr_scores = read_transcripts(transcripts, sets)
        asr_name = f"transcripts of {transcripts}"
    elif kind == "cascade":
        whisper = WhisperBaseline(asr_name, decode, dtype=dtype)
        asr_meta = {"system": f"whisper transcribe ({asr_name})", "num_beams": decode.num_beams, "dtype": str(whisper.dtype)}
        inputs, skipped, asr_scores = transcribe_sources(whisper, sets, out, skip_bad, lowercase, asr_meta)
        del whisper
    else:
        inputs, skipped = gold_sources(sets, skip_bad)
    text_llm = TextTranslator.load(llm_name, prompt=prompt, dtype=dtype)

    def translate(texts, src, tgt, on_batch=None):
        return text_llm.translate(texts, src, tgt, decode, on_batch=on_batch)

    meta = {"system": f"{kind} baseline: " + (f"{asr_name} transcribes, " if kind == "cascade" else "")
            + f"{llm_name} translates" + (" the transcript" if kind == "cascade" else " the gold source text"),
            "llm": llm_name, "llm_system_message": prompt.system, "instruction": prompt.translate,
            "num_beams": decode.num_beams, "dtype": str(next(text_llm.model.parameters()).dtype), "lowercase": lowercase}
    if kind == "cascade":
        meta["asr"] = asr_name
    scores = evaluate_text(translate, sets, inputs, out, lowercase, skipped, meta=meta)
    if kind == "cascade":
        add_asr_scores(scores, sets, asr_scores)
        (out / "score.json").write_text(json.dumps(scores, indent=2, ensure_ascii=False))
    return scores, asr_name
