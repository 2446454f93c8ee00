import json
from collections import Counter

import numpy as np
import pytest
import soundfile as sf
import torch

from llast.audio import SAMPLE_RATE
from llast.config import DataSource
from llast.data import (
    Sample,
    SpeechDataset,
    build_samples,
    filter_batch,
    prepare_covost_audio,
    read_covost,
    read_manifest,
    read_mustc,
    read_source,
)
from llast.errors import AudioError, DataError
from llast.samplers import CountBatchSampler, DurationBatchSampler

HEADER = "path\tsentence\ttranslation\tclient_id\n"


def write_tone(path, seconds=1.0, sr=SAMPLE_RATE, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), sr, format=fmt)
    return path


def make_covost(root, src, tgt, split, rows, clips="clips_16k", ext=".wav", header=HEADER):
    """rows: (name, sentence, translation, seconds); writes the TSV (with .mp3 names) and the clips."""
    lines = [header]
    for name, sentence, translation, seconds in rows:
        lines.append(f"{name}.mp3\t{sentence}\t{translation}\tspk1\n")
        if seconds:
            write_tone(root / src / clips / f"{name}{ext}", seconds)
    tsv = root / f"covost_v2.{src}_{tgt}.{split}.tsv"
    tsv.write_text("".join(lines), encoding="utf-8")
    return tsv


# ----------------------------------------------------------------------------- CoVoST


def test_read_covost_converted_clips(tmp_path):
    tsv = make_covost(tmp_path, "fr", "en", "train", [("common_voice_fr_1", "Bonjour.", "Hello.", 1.0), ("common_voice_fr_2", "Merci.", "Thanks.", 2.0)])
    samples = read_covost(tsv)
    assert [s.id for s in samples] == ["common_voice_fr_1", "common_voice_fr_2"]
    s = samples[1]
    assert (s.src_lang, s.tgt_lang, s.task) == ("fr", "en", "translate")
    assert (s.source_text, s.target_text) == ("Merci.", "Thanks.")
    assert s.audio.endswith("fr/clips_16k/common_voice_fr_2.wav")
    assert s.duration == pytest.approx(2.0)
    assert len(read_covost(tsv, limit=1)) == 1


def test_read_covost_zh_cn_and_mp3_clips(tmp_path):
    tsv = make_covost(tmp_path, "zh-CN", "en", "dev", [("common_voice_zh-CN_7", "你好。", "Hello.", 1.0)], clips="clips", ext=".mp3")
    (s,) = read_covost(tsv)
    assert (s.src_lang, s.tgt_lang) == ("zh-CN", "en")
    assert s.audio.endswith("zh-CN/clips/common_voice_zh-CN_7.mp3")
    assert s.source_text == "你好。"


def test_read_covost_extra_column_and_explicit_dir(tmp_path):
    header = "path\tsentence\ttranslation\tclient_id\tsplit\n"
    tsv = tmp_path / "covost_v2.de_en.train.tsv"
    tsv.write_text(header + "a.mp3\tHallo.\tHello.\tspk\ttrain\n")
    write_tone(tmp_path / "elsewhere" / "a.wav")
    (s,) = read_covost(tsv, audio_dir=tmp_path / "elsewhere")
    assert s.audio == str(tmp_path / "elsewhere" / "a.wav")


def test_read_covost_missing_column(tmp_path):
    tsv = make_covost(tmp_path, "fr", "en", "train", [], header="path\tsentence\tclient_id\n")
    with pytest.raises(DataError, match=r"covost_v2.fr_en.train.tsv:1: missing column\(s\) translation"):
        read_covost(tsv)


def test_read_covost_bad_line(tmp_path):
    tsv = make_covost(tmp_path, "fr", "en", "train", [("a", "Un.", "One.", 1.0)])
    with open(tsv, "a") as f:
        f.write("b.mp3\tDeux.\n")
    with pytest.raises(DataError, match=r"covost_v2.fr_en.train.tsv:3: expected 4 tab-separated fields, found 2"):
        read_covost(tsv)


def test_read_covost_not_utf8(tmp_path):
    tsv = make_covost(tmp_path, "fr", "en", "train", [("a", "Un.", "One.", 1.0)])
    with open(tsv, "ab") as f:
        f.write("b.mp3\tCaf\xe9.\tCoffee.\tspk\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"covost_v2.fr_en.train.tsv:3: not valid UTF-8"):
        read_covost(tsv)


def test_read_covost_missing_clip(tmp_path):
    tsv = make_covost(tmp_path, "fr", "en", "train", [("a", "Un.", "One.", 1.0), ("gone", "Deux.", "Two.", 0)])
    with pytest.raises(AudioError, match="gone.mp3"):
        read_covost(tsv)


def test_skip_bad_leaves_out_missing_and_corrupt_clips_while_reading(tmp_path):
    tsv = make_covost(tmp_path, "fr", "en", "train",
                      [("a", "Un.", "One.", 1.0), ("gone", "Deux.", "Two.", 0), ("c", "Trois.", "Three.", 1.0)])
    (tmp_path / "fr" / "clips_16k" / "c.wav").write_bytes(b"RIFF garbage")
    skipped: list[str] = []
    samples = build_samples([DataSource(format="covost", path=str(tsv))], asr_augment=True, skipped=skipped)
    assert [(s.id, s.task) for s in samples] == [("a", "translate"), ("a-asr", "transcribe")]
    assert len(skipped) == 2 and "gone.mp3" in skipped[0] and "c.wav" in skipped[1]
    with pytest.raises(AudioError, match="gone.mp3"):  # without the list: the first bad clip stops the read
        build_samples([DataSource(format="covost", path=str(tsv))], asr_augment=True)


def test_covost_name_required_without_langs(tmp_path):
    tsv = tmp_path / "fr_en.tsv"
    tsv.write_text(HEADER)
    with pytest.raises(DataError, match="not a CoVoST-2 file name"):
        read_covost(tsv)
    assert read_covost(tsv, audio_dir=tmp_path, src="fr", tgt="en") == []


# ----------------------------------------------------------------------------- MuST-C


def make_mustc(root, split="dev", tgt="de"):
    d = root / "en-de" / "data" / split
    sr = 16000
    talk = np.zeros(10 * sr, dtype=np.float32)
    talk[2 * sr : 4 * sr] = 0.1
    talk[6 * sr : 7 * sr] = 0.4
    (d / "wav").mkdir(parents=True)
    sf.write(d / "wav" / "ted_1.wav", talk, sr, subtype="FLOAT")
    (d / "txt").mkdir()
    (d / "txt" / f"{split}.yaml").write_text(
        "- {duration: 2.0, offset: 2.0, rW: 5, uW: 0, speaker_id: spk.1, wav: ted_1.wav}\n"
        "- {duration: 1.0, offset: 6.0, rW: 3, uW: 0, speaker_id: spk.1, wav: ted_1.wav}\n"
    )
    (d / "txt" / f"{split}.en").write_text("Hello there.\nGood bye.\n")
    (d / "txt" / f"{split}.{tgt}").write_text("Hallo.\nAuf Wiedersehen.\n")
    return d


def test_read_mustc_segments(tmp_path):
    d = make_mustc(tmp_path)
    samples = read_mustc(d)
    assert [s.id for s in samples] == ["ted_1_0", "ted_1_1"]
    s = samples[1]
    assert (s.src_lang, s.tgt_lang, s.offset, s.duration) == ("en", "de", 6.0, 1.0)
    assert (s.source_text, s.target_text) == ("Good bye.", "Auf Wiedersehen.")
    item = SpeechDataset(samples)[1]
    assert len(item["audio"]) == SAMPLE_RATE
    assert np.median(item["audio"]) == pytest.approx(0.4, abs=1e-3)
    assert np.median(SpeechDataset(samples)[0]["audio"]) == pytest.approx(0.1, abs=1e-3)
    assert len(read_mustc(d, tgt="de", limit=1)) == 1


def test_read_mustc_line_count_mismatch(tmp_path):
    d = make_mustc(tmp_path)
    (d / "txt" / "dev.de").write_text("Hallo.\n")
    with pytest.raises(DataError, match=r"dev.de: 1 lines but dev.yaml has 2 segments"):
        read_mustc(d)


# ----------------------------------------------------------------------------- manifest


def test_read_manifest(tmp_path):
    write_tone(tmp_path / "clips" / "a.wav", 1.5)
    lines = [
        {"audio": "clips/a.wav", "src_lang": "fr", "tgt_lang": "en", "source_text": "Oui.", "target_text": "Yes.", "id": "x"},
        {"audio": str(tmp_path / "clips" / "a.wav"), "src_lang": "fr", "tgt_lang": "fr", "task": "transcribe", "source_text": "Oui.", "offset": 0.5},
    ]
    m = tmp_path / "m.jsonl"
    m.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    a, b = read_manifest(m)
    assert a.id == "x" and a.audio == str(tmp_path / "clips" / "a.wav") and a.duration == pytest.approx(1.5)
    assert a.task == "translate" and a.target_text == "Yes."
    assert b.task == "transcribe" and b.target_text == "Oui." and b.duration == pytest.approx(1.0)


@pytest.mark.parametrize(
    "line,msg",
    [("{not json", "not valid JSON"), ('{"audio": "a.wav", "src_lang": "fr"}', "missing key.*tgt_lang"), ('{"audio": "a.wav", "src_lang": "fr", "tgt_lang": "en", "task": "x", "duration": 1}', "task")],
)
def test_read_manifest_errors(tmp_path, line, msg):
    m = tmp_path / "m.jsonl"
    m.write_text('{"audio": "a.wav", "src_lang": "fr", "tgt_lang": "en", "duration": 1}\n' + line + "\n")
    with pytest.raises(DataError, match=rf"m.jsonl:2: .*{msg}"):
        read_manifest(m)


# ----------------------------------------------------------------------------- mixing


def test_build_samples_asr_augmentation_and_dedupe(tmp_path):
    fr = make_covost(tmp_path, "fr", "en", "train", [("f1", "Un.", "One.", 1.0), ("f2", "Deux.", "Two.", 1.0)])
    # En->De and En->Ja over the same English clips (as in CoVoST).
    rows = [("e1", "One.", "Eins.", 1.0), ("e2", "Two.", "Zwei.", 1.0), ("e3", "Three.", "Drei.", 1.0)]
    de = make_covost(tmp_path, "en", "de", "train", rows)
    ja = make_covost(tmp_path, "en", "ja", "train", [(n, s, "ja", 0) for n, s, _, _ in rows])
    sources = [DataSource(path=str(fr), weight=2.0), DataSource(path=str(de)), DataSource(path=str(ja))]
    plain = build_samples(sources, asr_augment=False, asr_weight=1.0)
    assert len(plain) == 8 and all(s.task == "translate" for s in plain)
    mixed = build_samples(sources, asr_augment=True, asr_weight=0.5)
    asr = [s for s in mixed if s.task == "transcribe"]
    assert len(mixed) == 8 + 2 + 3  # fr: 2 ASR; en: 3 ASR shared by De and Ja
    assert Counter(s.src_lang for s in asr) == {"fr": 2, "en": 3}
    for s in asr:
        assert s.tgt_lang == s.src_lang and s.target_text == s.source_text
    assert {s.weight for s in asr if s.src_lang == "fr"} == {1.0}  # 2.0 * 0.5
    assert {s.weight for s in asr if s.src_lang == "en"} == {0.5}
    assert {s.weight for s in mixed if s.task == "translate" and s.src_lang == "fr"} == {2.0}


def test_read_source_dispatch(tmp_path):
    d = make_mustc(tmp_path)
    samples = read_source(DataSource(format="mustc", path=str(d), weight=3.0, limit=1))
    assert len(samples) == 1 and samples[0].weight == 3.0
    with pytest.raises(DataError, match="unknown data format"):
        read_source(DataSource(format="csv", path="x"))


# ----------------------------------------------------------------------------- samplers


def durations(n=200, seed=0):
    return np.random.default_rng(seed).uniform(0.5, 12.0, n).tolist()


def test_duration_sampler_limits_and_coverage():
    d = durations()
    s = DurationBatchSampler(d, None, max_batch_seconds=40.0, max_batch_size=8, num_buckets=5, shuffle=True, seed=1)
    batches = list(s)
    assert len(batches) == len(s)
    for b in batches:
        assert len(b) <= 8
        assert len(b) * max(d[i] for i in b) <= 40.0
    assert sorted(i for b in batches for i in b) == list(range(len(d)))


def test_duration_sampler_deterministic_and_epochs():
    d = durations()
    kw = dict(max_batch_seconds=40.0, max_batch_size=8, num_buckets=5, shuffle=True)
    a = list(DurationBatchSampler(d, None, seed=3, **kw))
    assert a == list(DurationBatchSampler(d, None, seed=3, **kw))
    s = DurationBatchSampler(d, None, seed=3, **kw)
    s.set_epoch(1)
    b = list(s)
    assert a != b
    assert sorted(i for x in b for i in x) == list(range(len(d)))


def test_duration_sampler_weights():
    d = [1.0] * 1000
    w = [0.5] * 500 + [2.0] * 500
    s = DurationBatchSampler(d, w, max_batch_seconds=10.0, max_batch_size=10, num_buckets=3, shuffle=True, seed=0)
    counts = Counter(i for b in s for i in b)
    assert all(counts[i] == 2 for i in range(500, 1000))
    assert set(counts[i] for i in range(500)) <= {0, 1}
    assert 200 < sum(counts[i] for i in range(500)) < 300


def test_duration_sampler_ranks():
    d = durations(101)
    kw = dict(max_batch_seconds=30.0, max_batch_size=4, num_buckets=4, shuffle=True, seed=5, num_replicas=2)
    r0 = list(DurationBatchSampler(d, None, rank=0, **kw))
    r1 = list(DurationBatchSampler(d, None, rank=1, **kw))
    assert len(r0) == len(r1)
    assert set(i for b in r0 + r1 for i in b) == set(range(101))  # padding repeats, never drops
    k0 = list(DurationBatchSampler(d, None, rank=0, drop_last=True, **kw))
    k1 = list(DurationBatchSampler(d, None, rank=1, drop_last=True, **kw))
    assert len(k0) == len(k1)
    assert not set(i for b in k0 for i in b) & set(i for b in k1 for i in b)


@pytest.mark.parametrize("cls", ["duration", "count"])
def test_sampler_resume(cls):
    d = durations()
    if cls == "duration":
        make = lambda: DurationBatchSampler(d, None, max_batch_seconds=40.0, max_batch_size=8, num_buckets=5, shuffle=True, seed=2)  # noqa: E731
    else:
        make = lambda: CountBatchSampler(d, None, batch_size=7, shuffle=True, seed=2)  # noqa: E731
    s = make()
    s.set_epoch(4)
    full = list(s)
    s.set_epoch(4)  # same epoch again: starts over
    it = iter(s)
    for _ in range(5):
        next(it)
    state = s.state_dict()
    assert state == {"epoch": 4, "batches_done": 5}
    t = make()
    t.load_state_dict(state)
    t.set_epoch(4)  # a training loop calls this at the top of the resumed epoch: keeps the resume point
    assert list(t) == full[5:]
    assert list(t) == full  # the next pass over the same epoch starts from the beginning


def test_count_sampler():
    d = [1.0] * 23
    s = CountBatchSampler(d, None, batch_size=5, shuffle=False, seed=0)
    assert list(s) == [list(range(i, min(i + 5, 23))) for i in range(0, 23, 5)]
    sh = CountBatchSampler(d, None, batch_size=5, shuffle=True, seed=0)
    got = list(sh)
    assert got != list(s) and sorted(i for b in got for i in b) == list(range(23))
    r = [list(CountBatchSampler(d, None, batch_size=5, shuffle=True, seed=0, num_replicas=2, rank=k)) for k in (0, 1)]
    assert len(r[0]) == len(r[1]) == 3


def test_sampler_with_dataloader(tmp_path):
    d = [1.0, 2.0, 3.0, 4.0]
    s = DurationBatchSampler(d, None, max_batch_seconds=6.0, max_batch_size=4, num_buckets=1, shuffle=False, seed=0)
    loader = torch.utils.data.DataLoader(list(range(4)), batch_sampler=s, collate_fn=list)
    assert sorted(i for b in loader for i in b) == [0, 1, 2, 3]


# ----------------------------------------------------------------------------- dataset


def test_speech_dataset_skip_bad(tmp_path):
    good = write_tone(tmp_path / "good.wav")
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(SAMPLE_RATE, dtype=np.float32), SAMPLE_RATE)
    long = write_tone(tmp_path / "long.wav", seconds=3.0)
    mk = lambda i, p: Sample(i, str(p), "fr", "en", "translate", "a", "b")  # noqa: E731
    samples = [mk("g", good), mk("s", silent), mk("m", tmp_path / "missing.wav"), mk("l", long)]
    ds = SpeechDataset(samples, max_seconds=2.0, skip_bad=True)
    items = [ds[i] for i in range(len(ds))]
    good_items, n_bad = filter_batch(items)
    assert [x["sample"].id for x in good_items] == ["g"] and n_bad == 3
    assert [i for i, _ in ds.bad] == ["s", "m", "l"]
    assert "missing.wav" in ds.bad[1][1] and "longer than" in ds.bad[2][1]
    strict = SpeechDataset(samples, max_seconds=2.0)
    assert strict[0]["audio"].shape == (SAMPLE_RATE,)
    with pytest.raises(AudioError, match="silent.wav"):
        strict[1]


# ----------------------------------------------------------------------------- CoVoST audio preparation


def test_prepare_covost_audio(tmp_path):
    clips = tmp_path / "clips"
    for name in ("c1", "c2"):
        write_tone(clips / f"{name}.mp3", 1.0, sr=48000, fmt="MP3")
    (clips / "broken.mp3").write_bytes(b"garbage" * 100)
    tsv = tmp_path / "covost_v2.fr_en.train.tsv"
    tsv.write_text(HEADER + "".join(f"{n}.mp3\tx\ty\tz\n" for n in ("c1", "c2", "broken", "c1")))
    out = tmp_path / "clips_16k"
    report = prepare_covost_audio([tsv], clips, out, workers=2)
    assert report.converted == 2 and report.skipped_existing == 0
    assert len(report.failed) == 1 and "broken.mp3" in report.failed[0][0]
    assert "converted 2" in str(report) and "broken.mp3" in str(report)
    info = sf.info(out / "c1.wav")
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert info.duration == pytest.approx(1.0, abs=0.06)
    assert not list(out.glob("*.part"))
    again = prepare_covost_audio([tsv], clips, out, workers=1)
    assert again.converted == 0 and again.skipped_existing == 2 and len(again.failed) == 1
    # The converted folder is what read_covost finds by default (fr/clips_16k).
    (tmp_path / "fr").mkdir()
    out.rename(tmp_path / "fr" / "clips_16k")
    tsv.write_text(HEADER + "c1.mp3\tx\ty\tz\n")
    (s,) = read_covost(tsv)
    assert s.audio.endswith("fr/clips_16k/c1.wav")


# ----------------------------------------------------------------------------- untrusted fields


def test_corpus_paths_stay_inside_their_folder(tmp_path):
    write_tone(tmp_path / "secret.wav")
    write_tone(tmp_path / "fr" / "clips_16k" / "ok.wav")
    tsv = tmp_path / "covost_v2.fr_en.test.tsv"
    rows = ["ok.wav", "../../secret.wav", str(tmp_path / "secret.wav"), "sub/../../secret.wav"]
    tsv.write_text(HEADER + "".join(f"{r}\tx\ty\tz\n" for r in rows))
    with pytest.raises(DataError, match=r"covost_v2.fr_en.test.tsv:3: '../../secret.wav' points outside"):
        read_covost(tsv)
    skipped = []
    assert [s.id for s in read_covost(tsv, skipped=skipped)] == ["ok"]
    assert len(skipped) == 3 and all("points outside" in x for x in skipped)
    d = make_mustc(tmp_path / "m")
    (d / "txt" / "dev.yaml").write_text("- {duration: 1.0, offset: 0.0, wav: ../../../../secret.wav}\n- {duration: 1.0, offset: 0.0, wav: ted_1.wav}\n")
    with pytest.raises(DataError, match="segment 1: .*points outside"):
        read_mustc(d, tgt="de")


def test_manifest_fields_are_checked_before_use(tmp_path):
    write_tone(tmp_path / "a.wav")
    base = {"audio": str(tmp_path / "a.wav"), "src_lang": "fr", "tgt_lang": "en", "target_text": "x"}
    for change, msg in [({"src_lang": "../../etc"}, "src_lang: unknown language code '../../etc'"),
                        ({"tgt_lang": 3}, "tgt_lang: unknown language code 3"),
                        ({"offset": "abc"}, "offset: expected a number of seconds, got 'abc'"),
                        ({"duration": -1}, "duration: -1 s is negative"), ({"duration": 0}, "duration 0 s is not positive"),
                        ({"duration": True}, "duration: expected a number"), ({"target_text": ["x"]}, "target_text")]:
        m = tmp_path / "m.jsonl"
        m.write_text(json.dumps({**base, **change}) + "\n")
        with pytest.raises(DataError, match=rf"m.jsonl:1: {msg}"):
            read_manifest(m)


def test_empty_targets_are_left_out_with_a_counted_warning(tmp_path, caplog):
    tsv = make_covost(tmp_path, "fr", "en", "train", [("a", "Un.", "One.", 1.0), ("b", "Deux.", "", 1.0), ("c", "", "Three.", 1.0)])
    with caplog.at_level("WARNING"):
        samples = build_samples([DataSource(path=str(tsv))], asr_augment=True)
    # b: no translation; c: no transcription (its source text is empty).
    assert sorted((s.id, s.task) for s in samples) == [("a", "translate"), ("a-asr", "transcribe"), ("b-asr", "transcribe"), ("c", "translate")]
    assert "left out 2 sample(s) with an empty" in caplog.text and "covost_v2.fr_en.train.tsv" in caplog.text


def test_prepare_keeps_relative_folders_and_refuses_collisions(tmp_path):
    clips = tmp_path / "clips"
    for rel in ("a/same.mp3", "b/same.mp3", "same.flac", "same.mp3"):
        write_tone(clips / rel, 0.5, sr=48000, fmt="MP3" if rel.endswith("mp3") else "FLAC")
    tsv = tmp_path / "covost_v2.fr_en.train.tsv"
    tsv.write_text(HEADER + "".join(f"{n}\tx\ty\tz\n" for n in ("a/same.mp3", "b/same.mp3", "same.flac", "../x.mp3")))
    report = prepare_covost_audio([tsv], clips, tmp_path / "out", workers=1)
    assert report.converted == 3 and len(report.failed) == 1 and "points outside" in report.failed[0][1]
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.wav")) == ["a/same.wav", "b/same.wav", "same.wav"]
    tsv.write_text(HEADER + "same.flac\tx\ty\tz\nsame.mp3\tx\ty\tz\n")
    with pytest.raises(DataError, match=r"train.tsv:3: clips 'same.flac' and 'same.mp3' would both be written to"):
        prepare_covost_audio([tsv], clips, tmp_path / "out2", workers=1)
    assert not (tmp_path / "out2").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="--out .*file: exists and is not a folder"):
        prepare_covost_audio([tsv], clips, tmp_path / "file", workers=1)
