"""The `llast` command line on the real interfaces (no model weights needed here)."""


import numpy as np
import soundfile as sf

from llast.cli import main


def test_help_lists_every_command(capsys):
    try:
        main(["--help"])
    except SystemExit as e:
        assert e.code == 0
    out = capsys.readouterr().out
    for cmd in ("models", "data", "train", "params", "translate", "evaluate", "export", "serve"):
        assert cmd in out


def test_data_synth_and_prepare_covost(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["data", "synth", "--out", str(out), "--directions", "de-en", "--train", "3", "--dev", "1", "--test", "1", "--workers", "1"]) == 0
    tsv = out / "covost_v2.de_en.train.tsv"
    lines = tsv.read_text().splitlines()
    assert lines[0].split("\t") == ["path", "sentence", "translation", "client_id"] and len(lines) == 4
    info = sf.info(out / "de" / "clips_16k" / lines[1].split("\t")[0])
    assert info.samplerate == 16000 and info.channels == 1
    # Common Voice style: MP3 at 48 kHz named in a TSV -> 16 kHz WAV; a corrupt clip is reported, exit 1.
    clips = tmp_path / "cv" / "clips"
    clips.mkdir(parents=True)
    t = np.arange(48000) / 48000
    sf.write(clips / "common_voice_de_1.mp3", (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 48000)
    (clips / "common_voice_de_2.mp3").write_bytes(b"not an mp3 at all")
    cv_tsv = tmp_path / "covost_v2.de_en.dev.tsv"
    cv_tsv.write_text(
        "path\tsentence\ttranslation\tclient_id\n"
        "common_voice_de_1.mp3\tHallo.\tHello.\ta\n"
        "common_voice_de_2.mp3\tTschüss.\tBye.\tb\n"
    )
    dest = tmp_path / "cv" / "clips_16k"
    code = main(["data", "prepare", "covost", "--tsv", str(cv_tsv), "--clips", str(clips), "--out", str(dest), "--workers", "1"])
    printed = capsys.readouterr().out
    assert code == 1 and "common_voice_de_2" in printed
    wav = dest / "common_voice_de_1.wav"
    assert sf.info(wav).samplerate == 16000 and abs(sf.info(wav).duration - 1.0) < 0.01


def test_params_prints_trainable_counts(tiny_dirs, tmp_path, capsys):
    import yaml

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"encoder": {"name": str(tiny_dirs["whisper"])}, "llm": {"name": str(tiny_dirs["llama"]), "lora": {"enabled": False}}}}))
    assert main(["params", str(cfg)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.split("\n\n")[0].splitlines()[1:]}  # the first table
    assert rows["llm"][0] == "0" and rows["encoder"][0] != "0" and rows["adaptor"][0] == rows["adaptor"][1]


def test_bad_config_key_is_one_clear_line(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("train:\n  learning_rate: 0.1\n")
    assert main(["train", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "train.learning_rate" in err and "Traceback" not in err
