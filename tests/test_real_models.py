"""Mini LLaST on the REAL bundled weights (prepared by `llast models prepare`, as `make test` does)."""

import pytest
import torch

import tiny
from llast import assets
from llast.config import from_dict
from llast.lora import apply_lora, param_counts
from llast.model import build_model
from llast.processor import Example, build_processor

pytestmark = pytest.mark.real


@pytest.fixture(scope="module", params=["smollm2-135m-instruct", "gemma3-270m"])
def mini(request):
    assets.prepare(["whisper-base", request.param])
    cfg = from_dict({
        "model": {
            "encoder": {"name": "whisper-base", "lora": {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]}},
            "adaptor": {"stack": 4},
            "llm": {"name": request.param, "lora": {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]}},
        }
    })
    torch.manual_seed(0)
    model = build_model(cfg.model)
    apply_lora(model, cfg.model)
    return model, build_processor(cfg.model, encoder_config=model.encoder_config), cfg


def test_mini_llast_forward_backward_dual_lora(mini):
    model, proc, cfg = mini
    model.train()
    batch = proc([
        Example(tiny.clip(1.5, 0), "de", "en", "translate", "Good morning."),
        Example(tiny.clip(2.5, 1), "de", "de", "transcribe", "Guten Morgen."),
    ])
    out = model(**batch)
    assert torch.isfinite(out.loss) and 0 < out.loss.item() < 30
    out.loss.backward()
    counts = param_counts(model)
    assert all(counts[p]["trainable"] > 0 for p in ("encoder", "adaptor", "llm"))
    grads = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0}
    # LoRA B starts at zero, so the first gradients reach the adaptor and every LoRA B matrix.
    assert grads == {"encoder", "adaptor", "llm"}
    model.zero_grad()


def test_mini_llast_generates(mini):
    model, proc, cfg = mini
    model.eval()
    batch = proc([Example(tiny.clip(1.0, 2), "fr", "en")])
    ids = model.generate(**batch, max_new_tokens=4, num_beams=2, do_sample=False)
    assert ids.shape[0] == 1 and 1 <= ids.shape[1] <= 4


def test_whisper_baseline_through_the_cli(tmp_path, capsys):
    """`llast evaluate --baseline whisper` scores Whisper base's own translate task with the same scorer."""
    import json
    import subprocess

    import soundfile as sf
    import soxr

    from llast.cli import main

    assets.prepare(["whisper-base"])
    clips = tmp_path / "de" / "clips_16k"
    clips.mkdir(parents=True)
    raw = tmp_path / "raw.wav"
    subprocess.run(["espeak-ng", "-v", "de", "-w", str(raw), "Guten Morgen, wie geht es dir?"], check=True)
    audio, sr = sf.read(raw, dtype="float32")
    sf.write(clips / "a.wav", soxr.resample(audio, sr, 16000), 16000)
    tsv = tmp_path / "covost_v2.de_en.test.tsv"
    tsv.write_text("path\tsentence\ttranslation\tclient_id\na.wav\tGuten Morgen, wie geht es dir?\tGood morning, how are you?\ts\n")
    out = tmp_path / "eval"
    assert main(["evaluate", "--baseline", "whisper", "--model", "whisper-base", "--data", str(tsv), "--out", str(out)]) == 0
    hyp = (out / "de-en.translate.hyp.txt").read_text().lower()
    assert "good" in hyp and "morning" in hyp
    scores = json.loads((out / "score.json").read_text())
    assert scores["sets"]["de-en.translate"]["bleu"] > 0 and "whisper" in scores["meta"]["system"]
    assert "tok:13a" in capsys.readouterr().out
