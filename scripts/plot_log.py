"""Plot a training log (log.jsonl written by `llast train`) to a PNG: training loss (and dev loss).

    python scripts/plot_log.py runs/demo/log.jsonl docs/demo_loss.png
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(log_path: str, out_png: str, title: str = "") -> None:
    steps, losses, dev_steps, dev = {}, {}, [], []
    for line in open(log_path):
        r = json.loads(line)
        if "loss" in r:
            losses[r["step"]] = r["loss"]  # the last record of a step wins (resumed runs)
        if "dev_loss" in r:
            dev_steps.append(r["step"])
            dev.append(r["dev_loss"])
    xs = sorted(losses)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(xs, [losses[x] for x in xs], label="train loss", lw=1.2)
    if dev:
        ax.plot(dev_steps, dev, "o-", label="dev loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (target tokens)")
    ax.set_title(title or log_path)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    print(f"wrote {out_png}")


if __name__ == "__main__":
    main(*sys.argv[1:])
