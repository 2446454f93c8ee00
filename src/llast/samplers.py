"""Batch samplers: which clips go together in a batch, for training (epochs, weighted resampling, rank
split, exact resume) and for decoding (`pack_by_duration`, also used by llast.decode.Translator)."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from llast.config import Config


def pack_by_duration(order: list[int], durations: list[float], max_batch_seconds: float, max_batch_size: int) -> list[list[int]]:
    """Cut `order` (indices, sorted by duration either way) into consecutive batches, greedily, while
    ``len(batch) * longest_in_batch <= max_batch_seconds`` and ``len(batch) <= max_batch_size``: the padded
    audio of a batch stays bounded. `durations[k]` is the duration of `order[k]`. A clip longer than
    max_batch_seconds forms a batch of its own."""
    batches: list[list[int]] = []
    batch: list[int] = []
    longest = 0.0
    for i, d in zip(order, durations):
        if batch and ((len(batch) + 1) * max(longest, d) > max_batch_seconds or len(batch) >= max_batch_size):
            batches.append(batch)
            batch, longest = [], 0.0
        batch.append(i)
        longest = max(longest, d)
    if batch:
        batches.append(batch)
    return batches


class _EpochBatchSampler(torch.utils.data.Sampler):
    """Epoch, weighted resampling, rank split and resume logic shared by the two batch samplers.

    Resume: ``state_dict()`` gives {"epoch", "batches_done"} (batches handed out in this epoch);
    after ``load_state_dict(state)`` the next iteration starts at that batch. ``set_epoch(e)`` with
    the loaded epoch keeps the resume point. With DataLoader workers the sampler runs ahead of
    training by the prefetched batches, so a training loop should save the batches it has consumed:
    ``state_dict(batches_done=n)``.

    Options of both samplers (`**options`): shuffle, seed (with the epoch, of every draw), num_replicas and
    rank (this rank's share of the batches), drop_last (drop the batches that do not split evenly
    among the ranks, instead of repeating some).
    """

    def __init__(self, n: int, weights: list[float] | None = None, shuffle: bool = True, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0, drop_last: bool = False):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        if weights is not None and len(weights) != n:
            raise ValueError(f"{len(weights)} weights for {n} samples")
        if weights is not None and any(w < 0 for w in weights):
            raise ValueError("sample weights must be >= 0")
        self.n = n
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64)
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = drop_last
        self.epoch = 0
        self.batches_done = 0
        self._resume_at = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def _rng(self, purpose: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, purpose])

    def _draw(self) -> np.ndarray:
        """This epoch's indices: weight w gives floor(w) copies plus one more with probability frac(w)."""
        if self.weights is None:
            return np.arange(self.n)
        whole = np.floor(self.weights).astype(np.int64)
        extra = self._rng(0).random(self.n) < (self.weights - whole)
        return np.repeat(np.arange(self.n), whole + extra)

    def _make_batches(self) -> list[list[int]]:
        raise NotImplementedError

    def _rank_batches(self) -> list[list[int]]:
        """The batches of this rank in this epoch (cached per epoch)."""
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        batches = self._make_batches()
        if self.num_replicas > 1:
            if self.drop_last:
                batches = batches[: len(batches) - len(batches) % self.num_replicas]
            elif batches and len(batches) % self.num_replicas:
                pad = self.num_replicas - len(batches) % self.num_replicas
                batches = batches + [batches[i % len(batches)] for i in range(pad)]  # same count on every rank
            batches = batches[self.rank :: self.num_replicas]
        self._cache = (self.epoch, batches)
        return batches

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (changes the resampling and shuffling); keeps a loaded resume point of that epoch."""
        if epoch != self.epoch:
            self.epoch = epoch
            self.batches_done = 0
            self._resume_at = 0

    def __len__(self) -> int:
        """Batches of this rank in the current epoch (the whole epoch, also when resuming mid-epoch)."""
        return len(self._rank_batches())

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._rank_batches()
        start, self._resume_at = self._resume_at, 0
        self.batches_done = start
        for batch in batches[start:]:
            self.batches_done += 1
            yield list(batch)

    def state_dict(self, batches_done: int | None = None) -> dict:
        return {"epoch": self.epoch, "batches_done": self.batches_done if batches_done is None else batches_done}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])
        self.batches_done = self._resume_at = int(state["batches_done"])


class DurationBatchSampler(_EpochBatchSampler):
    """Batches of similar-length clips whose padded audio is at most `max_batch_seconds`.

    Per epoch: draw the samples (weights), split them into `num_buckets` equal-count duration buckets,
    sort each bucket by duration (random tie order), cut batches greedily while
    ``len(batch) * max_duration_in_batch <= max_batch_seconds`` and ``len(batch) <= max_batch_size``
    (a clip longer than max_batch_seconds forms a batch of its own), then shuffle the batches.
    Yields lists of indices into `durations`.
    """

    def __init__(self, durations: list[float], weights: list[float] | None = None, max_batch_seconds: float = 120.0,
                 max_batch_size: int = 16, num_buckets: int = 10, **options):
        super().__init__(len(durations), weights, **options)
        if max_batch_seconds <= 0 or max_batch_size < 1 or num_buckets < 1:
            raise ValueError("max_batch_seconds, max_batch_size and num_buckets must be positive")
        self.durations = np.asarray(durations, dtype=np.float64)
        self.max_batch_seconds = max_batch_seconds
        self.max_batch_size = max_batch_size
        self.num_buckets = num_buckets

    def _make_batches(self) -> list[list[int]]:
        idx = self._draw()
        if self.shuffle:
            idx = self._rng(1).permutation(idx)  # random order among equal durations
        idx = idx[np.argsort(self.durations[idx], kind="stable")]
        batches: list[list[int]] = []
        for bucket in np.array_split(idx, min(self.num_buckets, max(len(idx), 1))):
            bucket = bucket.tolist()
            batches += pack_by_duration(bucket, self.durations[bucket].tolist(), self.max_batch_seconds, self.max_batch_size)
        if self.shuffle:
            order = self._rng(2).permutation(len(batches))
            batches = [batches[k] for k in order]
        return batches


class CountBatchSampler(_EpochBatchSampler):
    """Fixed `batch_size` batches in corpus order (shuffled with `shuffle`): the released LLaST code's way.

    Same interface as DurationBatchSampler; `durations` is only used for its length.
    """

    def __init__(self, durations: list[float], weights: list[float] | None = None, batch_size: int = 16, **options):
        super().__init__(len(durations), weights, **options)
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.batch_size = batch_size

    def _make_batches(self) -> list[list[int]]:
        idx = self._draw()
        if self.shuffle:
            idx = self._rng(1).permutation(idx)
        idx = idx.tolist()
        return [idx[i : i + self.batch_size] for i in range(0, len(idx), self.batch_size)]


def make_sampler(cfg: Config, samples, num_replicas: int = 1, rank: int = 0, shuffle: bool = True) -> "_EpochBatchSampler":
    """The batch sampler cfg.data.batching names, over `samples` (their durations and weights)."""
    durations = [s.duration or 0.0 for s in samples]
    weights = [s.weight for s in samples]
    d = cfg.data
    if d.batching == "duration":
        return DurationBatchSampler(
            durations, weights, max_batch_seconds=d.max_batch_seconds, max_batch_size=d.batch_size,
            num_buckets=d.num_buckets, shuffle=shuffle, seed=cfg.train.seed, num_replicas=num_replicas, rank=rank,
        )
    return CountBatchSampler(
        durations, weights, batch_size=d.batch_size, shuffle=shuffle, seed=cfg.train.seed,
        num_replicas=num_replicas, rank=rank,
    )
