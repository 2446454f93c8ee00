"""Where beam-5 decoding time goes (supplement to bench.py part 2): the same 16 dev clips, decoded as
bench.py decodes them (LoRA merged, shared prefill, 24 fixed output tokens), timed in three cuts:

    features+encoder+adaptor   processor + LLaST.embed_audio over all batches
    through 1st token          the whole generate() with 1 new token (encoder + adaptor + prefill + 1 step)
    24 tokens                  the whole generate() with 24 new tokens (what bench.py times)

so prefill ~ (1st token - encoder) and the 23 further beam-search steps ~ (24 tokens - 1st token).

    python bench/breakdown.py faithful 1 defaults 16 >> bench/results/breakdown_cpu.txt
"""

import datetime
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402


def run(name: str, bs: int, n_clips: int = 16) -> dict:
    from llast.audio import load_audio
    from llast.checkpoint import merge_lora_weights
    from llast.config import load_config
    from llast.decode import Translator
    from llast.lora import build_lora_model
    from llast.processor import Example

    cfg = load_config(bench.CONFIG, bench.FAITHFUL if name == "faithful" else [])
    torch.manual_seed(0)
    model = build_lora_model(cfg.model)
    merge_lora_weights(model)
    tr = Translator(model.eval(), cfg, device="cpu")
    clips = bench.dev_clips(n_clips)
    ex = [Example(load_audio(c["audio"], offset=c["offset"], duration=c["duration"]), c["src"], c["tgt"]) for c in clips]

    def timed(new_tokens: int) -> float:
        t0 = time.perf_counter()
        tr.generate(ex, tr.decode_config(num_beams=5, max_new_tokens=new_tokens, min_new_tokens=new_tokens, batch_size=bs))
        return time.perf_counter() - t0

    timed(1)  # warm-up
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(ex), bs):
            b = tr.processor(ex[i : i + bs], padding_side="left")
            model.embed_audio(b["input_features"], b["audio_lengths"])
    enc = time.perf_counter() - t0
    first, full = timed(1), timed(24)
    audio = sum(len(e.audio) for e in ex) / 16000
    return {"system": name, "batch": bs, "clips": len(ex), "audio_s": round(audio, 2), "encoder_s": round(enc, 2),
            "through_first_token_s": round(first, 2), "tokens24_s": round(full, 2),
            "prefill_s_approx": round(first - enc, 2), "steps_2_to_24_s_approx": round(full - first, 2)}


if __name__ == "__main__":
    args = sys.argv[1:] or ["faithful", "1", "defaults", "16"]
    print(f"# {datetime.datetime.now().astimezone().isoformat(timespec='seconds')} {bench.machine_info('cpu').get('git_commit')}")
    for name, bs in zip(args[::2], args[1::2]):
        print(run(name, int(bs)), flush=True)
