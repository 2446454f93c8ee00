"""`llast train` on the tiny models: recorded losses, learning, exact resume after SIGKILL,
2 processes (gloo) = 1 process with the same global batch, LST's two stages, stopping, errors."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import tiny
from llast.config import load_config
from llast.errors import CheckpointError, DataError
from llast.train import find_latest_checkpoint, train

# Losses of the first 6 steps of the tiny config (seed 0, LoRA dropout 0.05, lr 3e-3, count batches of 4),
# recorded from a run of this code. A change here means the data order, the RNG streams, the
# initialisation or the update rule changed.
RECORDED_LOSSES = [5.75734, 5.78825, 5.76802, 5.7136, 5.74633, 5.75788]

# The resume and two-process runs: odd batch counts with accumulation windows that end early at epoch
# ends (48 samples in batches of 5 = 10 batches per epoch; windows of 3: 3, 3, 3, 1 -> 4 steps per epoch).
ACCUM = ["data.batch_size=5", "train.grad_accum=3"]


def _env() -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _cli(yaml_path: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "llast.cli", "train", str(yaml_path), *overrides]


def _run(cmd: list[str], timeout: float = 120) -> None:
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-4000:]}"


def _records(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "log.jsonl").read_text().splitlines() if line.strip()]


def _losses(out_dir: Path) -> dict[int, float]:
    """step -> loss; the last record of a step wins (a resumed run logs again the steps after its checkpoint)."""
    return {r["step"]: r["loss"] for r in _records(out_dir) if "loss" in r}


def _tb_steps(out_dir: Path, tag: str = "loss") -> list[int]:
    """The steps of TensorBoard's `tag` events in out_dir/tb, in file order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out_dir / "tb"), purge_orphaned_data=False)
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    out = {f"adaptor.{k}": v for k, v in load_file(str(ckpt / "adaptor.safetensors")).items()}
    for part in ("encoder_lora", "llm_lora"):
        f = ckpt / part / "adapter_model.safetensors"
        if f.is_file():
            out.update({f"{part}.{k}": v for k, v in load_file(str(f)).items()})
    return out


def _assert_same_weights(a: Path, b: Path, atol: float) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=atol, rtol=0, msg=lambda m: f"{k}: {m}")


@pytest.fixture(scope="module")
def setup(tiny_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    corpus = tiny.write_corpus(root / "corpus")

    def make(name: str, **train_overrides) -> tuple[Path, Path]:
        out = root / name
        y = tiny.write_train_yaml(root / f"{name}.yaml", tiny_dirs["whisper"], tiny_dirs["llama"], corpus, out,
                                  **train_overrides)
        return y, out

    return make


# ----------------------------------------------------------------------------- losses


@pytest.fixture(scope="module")
def recorded_run(setup):
    y, out = setup("recorded", max_steps=6)
    final = train(load_config(y), progress=False)
    return out, final


def test_fixed_seed_run_matches_recorded_losses(recorded_run):
    out, final = recorded_run
    assert final == out / "final" and (final / "llast.json").is_file()
    losses = _losses(out)
    assert sorted(losses) == list(range(1, 7))
    got = [losses[s] for s in range(1, 7)]
    assert got == pytest.approx(RECORDED_LOSSES, rel=1e-3), got
    records = [r for r in _records(out) if "loss" in r]
    assert all(r["stage"] == "all" and r["epoch"] == 0 for r in records)
    assert records[-1]["lr"] == pytest.approx(0.0)  # linear decay to 0 at max_steps
    # The schedule: warmup 3% of 6 steps -> 1 step, then linear decay.
    assert records[0]["lr"] == pytest.approx(3e-3 * 5 / 5) and records[1]["lr"] == pytest.approx(3e-3 * 4 / 5)


def test_loss_decreases(setup):
    y, out = setup("learn", max_steps=24, lr=3e-2, warmup_ratio=0.1)
    train(load_config(y), progress=False)
    losses = [v for _, v in sorted(_losses(out).items())]
    assert len(losses) == 24 and all(math.isfinite(v) for v in losses)
    first5, last5 = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last5 < losses[0] - 0.08, losses
    assert last5 < first5 - 0.05, losses


# ----------------------------------------------------------------------------- resume


def test_sigkill_then_resume_gives_the_uninterrupted_losses(setup):
    steps = 12
    common = [f"train.max_steps={steps}", "train.save_every=1", "train.keep_last=2", *ACCUM]
    y_ref, out_ref = setup("uninterrupted")
    y, out = setup("killed")
    ref = subprocess.Popen(_cli(y_ref, *common), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    # Kill mid-run: as soon as the third checkpoint is complete (every step is checkpointed).
    proc = subprocess.Popen(_cli(y, *common), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (out / "checkpoint-0000003" / "trainer_state.pt").is_file():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline, "no checkpoint-0000003 after 120 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "final").exists(), "the kill landed after the run had finished"
    killed_at = max(_losses(out))
    assert 3 <= killed_at < steps
    latest = find_latest_checkpoint(out)
    assert latest is not None and int(latest.name.split("-")[1]) >= 3

    _run(_cli(y, *common))  # --resume auto: the latest complete checkpoint
    _, err = ref.communicate(timeout=180)
    assert ref.returncode == 0, err[-4000:]

    a, b = _losses(out_ref), _losses(out)
    assert sorted(a) == sorted(b) == list(range(1, steps + 1))
    # One record per step after the resume, in log.jsonl and in TensorBoard.
    assert [r["step"] for r in _records(out) if "loss" in r] == list(range(1, steps + 1))
    assert _tb_steps(out) == list(range(1, steps + 1))
    for s in a:
        assert b[s] == pytest.approx(a[s], abs=1e-5), (s, a[s], b[s])
    _assert_same_weights(out_ref / "final", out / "final", atol=1e-6)
    assert [r["epoch"] for r in _records(out_ref) if "loss" in r] == [(s - 1) // 4 for s in range(1, steps + 1)]

    # keep_last=2: only the two newest checkpoints remain, and no temporary that could pass for one.
    for d in (out, out_ref):
        assert sorted(p.name for p in d.glob("checkpoint-*")) == ["checkpoint-0000011", "checkpoint-0000012"]
        assert not list(d.glob("*.tmp")) and not list(d.glob("*.old"))
        state = torch.load(d / "checkpoint-0000012" / "trainer_state.pt", weights_only=True)
        assert state["step"] == 12 and state["epoch"] == 3 and state["batches_done"] == 0  # epoch end -> next epoch


def test_resume_from_an_epoch_end_checkpoint(setup):
    """A checkpoint on the last (short) accumulation window of an epoch resumes at the next epoch's start."""
    overrides = ["train.max_steps=5", "train.save_every=4", "train.keep_last=0", *ACCUM]
    y, out = setup("epoch_end_ref")
    train(load_config(y, overrides), progress=False)
    state = torch.load(out / "checkpoint-0000004" / "trainer_state.pt", weights_only=True)
    assert (state["step"], state["epoch"], state["batches_done"]) == (4, 1, 0)
    assert (out / "checkpoint-0000005").is_dir()  # keep_last=0 keeps every checkpoint

    y2, out2 = setup("epoch_end_resumed")
    out2.mkdir()
    shutil.copytree(out / "checkpoint-0000004", out2 / "checkpoint-0000004")
    (out2 / "checkpoint-0000099.tmp").mkdir()  # the leftover of a killed save
    (out2 / "log.jsonl").write_text('{"step": 4, "loss": 5.7}\n{"step": 5, "lo')  # a line cut off by the kill
    train(load_config(y2, overrides), progress=False)
    assert not (out2 / "checkpoint-0000099.tmp").exists()
    lines = (out2 / "log.jsonl").read_text().splitlines()
    assert lines[0] == '{"step": 4, "loss": 5.7}' and len(lines) == 2  # the torn line is dropped
    a, b = _losses(out), _losses(out2)
    assert sorted(b) == [4, 5]
    for s in (5,):
        assert b[s] == pytest.approx(a[s], abs=1e-5)
    _assert_same_weights(out / "final", out2 / "final", atol=1e-6)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_resume_passes_over_a_corrupt_latest_checkpoint(setup, capfd):
    """The newest checkpoints cannot be read back (a truncated adaptor.safetensors, a truncated
    trainer_state.pt): resume warns and continues from the newest complete one, with the losses and
    weights of an uninterrupted run and one log record per step."""
    overrides = ["train.max_steps=6", "train.save_every=1", "train.keep_last=0", *ACCUM]
    y, out = setup("corrupt_ref")
    train(load_config(y, overrides), progress=False)
    y2, out2 = setup("corrupt_resumed")
    shutil.copytree(out, out2)
    shutil.rmtree(out2 / "final")
    shutil.rmtree(out2 / "checkpoint-0000006")
    _truncate(out2 / "checkpoint-0000005" / "trainer_state.pt")
    _truncate(out2 / "checkpoint-0000004" / "adaptor.safetensors")
    shutil.copytree(out2 / "checkpoint-0000002", out2 / "checkpoint-0000002.old")  # a kill after the save's renames
    capfd.readouterr()
    train(load_config(y2, overrides), progress=False)
    err = capfd.readouterr().err
    assert "cannot resume from checkpoint-0000005" in err and "trainer_state.pt" in err
    assert "cannot resume from checkpoint-0000004" in err and "adaptor.safetensors" in err
    assert "resumed from" in err and "checkpoint-0000003 at step 3" in err
    assert not (out2 / "checkpoint-0000002.old").exists()
    a, b = _losses(out), _losses(out2)
    assert sorted(b) == list(range(1, 7))
    for s in range(4, 7):
        assert b[s] == pytest.approx(a[s], abs=1e-5), (s, a[s], b[s])
    _assert_same_weights(out / "final", out2 / "final", atol=1e-6)
    assert [r["step"] for r in _records(out2) if "loss" in r] == list(range(1, 7))
    assert _tb_steps(out2) == list(range(1, 7))


def test_resume_with_every_checkpoint_corrupt_is_one_clear_error(setup, tmp_path):
    y, out = setup("all_corrupt", max_steps=2, save_every=1, keep_last=0)
    train(load_config(y), progress=False)
    for ckpt in out.glob("checkpoint-*"):
        _truncate(ckpt / "trainer_state.pt")
    with pytest.raises(CheckpointError, match=r"none of its 2 checkpoints reads back.*move them away"):
        train(load_config(y), progress=False)


def test_leftovers_of_a_killed_save_are_put_back_or_removed(tmp_path):
    from llast.checkpoint import clean_leftovers

    for name in ("checkpoint-0000004.old", "checkpoint-0000005", "checkpoint-0000005.old", "checkpoint-0000006.tmp",
                 "final.tmp", "checkpoint-0000007.engine.tmp", "notes.old"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "llast.json").write_text(name)
    done = clean_leftovers(tmp_path)
    # checkpoint-4 was renamed away and its successor never renamed in: the old version comes back.
    assert (tmp_path / "checkpoint-0000004" / "llast.json").read_text() == "checkpoint-0000004.old"
    assert (tmp_path / "checkpoint-0000005" / "llast.json").read_text() == "checkpoint-0000005"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-0000004", "checkpoint-0000005", "notes.old"]
    assert len(done) == 5


# ----------------------------------------------------------------------------- two processes


def test_two_processes_match_one_process_with_the_same_global_batch(setup):
    """torchrun, 2 CPU processes (gloo), batches of 2 and no accumulation == 1 process accumulating 2
    batches of 2: rank r gets every 2nd batch, so both see the same 4 clips per step. LoRA dropout is
    off (each rank has its own dropout RNG stream), and LST's stage switch is on (LoRA must be
    all-reduced in stage 2 although it was frozen in stage 1)."""
    common = ["train.max_steps=6", "data.batch_size=2", "train.lr=1e-2", "model.adaptor_only_steps=2",
              "model.encoder.lora.dropout=0", "model.llm.lora.dropout=0"]
    y2, out2 = setup("ddp2")
    y1, out1 = setup("ddp1")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "llast.cli", "train", str(y2), *common, "train.grad_accum=1"]
    _run(torchrun, timeout=180)
    _run(_cli(y1, *common, "train.grad_accum=2"))

    rec2 = [r for r in _records(out2) if "loss" in r]
    assert len(rec2) == 6, "every rank logged: the processes did not form one group"
    assert [r["stage"] for r in rec2] == ["adaptor"] * 2 + ["all"] * 4
    a, b = _losses(out1), _losses(out2)
    assert sorted(a) == sorted(b) == list(range(1, 7))
    for s in a:
        assert b[s] == pytest.approx(a[s], rel=1e-4), (s, a[s], b[s])
    _assert_same_weights(out1 / "final", out2 / "final", atol=1e-5)
    state = torch.load(out2 / "checkpoint-0000006" / "trainer_state.pt", weights_only=True)
    assert state["num_processes"] == 2 and len(state["rng"]) == 2  # one RNG state per rank


# ----------------------------------------------------------------------------- LST stages


def test_lst_two_stages(setup):
    y, out = setup("lst", max_steps=5, save_every=1, keep_last=0)
    train(load_config(y, ["model.adaptor_only_steps=3"]), progress=False)
    w = {s: _weights(out / f"checkpoint-{s:07d}") for s in range(1, 6)}
    lora = [k for k in w[1] if "lora" in k]
    adaptor = [k for k in w[1] if k.startswith("adaptor.")]
    assert lora and adaptor
    for s in (2, 3):  # stage 1: LoRA frozen (B still at its zero initialisation)
        assert all(torch.equal(w[s][k], w[1][k]) for k in lora)
    assert all(not w[3][k].any() for k in lora if "lora_B" in k)
    assert any(not torch.equal(w[4][k], w[3][k]) for k in lora if "encoder_lora" in k)  # stage 2: both LoRAs train
    assert any(not torch.equal(w[4][k], w[3][k]) for k in lora if "llm_lora" in k)
    for s in range(2, 6):  # the adaptor trains from step 1
        assert any(not torch.equal(w[s][k], w[s - 1][k]) for k in adaptor)
    assert [r["stage"] for r in _records(out) if "loss" in r] == ["adaptor"] * 3 + ["all"] * 2


# ----------------------------------------------------------------------------- stopping, dev loss, errors


def test_max_minutes_stops_early_with_final_and_checkpoint(setup):
    y, out = setup("timed", max_steps=200, max_minutes=1e-6)
    final = train(load_config(y), progress=False)
    assert (final / "llast.json").is_file()
    assert sorted(_losses(out)) == [1]
    assert find_latest_checkpoint(out) == out / "checkpoint-0000001"
    # `final/` has no trainer state: resuming from it is an error that says so.
    y2, _ = setup("timed_again", max_steps=3)
    with pytest.raises(CheckpointError, match="trainer_state.pt"):
        train(load_config(y2), resume=str(final), progress=False)
    with pytest.raises(CheckpointError, match="not found"):
        train(load_config(y2), resume=str(out / "checkpoint-0000777"), progress=False)


def test_stop_at_keeps_the_full_schedule_and_resumes_to_its_end(setup, recorded_run):
    """train.stop_at: the run stops (with a checkpoint) at that step, at the learning rates of the whole
    max_steps schedule; the same command without it goes on to the end as an unbroken run would."""
    ref_out, _ = recorded_run  # max_steps=6, uninterrupted
    y, out = setup("stopped", max_steps=6)
    final = train(load_config(y, ["train.stop_at=3"]), progress=False)
    assert (final / "llast.json").is_file()
    assert sorted(_losses(out)) == [1, 2, 3]
    assert find_latest_checkpoint(out) == out / "checkpoint-0000003"
    lrs = {r["step"]: r["lr"] for r in _records(out) if "lr" in r}
    ref_lrs = {r["step"]: r["lr"] for r in _records(ref_out) if "lr" in r}
    assert lrs[3] == pytest.approx(ref_lrs[3]) and lrs[3] != ref_lrs[6]
    train(load_config(y), progress=False)
    a, b = _losses(ref_out), _losses(out)
    assert sorted(b) == list(range(1, 7))
    for s in a:
        assert b[s] == pytest.approx(a[s], abs=1e-5), (s, a[s], b[s])


def test_no_training_data_is_a_data_error(setup):
    y, out = setup("nodata", max_steps=2)
    with pytest.raises(DataError, match="data.train"):
        train(load_config(y, ["data.train=[]"]), progress=False)
    assert not (out / "final").exists()


def test_dev_loss_is_logged(setup, recorded_run):
    y, out = setup("dev", max_steps=6, eval_every=3)
    train(load_config(y), progress=False)
    dev = [r for r in _records(out) if "dev_loss" in r]
    assert [r["step"] for r in dev] == [3, 6]
    assert all(math.isfinite(r["dev_loss"]) and 0 < r["dev_loss"] < 20 for r in dev)
    assert dev[1]["dev_loss"] != dev[0]["dev_loss"]
    # Evaluation consumes no training randomness: the losses are exactly those of the same run without it.
    assert _losses(out) == _losses(recorded_run[0])


def test_dev_bleu_is_logged(setup):
    y, out = setup("devbleu", max_steps=2, eval_every=2, eval_bleu=True, eval_max_samples=3)
    train(load_config(y), progress=False)
    dev = [r for r in _records(out) if "dev_loss" in r]
    assert len(dev) == 1 and dev[0]["step"] == 2
    assert 0.0 <= dev[0]["dev_bleu_en"] <= 100.0


# ----------------------------------------------------------------------------- engines


def test_mixed_precision_auto_follows_the_launcher(monkeypatch):
    from llast.train import _mixed_precision

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    assert _mixed_precision("auto") == ("bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")  # what `accelerate launch --mixed_precision fp16` sets
    assert _mixed_precision("auto") == "fp16"
    assert _mixed_precision("no") == "no"  # an explicit setting wins


def test_fsdp_checkpoint_gathers_the_sharded_trainable_state(tiny_dirs, tmp_path):
    """FSDP2 (torch fully_shard, one FSDP unit per transformer block as configs/accelerate/fsdp.yaml asks,
    CPU + gloo, one process): the checkpoint written from the sharded model after a step equals the
    unsharded model's after the same step, loads strictly, and its optimizer state round-trips."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
    from torch.distributed.fsdp import fully_shard

    from llast.checkpoint import load_checkpoint, save_checkpoint
    from llast.lora import apply_lora
    from llast.model import build_model
    from llast.processor import Example, build_processor
    from llast.train import _fsdp_full_state

    cfg = tiny.tiny_config(tiny_dirs["whisper"], tiny_dirs["llama"])
    cfg.model.encoder.lora.dropout = cfg.model.llm.lora.dropout = 0.0

    def built():
        torch.manual_seed(0)
        m = build_model(cfg.model)
        apply_lora(m, cfg.model)
        return m

    def one_step(m):
        params = [p for n, p in m.named_parameters() if n.startswith("adaptor.") or "lora_" in n]
        opt = torch.optim.AdamW(params, lr=1e-2)
        proc = build_processor(cfg.model, encoder_config=m.encoder_config)
        batch = proc([Example(tiny.clip(1.0, seed=s), "fr", "en", "translate", "hello world") for s in range(2)])
        m(**batch).loss.backward()
        opt.step()
        return opt

    plain = built()
    one_step(plain)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        sharded = built()
        assert sharded._no_split_modules == ["LlamaDecoderLayer", "WhisperEncoderLayer"]
        for mod in list(sharded.modules()):
            if type(mod).__name__ in sharded._no_split_modules:
                fully_shard(mod)
        fully_shard(sharded)
        opt = one_step(sharded)
        weights, optim = _fsdp_full_state(sharded, opt, with_optimizer=True)
        expected = {n: p for n, p in plain.named_parameters() if n.startswith("adaptor.") or "lora_" in n}
        assert set(weights) == set(expected)
        for n, p in expected.items():
            torch.testing.assert_close(weights[n], p.detach(), atol=1e-6, rtol=0, msg=lambda m: f"{n}: {m}")
        assert set(optim["state"]) == set(expected)  # keyed by parameter name, unsharded
        set_optimizer_state_dict(sharded, opt, optim, options=StateDictOptions(full_state_dict=True))
        save_checkpoint(sharded, cfg, tmp_path / "ckpt", trainer_state={"optimizer": optim}, state_dict=weights)
    finally:
        dist.destroy_process_group()
    loaded, _ = load_checkpoint(tmp_path / "ckpt")  # strict
    for n, p in loaded.named_parameters():
        if n in expected:
            torch.testing.assert_close(p, expected[n].detach(), atol=1e-6, rtol=0)


def test_two_processes_survive_a_batch_of_only_unreadable_clips(setup):
    """data.skip_bad with 2 processes: a rank whose whole batch is unreadable stands in with its last good
    batch at weight 0, so the other rank's gradient all-reduce does not wait forever."""
    from llast.data import build_samples
    from llast.samplers import make_sampler

    y, out = setup("badrank", max_steps=4)
    common = ["data.batch_size=1", "data.skip_bad=true", "train.max_steps=4"]
    cfg = load_config(y, common)
    samples = build_samples(cfg.data.train, cfg.data.asr_augment, cfg.data.asr_weight)
    order = {}
    for rank in (0, 1):
        sampler = make_sampler(cfg, samples, num_replicas=2, rank=rank)
        sampler.set_epoch(0)
        order[rank] = [samples[b[0]].audio for b in sampler]
    # a clip in rank 1's third batch (of one clip) and in neither rank's first batch (the ASR copy of a
    # clip is a second sample of the same file)
    bad = Path(next(a for a in order[1][2:4] if a not in (order[0][0], order[1][0])))
    saved = bad.read_bytes()
    try:
        import soundfile as sf

        sf.write(bad, [0.0] * 8000, 16000)  # a readable header, but silent: unreadable for training
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    "-m", "llast.cli", "train", str(y), *common]
        _run(torchrun, timeout=120)  # a stall would time out here
    finally:
        bad.write_bytes(saved)
    assert sorted(_losses(out)) == [1, 2, 3, 4]  # every step was taken, by both ranks together
    assert all(math.isfinite(v) for v in _losses(out).values())


class _Payload:
    """Unpickling this runs `os.system`-like code: what a crafted trainer_state.pt would carry."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


def test_crafted_trainer_state_is_refused_not_run(setup, tmp_path):
    y, out = setup("crafted", max_steps=2, save_every=1)
    train(load_config(y), progress=False)
    ckpt = find_latest_checkpoint(out)
    marker = tmp_path / "code-ran.txt"
    state = ckpt / "trainer_state.pt"
    torch.save({"step": 1, "evil": _Payload(str(marker))}, state)
    y2, _ = setup("crafted_resume", max_steps=3)
    with pytest.raises(CheckpointError, match="refused to load"):
        train(load_config(y2), resume=str(ckpt), progress=False)
    assert not marker.exists()
