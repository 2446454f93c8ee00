"""The one rule for every folder a command writes: nothing of the user's is ever overwritten or deleted.

Commands that write a folder (`train`, `export`, `export --ship`, `import xtuner`, `text-lora`,
`data synth`, `data prepare`, `evaluate`, `translate --out-dir`) write only into

- a folder that does not exist yet (it is made), or an empty folder, or
- a folder that already is the same kind of llast output, recognised by its marker file
  (``.llast-output.json``; a checkpoint's own ``llast.json``; for outputs made before the marker
  existed, the file that kind always wrote: ``log.jsonl``, ``synth.json``, ``score.json``).

Anything else is refused before any work, with a one-line OutputError naming the option and folder.

A folder written whole (a checkpoint) is built in a temporary sibling and renamed into place. Its
name (``.NAME.XXXXXXXX.llast-partial``) is one no user would choose, made unique by this run, and only
the run that made it removes it; the replaced version is moved aside the same way
(``.NAME.XXXXXXXX.llast-old``) until the new one is in place. `clean_staging` finishes or undoes what a
killed run left (training's resume calls it for its own checkpoints).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from llast.errors import OutputError

MARKER = ".llast-output.json"
CHECKPOINT = "checkpoint"  # marked by its own llast.json (llast.checkpoint writes it)
KINDS = (CHECKPOINT, "train", "synth", "prepare", "evaluate", "translate")
# what each kind always wrote before the marker existed, so older outputs are still recognised
_LEGACY = {CHECKPOINT: "llast.json", "train": "log.jsonl", "synth": "synth.json", "evaluate": "score.json"}
PARTIAL, OLD = ".llast-partial", ".llast-old"


def kind_of(folder: str | Path) -> str | None:
    """The kind of llast output `folder` is (one of KINDS), or None."""
    folder = Path(folder)
    marker = folder / MARKER
    if marker.is_file():
        with contextlib.suppress(OSError, ValueError, AttributeError):
            kind = json.loads(marker.read_text()).get("kind")
            if kind in KINDS:
                return kind
    checkpoint = folder / "llast.json"
    if checkpoint.is_file():
        with contextlib.suppress(OSError, ValueError, AttributeError):
            if json.loads(checkpoint.read_text()).get("kind") == "llast-checkpoint":
                return CHECKPOINT
    for kind, name in _LEGACY.items():
        if kind != CHECKPOINT and (folder / name).is_file():
            return kind
    return None


def check(out: str | Path, kind: str, option: str = "--out") -> Path:
    """`out` may receive output of `kind`: it is missing, an empty folder, or already that kind of output.
    Raises OutputError (naming `option` and the folder) otherwise; writes nothing."""
    if kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}")
    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return out
    if not out.is_dir():
        raise OutputError(f"{option} {out}: exists and is not a folder; not overwriting it")
    if not any(out.iterdir()):
        return out
    found = kind_of(out)
    if found == kind:
        return out
    what = f"holds a llast {found} output" if found else "is not empty and holds no llast output"
    raise OutputError(f"{option} {out}: {what}; a {kind} output goes into a new or empty folder, "
                      "or one of its own kind (nothing of yours is overwritten)")


def claim(out: str | Path, kind: str, option: str = "--out") -> Path:
    """`check`, then make the folder and mark it as `kind` (a command that writes into it as it goes)."""
    out = check(out, kind, option)
    out.mkdir(parents=True, exist_ok=True)
    if kind != CHECKPOINT and not (out / MARKER).is_file():
        write_marker(out, kind)
    return out


def write_marker(folder: Path, kind: str) -> None:
    (Path(folder) / MARKER).write_text(json.dumps({"kind": kind, "by": "llast"}) + "\n")


@contextlib.contextmanager
def staged(out: str | Path, kind: str, option: str = "--out") -> Iterator[Path]:
    """Build a whole folder of `kind` in a fresh temporary sibling (yielded), then put it in place of `out`.

    `out` is checked before and again at the end. On an error the temporary folder is removed and `out`
    is as it was. The writer puts the kind's marker inside (a checkpoint's llast.json); for other
    kinds the marker is added here."""
    out = check(out, kind, option)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=PARTIAL, dir=out.parent))
    try:
        yield tmp
        if kind != CHECKPOINT:
            write_marker(tmp, kind)
        check(out, kind, option)  # again: something may have been put there meanwhile
        replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace(new: Path, out: Path) -> None:
    """Rename folder `new` to `out`; an existing `out` (already checked to be llast's) is moved aside to a
    unique sibling first and removed once `new` is in place."""
    if not out.exists():
        os.replace(new, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=OLD, dir=out.parent))
    os.replace(out, old / out.name)
    os.replace(new, out)
    shutil.rmtree(old)


def clean_staging(folder: Path) -> list[str]:
    """Finish or undo what a killed `staged`/`replace` left in `folder`; returns what was done.

    .NAME.*.llast-old/NAME : the previous version of NAME; if NAME is there the swap completed (removed),
                             else the kill fell between the two renames and it is put back.
    .NAME.*.llast-partial  : a build that never completed; removed.
    """
    done = []
    if not folder.is_dir():
        return done
    for old in sorted(folder.glob(f".*{OLD}")):
        name = old.name[1:-len(OLD)].rsplit(".", 1)[0]
        target, inside = folder / name, old / name
        if not old.is_dir():
            continue
        if not target.exists() and inside.exists():
            os.replace(inside, target)
            done.append(f"restored {name} from {old.name}")
        shutil.rmtree(old, ignore_errors=True)
        done.append(f"removed {old.name}")
    for tmp in sorted(folder.glob(f".*{PARTIAL}")):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
            done.append(f"removed {tmp.name}")
    return done


def unique_names(paths: list[str | Path], suffix: str) -> list[str]:
    """One output file name per input path (`STEM{suffix}`), distinct even when stems repeat: repeated
    stems take their parent folders' names in front (a/clip.wav, b/clip.wav -> a_clip, b_clip), and a
    path given twice gets -2, -3."""
    paths = [Path(p) for p in paths]
    names = [p.stem for p in paths]
    depth = 0
    while len(set(names)) < len(names) and depth < 8:
        depth += 1
        counts = {n: names.count(n) for n in names}
        names = [("_".join(p.parent.parts[-depth:] + (p.stem,)).lstrip("_/") if counts[n] > 1 else n)
                 for p, n in zip(paths, names)]
    used: set[str] = set()
    out = []
    for n in names:
        name, k = n, 1
        while name in used:
            k += 1
            name = f"{n}-{k}"
        used.add(name)
        out.append(name + suffix)
    return out
