"""Plot a training log (log.jsonl written by `llast train`) to a PNG: the learning curves.

    python scripts/plot_log.py runs/demo/phrasebook/log.jsonl docs/demo/phrasebook_loss.png "title"

Left: training loss and dev loss; right (when the log has them): dev BLEU per target language. The x axis
is training samples seen (`samples_seen`, logged by llast train; older logs without it: optimizer steps).
"""

import json
import sys

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(log_path: str, out_png: str, title: str = "") -> None:
    train, dev = {}, {}
    for line in open(log_path):
        r = json.loads(line)
        if "loss" in r:
            train[r["step"]] = r  # the last record of a step wins (resumed runs)
        elif "dev_loss" in r:
            dev[r["step"]] = r
    steps = sorted(train)
    by_samples = steps and all("samples_seen" in train[s] for s in steps)
    if by_samples:  # dev records carry only their step: place them on the train records' samples axis
        xs_of = lambda ss: np.interp(ss, [0] + steps, [0] + [train[s]["samples_seen"] for s in steps])  # noqa: E731
        xlabel = "training samples seen"
    else:
        xs_of = lambda ss: np.asarray(ss, dtype=float)  # noqa: E731
        xlabel = "optimizer step"
    bleu_keys = sorted({k for r in dev.values() for k in r if k.startswith("dev_bleu")})
    fig, axes = plt.subplots(1, 2 if bleu_keys else 1, figsize=(11 if bleu_keys else 7, 4), squeeze=False)
    ax = axes[0][0]
    ax.plot(xs_of(steps), [train[s]["loss"] for s in steps], label="train loss", lw=1.2)
    dsteps = sorted(dev)
    if dsteps:
        ax.plot(xs_of(dsteps), [dev[s]["dev_loss"] for s in dsteps], "o-", label="dev loss")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss")
    ax.set_title(title or log_path)
    ax.grid(alpha=0.3)
    ax.legend()
    if bleu_keys:
        ax = axes[0][1]
        for k in bleu_keys:
            ss = [s for s in dsteps if k in dev[s]]
            ax.plot(xs_of(ss), [dev[s][k] for s in ss], "o-", label=k.replace("dev_bleu_", "dev BLEU -> "))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("BLEU (dev, greedy)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    print(f"wrote {out_png}")


if __name__ == "__main__":
    main(*sys.argv[1:])
