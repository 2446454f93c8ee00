"""Shape-true LLaST-2B on this CPU (issue #16): one training step and one beam-5 decode of the model that
configs/llast-2b.yaml describes (Whisper large-v2 encoder + TinyLlama-1.1B-Chat, S-LoRA r=128, L-LoRA r=512,
bf16), with random weights from the kept config.json files (`model.random_init=true`), through the real
CLI: `llast train` then `llast translate` on its checkpoint. Each command runs as its own process; its wall
time and peak resident memory (wait4's ru_maxrss) are recorded.

    python bench/shape_true.py --out bench/results/shape_true.json

What is NOT the paper's: the weights (random), the clips (synthetic tones, --seconds long) and the
tokenizer. TinyLlama's tokenizer is not kept offline, so a stand-in BPE tokenizer with Llama's special
tokens (<unk> 0, <s> 1, </s> 2) and TinyLlama's chat template is trained here on a few sentences
(`model.llm.tokenizer`); its ids index the real 32,000-row embedding. The encoder sees the config's
1500 frames (pad30), the LLM gets the clip's real frames, as in configs/llast-2b.yaml.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "llast-2b.yaml"
TINYLLAMA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + eos_token }}"
    "{% elif message['role'] == 'system' %}{{ '<|system|>\n' + message['content'] + eos_token }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\n' + message['content'] + eos_token }}{% endif %}"
    "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}{% endfor %}"
)
SENTENCES = [
    "<|user|> <|assistant|> <|system|> Translate the French sentence into English.",
    "Transcribe the French sentence into French.", "The weather is nice today and we go for a walk.",
    "Hello world, this is a test of the speech translation model.", "Bonjour le monde, ceci est un test.",
]


def stand_in_tokenizer(out: Path) -> Path:
    """A BPE tokenizer with Llama's special tokens and TinyLlama's chat template (ids < 32000)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(SENTENCES * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="</s>")
    fast.chat_template = TINYLLAMA_TEMPLATE
    fast.save_pretrained(out)
    return out


def corpus(root: Path, clips: int, seconds: float) -> Path:
    import numpy as np
    import soundfile as sf

    audio = root / "fr" / "clips_16k"
    audio.mkdir(parents=True)
    lines = ["path\tsentence\ttranslation\tclient_id"]
    t = np.arange(int(seconds * 16000)) / 16000
    for i in range(clips):
        wav = (0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t)).astype(np.float32)
        sf.write(audio / f"clip{i}.wav", wav, 16000)
        lines.append(f"clip{i}.wav\tBonjour le monde, ceci est un test.\t{SENTENCES[2 + i % 3]}\tspk{i}")
    tsv = root / "covost_v2.fr_en.train.tsv"
    tsv.write_text("\n".join(lines) + "\n")
    return tsv


def timed(cmd: list[str], log: Path) -> dict:
    """Run `cmd`; its wall seconds, peak RSS (GB) and exit status; output to `log`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    print("$ " + " ".join(cmd), flush=True)
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    rc = os.waitstatus_to_exitcode(status)
    tail = log.read_text()[-3000:]
    if rc != 0:
        raise SystemExit(f"command failed ({rc}):\n{tail}")
    return {"cmd": " ".join(cmd), "wall_s": round(wall, 1), "peak_rss_gb": round(usage.ru_maxrss / 1e6, 2), "log_tail": tail}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "shape_true.json"))
    ap.add_argument("--config", default=str(CONFIG), help="(for a quick check) another config")
    ap.add_argument("--clips", type=int, default=2, help="clips in the training batch (default 2)")
    ap.add_argument("--seconds", type=float, default=5.0, help="clip length (default 5 s, about CoVoST's median)")
    ap.add_argument("--new-tokens", type=int, default=32, help="decode: max new tokens (default 32)")
    args = ap.parse_args()
    py = [sys.executable, "-m", "llast.cli"]
    with tempfile.TemporaryDirectory(prefix="llast-shape-true-") as tmp:
        tmp = Path(tmp)
        tok = stand_in_tokenizer(tmp / "tokenizer")
        tsv = corpus(tmp / "data", args.clips, args.seconds)
        common = ["model.random_init=true", f"model.llm.tokenizer={tok}"]
        train = timed(py + ["train", args.config, *common,
                            f"data.train=[{{format: covost, path: {tsv}, audio_dir: {tsv.parent / 'fr' / 'clips_16k'}}}]",
                            "data.dev=[]", "data.asr_augment=false", f"data.batch_size={args.clips}",
                            "train.grad_accum=1", "train.max_steps=1", "train.log_every=1", f"train.out_dir={tmp / 'run'}"],
                      tmp / "train.log")
        decode = timed(py + ["translate", str(tsv.parent / "fr" / "clips_16k" / "clip0.wav"), "--model",
                             str(tmp / "run" / "final"), "--src", "fr", "--tgt", "en", "--num-beams", "5",
                             "--max-new-tokens", str(args.new_tokens), "--dtype", "bfloat16", "--json"], tmp / "decode.log")
    step = [ln for ln in train["log_tail"].splitlines() if "[train] done" in ln]
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "loadavg_at_end": os.getloadavg(),
                    "python": platform.python_version()},
        "config": args.config, "clips": args.clips, "seconds": args.seconds,
        "new_tokens_max": args.new_tokens, "train": train, "train_done_line": step[-1] if step else None,
        "decode": decode,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"train step (process): {train['wall_s']} s, peak RSS {train['peak_rss_gb']} GB; {result['train_done_line']}")
    print(f"beam-5 decode (process): {decode['wall_s']} s, peak RSS {decode['peak_rss_gb']} GB")


if __name__ == "__main__":
    main()
