"""Corpora (CoVoST-2, MuST-C, JSONL manifests) as lists of `Sample`, the ST+ASR mix, the dataset that
loads their audio, and CoVoST audio preparation. Batch samplers: llast.samplers.

Readers check their input and raise DataError naming the file and line (or AudioError naming the clip),
so a malformed corpus stops at load time, not hours into training.

A manifest line (``read_manifest``) looks like::

    {"audio": "clips/a.wav", "src_lang": "fr", "tgt_lang": "en", "source_text": "Bonjour.",
     "target_text": "Hello.", "offset": 0.0, "duration": 1.2, "task": "translate", "id": "a"}

Only ``audio``, ``src_lang`` and ``tgt_lang`` are required; relative audio paths are relative to the
manifest's folder.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
import torch
import yaml
from tqdm import tqdm

from llast import outdir
from llast.audio import SAMPLE_RATE, audio_duration, load_audio
from llast.config import SOURCE_FORMATS, DataSource
from llast.errors import AudioError, DataError
from llast.features import cache_key, entry_path, load_entry
from llast.processor import LANGUAGES

log = logging.getLogger(__name__)

TASKS = ("translate", "transcribe")
COVOST_COLUMNS = ("path", "sentence", "translation", "client_id")
_COVOST_NAME = re.compile(r"^covost_v2\.([A-Za-z]+(?:-[A-Za-z]+)?)_([A-Za-z]+(?:-[A-Za-z]+)?)\.([\w-]+)\.tsv$")


@dataclass
class Sample:
    """One utterance: a clip (or a segment of a longer file) with its source and target text."""

    id: str
    audio: str  # path of the audio file
    src_lang: str  # language codes as the corpus writes them (fr, de, zh-CN, ...)
    tgt_lang: str
    task: str  # "translate" | "transcribe" (then tgt_lang == src_lang and target_text == source_text)
    source_text: str
    target_text: str
    offset: float = 0.0  # seconds into `audio` where the utterance starts
    duration: float | None = None  # seconds; None = to the end of the file (filled from the header when known)
    weight: float = 1.0  # expected copies per epoch (see llast.samplers)


def transcription_of(sample: Sample, weight: float | None = None) -> Sample:
    """The ASR sample of a translation sample: its source text as the target, in its source language."""
    return replace(
        sample,
        id=f"{sample.id}-asr",
        task="transcribe",
        tgt_lang=sample.src_lang,
        target_text=sample.source_text,
        weight=sample.weight if weight is None else weight,
    )


# ----------------------------------------------------------------------------- CoVoST-2


def parse_covost_name(tsv_path: str | Path) -> tuple[str, str, str]:
    """``covost_v2.zh-CN_en.train.tsv`` -> ("zh-CN", "en", "train"); DataError if the name does not fit."""
    m = _COVOST_NAME.match(Path(tsv_path).name)
    if not m:
        raise DataError(f"{tsv_path}: not a CoVoST-2 file name (expected covost_v2.{{src}}_{{tgt}}.{{split}}.tsv)")
    return m.group(1), m.group(2), m.group(3)


def read_tsv_rows(tsv_path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number, row) of a tab-separated, unquoted file with a header line.

    Decodes line by line so a non-UTF-8 byte is reported with its line; backslash is the escape
    character, as in the CoVoST-2 release (pandas, QUOTE_NONE, escapechar='\\').
    """
    if not tsv_path.is_file():
        raise DataError(f"{tsv_path}: file not found")
    header: list[str] | None = None
    with open(tsv_path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{tsv_path}:{lineno}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
            line = line.rstrip("\r\n")
            if lineno == 1:
                line = line.lstrip("\ufeff")
            if not line.strip():
                continue
            fields = next(csv.reader([line], delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\"))
            if header is None:
                header = fields
                missing = [c for c in required if c not in header]
                if missing:
                    raise DataError(
                        f"{tsv_path}:1: missing column(s) {', '.join(missing)} in header (found: {', '.join(header)})"
                    )
                continue
            if len(fields) != len(header):
                raise DataError(f"{tsv_path}:{lineno}: expected {len(header)} tab-separated fields, found {len(fields)}")
            yield lineno, dict(zip(header, fields))
    if header is None:
        raise DataError(f"{tsv_path}: empty file (no header line)")


def _default_clips_dir(tsv_path: Path, src: str) -> Path:
    """``{tsv folder}/{src}/clips_16k`` if it exists, else ``{src}/clips``, else ``{tsv folder}/clips``."""
    folder = tsv_path.parent
    for candidate in (folder / src / "clips_16k", folder / src / "clips", folder / "clips_16k", folder / "clips"):
        if candidate.is_dir():
            return candidate
    return folder / src / "clips"


def inside(folder: Path, name: str, where: str) -> Path:
    """`folder / name` for a file name taken from a corpus, which must stay inside `folder`: an absolute
    name, a `..` part or a NUL byte is a DataError naming `where` (a TSV line, a YAML segment)."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise DataError(f"{where}: {name!r} is not a file name")
    rel = Path(name)
    if not rel.name:
        raise DataError(f"{where}: {name!r} is not a file name")
    if rel.is_absolute() or ".." in rel.parts:
        raise DataError(f"{where}: {name!r} points outside {folder} (absolute, or with '..'); refused")
    return folder / rel


def resolve_clip(audio_dir: Path, name: str, where: str | None = None) -> Path:
    """Find clip `name` in `audio_dir`: as given, then as ``{stem}.wav`` / ``{name}.wav`` (16 kHz conversions).
    A name that leads outside `audio_dir` is a DataError."""
    given = inside(audio_dir, name, where or str(audio_dir))
    for candidate in (given, given.with_suffix(".wav"), audio_dir / f"{name}.wav"):
        if candidate.is_file():
            return candidate
    raise AudioError(f"{given}: audio clip not found (also looked for {given.with_suffix('.wav').name})")


def read_covost(
    tsv_path: str | Path,
    audio_dir: str | Path | None = None,
    src: str | None = None,
    tgt: str | None = None,
    limit: int | None = None,
    skipped: list[str] | None = None,
) -> list[Sample]:
    """Read ``covost_v2.{src}_{tgt}.{split}.tsv`` into translation samples.

    src/tgt default to the codes in the file name; audio_dir defaults to ``{tsv folder}/{src}/clips_16k``
    (or ``clips``). Every clip's duration is read from its header, so a missing clip fails here, unless
    a `skipped` list is given: then the clip's error is appended to it and the row left out.
    """
    tsv_path = Path(tsv_path)
    if src is None or tgt is None:
        name_src, name_tgt, _ = parse_covost_name(tsv_path)
        src, tgt = src or name_src, tgt or name_tgt
    clips = Path(audio_dir) if audio_dir is not None else _default_clips_dir(tsv_path, src)
    samples = []
    for lineno, row in read_tsv_rows(tsv_path, COVOST_COLUMNS[:3]):
        if limit is not None and len(samples) >= limit:
            break
        if not row["path"]:
            raise DataError(f"{tsv_path}:{lineno}: empty path")
        try:
            clip = resolve_clip(clips, row["path"], f"{tsv_path}:{lineno}")
            duration = audio_duration(clip)
        except (AudioError, DataError) as e:
            if skipped is None:
                raise
            skipped.append(str(e))
            continue
        samples.append(
            Sample(
                id=Path(row["path"]).stem,
                audio=str(clip),
                src_lang=src,
                tgt_lang=tgt,
                task="translate",
                source_text=row["sentence"],
                target_text=row["translation"],
                duration=duration,
            )
        )
    return samples


# ----------------------------------------------------------------------------- MuST-C


def read_mustc(
    split_dir: str | Path, src: str = "en", tgt: str | None = None, limit: int | None = None,
    skipped: list[str] | None = None,
) -> list[Sample]:
    """Read a MuST-C split folder: ``wav/*.wav``, ``txt/{split}.yaml``, ``txt/{split}.{src}`` and ``.{tgt}``.

    The split name is the folder name; tgt defaults to the one other language in ``txt/``. Each YAML
    segment (offset, duration, wav) becomes a sample whose audio is read by seeking into the talk's WAV.
    With a `skipped` list, a segment whose WAV is missing (or named outside wav/) is appended to it and left out.
    """
    split_dir = Path(split_dir)
    split = split_dir.name
    txt = split_dir / "txt"
    yaml_path = txt / f"{split}.yaml"
    if not yaml_path.is_file():
        raise DataError(f"{yaml_path}: MuST-C segment file not found")
    if tgt is None:
        langs = sorted(p.suffix[1:] for p in txt.glob(f"{split}.*") if p.suffix not in (".yaml", f".{src}"))
        if len(langs) != 1:
            raise DataError(f"{txt}: cannot tell the target language (found {langs or 'none'}); pass tgt")
        tgt = langs[0]
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # MuST-C train YAMLs have ~250k segments
    try:
        segments = yaml.load(yaml_path.read_text(encoding="utf-8"), Loader=loader)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise DataError(f"{yaml_path}: not valid YAML: {e}") from None
    if not isinstance(segments, list):
        raise DataError(f"{yaml_path}: expected a list of segments")
    texts = {}
    for lang in (src, tgt):
        path = txt / f"{split}.{lang}"
        if not path.is_file():
            raise DataError(f"{path}: MuST-C text file not found")
        try:
            texts[lang] = path.read_text(encoding="utf-8").rstrip("\n").split("\n")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not valid UTF-8: {e}") from None
        if len(texts[lang]) != len(segments):
            raise DataError(f"{path}: {len(texts[lang])} lines but {yaml_path.name} has {len(segments)} segments")
    samples = []
    per_talk: dict[str, int] = {}
    for i, seg in enumerate(segments):
        if limit is not None and len(samples) >= limit:
            break
        where = f"{yaml_path}: segment {i + 1}"
        if not isinstance(seg, dict) or not {"offset", "duration", "wav"} <= set(seg):
            raise DataError(f"{where} lacks offset/duration/wav: {seg!r}")
        offset, duration = _seconds(seg["offset"], f"{where}: offset"), _seconds(seg["duration"], f"{where}: duration")
        if duration <= 0:
            raise DataError(f"{where}: duration {duration:g} s is not positive")
        try:
            wav = inside(split_dir / "wav", str(seg["wav"]), where)
            if not wav.is_file():
                raise AudioError(f"{wav}: audio file not found ({where})")
        except (AudioError, DataError) as e:
            if skipped is None:
                raise
            skipped.append(str(e))
            continue
        talk = wav.stem
        n = per_talk[talk] = per_talk.get(talk, -1) + 1
        samples.append(
            Sample(
                id=f"{talk}_{n}",  # MuST-C's own naming: ted_1_0, ted_1_1, ...
                audio=str(wav),
                src_lang=src,
                tgt_lang=tgt,
                task="translate",
                source_text=texts[src][i].strip(),
                target_text=texts[tgt][i].strip(),
                offset=offset,
                duration=duration,
            )
        )
    return samples


def _seconds(value, where: str) -> float:
    """A time in seconds from a corpus field: a finite number >= 0, else a DataError naming `where`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise DataError(f"{where}: expected a number of seconds, got {value!r}")
    if value < 0:
        raise DataError(f"{where}: {value:g} s is negative")
    return float(value)


# ----------------------------------------------------------------------------- JSONL manifest


def read_manifest(jsonl_path: str | Path, limit: int | None = None, skipped: list[str] | None = None) -> list[Sample]:
    """Read a JSONL manifest (see the module docstring); DataError with file:line for a bad line.
    With a `skipped` list, a clip whose header cannot be read is appended to it and left out."""
    jsonl_path = Path(jsonl_path)
    if not jsonl_path.is_file():
        raise DataError(f"{jsonl_path}: file not found")
    samples = []
    with open(jsonl_path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if limit is not None and len(samples) >= limit:
                break
            where = f"{jsonl_path}:{lineno}"
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as e:
                raise DataError(f"{where}: not valid UTF-8 ({e.reason})") from None
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: not valid JSON: {e.msg}") from None
            if not isinstance(obj, dict):
                raise DataError(f"{where}: expected a JSON object")
            sample = _manifest_sample(obj, where, jsonl_path, lineno)
            if sample.duration is None:
                try:
                    sample.duration = audio_duration(sample.audio) - sample.offset
                except AudioError as e:
                    if skipped is None:
                        raise
                    skipped.append(str(e))
                    continue
                if sample.duration <= 0:
                    e = AudioError(f"{sample.audio}: offset {sample.offset:g} s is past the end ({where})")
                    if skipped is None:
                        raise e
                    skipped.append(str(e))
                    continue
            samples.append(sample)
    return samples


def check_language(code, where: str) -> str:
    """A language code from a corpus, checked before any use (prompts, output file names): one that
    llast.processor.LANGUAGES knows, else a DataError naming `where`."""
    if not isinstance(code, str) or code not in LANGUAGES:
        raise DataError(f"{where}: unknown language code {code!r} (known: {', '.join(sorted(LANGUAGES))})")
    return code


def _manifest_sample(obj: dict, where: str, jsonl_path: Path, lineno: int) -> Sample:
    """One manifest object as a Sample (duration None when the line has none); DataError naming `where`."""
    missing = [k for k in ("audio", "src_lang", "tgt_lang") if k not in obj]
    if missing:
        raise DataError(f"{where}: missing key(s) {', '.join(missing)}")
    task = obj.get("task", "translate")
    if task not in TASKS:
        raise DataError(f"{where}: task {task!r} is not one of {', '.join(TASKS)}")
    src, tgt = check_language(obj["src_lang"], f"{where}: src_lang"), check_language(obj["tgt_lang"], f"{where}: tgt_lang")
    if not isinstance(obj["audio"], str) or not obj["audio"] or "\x00" in obj["audio"]:
        raise DataError(f"{where}: audio {obj['audio']!r} is not a file name")
    audio = Path(obj["audio"])  # absolute paths are allowed here: a manifest may point anywhere (its design)
    if not audio.is_absolute():
        audio = jsonl_path.parent / audio
    offset = _seconds(obj.get("offset", 0.0), f"{where}: offset")
    duration = obj.get("duration")
    if duration is not None:
        duration = _seconds(duration, f"{where}: duration")
        if duration <= 0:
            raise DataError(f"{where}: duration {duration:g} s is not positive")
    texts = {}
    for key in ("source_text", "target_text", "id"):
        if key in obj and not isinstance(obj[key], (str, int)) or isinstance(obj.get(key), bool):
            raise DataError(f"{where}: {key} must be a string, got {obj[key]!r}")
        texts[key] = None if obj.get(key) is None else str(obj[key])
    source = texts["source_text"] or ""
    target = texts["target_text"] if texts["target_text"] is not None else (source if task == "transcribe" else "")
    return Sample(
        id=texts["id"] or f"{jsonl_path.stem}-{lineno}", audio=str(audio), src_lang=src, tgt_lang=tgt, task=task,
        source_text=source, target_text=target, offset=offset, duration=duration,
    )


# ----------------------------------------------------------------------------- mixing


def read_source(src: DataSource, skipped: list[str] | None = None) -> list[Sample]:
    """Read one configured source and give its samples the source's weight. With a `skipped` list,
    clips whose header cannot be read are left out and their errors appended to it (data.skip_bad).
    Language codes are checked here, before any use."""
    if src.format == "covost":
        samples = read_covost(src.path, src.audio_dir, src.src, src.tgt, limit=src.limit, skipped=skipped)
    elif src.format == "mustc":
        samples = read_mustc(src.path, src=src.src or "en", tgt=src.tgt, limit=src.limit, skipped=skipped)
    elif src.format == "jsonl":
        samples = read_manifest(src.path, limit=src.limit, skipped=skipped)
    else:
        raise DataError(f"{src.path}: unknown data format {src.format!r} ({', '.join(SOURCE_FORMATS)})")
    for pair in {(s.src_lang, s.tgt_lang) for s in samples}:
        for code in pair:
            check_language(code, str(src.path))
    for s in samples:
        s.weight = src.weight
    return samples


def drop_empty(samples: list[Sample], where: str) -> tuple[list[Sample], int]:
    """(samples whose target text is not empty, how many were left out); a warning names `where` and counts
    them. An empty reference cannot be scored, and training on it teaches the model to say nothing."""
    kept = [s for s in samples if s.target_text.strip()]
    n = len(samples) - len(kept)
    if n:
        first = next(s for s in samples if not s.target_text.strip())
        log.warning("%s: left out %d sample(s) with an empty %s text (e.g. %s)", where, n,
                    "source" if first.task == "transcribe" else "target", first.id)
    return kept, n


def build_samples(
    sources: list[DataSource], asr_augment: bool, asr_weight: float = 1.0, skipped: list[str] | None = None
) -> list[Sample]:
    """Read every source (several = multilingual) and, with `asr_augment`, add transcription samples.

    Each translation sample (X->En or En->X) yields an ASR sample in its source language, placed right
    after it, with weight = source weight * asr_weight. A clip shared by two directions (En->De and
    En->Ja over the same English clips) yields one ASR sample only: dedupe by (audio, offset, task).
    Samples with an empty target text (or, for ASR, source text) are left out with a warning.
    """
    out: list[Sample] = []
    seen: set[tuple[str, float, str]] = set()
    for src in sources:
        mine: list[Sample] = []
        for s in read_source(src, skipped):
            if s.task == "transcribe":
                key = (s.audio, s.offset, s.task)
                if key in seen:
                    continue
                seen.add(key)
            mine.append(s)
            if asr_augment and s.task == "translate":
                key = (s.audio, s.offset, "transcribe")
                if key not in seen:
                    seen.add(key)
                    mine.append(transcription_of(s, weight=s.weight * asr_weight))
        out.extend(drop_empty(mine, src.path)[0])
    return out


# ----------------------------------------------------------------------------- dataset


class SpeechDataset(torch.utils.data.Dataset):
    """Samples with their audio loaded: ``dataset[i] -> {"sample": Sample, "audio": np.ndarray (n_samples,)}``.

    With `skip_bad`, a clip that fails to load (AudioError) gives None, is logged with its reason and
    appended to `self.bad` as (id, reason). `self.bad` is only filled in the process that loads, so
    with DataLoader workers count the Nones in the collate function (see `filter_batch`).
    Without `skip_bad` the AudioError (naming the clip) propagates.
    """

    def __init__(self, samples: list[Sample], max_seconds: float = 30.0, skip_bad: bool = False,
                 feature_cache: str | None = None, model_cfg=None):
        self.samples = samples
        self.max_seconds = max_seconds
        self.skip_bad = skip_bad
        self.bad: list[tuple[str, str]] = []
        # With a feature cache (llast.features), items carry the encoder's states instead of audio:
        # {"sample", "states": (T, D) float16, "n_samples": int}.
        self.feature_cache = feature_cache
        self.model_cfg = model_cfg

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict | None:
        s = self.samples[i]
        if self.feature_cache is not None:
            path = entry_path(self.feature_cache, cache_key(s, self.model_cfg))
            if path.is_file():
                states, n = load_entry(path)
                return {"sample": s, "states": states, "n_samples": n}
            if not self.skip_bad:
                raise AudioError(f"{s.audio}: not in the feature cache {self.feature_cache} (sample {s.id})")
            self.bad.append((s.id, "not in the feature cache"))
            return None
        try:
            audio = load_audio(s.audio, offset=s.offset, duration=s.duration, max_seconds=self.max_seconds)
        except AudioError as e:
            if not self.skip_bad:
                raise AudioError(f"{e} (sample {s.id})") from None
            self.bad.append((s.id, str(e)))
            log.warning("skipping sample %s: %s", s.id, e)
            return None
        return {"sample": s, "audio": audio}


def filter_batch(items: list[dict | None]) -> tuple[list[dict], int]:
    """Drop the None items (skipped bad clips) of a batch: returns (good items, number dropped)."""
    good = [x for x in items if x is not None]
    return good, len(items) - len(good)


# ----------------------------------------------------------------------------- CoVoST audio preparation


@dataclass
class PrepareReport:
    converted: int = 0
    skipped_existing: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (clip, reason)

    def __str__(self) -> str:
        lines = [f"converted {self.converted}, already done {self.skipped_existing}, failed {len(self.failed)}"]
        lines += [f"  failed: {clip}: {reason}" for clip, reason in self.failed[:20]]
        if len(self.failed) > 20:
            lines.append(f"  ... and {len(self.failed) - 20} more")
        return "\n".join(lines)


def _convert_clip(job: tuple[str, str]) -> tuple[str, str, str]:
    """Convert one clip to 16 kHz mono 16-bit WAV; returns (clip, status, reason). Runs in a worker."""
    src, dst = job
    tmp = None
    try:
        audio = load_audio(src)
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        # A temporary of this job's own (never shared with another worker or run), renamed when
        # complete: an interrupted run leaves no partial .wav.
        fd, tmp = tempfile.mkstemp(dir=Path(dst).parent, prefix=Path(dst).name + ".", suffix=".part")
        os.close(fd)
        sf.write(tmp, audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
        os.replace(tmp, dst)
        tmp = None
    except AudioError as e:
        return src, "failed", str(e)
    except Exception as e:  # a worker must report, not die: one bad clip in 200k should not stop the run
        return src, "failed", f"{src}: {type(e).__name__}: {e}"
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return src, "converted", ""


def _prepare_jobs(tsv_paths: list[str | Path], clips_dir: Path, out_dir: Path, report: PrepareReport) -> list[tuple[str, str]]:
    """(source clip, output WAV) for every clip named in the TSVs that is not converted yet.

    Outputs keep the clips' relative folders (``a/x.mp3`` -> ``{out}/a/x.wav``). A name leading outside
    the clips folder is reported as failed; two names that would make the same output
    (``same.mp3``, ``same.flac``) are a DataError before anything is converted."""
    names: dict[str, str] = {}  # clip name -> the TSV line that names it first (an ordered set)
    for tsv in tsv_paths:
        for lineno, row in read_tsv_rows(Path(tsv), ("path",)):
            names.setdefault(row["path"], f"{tsv}:{lineno}")
    owners: dict[Path, str] = {}
    jobs = []
    for name, where in names.items():
        try:
            src = inside(clips_dir, name, where)
            dst = inside(out_dir, name, where).with_suffix(".wav")
        except DataError as e:
            report.failed.append((name, str(e)))
            continue
        if dst in owners:
            raise DataError(f"{where}: clips {owners[dst]!r} and {name!r} would both be written to {dst}; rename one")
        owners[dst] = name
        if dst.is_file():
            report.skipped_existing += 1
        else:
            jobs.append((str(src), str(dst)))
    return jobs


def prepare_covost_audio(
    tsv_paths: list[str | Path], clips_dir: str | Path, out_dir: str | Path, workers: int = 4
) -> PrepareReport:
    """Convert the clips named in CoVoST TSVs (MP3, any rate) to ``{out_dir}/{name}.wav`` (16 kHz mono PCM16),
    keeping their relative folders.

    Resumable: outputs that exist are skipped (they are written under a temporary name and renamed).
    Unreadable clips are reported in the returned PrepareReport instead of stopping the run.
    """
    clips_dir, out_dir = Path(clips_dir), Path(out_dir)
    if not clips_dir.is_dir():
        raise DataError(f"--clips {clips_dir}: not a folder")
    outdir.check(out_dir, "prepare")  # a folder of the user's is refused before any work
    if workers < 1:
        raise DataError(f"--workers {workers}: expected at least 1")
    report = PrepareReport()
    jobs = _prepare_jobs(tsv_paths, clips_dir, out_dir, report)
    outdir.claim(out_dir, "prepare")
    bar = tqdm(total=len(jobs), desc="converting clips", unit="clip", disable=not jobs)
    if workers <= 1 or len(jobs) <= 1:
        results = map(_convert_clip, jobs)
        pool = None
    else:
        pool = ProcessPoolExecutor(max_workers=workers)
        results = pool.map(_convert_clip, jobs, chunksize=max(1, min(64, len(jobs) // (workers * 8) or 1)))
    try:
        for clip, status, reason in results:
            if status == "converted":
                report.converted += 1
            else:
                report.failed.append((clip, reason))
            bar.update(1)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return report
