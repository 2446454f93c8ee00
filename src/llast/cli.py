"""The ``llast`` command line: every parser and handler (the library modules take no argparse `args`).

Imports inside the handlers are lazy for one reason: the modules they name load torch and transformers
(decode, evaluate, checkpoint, train, serve, live, segment, processor, model, memory, lora, xtuner, data,
llm_text, text_adapter, quantize; ~8 s here). `llast --help`, the parsers and every option error come
without them (tests/test_bad_inputs.py runs those cases before torch is imported). Modules that load no
torch are imported at the top."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

from llast import assets, outdir, realdata, synth
from llast.assets import resolve_checkpoint
from llast.audio import audio_duration
from llast.config import DecodeConfig, check_chunk_seconds, check_decode, load_config
from llast.errors import ConfigError, DataError, LlastError
from llast.subtitles import FORMATS, render, to_srt, to_vtt, vtt_time


def _add_models(sub) -> None:
    p = sub.add_parser("models", help="bundled offline models: list, prepare")
    msub = p.add_subparsers(dest="models_command", required=True)
    msub.add_parser("list", help="known bundled model names, whether prepared, size and licence")
    pp = msub.add_parser("prepare", help="install, convert and verify bundled models into $LLAST_HOME")
    pp.add_argument("names", nargs="*", help="model names (default: whisper-base smollm2-135m-instruct)")
    pp.add_argument("--force", action="store_true", help="convert again even if already prepared")


def _run_models(args) -> int:
    if args.models_command == "list":
        assets.print_model_list()
        return 0
    names = args.names or ["whisper-base", "smollm2-135m-instruct"]
    paths = assets.prepare(names, force=args.force)
    for name, path in paths.items():
        print(f"{name}\t{path}")
    return 0


def _add_data(sub) -> None:
    p = sub.add_parser("data", help="data preparation: synth (offline corpus), real (recorded-speech dev set), prepare covost")
    dsub = p.add_subparsers(dest="data_command", required=True)
    s = dsub.add_parser("synth", help="build a CoVoST-2-format corpus with espeak-ng from Debian sentence pairs")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--directions", default="de-en,fr-en", help="comma-separated src-tgt pairs (default de-en,fr-en)")
    s.add_argument("--train", type=int, default=200, help="training utterances per direction")
    s.add_argument("--dev", type=int, default=30, help="dev utterances per direction")
    s.add_argument("--test", type=int, default=30, help="test utterances per direction")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--noise", type=float, default=0.3, help="fraction of clips with added noise")
    s.add_argument("--reverb", type=float, default=0.3, help="fraction of clips in a synthetic room (reverberation)")
    s.add_argument("--people", type=float, default=0.0,
                   help="fraction of clips made to sound like recordings of people: speed perturbation, spectral "
                        "tilt, a telephone band or a lossy codec (default 0)")
    s.add_argument("--pico", type=float, default=0.0,
                   help="fraction of clips spoken by SVOX Pico (pico2wave, Debian non-free libttspico-utils) instead "
                        "of espeak-ng: a voice Whisper hears much better (default 0)")
    s.add_argument("--phrasebook", action="store_true",
                   help="dev and test say the train split's first sentences again, in voices never heard in training: "
                        "a closed set of phrases (a domain's commands or announcements) that a fine-tune can learn")
    s.add_argument("--no-apertium", dest="synthetic", action="store_false",
                   help="human sentence pairs only (default: Apertium-made fr/es/it sources fill the train split)")
    s.add_argument("--splits", default="train,dev,test",
                   help="which splits to render (default all); e.g. test rebuilds a corpus's test split alone, exactly")
    s.add_argument("--exclude", nargs="+", default=[], metavar="TSV",
                   help="CoVoST TSVs whose sentences this corpus never uses (e.g. another corpus's dev and test)")
    s.add_argument("--workers", type=int, default=2)
    r = dsub.add_parser("real", help="build the dev set of real recorded speech (Debian packages + GitHub checkouts)")
    r.add_argument("--out", required=True, help="output folder (clips/, real.jsonl, words.jsonl, SOURCES.md)")
    r.add_argument("--repos", default=None,
                   help="folder of GitHub checkouts named OWNER+NAME (see llast.realdata; missing ones are skipped)")
    r.add_argument("--per-source", type=int, default=50, help="at most this many clips per source and language")
    c = dsub.add_parser("prepare", help="convert corpus audio to 16 kHz WAV (resumable, parallel)")
    c.add_argument("corpus", choices=["covost"])
    c.add_argument("--tsv", nargs="+", required=True, help="CoVoST TSV files whose clips to convert")
    c.add_argument("--clips", required=True, help="Common Voice clips folder (MP3)")
    c.add_argument("--out", required=True, help="output folder for 16 kHz WAV clips")
    c.add_argument("--workers", type=int, default=4)


def _run_data(args) -> int:
    if args.data_command == "synth":
        synth.synthesize_corpus(
            out_dir=args.out,
            directions=[d.strip() for d in args.directions.split(",") if d.strip()],
            n_train=args.train,
            n_dev=args.dev,
            n_test=args.test,
            seed=args.seed,
            noise=args.noise,
            reverb=args.reverb,
            synthetic=args.synthetic,
            splits=tuple(x.strip() for x in args.splits.split(",") if x.strip()),
            exclude=args.exclude,
            workers=args.workers,
            people=args.people,
            phrasebook=args.phrasebook,
            pico=args.pico,
        )
        return 0
    if args.data_command == "real":


        if args.per_source < 1:
            raise ConfigError(f"--per-source must be at least 1, got {args.per_source}")
        print(realdata.format_report(realdata.build_real_set(args.out, repos=args.repos, per_source=args.per_source)))
        return 0
    from llast import data  # lazy: torch (module docstring)

    report = data.prepare_covost_audio(args.tsv, args.clips, args.out, workers=args.workers)
    print(report)
    return 0 if not report.failed else 1


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model from a YAML config")
    p.add_argument("config", help="YAML config (see configs/)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-4 model.llm.lora.r=64")
    p.add_argument("--resume", default="auto", help="'auto' (latest checkpoint in out_dir), 'no', or a checkpoint dir")


def _run_train(args) -> int:
    cfg = load_config(args.config, args.overrides)  # before importing torch: a bad option fails at once
    from llast import train  # lazy: torch (module docstring)

    train.train(cfg, resume=args.resume)
    return 0


def _add_params(sub) -> None:
    p = sub.add_parser("params", help="build a model from a config and print which parameters train")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")


def _run_params(args) -> int:
    from llast import lora  # lazy: torch (module docstring)

    cfg = load_config(args.config, args.overrides)
    # random_init: the meta device, so even 13B models are counted in no memory
    m = lora.build_lora_model(cfg.model, device="meta" if cfg.model.random_init else None)
    print(lora.format_param_counts(lora.param_counts(m)))
    print()
    print(lora.format_part_sizes(lora.part_sizes(m)))
    return 0


def _add_plan(sub) -> None:
    p = sub.add_parser("plan", help="per-GPU memory of a training step under DDP, FSDP and ZeRO-2 (no weights needed)")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--engine", choices=["ddp", "fsdp", "zero2", "all"], default="all")
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--gpu-mem", type=float, default=80.0, help="GB per GPU (default 80)")
    p.add_argument("--batch", type=int, default=None, help="clips per GPU per micro-batch (default: data.batch_size)")
    p.add_argument("--audio-seconds", type=float, default=30.0, help="clip length planned for (default 30: the worst case)")
    p.add_argument("--text-tokens", type=int, default=96, help="prompt + target tokens per clip (default 96)")
    p.add_argument("--target-tokens", type=int, default=48, help="target tokens per clip (default 48)")
    p.add_argument("--headroom", type=float, default=0.1, help="fraction kept free for CUDA context and fragmentation")


def _run_plan(args) -> int:
    from llast import memory  # lazy: torch (module docstring)

    cfg = load_config(args.config, args.overrides)
    engines = memory.ENGINES if args.engine == "all" else (args.engine,)
    p = memory.plan(cfg, engines, args.gpus, args.gpu_mem, args.batch, args.audio_seconds, args.text_tokens,
                    args.target_tokens, args.headroom)
    print(memory.format_plan(p, args.config))
    return 0


def _add_import(sub) -> None:
    p = sub.add_parser("import", help="import a checkpoint of another code base")
    isub = p.add_subparsers(dest="import_command", required=True)
    x = isub.add_parser("xtuner", help="the released LLaST code's DeepSpeed mp_rank_00_model_states.pt")
    x.add_argument("ckpt", help="mp_rank_00_model_states.pt")
    x.add_argument("--config", required=True, help="YAML config of the same model (e.g. configs/llast-2b.yaml)")
    x.add_argument("--out", required=True, help="checkpoint directory to write")
    x.add_argument("overrides", nargs="*", help="dotted overrides for the config")


def _run_import(args) -> int:
    from llast import xtuner  # lazy: torch (module docstring)

    cfg = load_config(args.config, args.overrides)
    outdir.check(args.out, outdir.CHECKPOINT)  # a folder of the user's is refused before the import's work
    out = xtuner.import_xtuner(args.ckpt, cfg, args.out)
    print(f"wrote {out} (prompt preset 'released', encoder input 'pad30_full')")
    return 0


def _add_decode_options(p) -> None:
    p.add_argument("--num-beams", type=int, default=None, help="beam size (default: the checkpoint's, 5)")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--length-penalty", type=float, default=None)
    p.add_argument("--two-pass", action=argparse.BooleanOptionalAction, default=None,
                   help="translate in two passes: transcribe, then the LLM translates the transcript (with the "
                        "checkpoint's text adapter, else without L-LoRA; default: the checkpoint's decode.two_pass; "
                        "llast-mini: on)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16", "int8", "gguf"], default="auto",
                   help="weights dtype; gguf = the LLM in llama.cpp from its bundled GGUF (CPU; llast models whose "
                        "LLM is bundled); int8 = dynamic int8 Linear weights on CPU (llast models only); auto = gguf "
                        "where it runs on a CPU without AMX-BF16, else bf16 on CUDA and on CPUs with AMX-BF16, else "
                        "float32")


def _decode_options(args) -> dict:
    """The decoding options given on the command line, checked here, once, before a model is loaded (by
    llast.config.check_decode, the rules of the Python API and the server): {field: value}, to replace the
    model's own (`dataclasses.replace(translator.cfg.decode, **options)`, no check again)."""

    given = {key: getattr(args, key) for key in ("num_beams", "max_new_tokens", "batch_size", "length_penalty", "two_pass")
             if getattr(args, key, None) is not None}
    checked = check_decode(given, options=True)
    return {key: getattr(checked, key) for key in given}


def _add_translate(sub) -> None:
    p = sub.add_parser("translate", help="translate (or transcribe) audio files, or a live stream (--live)")
    p.add_argument("files", nargs="*", help="audio files (wav, flac, mp3, ogg; any rate); with --live: - (stdin) or none")
    p.add_argument("--model", required=True, help="checkpoint directory (or a YAML config: its untrained model)")
    p.add_argument("--src", required=True, help="source language code (fr, de, zh-CN, ...)")
    p.add_argument("--tgt", default="en", help="target language code (default en)")
    p.add_argument("--task", choices=["translate", "transcribe"], default="translate")
    p.add_argument("--format", choices=FORMATS, default="text",
                   help="text: 'file<TAB>text'; json: one JSON line per file with segments (start, end, text); "
                        "srt / vtt: subtitles, one cue per speech segment")
    p.add_argument("--json", action="store_true", help="same as --format json")
    p.add_argument("--out-dir", default=None, help="write FILE_STEM.{txt,json,srt,vtt} here instead of printing")
    p.add_argument("--chunk-seconds", type=float, default=None,
                   help="longest speech segment in seconds (default and upper bound: the model's max, 30)")
    p.add_argument("--min-silence", type=float, default=0.5, help="a pause this long (s) ends a segment (default 0.5)")
    p.add_argument("--pad", type=float, default=0.2, help="audio kept before and after each segment (s, default 0.2)")
    p.add_argument("--live", action="store_true",
                   help="translate a live stream, printing each segment as it ends: from the default microphone, "
                        "or raw 16 kHz mono PCM16 on stdin with file '-' (ffmpeg -i URL -f s16le -ac 1 -ar 16000 -)")
    p.add_argument("--no-speculate", dest="speculate", action="store_false",
                   help="with --live: decode a segment only once it has closed (min_silence after the speech), not "
                        "already when the speech pauses (the default: the same text, up to 0.3 s sooner)")
    p.add_argument("--verbose", action="store_true",
                   help="print the run's speed on stderr: load time, decode time, real-time factor, weights, threads")
    _add_decode_options(p)


def _run_translate(args) -> int:
    """`llast translate`: text (FILE<TAB>text), JSON lines, SRT or WebVTT, on stdout or in --out-dir."""
    from llast import decode, processor, quantize, segment  # lazy: torch (module docstring)

    if args.live:
        return _run_live(args)
    if not args.files:
        raise ConfigError("translate: give one or more audio files (or --live)")
    options = _decode_options(args)
    check_chunk_seconds(args.chunk_seconds, float("inf"), where="--chunk-seconds")  # the model's limit: once loaded
    fmt = "json" if args.json else args.format
    if fmt in ("srt", "vtt") and len(args.files) > 1 and not args.out_dir:
        raise ConfigError(f"--format {fmt} with {len(args.files)} files needs --out-dir (one subtitle file each)")
    segment.SegmentOptions(min_silence=args.min_silence, pad=args.pad)  # bad options fail before the model loads
    processor.language_name(args.src), processor.language_name(args.tgt)  # an unknown code, a missing or unreadable file:
    seconds = sum(audio_duration(path) for path in args.files)  # errors before the model is loaded
    out_dir = outdir.check(args.out_dir, "translate", "--out-dir") if args.out_dir else None
    names = outdir.unique_names(args.files, "." + ("txt" if fmt == "text" else fmt))
    started = time.perf_counter()
    translator = decode.load_translator(args.model, args.dtype, two_pass=options.get("two_pass"))
    loaded = time.perf_counter()
    decoding = dataclasses.replace(translator.cfg.decode, **options)
    opts = translator.segment_options(args.chunk_seconds, min_silence=args.min_silence, pad=args.pad)
    tgt = args.src if args.task == "transcribe" else args.tgt
    results = translator.translate(
        list(args.files), args.src, tgt, task=args.task, progress=True, segments=True,
        segment_options=opts, decode=decoding,
    )
    if args.verbose:
        took = time.perf_counter() - loaded
        print(f"llast translate: {seconds:.1f} s of audio decoded in {took:.1f} s, RTF {took / max(seconds, 1e-9):.3f} "
              f"(model loaded in {loaded - started:.1f} s; {quantize.describe(translator.model)})", file=sys.stderr)
    if out_dir is not None:
        outdir.claim(out_dir, "translate", "--out-dir")
    for path, name, segs in zip(args.files, names, results):
        meta = {"file": str(path), "src": args.src, "tgt": tgt, "task": args.task}
        text = render(segs, fmt, meta)
        if out_dir is not None:
            target = out_dir / name  # distinct for every input, even when two have one stem
            target.write_text(text, encoding="utf-8")
            print(f"{path}\t{target}", file=sys.stderr)
        elif fmt == "text":
            print(f"{path}\t{text.rstrip()}")
        else:
            print(text, end="")
    return 0


def _run_live(args) -> int:
    """`llast translate --live`: each segment printed as it ends: text '[start --> end] text', json (a line
    per segment), srt or vtt (a cue per segment), from the microphone or raw PCM16 on stdin ('-')."""
    from llast import decode, live, processor, segment  # lazy: torch (module docstring)

    if args.files not in ([], ["-"]) or args.out_dir:
        raise ConfigError("--live reads the microphone (no file) or raw PCM on stdin (file '-'); it prints to stdout")
    if args.files and sys.stdin.isatty():
        raise ConfigError("--live -: stdin is a terminal; pipe raw 16 kHz mono PCM16 into it (ffmpeg ... -f s16le -ac 1 -ar 16000 -)")
    options = _decode_options(args)
    check_chunk_seconds(args.chunk_seconds, float("inf"), where="--chunk-seconds")
    fmt = "json" if args.json else args.format
    segment.SegmentOptions(min_silence=args.min_silence, pad=args.pad)
    processor.language_name(args.src), processor.language_name(args.tgt)
    if not args.files:
        live.check_microphone()  # no device: the error comes before the model loads
    translator = decode.load_translator(args.model, args.dtype, two_pass=options.get("two_pass"))
    decoding = dataclasses.replace(translator.cfg.decode, **options)
    opts = translator.segment_options(args.chunk_seconds, min_silence=args.min_silence, pad=args.pad)
    blocks = live.prefetched(live.pcm_blocks(sys.stdin.buffer)) if args.files else live.microphone_blocks()
    if fmt == "vtt":
        print("WEBVTT\n", flush=True)
    n = 0
    for seg in translator.translate_stream(blocks, args.src, args.tgt, task=args.task, segment_options=opts,
                                           decode=decoding, speculate=args.speculate):
        if fmt == "text":
            out = f"[{vtt_time(seg.start)} --> {vtt_time(seg.end)}] {seg.text}\n"
        elif fmt == "json":
            out = json.dumps({"start": seg.start, "end": seg.end, "text": seg.text}, ensure_ascii=False) + "\n"
        elif not seg.text.strip():
            continue  # no empty cues
        elif fmt == "srt":
            out = to_srt([seg], first=n + 1)
        else:
            out = to_vtt([seg], header=False)
        n += 1
        print(out, end="", flush=True)
    return 0


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="score a model, Whisper's own task, a cascade or an LLM's text translation on held-out data")
    p.add_argument(
        "--model", default=None,
        help="checkpoint directory; a YAML config (scores the untrained model it builds); with --baseline whisper a "
             "Whisper name/path; with --baseline cascade/text a checkpoint whose Whisper, LLM and instruction to use",
    )
    p.add_argument("--data", nargs="+", required=True, help="CoVoST TSVs, JSONL manifests or MuST-C split folders")
    p.add_argument("--out", required=True, help="output folder: hypotheses, references, score.json")
    p.add_argument("--baseline", choices=["whisper", "cascade", "text"], default=None,
                   help="whisper: Whisper's own translate/transcribe task; cascade: Whisper (--asr) transcribes, the LLM "
                        "(--llm) translates the transcript; text: the LLM translates the gold source sentences (its ceiling)")
    p.add_argument("--asr", default=None, help="cascade: Whisper model that transcribes (bundled name, hub id or "
                                               "folder; default: the --model checkpoint's encoder, else whisper-base)")
    p.add_argument("--transcripts", default=None, metavar="DIR",
                   help="cascade: translate these transcripts instead of running --asr (an earlier cascade's OUT/asr, or "
                        "the OUT of --baseline whisper --task transcribe): several LLMs on one ASR output")
    p.add_argument("--llm", default=None, help="cascade/text: instruct LLM that translates (default: the --model "
                                               "checkpoint's LLM, else qwen2.5-coder-0.5b-instruct)")
    p.add_argument("--llm-system", default=None, metavar="TEXT",
                   help="cascade/text: the LLM's system message (default: 'Reply with the translation only.'; "
                        "'template' = the chat template's own default; '' = an empty one)")
    p.add_argument("--task", choices=["translate", "transcribe"], default="translate")
    p.add_argument("--lowercase", action="store_true", help="case-insensitive BLEU (as LLaST's released scorer)")
    p.add_argument("--limit", type=int, default=None, help="first N samples of each data set")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable clips (counted in score.json) instead of stopping")
    _add_decode_options(p)


def _run_evaluate(args) -> int:
    from llast import decode, evaluate, quantize  # lazy: torch (module docstring)

    options = _decode_options(args)
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit: {args.limit} is not allowed; expected at least 1 sample per data set")
    outdir.check(args.out, "evaluate")  # before any model is loaded
    if args.baseline and "two_pass" in options:
        raise ConfigError(f"--two-pass/--no-two-pass: for llast models; --baseline {args.baseline} has its own passes")
    if args.baseline in ("cascade", "text"):
        if args.task != "translate":
            raise ConfigError(f"--baseline {args.baseline} scores translation; --task {args.task} is not supported")
        scores, asr_name = evaluate.evaluate_llm_baseline(
            args.baseline, args.data, args.out, dataclasses.replace(DecodeConfig(), **options), model=args.model,
            asr=args.asr, llm=args.llm, llm_system=args.llm_system, transcripts=args.transcripts, dtype=args.dtype,
            limit=args.limit, skip_bad=args.skip_bad, lowercase=args.lowercase)
        evaluate.print_scores(scores)
        for name, r in scores["sets"].items():
            if r.get("asr_wer") is not None:
                print(f"{name}: ASR WER {r['asr_wer']:.3f}  CER {r['asr_cer']:.3f}  ({asr_name}; transcripts in "
                      f"{Path(args.out) / 'asr'})")
        print(f"wrote {Path(args.out) / 'score.json'}")
        return 0
    if args.model is None:
        raise ConfigError("--model is required (a checkpoint, a YAML config, or with --baseline whisper a Whisper model)")
    unreadable: list[str] | None = [] if args.skip_bad else None
    empty: dict = {}
    sets = evaluate.group_sets(args.data, args.task, args.limit, skipped=unreadable, empty=empty)
    if args.baseline == "whisper":
        generate, meta, max_seconds = evaluate.whisper_baseline(args.model, dataclasses.replace(DecodeConfig(), **options),
                                                                args.dtype)
    else:
        translator = decode.load_translator(args.model, args.dtype, two_pass=options.get("two_pass"))
        decoding = dataclasses.replace(translator.cfg.decode, **options)

        def generate(examples, on_batch=None, heard=None):
            return translator.generate(examples, decoding, on_batch=on_batch, heard=heard)

        meta = {"system": f"llast checkpoint {args.model}", "num_beams": decoding.num_beams, "two_pass": decoding.two_pass,
                "dtype": quantize.weights_kind(translator.model)}
        max_seconds = translator.cfg.model.encoder.max_seconds
    meta["lowercase"] = args.lowercase
    if unreadable:
        meta["skipped_while_reading"] = len(unreadable)
        meta["skipped_while_reading_samples"] = unreadable[:50]
    scores = evaluate.evaluate(generate, sets, args.out, lowercase=args.lowercase, skip_bad=args.skip_bad,
                               max_seconds=max_seconds, meta=meta, empty=empty, first_pass=meta.get("two_pass", False))
    evaluate.print_scores(scores)
    print(f"wrote {Path(args.out) / 'score.json'}")
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="merge LoRA into the base models and write a standalone checkpoint")
    p.add_argument("--model", required=True, help="checkpoint directory")
    p.add_argument("--out", required=True)
    p.add_argument("--ship", action="store_true",
                   help="instead: the trainable weights only, in bf16, no trainer state (how llast-mini is shipped)")


def _run_export(args) -> int:
    from llast import checkpoint  # lazy: torch (module docstring)

    if args.ship:
        out = checkpoint.ship_checkpoint(args.model, args.out)
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        print(f"wrote {out} ({size / 1e6:.1f} MB: trainable weights in bf16; the base models load by name)")
        return 0
    out = checkpoint.export_merged(args.model, args.out)
    print(f"wrote merged model to {out}")
    if checkpoint.read_checkpoint_config(args.model).decode.two_pass:
        print("note: it decodes in one pass; two-pass decoding needs the unmerged checkpoint")
    return 0


def _add_text_lora(sub) -> None:
    p = sub.add_parser("text-lora", help="train a text adapter for two-pass decoding on sentence pairs (no audio)")
    p.add_argument("--model", required=True, help="checkpoint directory (its LLM's L-LoRA must be on)")
    p.add_argument("--out", required=True, help="new checkpoint: the model plus text_lora/, two-pass decoding on")
    p.add_argument("--data", nargs="+", default=None,
                   help="CoVoST TSVs, JSONL manifests or MuST-C split folders whose translation pairs to learn "
                        "(their texts; the clips are checked as for training; default: the checkpoint's data.train)")
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--batch", type=int, default=8, help="sentence pairs per step")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--noise", type=float, default=0.0,
                   help="highest rate of speech-recognition-like errors put into the sources (0: clean text)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="decode.KEY=VALUE",
                   help="a decode option of the new checkpoint, e.g. --set decode.num_beams=4 (repeatable)")


def _run_text_lora(args) -> int:


    for name, value, low in (("--steps", args.steps, 1), ("--batch", args.batch, 1)):
        if value < low:
            raise ConfigError(f"{name}: {value} is not allowed; expected at least {low}")
    if not 0.0 <= args.noise <= 1.0:
        raise ConfigError(f"--noise: {args.noise} is not allowed; expected a rate from 0 to 1")
    if not args.lr > 0:
        raise ConfigError(f"--lr: {args.lr} is not allowed; expected a positive learning rate")

    from llast import checkpoint, data, evaluate, text_adapter  # lazy: torch (module docstring)

    path = resolve_checkpoint(args.model)  # a folder, or a shipped model's name
    checkpoint.check_new_checkpoint_out(path, Path(args.out))
    checkpoint.text_lora_config(path, args.overrides)  # a bad option fails before training, not after
    model, cfg = checkpoint.load_checkpoint(path)
    if not args.data and not cfg.data.train:
        raise ConfigError(f"{args.model}: its config.yaml has no data.train; name the sentence pairs with --data")
    if not hasattr(model.llm, "peft_config"):
        raise ConfigError(f"{args.model}: its LLM has no LoRA (model.llm.lora.enabled is false); a text adapter "
                          "sits beside the L-LoRA")
    sources = [evaluate.data_source(spec) for spec in args.data] if args.data else cfg.data.train
    pairs = [(s.source_text, s.target_text, s.src_lang, s.tgt_lang) for src in sources for s in data.read_source(src)
             if s.task == "translate" and s.source_text.strip() and s.target_text.strip()]
    if not pairs:
        raise DataError(f"{', '.join(str(s.path) for s in sources)}: no translation pairs with both texts to learn from")
    print(f"text adapter: {len(pairs)} sentence pairs, {args.steps} steps of {args.batch}, noise up to {args.noise}")
    t0 = time.time()
    losses = text_adapter.train_text_adapter(model, cfg, pairs, args.steps, args.batch, args.lr, args.noise, args.seed, progress=True)
    meta = {"from": str(args.model), "data": [str(s.path) for s in sources], "pairs": len(pairs), "steps": args.steps,
            "batch": args.batch, "lr": args.lr, "noise": args.noise, "seed": args.seed,
            "seconds": round(time.time() - t0, 1), "losses": losses}
    out = checkpoint.save_text_lora(path, args.out, model.llm, meta, args.overrides)
    tail = losses[-10:]
    print(f"wrote {out} (text_lora/; mean loss of the last {len(tail)} steps {sum(tail) / len(tail):.3f}; "
          "decode.two_pass on)")
    return 0


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="OpenAI-compatible HTTP server (/v1/audio/translations, /v1/audio/transcriptions)")
    p.add_argument("--model", required=True, help="checkpoint directory (or a YAML config: its untrained model)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' (default: $LLAST_API_KEY, else none)")
    p.add_argument("--default-src", default=None, help="source language of requests without a 'language' field (else 400)")
    p.add_argument("--tgt", default="en", help="target language of /v1/audio/translations (default en)")
    p.add_argument("--max-wait-ms", type=float, default=20.0, help="how long a batch waits for more segments")
    p.add_argument("--max-queue", type=int, default=64, help="requests waiting or decoding; more get 503 + Retry-After")
    p.add_argument("--max-upload-mb", type=float, default=64.0, help="upload size limit (413)")
    p.add_argument("--max-audio-seconds", type=float, default=3600.0, help="audio length limit (413)")
    p.add_argument("--read-timeout", type=float, default=30.0, help="seconds a client has to send its request body (408)")
    p.add_argument("--max-connections", type=int, default=256, help="open connections and requests; more get 503")
    p.add_argument("--max-streams", type=int, default=16,
                   help="live streams (WebSocket /v1/realtime) at once; more get an error event and are closed")
    p.add_argument("--no-speculate", dest="speculate", action="store_false",
                   help="live streams: decode a segment only once it has closed, not already when its speech pauses")
    _add_decode_options(p)


def _run_serve(args) -> int:
    from llast import decode, serve  # lazy: torch (module docstring)

    options = _decode_options(args)
    api_key = args.api_key or os.environ.get("LLAST_API_KEY") or None
    opts = serve.ServeOptions(
        model_name=args.model, default_src=args.default_src, tgt=args.tgt, api_key=api_key,
        max_wait_ms=args.max_wait_ms, max_queue=args.max_queue, max_upload_mb=args.max_upload_mb,
        max_audio_seconds=args.max_audio_seconds, read_timeout=args.read_timeout, max_streams=args.max_streams,
        speculate=args.speculate,
    )
    translator = decode.load_translator(args.model, args.dtype, two_pass=options.get("two_pass"))
    opts = dataclasses.replace(opts, decode=dataclasses.replace(translator.cfg.decode, **options))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    print(f"llast serve: warmed up in {serve.warm_up(translator, opts):.1f} s", flush=True)
    server = serve.Server(translator, args.host, args.port, opts, max_connections=args.max_connections)
    key_note = "API key required" if api_key else "no API key"
    print(f"llast serve: {args.model} on {server.url}/v1 ({key_note}; docs at {server.url}/docs; live page at {server.url}/)",
          flush=True)
    server.serve_forever()
    return 0


_COMMANDS = {
    "models": (_add_models, _run_models),
    "data": (_add_data, _run_data),
    "train": (_add_train, _run_train),
    "params": (_add_params, _run_params),
    "plan": (_add_plan, _run_plan),
    "import": (_add_import, _run_import),
    "translate": (_add_translate, _run_translate),
    "evaluate": (_add_evaluate, _run_evaluate),
    "export": (_add_export, _run_export),
    "text-lora": (_add_text_lora, _run_text_lora),
    "serve": (_add_serve, _run_serve),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llast", description="End-to-end speech translation with LLMs (LLaST)")
    sub = parser.add_subparsers(dest="command", required=True)
    for add, _ in _COMMANDS.values():
        add(sub)
    return parser


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # dotted overrides may come after the options too (`... --out x model.adaptor.stack=2`)
        if isinstance(getattr(args, "overrides", None), list) and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = args.overrides + extra
        else:
            parser.parse_args(argv)  # argparse's own error (exit 2) for what is not an override


    # transformers 5 deprecates a method that peft still calls when it wraps a model: a warning on every
    # command that loads LoRA, which the user can do nothing about.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

    try:
        return _COMMANDS[args.command][1](args) or 0
    except LlastError as e:
        print(f"llast {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except OSError as e:  # the file system said no (a file where a folder should be, permissions, disk full)
        print(f"llast {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"llast {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
