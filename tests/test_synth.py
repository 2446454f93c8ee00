import csv
import json
import shutil

import pytest
import soundfile as sf

from llast import synth
from llast.data import read_covost
from llast.errors import DataError

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or not synth.FILLETS_SCRIPTS.is_dir() or not synth.TRANS_DE_EN.is_file(),
    reason="needs Debian espeak-ng, trans-de-en and fillets-ng-data",
)
SIZES = dict(n_train=6, n_dev=2, n_test=2)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "a"
    summary = synth.synthesize_corpus(out, ["de-en", "fr-en", "en-de"], **SIZES, seed=7, noise=0.5, workers=2)
    return out, summary


def rows(tsv):
    with open(tsv, encoding="utf-8", newline="") as f:
        return list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\"))


def test_layout_and_format(corpus):
    out, summary = corpus
    assert not summary["skipped"] and summary["tsv"]["fr-en"] == {"train": 6, "dev": 2, "test": 2}
    for src, tgt in (("de", "en"), ("fr", "en"), ("en", "de")):
        for split, n in (("train", 6), ("dev", 2), ("test", 2)):
            tsv = out / f"covost_v2.{src}_{tgt}.{split}.tsv"
            table = rows(tsv)
            assert table[0] == ["path", "sentence", "translation", "client_id"]
            assert len(table) == n + 1 and all(len(r) == 4 for r in table)
            for name, sentence, translation, speaker in table[1:]:
                assert name.startswith(f"synth_{src}_") and name.endswith(".wav")
                assert sentence and translation and speaker.split("+")[0] == synth.VOICES[src]
                info = sf.info(out / src / "clips_16k" / name)
                assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
                assert 0.5 < info.duration < 15
            samples = read_covost(tsv)  # the reader finds {src}/clips_16k by default
            assert len(samples) == n and samples[0].src_lang == src
    assert (out / "synth.json").is_file()


def test_no_sentence_in_two_splits(corpus):
    out, _ = corpus
    by_split: dict[str, set[str]] = {"train": set(), "dev": set(), "test": set()}
    for tsv in out.glob("covost_v2.*.tsv"):
        split = tsv.name.split(".")[2]
        for _, sentence, translation, _ in rows(tsv)[1:]:
            # Both sides: De->En and En->De share their pairs, so an English sentence has one split.
            by_split[split] |= {synth.normalise(sentence), synth.normalise(translation)}
    assert not by_split["train"] & by_split["dev"]
    assert not by_split["train"] & by_split["test"]
    assert not by_split["dev"] & by_split["test"]


def test_deterministic_and_skips_complete_corpus(corpus, tmp_path, capsys):
    out, _ = corpus
    again = tmp_path / "b"
    synth.synthesize_corpus(again, ["de-en", "fr-en", "en-de"], **SIZES, seed=7, noise=0.5, workers=1)
    for tsv in out.glob("*.tsv"):
        assert (again / tsv.name).read_bytes() == tsv.read_bytes()
    for clip in (out / "fr" / "clips_16k").glob("*.wav"):
        assert (again / "fr" / "clips_16k" / clip.name).read_bytes() == clip.read_bytes()
    capsys.readouterr()
    summary = synth.synthesize_corpus(again, ["de-en", "fr-en", "en-de"], **SIZES, seed=7, noise=0.5)
    assert summary["skipped"] and "skipping" in capsys.readouterr().out
    other = synth.synthesize_corpus(tmp_path / "c", ["fr-en"], **SIZES, seed=8, noise=0.5)
    assert not other["skipped"]
    assert (tmp_path / "c" / "covost_v2.fr_en.train.tsv").read_bytes() != (out / "covost_v2.fr_en.train.tsv").read_bytes()


def test_errors(tmp_path):
    with pytest.raises(DataError, match="no sentence source for 'ja'"):
        synth.synthesize_corpus(tmp_path, ["ja-en"], 2, 1, 1)
    with pytest.raises(DataError, match="fr-en: only .* clean sentence pairs"):
        synth.synthesize_corpus(tmp_path, ["fr-en"], 100000, 1, 1)
    with pytest.raises(DataError, match="expected src-tgt"):
        synth.synthesize_corpus(tmp_path, ["fr"], 2, 1, 1)


def test_sentence_sources_are_clean():
    de = synth.language_pairs("de")
    fr = synth.language_pairs("fr")
    assert len(de) > 10000 and len(fr) > 500
    for xx, en in de[:2000] + fr:
        for text in (xx, en):
            assert synth.MIN_WORDS <= len(text.split()) <= synth.MAX_WORDS
            assert not any(c in text for c in "[]{}()<>;|\t\\\"")
    assert len({synth.normalise(x) for x, _ in de}) == len(de)


def test_one_split_alone_is_that_split_exactly(corpus, tmp_path):
    """`--splits test` rebuilds a corpus's test split (sentences, clip names, voices, audio) without the rest."""
    out, _ = corpus
    alone = tmp_path / "test_only"
    summary = synth.synthesize_corpus(alone, ["de-en", "fr-en", "en-de"], **SIZES, seed=7, noise=0.5, workers=1,
                                      splits=("test",))
    assert sorted(p.name for p in alone.glob("*.tsv")) == sorted(p.name for p in out.glob("*.test.tsv"))
    for tsv in alone.glob("*.tsv"):
        assert tsv.read_bytes() == (out / tsv.name).read_bytes()
        for row in rows(tsv)[1:]:
            src = tsv.name.split(".")[1].split("_")[0]
            assert (alone / src / "clips_16k" / row[0]).read_bytes() == (out / src / "clips_16k" / row[0]).read_bytes()
    assert summary["clips"] == sum(len(rows(t)) - 1 for t in alone.glob("*.tsv") if "en_de" not in t.name) + 2
    # A whole corpus already serves a test-only request.
    again = synth.synthesize_corpus(out, ["de-en", "fr-en", "en-de"], **SIZES, seed=7, noise=0.5, splits=("test",))
    assert again["skipped"]


def test_test_voices_are_never_training_voices(corpus):
    out, _ = corpus
    assert not set(synth.VARIANTS["train"]) & (set(synth.VARIANTS["test"]) | set(synth.VARIANTS["dev"]))
    speakers = {split: {r[3].split("+")[1] for t in out.glob(f"*.{split}.tsv") for r in rows(t)[1:]} for split in synth.SPLITS}
    assert speakers["test"] <= set(synth.VARIANTS["test"]) and speakers["train"] <= set(synth.VARIANTS["train"])


def test_exclude_keeps_another_corpus_dev_and_test_out(corpus, tmp_path):
    """`synth --exclude`: a second, larger training corpus never holds the first corpus's dev or test
    sentences (either side), through the CLI; the exclusion is part of the corpus's parameters."""
    from llast.cli import main

    out, _ = corpus
    held = [out / f"covost_v2.{d}.{s}.tsv" for d in ("de_en", "fr_en") for s in ("dev", "test")]
    banned = synth.excluded_sentences(held)
    assert len(banned) >= 2 * 4 * 2  # source and target of each held-out row
    big = tmp_path / "big"
    args = ["data", "synth", "--out", str(big), "--directions", "de-en,fr-en", "--train", "12", "--dev", "0",
            "--test", "0", "--seed", "7", "--splits", "train", "--exclude", *map(str, held)]
    assert main(args) == 0
    for d in ("de_en", "fr_en"):
        train_rows = rows(big / f"covost_v2.{d}.train.tsv")[1:]
        assert len(train_rows) == 12
        assert not {synth.normalise(x) for r in train_rows for x in r[1:3]} & banned
    # Without --exclude the same seed does use held-out sentences: the option is what keeps them out.
    free = synth.split_pairs(["de", "fr"], {"train": 12, "dev": 0, "test": 0}, seed=7, synthetic=True)
    assert {synth.normalise(x) for lang in free.values() for p in lang["train"] for x in p} & banned
    assert "exclude" in json.loads((big / "synth.json").read_text())["params"]
    with pytest.raises(DataError, match="missing.tsv: file not found"):
        synth.excluded_sentences([tmp_path / "missing.tsv"])


def test_people_augmentation_changes_only_the_sound(corpus, tmp_path):
    """--people 1: the same sentences, names and voices, other audio (speed, tilt, channel); 0 leaves a corpus
    byte-identical to one made before the option existed (its draws come from a stream of their own)."""
    import numpy as np

    out, _ = corpus
    people = tmp_path / "p"
    synth.synthesize_corpus(people, ["de-en", "fr-en", "en-de"], **SIZES, seed=7, noise=0.5, workers=2, people=1.0)
    for tsv in out.glob("*.tsv"):
        assert (people / tsv.name).read_bytes() == tsv.read_bytes()
    changed = 0
    for clip in sorted((out / "fr" / "clips_16k").glob("*.wav")):
        a, b = sf.read(clip)[0], sf.read(people / "fr" / "clips_16k" / clip.name)[0]
        assert np.isfinite(b).all() and np.abs(b).max() > 0.01
        changed += len(a) != len(b) or not np.allclose(a, b, atol=1e-3)
    assert changed >= 6
    assert json.loads((people / "synth.json").read_text())["params"]["people"] == 1.0
    with pytest.raises(DataError, match="people"):
        synth.synthesize_corpus(tmp_path / "bad", ["fr-en"], **SIZES, people=1.5)


def test_channels_of_the_people_augmentation():
    import numpy as np

    t = np.arange(16000) / 16000
    x = 0.3 * (np.sin(2 * np.pi * 200 * t) + np.sin(2 * np.pi * 1000 * t) + np.sin(2 * np.pi * 5000 * t))

    def level(y, f):
        spec = np.abs(np.fft.rfft(y[2000:14000] * np.hanning(12000)))
        return spec[int(f * 12000 / 16000)]

    phone = synth._telephone(x)
    assert len(phone) == len(x)
    assert level(phone, 5000) < 0.01 * level(x, 5000)  # above the 3.4 kHz band: gone
    assert level(phone, 200) < 0.5 * level(x, 200)  # under the 300 Hz high-pass: down
    assert level(phone, 1000) > 0.5 * level(x, 1000)  # in the band: kept
    faster = synth._speed(x, 1.1)
    assert abs(len(faster) - len(x) / 1.1) < 2
    tilted = synth._tilt(x, 4.0)
    assert level(tilted, 5000) / level(tilted, 200) > level(x, 5000) / level(x, 200)
    for codec in synth.CODECS:
        y = synth._codec(x, codec)
        assert len(y) == len(x) and level(y, 5000) < 0.1 * level(x, 5000) and level(y, 1000) > 0.2 * level(x, 1000), codec


def test_phrasebook_repeats_train_sentences_in_new_voices(tmp_path):
    """`synth --phrasebook` (make demo's fine-tune): the test split says the train split's first sentences
    again, each a clip of its own in a test voice; through the CLI; too large a test split is refused."""
    from llast.cli import main

    out = tmp_path / "pb"
    assert main(["data", "synth", "--out", str(out), "--directions", "de-en", "--train", "4", "--dev", "0",
                 "--test", "3", "--seed", "3", "--phrasebook"]) == 0
    train, test = rows(out / "covost_v2.de_en.train.tsv")[1:], rows(out / "covost_v2.de_en.test.tsv")[1:]
    assert len(train) == 4 and [r[1:3] for r in test] == [r[1:3] for r in train[:3]]
    assert not {r[0] for r in train} & {r[0] for r in test}  # clips of their own
    assert {r[3].split("+")[1] for r in test} <= set(synth.VARIANTS["test"])
    assert {r[3].split("+")[1] for r in train} <= set(synth.VARIANTS["train"])
    assert all((out / "de" / "clips_16k" / r[0]).is_file() for r in train + test)
    assert json.loads((out / "synth.json").read_text())["params"]["phrasebook"] is True
    with pytest.raises(DataError, match="must not exceed train"):
        synth.synthesize_corpus(tmp_path / "bad", ["de-en"], n_train=2, n_dev=0, n_test=3, phrasebook=True)


def test_pico_draws_leave_other_clips_as_they_were(tmp_path):
    """--pico F: a fraction F of clips gets SVOX Pico's voice, speed and pitch, drawn from a stream of its own:
    the other clips' jobs are exactly those of a corpus without the option."""
    args = ("synth_fr_000001.wav", "Bonjour à tous.", "fr", tmp_path / "a.wav", 7, 0.5, "train", 0.3, 0.5)
    plain = synth._clip_job(*args)
    assert "engine" not in plain and plain == synth._clip_job(*args, pico=0.0)
    spoken = synth._clip_job(*args, pico=1.0)
    assert spoken["engine"] == "pico" and spoken["voice"] == "pico:fr-FR"
    assert 80 <= spoken["speed"] <= 125 and 75 <= spoken["pitch"] <= 135
    assert {k: v for k, v in spoken.items() if k not in ("engine", "voice", "speed", "pitch")} == {
        k: v for k, v in plain.items() if k not in ("voice", "speed", "pitch")}
    names = [f"synth_de_{i:06d}.wav" for i in range(400)]
    share = sum(synth._clip_job(n, "Hallo.", "de", tmp_path / n, 3, 0.3, pico=0.6).get("engine") == "pico" for n in names)
    assert 200 <= share <= 280  # about 60 %
    with pytest.raises(DataError, match="pico"):
        synth.synthesize_corpus(tmp_path / "bad", ["fr-en"], **SIZES, pico=2.0)


@pytest.mark.skipif(shutil.which("pico2wave") is None, reason="needs pico2wave (Debian non-free libttspico-utils)")
def test_pico_corpus(corpus, tmp_path):
    """--pico 1: the same sentences and names as the espeak-ng corpus, every clip in Pico's voice, and the
    speaker column says so."""
    import numpy as np

    out, _ = corpus
    pico = tmp_path / "pico"
    synth.synthesize_corpus(pico, ["de-en", "fr-en", "en-de"], **SIZES, seed=7, noise=0.5, workers=2, pico=1.0)
    for tsv in out.glob("*.tsv"):
        a, b = rows(tsv), rows(pico / tsv.name)
        assert [r[:3] for r in a] == [r[:3] for r in b]
        lang = tsv.name.split(".")[1][:2]
        assert {r[3] for r in b[1:]} == {f"pico:{synth.PICO_VOICES[lang]}"}
    for clip in sorted((pico / "fr" / "clips_16k").glob("*.wav")):
        x, rate = sf.read(clip)
        assert rate == 16000 and 0.5 < len(x) / rate < 15 and np.abs(x).max() > 0.05
        assert len(x) != len(sf.read(out / "fr" / "clips_16k" / clip.name)[0])
    assert json.loads((pico / "synth.json").read_text())["params"]["pico"] == 1.0
