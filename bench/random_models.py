"""Randomly initialised copies of prepared models: same architecture, config and tokenizer, random weights.

For timing runs on a machine the real weights cannot reach (the GPU bench: a lent GPU machine takes
64 MiB per call, SmolLM2-135M alone is 538 MB). Speed does not depend on the weight values once the
output length is fixed, which the bench does (min_new_tokens = max_new_tokens). Never for quality.

    python bench/random_models.py SRC_DIR OUT_DIR      # SRC_DIR: config.json + tokenizer files
    python bench/random_models.py --pack MODEL_DIR OUT # copy only the small files of a prepared model
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

SMALL = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
         "special_tokens_map.json", "preprocessor_config.json", "processor_config.json")


def pack(src: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in SMALL:
        if (src / name).is_file():
            shutil.copy2(src / name, out / name)


def randomize(src: Path, out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    cfg = AutoConfig.from_pretrained(src)
    if cfg.model_type == "whisper":
        model = WhisperForConditionalGeneration(cfg)
    else:
        model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(out)
    pack(src, out)  # after: save_pretrained writes a default generation_config.json (Whisper needs its own)
    (out / "RANDOM_WEIGHTS").write_text(json.dumps({"source": str(src), "seed": seed}))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--pack", action="store_true", help="only copy config and tokenizer files")
    args = ap.parse_args()
    if args.pack:
        pack(args.src, args.out)
    else:
        randomize(args.src, args.out)
    print(args.out)


if __name__ == "__main__":
    main()
