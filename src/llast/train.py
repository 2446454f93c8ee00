"""`llast train`: one explicit training loop, on one process or many (HF Accelerate: DDP, FSDP,
DeepSpeed ZeRO-2), resumable from any checkpoint with the same losses as an uninterrupted run.

    out_dir/
      checkpoint-0000050/   model checkpoint (see llast.checkpoint) + trainer_state.pt
      final/                model checkpoint at the end
      log.jsonl             one JSON object per logged step / evaluation
      tb/                   TensorBoard events
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import random
import re
import shutil
import sys
import time
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, DistributedType, gather_object, set_seed
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from llast import outdir
from llast.assets import resolve_checkpoint
from llast.audio import SAMPLE_RATE, load_audio
from llast.checkpoint import clean_leftovers, load_adaptor, load_weights, save_checkpoint
from llast.config import Config, validate
from llast.data import SpeechDataset, build_samples, filter_batch
from llast.decode import Translator
from llast.errors import AudioError, CheckpointError, DataError
from llast.evaluate import score
from llast.features import build_cache, check_cacheable, pad_states
from llast.lora import build_lora_model, format_param_counts, param_counts, set_trainable, trainable_parameters
from llast.model import IGNORE_INDEX
from llast.processor import Example, build_processor
from llast.samplers import make_sampler

_CKPT = re.compile(r"^checkpoint-(\d+)$")


class Collator:
    """Dataset items -> (model batch, meta). Skipped clips (None) are dropped and counted. With `speller`
    (the "chars" CTC stage) the batch also carries `ctc_targets` (B, S): the letters of each target text."""

    def __init__(self, processor, speller: "CharSpeller | None" = None):
        self.processor = processor
        self.speller = speller

    def __call__(self, items):
        good, n_bad = filter_batch(items)
        lengths = [x["n_samples"] if "states" in x else len(x["audio"]) for x in good]
        meta = {"n_bad": n_bad, "n_samples": len(good), "audio_seconds": sum(lengths) / SAMPLE_RATE}
        if not good:
            return None, meta
        examples = [
            Example(x.get("audio"), x["sample"].src_lang, x["sample"].tgt_lang, x["sample"].task, x["sample"].target_text,
                    num_samples=n)
            for x, n in zip(good, lengths)
        ]
        batch = self.processor(examples)
        if "states" in good[0]:  # from the feature cache: the encoder is skipped
            batch["encoder_states"] = pad_states([x["states"] for x in good])
        if self.speller is not None:
            rows = [torch.tensor(self.speller.ids(x["sample"].target_text), dtype=torch.long) for x in good]
            batch["ctc_targets"] = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=IGNORE_INDEX)
        return batch, meta


def spell(text: str) -> str:
    """What the "chars" CTC stage spells: lower-case letters and apostrophes, words separated by one space.

    >>> spell("Der Mohr hat's getan!")
    "der mohr hat's getan"
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join("".join(c if c.isalpha() or c == "'" else " " for c in text).split())


class CharSpeller:
    """Text -> the LLM's token ids of its letters, one token per character (train.ctc_units=chars)."""

    BLANK = "_"  # the CTC blank's token: never spelled (spell() keeps letters, apostrophes and spaces only)

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.table: dict[str, int] = {}

    def char_id(self, char: str) -> int:
        if char not in self.table:
            ids = self.tokenizer(char, add_special_tokens=False)["input_ids"]
            if len(ids) != 1:
                raise DataError(f"train.ctc_units=chars: {char!r} is {len(ids)} tokens of the LLM's tokenizer, "
                                "not one; use train.ctc_units=tokens for this LLM")
            self.table[char] = ids[0]
        return self.table[char]

    def ids(self, text: str) -> list[int]:
        return [self.char_id(c) for c in spell(text)]


def ctc_vocabulary(samples, tokenizer, speller: CharSpeller | None = None) -> torch.Tensor:
    """Token ids of every target text in `samples`, the CTC blank first: the space token for word pieces,
    "_" for letters (`speller`: the space is then a letter, the word boundary)."""
    if speller is not None:
        blank = speller.char_id(CharSpeller.BLANK)
        ids = {i for s in samples for i in speller.ids(s.target_text)}
        return torch.tensor([blank, *sorted(ids - {blank})], dtype=torch.long)
    blank = tokenizer(" ", add_special_tokens=False)["input_ids"][-1]
    ids = {i for s in samples for i in tokenizer(s.target_text, add_special_tokens=False)["input_ids"]}
    ids.discard(blank)
    return torch.tensor([blank, *sorted(ids)], dtype=torch.long)


def lr_lambda(total_steps: int, warmup_ratio: float, schedule: str):
    """Linear warmup to the peak, then linear (paper) or cosine (released code) decay to 0.

    Not transformers' get_linear/cosine_schedule_with_warmup: those start at step / warmup (the first
    update at lr 0) where this starts at (step + 1) / warmup, and their linear decay (T - s) / (T - w)
    differs from 1 - (s - w) / (T - w) in the last bits; either would change every recorded run."""
    warmup = max(1, int(round(warmup_ratio * total_steps))) if warmup_ratio > 0 else 0

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress

    return f


def checkpoints_newest_first(out_dir: Path) -> list[Path]:
    """The resumable checkpoints of `out_dir` (written completely: llast.json and trainer_state.pt), newest first."""
    found = []
    for p in out_dir.glob("checkpoint-*"):
        m = _CKPT.match(p.name)
        if m and (p / "llast.json").is_file() and (p / "trainer_state.pt").is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found, reverse=True)]


def find_latest_checkpoint(out_dir: Path) -> Path | None:
    found = checkpoints_newest_first(out_dir)
    return found[0] if found else None


def _rng_state() -> dict:
    """Every RNG's state as tensors and plain Python values only: trainer_state.pt is read back with
    torch.load(weights_only=True), which refuses anything that could run code when unpickled."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),  # (version, tuple of ints, float | None)
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def load_trainer_state(path: Path) -> dict:
    """trainer_state.pt, read without unpickling code: tensors, numbers, strings, lists, dicts only.
    A file that holds anything else (a crafted pickle, or one written before llast stored RNG states
    as tensors) is refused with a CheckpointError, never executed."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: refused to load: it holds objects other than tensors and plain values ({first}); "
            "a trainer state must never run code when read"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read the trainer state (truncated or corrupt?): {e}") from None
    missing = [k for k in _STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a llast trainer state (missing {', '.join(missing)})")
    return state


_STATE_KEYS = ("optimizer", "scheduler", "step", "epoch", "batches_done", "rng")


def load_resume_point(model, out_dir: Path, resume: str, say) -> tuple[Path | None, dict | None]:
    """(checkpoint, its trainer state) to resume from, with its weights loaded into `model`; (None, None)
    to start afresh. resume="auto": the newest checkpoint of `out_dir` that reads back completely; one
    that does not (a truncated trainer_state.pt or safetensors file) is passed over with a warning.
    Any other value names a checkpoint, which must read back."""
    if resume != "auto":
        ckpt = Path(resume)
        if not ckpt.is_dir():
            raise CheckpointError(f"{ckpt}: checkpoint directory not found; cannot resume training from it")
        if not (ckpt / "trainer_state.pt").is_file():
            raise CheckpointError(f"{ckpt}: no trainer_state.pt; cannot resume training from it")
        state = load_trainer_state(ckpt / "trainer_state.pt")
        load_weights(model, ckpt)
        return ckpt, state
    candidates = checkpoints_newest_first(out_dir)
    errors = []
    for ckpt in candidates:
        try:
            state = load_trainer_state(ckpt / "trainer_state.pt")
            load_weights(model, ckpt)  # strict: every tensor is overwritten, also after a failed newer one
        except CheckpointError as e:
            errors.append(str(e))
            say(f"[train] warning: cannot resume from {ckpt.name} ({e}); trying the previous checkpoint")
            continue
        if errors:
            say(f"[train] warning: resuming from {ckpt.name}, the newest checkpoint that reads back completely")
        return ckpt, state
    if errors:
        raise CheckpointError(
            f"{out_dir}: none of its {len(errors)} checkpoints reads back (newest: {errors[0]}); "
            "move them away to start again, or resume from one with --resume PATH"
        )
    return None, None


def _window_len(batch_no: int, n_batches: int, grad_accum: int) -> int:
    """Micro-batches in the accumulation window of (1-based) batch `batch_no` of an epoch of `n_batches`:
    windows start at every grad_accum-th batch of the epoch; the epoch's last window may be shorter."""
    start = (batch_no - 1) // grad_accum * grad_accum
    return min(grad_accum, n_batches - start)


def _engine(accelerator) -> str:
    """"fsdp", "deepspeed" or "ddp" (also one process): what decides how checkpoints are gathered."""
    t = accelerator.distributed_type
    return "fsdp" if t == DistributedType.FSDP else "deepspeed" if t == DistributedType.DEEPSPEED else "ddp"


def _fsdp_full_state(model, optimizer, with_optimizer: bool) -> tuple[dict, dict | None]:
    """Unsharded adaptor + LoRA tensors and (optionally) optimizer state of an FSDP model, on rank 0 (CPU).
    A collective: every rank calls it. Frozen base weights are not gathered; the adaptor and LoRA are
    made trainable for the call so that LST's first stage (LoRA frozen) still saves its LoRA."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict  # lazy: ~2 s to import; only FSDP runs need it

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    set_trainable(model, adaptor_only=False)
    try:
        weights = get_model_state_dict(model, options=opts)
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])
    optim = get_optimizer_state_dict(model, optimizer, options=opts) if with_optimizer else None
    return weights, optim


def _mixed_precision(setting: str) -> str:
    """train.mixed_precision -> Accelerate's setting. "auto": what `accelerate launch` was told (its
    config file or --mixed_precision), else bf16 on GPUs that support it, else none."""
    if setting != "auto":
        return setting
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if launched:
        return launched
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


class _Logger:
    """JSONL + TensorBoard, main process only. One record per step: on a resume from step N, the
    records of steps after N (logged by the interrupted run, about to be logged again) and a line cut
    off by a kill are dropped, and TensorBoard's events are rewritten from the records kept."""

    def __init__(self, out_dir: Path, enabled: bool, start_step: int = 0):
        self.enabled = enabled
        if enabled:
            path = out_dir / "log.jsonl"
            kept = _kept_records(path, start_step)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
            os.replace(tmp, path)
            self.jsonl = open(path, "a")
            shutil.rmtree(out_dir / "tb", ignore_errors=True)
            self.tb = SummaryWriter(str(out_dir / "tb"))
            for record in kept:
                self._scalars(record)

    def _scalars(self, record: dict) -> None:
        for k, v in record.items():
            if k != "step" and isinstance(v, (int, float)):
                self.tb.add_scalar(k, v, record["step"])

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        self._scalars(record)

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            self.tb.close()


def _kept_records(path: Path, start_step: int) -> list[dict]:
    """The records of log.jsonl up to `start_step`, in order; lines that do not parse (cut off by a kill) dropped."""
    if not path.is_file():
        return []
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= start_step:
            kept.append(record)
    return kept


@torch.no_grad()
def dev_loss(model, loader, device, max_samples: int, ctc_vocab=None) -> float:
    """Target-token-weighted mean loss over the dev loader (the CTC loss with `ctc_vocab`)."""
    model.eval()
    total, tokens, seen = 0.0, 0, 0
    for batch, meta in loader:
        if batch is None:
            continue
        batch = {k: v.to(device) for k, v in batch.items()}
        n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        total += float(model(**batch, ctc_vocab=ctc_vocab).loss) * n
        tokens += n
        seen += meta["n_samples"]
        if seen >= max_samples:
            break
    model.train()
    return total / max(tokens, 1)


@torch.no_grad()
def ctc_greedy(model, loader, vocab, tokenizer, device) -> str:
    """What the adaptor 'says' for the first dev clip: best token per embedding, repeats and blanks removed."""
    batch, _ = next(iter(loader))
    batch = {k: v[:1].to(device) for k, v in batch.items()}
    model.eval()
    best = model.ctc_loss(batch["audio_lengths"], batch["labels"], vocab.to(device), batch.get("input_features"),
                          batch.get("encoder_states"), ctc_targets=batch.get("ctc_targets")).logits[0].argmax(-1).tolist()
    model.train()
    return tokenizer.decode(ctc_collapse(best, vocab))


def ctc_collapse(best: list[int], vocab: torch.Tensor) -> list[int]:
    """Greedy CTC path (best vocab index per embedding) -> token ids: repeats merged, blanks (index 0) dropped."""
    return [int(vocab[b]) for i, b in enumerate(best) if b != 0 and (i == 0 or b != best[i - 1])]


def dev_bleu(model, processor, cfg: Config, samples, device) -> dict:
    """Corpus BLEU of the dev samples per target language ({"dev_bleu_en": ...}), decoded with cfg.decode in
    one pass (decode.two_pass is an inference choice; the curve follows the speech translation trained)."""
    by_tgt: dict[str, tuple[list, list]] = {}
    for s in samples:
        try:
            audio = load_audio(s.audio, offset=s.offset, duration=s.duration, max_seconds=cfg.model.encoder.max_seconds)
        except AudioError:
            continue
        examples, refs = by_tgt.setdefault(s.tgt_lang, ([], []))
        examples.append(Example(audio, s.src_lang, s.tgt_lang, s.task))
        refs.append(s.target_text)
    translator = Translator(model, cfg, processor=processor, device=str(device))
    out = {}
    for tgt, (examples, refs) in by_tgt.items():
        hyps = translator.generate(examples, replace(cfg.decode, two_pass=False))
        out[f"dev_bleu_{tgt}"] = score(hyps, refs, tgt)["bleu"]
    return out


@dataclass
class _Position:
    """Where a run is: optimizer steps done, the epoch, batches of it consumed, and the training samples
    this rank has taken part in (the learning curves' x axis)."""

    step: int = 0
    epoch: int = 0
    batches_done: int = 0
    seen: float = 0.0


@dataclass
class _Run:
    """What the helpers of `train` share: the prepared engine's objects and how to report."""

    cfg: Config
    accelerator: Any
    engine: str  # "ddp", "fsdp" or "deepspeed" (see _engine)
    model: Any
    optimizer: Any
    scheduler: Any
    sampler: Any
    say: Any


def train(cfg: Config, resume: str = "auto", progress: bool = True) -> Path:
    """Train as `cfg` says; returns the final checkpoint directory (out_dir/final)."""
    tc, out_dir = cfg.train, Path(cfg.train.out_dir)
    s = _set_up(cfg, resume, progress)
    run, pos, accelerator, model, say = s.run, s.pos, s.run.accelerator, s.run.model, s.run.say
    model.train()
    start = time.time()
    deadline = start + tc.max_minutes * 60 if tc.max_minutes else None
    bar = tqdm(total=s.total_steps, initial=pos.step, desc="train", unit="step", disable=not (s.main and progress),
               file=sys.stderr)
    window = _new_window()
    n_bad, stage, last_batch = 0, None, None  # last_batch: stands in for a batch of only unreadable clips
    stop_at = min(s.total_steps, tc.stop_at or s.total_steps)
    done = pos.step >= stop_at
    n_batches = len(run.sampler)
    while not done:
        if tc.max_steps is None and pos.epoch >= tc.epochs:
            break
        run.sampler.set_epoch(pos.epoch)
        n_batches = len(run.sampler)  # weighted resampling: the epoch's length may vary
        s.loader_gen.manual_seed(tc.seed * 1_000_003 + pos.epoch)
        for batch, meta in s.loader:
            pos.batches_done += 1
            n_bad += meta["n_bad"]
            adaptor_only = pos.step < cfg.model.adaptor_only_steps
            if adaptor_only != stage:  # LST: stage 1 trains the adaptor only, stage 2 adaptor + LoRA
                # The CTC stage trains the adaptor and S-LoRA (when on): the LLM does not run.
                set_trainable(accelerator.unwrap_model(model), adaptor_only=adaptor_only, llm_lora=tc.objective != "ctc")
                stage = adaptor_only
            # Accumulation windows are fixed by the position in the epoch (not by a running counter):
            # every grad_accum batches and at the epoch's end, so a resumed run steps where an
            # uninterrupted one does and an epoch's leftover batches never spill into the next epoch.
            sync = pos.batches_done % tc.grad_accum == 0 or pos.batches_done >= n_batches
            accelerator.sync_gradients = sync  # what accelerator.accumulate() would set (optimizer, DeepSpeed)
            last_batch = _backward(run, batch, meta, last_batch, sync, pos, n_batches, window, s.ctc_vocab)
            if not sync:
                continue
            _optimizer_step(run, s.params)
            pos.step += 1
            bar.update(1)
            if pos.step % tc.log_every == 0 or pos.step == stop_at:
                window = _log_window(run, window, pos, s.logger, bar, start, adaptor_only)
            if s.dev_loader is not None and pos.step % tc.eval_every == 0:
                _evaluate(run, s.dev_loader, s.dev_samples, s.processor, s.ctc_vocab, pos.step, s.logger)
            out_of_time = _out_of_time(deadline, accelerator)
            done = pos.step >= stop_at or out_of_time
            if pos.step % tc.save_every == 0 or done:
                _save(run, out_dir / f"checkpoint-{pos.step:07d}", pos, n_batches, with_state=True)
            if done:
                if out_of_time:
                    say(f"[train] stopping at step {pos.step}: train.max_minutes={tc.max_minutes} reached")
                elif pos.step < s.total_steps:
                    say(f"[train] stopping at step {pos.step} of {s.total_steps}: train.stop_at={tc.stop_at}")
                break
        if not done:
            pos.epoch += 1
            pos.batches_done = 0
    bar.close()
    if n_bad:
        say(f"[train] skipped {n_bad} unreadable clips (data.skip_bad)")
    final = out_dir / "final"
    _save(run, final, pos, n_batches, with_state=False)
    s.logger.close()
    say(f"[train] done: {pos.step} steps in {time.time() - start:.0f} s; final checkpoint {final}")
    return final


@dataclass
class _SetUp:
    """What the training loop works with, once the run is set up (`_set_up`)."""

    run: Any  # _Run: accelerator, engine, model, optimizer, scheduler, sampler, say
    pos: Any  # _Position: where the run is (restored on resume)
    params: list  # the live trainable parameters (clipped)
    logger: Any
    loader: Any
    loader_gen: Any
    dev_loader: Any
    dev_samples: list
    processor: Any
    ctc_vocab: Any
    total_steps: int
    main: bool


def _set_up(cfg: Config, resume: str, progress: bool) -> _SetUp:
    """Model, data, optimizer and schedule, the engine, and the resume point of a run of `cfg`."""
    validate(cfg)  # also for a Config built or changed in Python
    tc, out_dir = cfg.train, Path(cfg.train.out_dir)
    outdir.check(out_dir, "train", "train.out_dir")  # a folder of the user's is refused before any work
    accelerator = _accelerator(cfg)
    main, world = accelerator.is_main_process, accelerator.num_processes
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if main else (lambda *a: None)
    say(f"[train] {world} process(es), {accelerator.distributed_type.value}, device {accelerator.device}, "
        f"mixed precision {accelerator.mixed_precision}")
    set_seed(tc.seed)  # the same on every rank: identical LoRA initialisation
    samples = _training_samples(cfg, say)
    model, processor, dev_samples, ctc_vocab = _build_model(cfg, samples, accelerator, say, progress)
    # Every parameter that may train (adaptor + LoRA) goes to the optimizer from the start, so the
    # LST stage switch changes only requires_grad (AdamW skips parameters without gradients).
    optimizer = torch.optim.AdamW(trainable_parameters(model), lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay)
    sampler, loader, loader_gen, dev_loader = _loaders(cfg, samples, dev_samples, processor, accelerator)
    total_steps = tc.max_steps or math.ceil(len(sampler) / tc.grad_accum) * tc.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total_steps, tc.warmup_ratio, tc.schedule))
    if main:  # leftovers of a killed save: .old put back or removed, .tmp removed (before choosing a checkpoint)
        for what in clean_leftovers(out_dir):
            say(f"[train] {what} (left by an interrupted save)")
    accelerator.wait_for_everyone()
    ckpt, state = None, None
    if resume not in ("no", "none", ""):  # into the plain module, before any engine shards or casts it
        ckpt, state = load_resume_point(model, out_dir, resume, say)
    engine = _configure_engine(accelerator, tc, say)
    model, optimizer = accelerator.prepare(model, optimizer)
    # FSDP replaces the parameters with sharded ones: clip the live ones (the optimizer was rebound).
    params = trainable_parameters(accelerator.unwrap_model(model))
    run = _Run(cfg, accelerator, engine, model, optimizer, scheduler, sampler, say)
    if ckpt is not None:
        pos = _restore(run, ckpt, state)
    else:
        pos = _Position()
        set_seed(tc.seed, device_specific=True)  # seed + rank: dropout masks differ between ranks
    if main:
        outdir.claim(out_dir, "train", "train.out_dir")
    accelerator.wait_for_everyone()
    logger = _Logger(out_dir, main, start_step=pos.step)
    if len(sampler) == 0:
        raise DataError("data.train: no batches (is data.batch_size or data.max_batch_seconds too small?)")
    return _SetUp(run, pos, params, logger, loader, loader_gen, dev_loader, dev_samples, processor, ctc_vocab,
                  total_steps, main)


def _accelerator(cfg: Config):
    """Accelerate's Accelerator for this run (one process, or every process of `accelerate launch` / torchrun)."""
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if cfg.model.adaptor_only_steps > 0 else []
    # Accelerate sets up multi-process CPU training (gloo) only when told `cpu=True`; without it every
    # process of a GPU-less `torchrun` would think it is the only one (and all would write out_dir).
    has_accelerator = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    cpu = not has_accelerator and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(
        gradient_accumulation_steps=cfg.train.grad_accum, mixed_precision=_mixed_precision(cfg.train.mixed_precision),
        kwargs_handlers=handlers, cpu=cpu,
    )
    if int(os.environ.get("WORLD_SIZE", "1")) != accelerator.num_processes:
        raise RuntimeError(
            f"WORLD_SIZE={os.environ['WORLD_SIZE']} but Accelerate set up {accelerator.num_processes} process(es)"
        )
    return accelerator


def _training_samples(cfg: Config, say) -> list:
    """cfg.data.train read and mixed (llast.data.build_samples), clips too long for the encoder refused (or
    skipped with data.skip_bad); transcription samples only for the CTC objective."""
    if not cfg.data.train:
        raise DataError("data.train: no training data configured")
    unreadable: list[str] | None = [] if cfg.data.skip_bad else None
    samples = build_samples(cfg.data.train, cfg.data.asr_augment, cfg.data.asr_weight, skipped=unreadable)
    if unreadable:
        say(f"[train] data.skip_bad: left out {len(unreadable)} clips whose audio cannot be read, e.g. {unreadable[0]}")
    if not samples:
        raise DataError("data.train: the configured sources hold no samples")
    too_long = [s for s in samples if (s.duration or 0) > cfg.model.encoder.max_seconds]
    if too_long and not cfg.data.skip_bad:
        s = too_long[0]
        raise DataError(
            f"{s.audio}: {s.duration:.1f} s is longer than model.encoder.max_seconds={cfg.model.encoder.max_seconds} "
            f"({len(too_long)} such clips; set data.skip_bad=true to skip them)"
        )
    samples = [s for s in samples if s not in too_long]
    if cfg.train.objective == "ctc":  # the adaptor learns the spoken tokens: transcription samples only
        samples = [s for s in samples if s.task == "transcribe"]
        if not samples:
            raise DataError("train.objective=ctc trains on transcription samples: set data.asr_augment=true "
                            "or give transcription data")
    say(f"[train] {len(samples)} training samples, {sum(s.duration or 0 for s in samples) / 3600:.2f} h of audio")
    return samples


def _build_model(cfg: Config, samples, accelerator, say, progress: bool):
    """(model with LoRA, everything that may train marked trainable; processor; dev samples; the CTC stage's
    vocabulary or None). Builds the feature cache (main process) when cfg.data.feature_cache is set."""
    tc = cfg.train
    model = build_lora_model(cfg.model)  # an unloadable model name: a ConfigError naming its key
    processor = build_processor(cfg.model, encoder_config=model.encoder_config)
    say(format_param_counts(param_counts(model)))
    if tc.init_from:
        load_adaptor(model, resolve_checkpoint(tc.init_from), llm_lora=tc.init_llm_lora,  # a folder or a shipped name
                     encoder_lora=tc.init_encoder_lora)
        say(f"[train] adaptor{' and L-LoRA' if tc.init_llm_lora else ''} initialised from {tc.init_from}"
            f"{'' if tc.init_encoder_lora else ' (its S-LoRA left out: the frozen encoder)'}")
    dev_samples = build_samples(cfg.data.dev, asr_augment=tc.objective == "ctc") if cfg.data.dev and tc.eval_every else []
    if tc.objective == "ctc":
        dev_samples = [s for s in dev_samples if s.task == "transcribe"]
    # The CTC stage's vocabulary: every token (or letter) of the training and dev transcripts.
    speller = ctc_speller(cfg, processor)
    ctc_vocab = ctc_vocabulary(samples + dev_samples, processor.tokenizer, speller) if tc.objective == "ctc" else None
    if cfg.data.feature_cache:
        check_cacheable(cfg.model)
        if accelerator.is_main_process:
            stats = build_cache(model, processor, samples + dev_samples, cfg.data.feature_cache,
                                cfg.model.encoder.max_seconds, skip_bad=cfg.data.skip_bad, progress=progress)
            say(f"[train] feature cache {cfg.data.feature_cache}: {stats['clips']} clips, {stats['encoded']} encoded now")
        accelerator.wait_for_everyone()
    # Everything that may train has requires_grad when the model is wrapped: DDP registers (and
    # all-reduces) only those parameters, so LoRA frozen at wrap time would never be synchronised in
    # LST's second stage. The loop sets the stage's requires_grad before the first batch.
    set_trainable(model, adaptor_only=False)
    return model, processor, dev_samples, ctc_vocab


def ctc_speller(cfg: Config, processor) -> CharSpeller | None:
    """The letter speller of the "chars" CTC stage, None otherwise."""
    if cfg.train.objective == "ctc" and cfg.train.ctc_units == "chars":
        return CharSpeller(processor.tokenizer)
    return None


def _loaders(cfg: Config, samples, dev_samples, processor, accelerator):
    """(this rank's batch sampler, the training loader, the generator it draws worker seeds from, the dev
    loader or None)."""
    sampler = make_sampler(cfg, samples, accelerator.num_processes, accelerator.process_index)
    dataset = SpeechDataset(samples, max_seconds=cfg.model.encoder.max_seconds, skip_bad=cfg.data.skip_bad,
                            feature_cache=cfg.data.feature_cache, model_cfg=cfg.model)
    collate = Collator(processor, ctc_speller(cfg, processor))
    # A private generator keeps DataLoader start-up from consuming the global RNG (exact resume); it
    # is reseeded every epoch so that a resumed epoch gives its workers the same seeds.
    loader_gen = torch.Generator()
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate, num_workers=cfg.data.num_workers, generator=loader_gen,
    )
    dev_loader = None
    if dev_samples:
        dev_loader = torch.utils.data.DataLoader(
            SpeechDataset(dev_samples, cfg.model.encoder.max_seconds, skip_bad=True,
                          feature_cache=cfg.data.feature_cache, model_cfg=cfg.model),
            batch_sampler=make_sampler(cfg, dev_samples, shuffle=False), collate_fn=collate,
            generator=torch.Generator().manual_seed(cfg.train.seed),
        )
    return sampler, loader, loader_gen, dev_loader


def _configure_engine(accelerator, tc, say) -> str:
    """The engine (see `_engine`), with what it needs set before `accelerator.prepare`."""
    engine = _engine(accelerator)
    if engine == "fsdp" and tc.eval_bleu and tc.eval_every:
        say("[train] warning: train.eval_bleu is ignored under FSDP (generation needs unsharded weights); dev loss is still computed")
        tc.eval_bleu = False
    if engine == "deepspeed":
        ds = accelerator.state.deepspeed_plugin.deepspeed_config
        ds["train_micro_batch_size_per_gpu"] = 1  # batches come from our own sampler
        ds["gradient_clipping"] = tc.grad_clip  # DeepSpeed clips inside its step
    return engine


def _restore(run: _Run, ckpt: Path, state: dict) -> _Position:
    """Optimizer, schedule, RNG and data position of `ckpt` (its weights are already loaded)."""
    world, rank = run.accelerator.num_processes, run.accelerator.process_index
    _restore_optimizer(run, ckpt, state)
    run.scheduler.load_state_dict(state["scheduler"])
    pos = _Position(state["step"], state["epoch"], state["batches_done"],
                    state.get("samples_seen", 0.0) / world)  # this rank's share
    saved_world = state.get("num_processes", 1)
    if saved_world != world:
        run.say(f"[train] warning: {ckpt} was written by {saved_world} processes, resuming on {world}: "
                "the data position and RNG streams are not exactly those of an uninterrupted run")
    rng = state["rng"]
    _set_rng_state(rng[rank % len(rng)] if isinstance(rng, list) else rng)  # one state per rank
    run.sampler.load_state_dict({"epoch": pos.epoch, "batches_done": pos.batches_done})
    run.say(f"[train] resumed from {ckpt} at step {pos.step} (epoch {pos.epoch}, batch {pos.batches_done})")
    return pos


def _restore_optimizer(run: _Run, ckpt: Path, state: dict) -> None:
    """The optimizer state of `ckpt`, as its engine keeps it: DeepSpeed's partitions in engine/, FSDP's
    full state sharded again, DDP's state dict as it is."""
    if run.engine == "deepspeed":
        if not (ckpt / "engine").is_dir():
            raise CheckpointError(f"{ckpt}: no engine/ (DeepSpeed optimizer state); was it written by a DeepSpeed run?")
        loaded, _ = run.model.load_checkpoint(str(ckpt / "engine"), tag="state", load_module_strict=False,
                                              load_optimizer_states=True, load_lr_scheduler_states=False)
        if loaded is None:
            raise CheckpointError(f"{ckpt / 'engine'}: DeepSpeed could not load its state from here")
    elif run.engine == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict  # lazy: ~2 s to import; only FSDP runs need it

        set_optimizer_state_dict(run.model, run.optimizer.optimizer, state["optimizer"],
                                 options=StateDictOptions(full_state_dict=True))
    else:
        try:
            run.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            raise CheckpointError(f"{ckpt / 'trainer_state.pt'}: the optimizer state does not fit this model: {e}") from None


def _engine_state(run: _Run, path: Path, with_state: bool) -> tuple[dict | None, dict | None, Path | None]:
    """(gathered weights, optimizer state, engine directory) for a checkpoint at `path`, as the engine keeps
    them: FSDP gathers full copies of its shards on rank 0; DDP's optimizer state is whole on every rank;
    DeepSpeed's ranks each write their optimizer partition to a directory. A collective: all ranks call it."""
    if run.engine == "fsdp":
        weights, optim = _fsdp_full_state(run.accelerator.unwrap_model(run.model), run.optimizer.optimizer, with_state)
        return weights, optim, None
    if not with_state:
        return None, None, None
    if run.engine == "ddp":
        return None, run.optimizer.state_dict(), None
    engine_dir = path.with_name(path.name + ".engine.tmp")
    run.model.save_checkpoint(str(engine_dir), tag="state", exclude_frozen_parameters=True)
    run.accelerator.wait_for_everyone()
    return None, None, engine_dir


def _trainer_state(run: _Run, pos: _Position, n_batches: int, optim: dict | None) -> dict:
    """trainer_state.pt: what `_restore` needs to continue exactly. A collective: all ranks call it."""
    accelerator = run.accelerator
    rng = [_rng_state()]
    if accelerator.num_processes > 1:  # every rank's RNG, in rank order

        rng = gather_object(rng)
    # A checkpoint on the last batch of an epoch resumes at the start of the next one.
    at_end = pos.batches_done >= n_batches
    return {
        "optimizer": optim, "scheduler": run.scheduler.state_dict(), "step": pos.step,
        "epoch": pos.epoch + 1 if at_end else pos.epoch, "batches_done": 0 if at_end else pos.batches_done,
        "rng": rng, "num_processes": accelerator.num_processes,
        "samples_seen": accelerator.reduce(torch.tensor(float(pos.seen), device=accelerator.device), "sum").item(),
    }


def _save(run: _Run, path: Path, pos: _Position, n_batches: int, with_state: bool) -> None:
    """A checkpoint at `path`, with the trainer state for resuming if `with_state`; the oldest checkpoints
    beyond train.keep_last are removed. All ranks call this: gathering sharded state is a collective."""
    accelerator, tc = run.accelerator, run.cfg.train
    accelerator.wait_for_everyone()
    weights, optim, engine_dir = _engine_state(run, path, with_state)
    state = _trainer_state(run, pos, n_batches, optim) if with_state else None
    if accelerator.is_main_process:
        save_checkpoint(accelerator.unwrap_model(run.model), run.cfg, path, trainer_state=state, state_dict=weights,
                        engine_dir=engine_dir)
        if with_state and tc.keep_last > 0:  # keep_last <= 0: keep every checkpoint
            old = sorted((p for p in path.parent.glob("checkpoint-*") if _CKPT.match(p.name)), key=lambda p: p.name)
            for p in old[: max(0, len(old) - tc.keep_last)]:
                shutil.rmtree(p, ignore_errors=True)
    accelerator.wait_for_everyone()


def _backward(run: _Run, batch, meta: dict, last_batch, sync: bool, pos: _Position, n_batches: int, window: dict,
              ctc_vocab) -> dict | None:
    """Forward and backward of one micro-batch, its loss added to `window`; returns the batch that stands
    in (at weight 0) for a later batch whose clips were all unreadable."""
    accelerator, model, tc = run.accelerator, run.model, run.cfg.train
    stand_in = batch is None and accelerator.num_processes > 1
    if stand_in:
        # Every clip of this rank's batch was unreadable (data.skip_bad), but the other ranks are
        # about to synchronise gradients: take part with the last good batch at weight 0.
        if last_batch is None:
            raise DataError(
                f"rank {accelerator.process_index}: every clip of its first batch is unreadable (data.skip_bad); with "
                "several processes a rank needs one readable batch before it can stand in for a bad one"
            )
        batch = last_batch
    if batch is None:
        return last_batch
    batch = {k: v.to(accelerator.device) for k, v in batch.items()}
    # Mean over the window's micro-batches (accelerator.backward divides by grad_accum).
    scale = accelerator.gradient_accumulation_steps / _window_len(pos.batches_done, n_batches, tc.grad_accum)
    with contextlib.nullcontext() if sync else accelerator.no_sync(model):
        with accelerator.autocast():
            loss = model(**batch, ctc_vocab=ctc_vocab).loss
        accelerator.backward(loss * (0.0 if stand_in else scale))
    if not stand_in:
        window["loss"] += float(loss.detach())
        window["micro"] += 1
        window["audio"] += meta["audio_seconds"]
        window["samples"] += meta["n_samples"]
        pos.seen += meta["n_samples"]
    return batch


def _optimizer_step(run: _Run, params: list) -> None:
    """Clip the gradients (DeepSpeed clips inside its step), step, zero them, advance the schedule."""
    if run.cfg.train.grad_clip > 0 and run.engine != "deepspeed":
        run.accelerator.clip_grad_norm_(params, run.cfg.train.grad_clip)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()


def _new_window() -> dict:
    """What is summed between two log records."""
    return {"loss": 0.0, "micro": 0, "audio": 0.0, "samples": 0, "t0": time.time()}


def _log_window(run: _Run, window: dict, pos: _Position, logger: _Logger, bar, start: float, adaptor_only: bool) -> dict:
    """Log the window's mean loss (over ranks) and throughput; returns a new window."""
    accelerator, device = run.accelerator, run.accelerator.device
    loss_mean = accelerator.reduce(torch.tensor(window["loss"] / max(window["micro"], 1), device=device), "mean").item()
    audio = accelerator.reduce(torch.tensor(window["audio"], device=device), "sum").item()
    n_samp = accelerator.reduce(torch.tensor(float(window["samples"]), device=device), "sum").item()
    dt = time.time() - window["t0"]
    record = {
        "step": pos.step, "epoch": pos.epoch, "loss": round(loss_mean, 5), "lr": run.scheduler.get_last_lr()[0],
        "audio_sec_per_sec": round(audio / dt, 3), "samples_per_sec": round(n_samp / dt, 3),
        "elapsed_s": round(time.time() - start, 1), "stage": "adaptor" if adaptor_only else "all",
        "samples_seen": int(accelerator.reduce(torch.tensor(float(pos.seen), device=device), "sum").item()),
    }
    logger.log(record)
    bar.set_postfix(loss=f"{loss_mean:.3f}", lr=f"{record['lr']:.2e}", aps=f"{record['audio_sec_per_sec']:.1f}")
    return _new_window()


def _evaluate(run: _Run, dev_loader, dev_samples, processor, ctc_vocab, step: int, logger: _Logger) -> None:
    """Dev loss (and the CTC reading of a dev clip, or dev BLEU with train.eval_bleu), logged."""
    accelerator, tc, device = run.accelerator, run.cfg.train, run.accelerator.device
    main = accelerator.is_main_process
    record = {"step": step, "dev_loss": dev_loss(run.model, dev_loader, device, tc.eval_max_samples, ctc_vocab)}
    if tc.objective == "ctc" and main:
        run.say(f"[train] step {step}: CTC reading of a dev clip: "
                f"{ctc_greedy(accelerator.unwrap_model(run.model), dev_loader, ctc_vocab, processor.tokenizer, device)!r}")
    if tc.eval_bleu and main and tc.objective == "lm":
        record.update(dev_bleu(accelerator.unwrap_model(run.model), processor, run.cfg, dev_samples[: tc.eval_max_samples], device))
        run.model.train()
    accelerator.wait_for_everyone()
    logger.log(record)
    run.say(f"[train] step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k != "step"))


def _out_of_time(deadline: float | None, accelerator) -> bool:
    """Whether train.max_minutes has passed; on every rank at the same step (or they deadlock)."""
    out_of_time = deadline is not None and time.time() > deadline
    if deadline is not None and accelerator.num_processes > 1:
        out_of_time = accelerator.reduce(torch.tensor(float(out_of_time), device=accelerator.device), "sum").item() > 0
    return out_of_time
