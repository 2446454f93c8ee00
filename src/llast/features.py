"""The frozen encoder's output, computed once per clip and kept on disk (``data.feature_cache``).

With S-LoRA off the encoder never changes during training, so encoding every clip again in every
epoch is wasted work: the cache encodes each clip once and the training batches carry its states
(``encoder_states``) instead of log-mel features. A clip's entry is keyed by the clip (path, offset,
duration, size, modification time) and the encoder (name, input_length, dtype), so a changed clip or
encoder never reads a stale entry.

    cache_dir/ab/abcdef....npz      states (T, D) float16 (the real frames only), n_samples ()
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from llast.audio import load_audio
from llast.config import ModelConfig
from llast.errors import AudioError, ConfigError
from llast.model import encoder_output_length

CACHE_VERSION = 1  # bump when what an entry holds changes


def check_cacheable(cfg: ModelConfig) -> None:
    """The cache holds the frozen encoder's output: S-LoRA (which changes it) rules it out."""
    if cfg.encoder.lora.enabled:
        raise ConfigError("data.feature_cache: the encoder trains (model.encoder.lora.enabled=true), so its output "
                          "cannot be cached; turn S-LoRA off or unset data.feature_cache")


def cache_key(sample, cfg: ModelConfig) -> str:
    """Hex digest naming a clip's entry: the clip as read (file identity, offset, duration) and the encoder."""
    st = os.stat(sample.audio)
    ident = [CACHE_VERSION, str(Path(sample.audio).resolve()), st.st_size, st.st_mtime_ns, sample.offset,
             sample.duration, cfg.encoder.name, cfg.encoder.input_length, cfg.dtype]
    return hashlib.sha1(json.dumps(ident).encode()).hexdigest()


def entry_path(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir) / key[:2] / f"{key}.npz"


def load_entry(path: Path) -> tuple[np.ndarray, int]:
    """(states (T, D) float16, n_samples) of one entry."""
    with np.load(path, allow_pickle=False) as z:
        return z["states"], int(z["n_samples"])


def _save_entry(path: Path, states: np.ndarray, n_samples: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, states=states.astype(np.float16), n_samples=np.int64(n_samples))
    os.replace(tmp, path)


@torch.no_grad()
def build_cache(model, processor, samples, cache_dir: str | Path, max_seconds: float, batch_size: int = 16,
                skip_bad: bool = False, progress: bool = True) -> dict:
    """Encode every clip of `samples` that has no entry in `cache_dir` yet; returns counts.

    A clip is encoded once even when several samples use it (a translation sample and its ASR twin).
    Unreadable clips raise AudioError, or with `skip_bad` are left out (the dataset skips them later).
    """
    todo: dict[str, object] = {}
    for s in samples:
        key = cache_key(s, model.cfg)
        if key not in todo and not entry_path(cache_dir, key).is_file():
            todo[key] = s
    stats = {"clips": len({cache_key(s, model.cfg) for s in samples}), "encoded": 0, "unreadable": 0}
    items = list(todo.items())
    was_training = model.training
    model.eval()
    device = next(model.adaptor.parameters()).device
    bar = tqdm(total=len(items), desc="encoding clips (feature cache)", unit="clip", disable=not progress)
    for i in range(0, len(items), batch_size):
        audios, keys = [], []
        for key, s in items[i : i + batch_size]:
            try:
                audios.append(load_audio(s.audio, offset=s.offset, duration=s.duration, max_seconds=max_seconds))
                keys.append(key)
            except AudioError:
                if not skip_bad:
                    raise
                stats["unreadable"] += 1
        if audios:
            feats, lengths = processor.features(audios)
            states, _ = model.encode(feats.to(device), lengths.to(device))  # (B, T, D)
            frames = encoder_output_length(lengths, model.encoder_config)
            for key, st, n_frames, n in zip(keys, states.float().cpu().numpy(), frames.tolist(), lengths.tolist()):
                _save_entry(entry_path(cache_dir, key), st[:n_frames], n)
            stats["encoded"] += len(keys)
        bar.update(len(items[i : i + batch_size]))
    bar.close()
    model.train(was_training)
    return stats


def pad_states(states: list[np.ndarray]) -> torch.Tensor:
    """(T_i, D) arrays -> (B, max T_i, D) float32, zero padded."""
    width = max(s.shape[0] for s in states)
    out = torch.zeros(len(states), width, states[0].shape[1])
    for i, s in enumerate(states):
        out[i, : s.shape[0]] = torch.from_numpy(s.astype(np.float32))
    return out
