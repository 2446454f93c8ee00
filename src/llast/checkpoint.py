"""Checkpoints: a directory that rebuilds the model on its own, loaded STRICTLY.

    CKPT/
      llast.json                   format marker (kind, merged or not)
      config.yaml                  the resolved Config that built the model
      adaptor.safetensors          adaptor weights
      encoder_lora/                peft adapter (adapter_config.json, adapter_model.safetensors), if S-LoRA
      llm_lora/                    peft adapter, if L-LoRA
      text_lora/                   optional: a second LLM adapter for two-pass decoding's text pass
                                   (`llast text-lora`; llast.text_adapter)
    merged exports (`llast export`) instead hold encoder/ and llm/ with the LoRA merged in.

Every missing, unexpected or mis-shaped tensor is an error that names the keys (llast.model.check_weights;
LLaST's released code loads with strict=False, which hides wrong loads).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

from llast.assets import resolve_checkpoint
from llast.config import Config, apply_overrides, from_dict, save_config, to_dict
from llast.errors import CheckpointError, ConfigError
from llast.lora import build_lora_model
from llast.model import check_weights, resolve_name
from llast.outdir import CHECKPOINT, check, clean_staging, staged

FORMAT = 1


def save_checkpoint(
    model, cfg: Config, path: str | Path, trainer_state: dict | None = None, state_dict: dict | None = None,
    engine_dir: Path | None = None, option: str = "--out",
) -> Path:
    """Write `model` (LLaST, LoRA applied or not) and its config to `path`, atomically (a temporary
    directory renamed into place). `trainer_state` (optimizer, scheduler, RNG, data position) is
    written beside the weights for `llast train --resume`.

    state_dict : the model's adaptor and LoRA tensors, gathered, keyed as in `model.state_dict()`;
                 given when the live parameters are sharded (FSDP) and cannot be read directly.
    engine_dir : a directory the training engine wrote (DeepSpeed's partitioned optimizer state);
                 moved into the checkpoint as `engine/`.
    option     : how the user named `path`, for the error if it is a folder of theirs (llast.outdir).
    """
    with staged(path, CHECKPOINT, option) as tmp:
        _write_checkpoint(model, cfg, tmp, trainer_state, state_dict, engine_dir)
    return Path(path)


def _write_checkpoint(model, cfg: Config, tmp: Path, trainer_state, state_dict, engine_dir) -> None:
    save_config(cfg, tmp / "config.yaml")
    if state_dict is None:
        adaptor = model.adaptor.state_dict()
    else:
        adaptor = {k[len("adaptor."):]: v for k, v in state_dict.items() if k.startswith("adaptor.")}
    save_file({k: v.detach().cpu().contiguous() for k, v in adaptor.items()}, str(tmp / "adaptor.safetensors"))
    parts = ["adaptor"]
    for part in ("encoder", "llm"):
        module = getattr(model, part)
        if hasattr(module, "peft_config"):
            if state_dict is None:
                module.save_pretrained(str(tmp / f"{part}_lora"))
            else:
                own = {k[len(part) + 1:]: v for k, v in state_dict.items() if k.startswith(part + ".")}
                module.save_pretrained(str(tmp / f"{part}_lora"), state_dict=own)
            parts.append(f"{part}_lora")
    if trainer_state is not None:
        torch.save(trainer_state, tmp / "trainer_state.pt")
    if engine_dir is not None:
        os.replace(engine_dir, tmp / "engine")
    (tmp / "llast.json").write_text(json.dumps({"kind": "llast-checkpoint", "format": FORMAT, "merged": False, "parts": parts}))


def clean_leftovers(out_dir: Path) -> list[str]:
    """Finish or undo what a killed `save_checkpoint` left in `out_dir`; returns what was done.

    X.old : the previous version of X, renamed away just before the new one was renamed in. If X is
            there the save completed (X.old is deleted); if not, the kill fell between the two renames
            and X.old is put back (the last complete version).
    X.tmp, X.engine.tmp : a save that never completed; deleted (never taken for checkpoints).
    (Those are the names of saves before llast.outdir; its own leftovers are handled by clean_staging.)
    """
    done = []
    if not out_dir.is_dir():
        return done
    done += clean_staging(out_dir)
    for old in sorted(out_dir.glob("*.old")):
        target = old.with_name(old.name[: -len(".old")])
        if not old.is_dir() or not (target.name == "final" or target.name.startswith("checkpoint-")):
            continue
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            done.append(f"removed {old.name}")
        else:
            os.replace(old, target)
            done.append(f"restored {target.name} from {old.name}")
    for tmp in sorted(out_dir.glob("*.tmp")):
        if tmp.is_dir() and (tmp.name.startswith("checkpoint-") or tmp.name.startswith("final.")):
            shutil.rmtree(tmp, ignore_errors=True)
            done.append(f"removed {tmp.name}")
    return done


def read_checkpoint_config(path: str | Path) -> Config:
    """The Config saved in checkpoint `path` (or a shipped checkpoint's name); every way it can fail is a
    CheckpointError naming the file."""
    path = resolve_checkpoint(path)
    marker = path / "llast.json"
    if not path.is_dir():
        raise CheckpointError(f"{path}: checkpoint directory not found")
    if not marker.is_file():
        raise CheckpointError(f"{path}: not a llast checkpoint (no llast.json; was it written completely?)")
    config_file = path / "config.yaml"
    try:
        data = yaml.safe_load(config_file.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: config.yaml missing") from None
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{config_file}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    except yaml.YAMLError as e:
        raise CheckpointError(f"{config_file}: not valid YAML: {' '.join(str(e).split())}") from None
    except OSError as e:
        raise CheckpointError(f"{config_file}: cannot read: {e}") from None
    try:
        cfg = from_dict(data if data is not None else {})
    except ConfigError as e:
        raise CheckpointError(f"{config_file}: {e}") from None
    # Names like "./llm" point inside the checkpoint (merged exports).
    for part in (cfg.model.encoder, cfg.model.llm):
        if part.name.startswith("./"):
            part.name = str((path / part.name).resolve())
    return cfg


def read_tensors(file: Path) -> dict[str, torch.Tensor]:
    """A safetensors file of a checkpoint; a truncated or corrupt one is a CheckpointError naming it."""
    try:
        return load_file(str(file))
    except FileNotFoundError:
        raise CheckpointError(f"{file}: missing") from None
    except Exception as e:  # SafetensorError (truncated header/data), OSError
        raise CheckpointError(f"{file}: cannot read the tensors (truncated or corrupt?): {' '.join(str(e).split())}") from None


def build_checkpoint_model(cfg: Config, config_file: Path, dtype: str | None = None):
    """LLaST (LoRA applied, untrained adaptor) as `config_file` describes it; a model it names that
    cannot be loaded is a CheckpointError naming the file and the key."""
    if dtype is not None:
        cfg.model.dtype = dtype
    try:
        return build_lora_model(cfg.model)
    except ConfigError as e:
        raise CheckpointError(f"{config_file}: {e}") from None


def _strict_load_lora(module, adapter_dir: Path, adapter_name: str = "default") -> None:
    from peft import get_peft_model_state_dict, set_peft_model_state_dict  # lazy: peft costs ~4 s to import; only LoRA checkpoints need it

    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"{adapter_dir}: adapter_model.safetensors missing")
    state = read_tensors(weights)
    check_weights(state, get_peft_model_state_dict(module, adapter_name=adapter_name),
                  f"{weights}: LoRA weights do not match the model built from config.yaml")
    try:
        set_peft_model_state_dict(module, state, adapter_name=adapter_name)
    except RuntimeError as e:
        raise CheckpointError(f"{weights}: {e}") from None


def load_adaptor(model, path: str | Path, llm_lora: bool = False, encoder_lora: bool = True) -> None:
    """The adaptor weights of checkpoint `path`, strictly (train.init_from), and its encoder LoRA when it
    has one (a CTC stage that adapted the encoder), unless not `encoder_lora` (train.init_encoder_lora:
    the frozen encoder is read instead). The LLM LoRA starts fresh unless `llm_lora` (train.init_llm_lora):
    then it is read from `path`'s llm_lora/, strictly."""
    adaptor_file = Path(path) / "adaptor.safetensors"
    if not adaptor_file.is_file():
        raise CheckpointError(f"{path}: adaptor.safetensors missing (train.init_from must name a llast checkpoint)")
    state = read_tensors(adaptor_file)
    check_weights(state, model.adaptor.state_dict(), f"{adaptor_file}: adaptor weights do not match this config's adaptor")
    model.adaptor.load_state_dict(state, strict=True)
    if (Path(path) / "encoder_lora").is_dir() and encoder_lora:
        if not hasattr(model.encoder, "peft_config"):
            raise CheckpointError(f"{path}: its adaptor was trained on an adapted encoder (encoder_lora/), but this "
                                  "config's S-LoRA is off; set model.encoder.lora.enabled=true to start from both, or "
                                  "train.init_encoder_lora=false to leave it out")
        _strict_load_lora(model.encoder, Path(path) / "encoder_lora")
    if llm_lora:
        if not hasattr(model.llm, "peft_config"):
            raise CheckpointError(f"{path}: train.init_llm_lora needs the LLM's LoRA on (model.llm.lora.enabled=true)")
        if not (Path(path) / "llm_lora").is_dir():
            raise CheckpointError(f"{path}: train.init_llm_lora is set but this checkpoint has no llm_lora/")
        _strict_load_lora(model.llm, Path(path) / "llm_lora")


def load_weights(model, path: str | Path) -> None:
    """Load adaptor + LoRA weights from checkpoint `path` into `model` (built from the same config)."""
    path = Path(path)
    adaptor_file = path / "adaptor.safetensors"
    if not adaptor_file.is_file():
        raise CheckpointError(f"{path}: adaptor.safetensors missing")
    state = read_tensors(adaptor_file)
    check_weights(state, model.adaptor.state_dict(), f"{adaptor_file}: adaptor weights do not match config.yaml")
    model.adaptor.load_state_dict(state, strict=True)
    for part in ("encoder", "llm"):
        module = getattr(model, part)
        adapter_dir = path / f"{part}_lora"
        has_lora = hasattr(module, "peft_config")
        if has_lora != adapter_dir.is_dir():
            raise CheckpointError(
                f"{path}: config.yaml says {part} LoRA is {'on' if has_lora else 'off'} but {adapter_dir.name}/ is "
                f"{'missing' if has_lora else 'present'}"
            )
        if has_lora:
            _strict_load_lora(module, adapter_dir)
    if (path / "text_lora").is_dir():
        load_text_lora(model.llm, path / "text_lora")


TEXT_ADAPTER = "text"  # the peft adapter name of text_lora/ beside the L-LoRA ("default")


def load_text_lora(llm, adapter_dir: Path) -> None:
    """A checkpoint's text_lora/ as the LLM's second peft adapter, TEXT_ADAPTER, loaded strictly; the
    L-LoRA stays the active adapter (decode's two-pass switches to TEXT_ADAPTER for its text pass)."""
    import peft  # lazy: peft costs ~4 s to import; only LoRA checkpoints need it

    if not hasattr(llm, "peft_config"):
        raise CheckpointError(f"{adapter_dir}: a text adapter needs the LLM's LoRA (model.llm.lora.enabled) on")
    try:
        llm.add_adapter(TEXT_ADAPTER, peft.LoraConfig.from_pretrained(str(adapter_dir)))
    except (OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"{adapter_dir}/adapter_config.json: {' '.join(str(e).split())}") from None
    _strict_load_lora(llm, adapter_dir, TEXT_ADAPTER)


def check_new_checkpoint_out(path: Path, out: Path) -> None:
    """`out` may receive a new checkpoint made from checkpoint `path`: not `path` itself, and nothing but
    an older llast checkpoint is overwritten (checked before any work, and again when writing)."""
    if Path(out).resolve() == Path(path).resolve():
        raise CheckpointError(f"--out {out}: is the checkpoint itself; write the new checkpoint elsewhere")
    check(out, CHECKPOINT)


def text_lora_config(path: str | Path, decode_overrides: list[str] = ()) -> Config:
    """The config.yaml of checkpoint `path` with a text adapter: decode.two_pass on, then
    `decode_overrides` ("decode.num_beams=4"; other sections are the trained model's and stay)."""
    for o in decode_overrides:
        if not o.startswith("decode."):
            raise ConfigError(f"{o}: only decode.* options can be changed here (the rest is the trained model)")
    data = to_dict(read_checkpoint_config(path))
    data["decode"]["two_pass"] = True
    return from_dict(apply_overrides(data, list(decode_overrides)))


def save_text_lora(path: str | Path, out: str | Path, llm, meta: dict, decode_overrides: list[str] = ()) -> Path:
    """Checkpoint `path` (no trainer state) plus `llm`'s TEXT_ADAPTER as text_lora/, written atomically to
    `out`, its config.yaml as text_lora_config makes it, and `meta` (how the adapter was trained) in
    text_lora/training.json."""
    path, out = Path(path), Path(out)
    cfg = text_lora_config(path, decode_overrides)
    check_new_checkpoint_out(path, out)
    with staged(out, CHECKPOINT) as tmp:
        _write_text_lora(path, tmp, llm, meta, cfg)
    return out


def _write_text_lora(path: Path, tmp: Path, llm, meta: dict, cfg: Config) -> None:
    from peft import get_peft_model_state_dict  # lazy: peft costs ~4 s to import; only LoRA checkpoints need it

    shutil.copytree(path, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("trainer_state.pt", "engine", "text_lora"))
    adapter = tmp / "text_lora"
    adapter.mkdir()
    llm.peft_config[TEXT_ADAPTER].save_pretrained(str(adapter))
    state = get_peft_model_state_dict(llm, adapter_name=TEXT_ADAPTER)
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(adapter / "adapter_model.safetensors"))
    (adapter / "training.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    save_config(cfg, tmp / "config.yaml")
    marker = json.loads((tmp / "llast.json").read_text())
    marker["parts"] = [p for p in marker.get("parts", []) if p != "text_lora"] + ["text_lora"]
    (tmp / "llast.json").write_text(json.dumps(marker))


def load_checkpoint(path: str | Path, dtype: str | None = None):
    """(LLaST model in eval mode, Config) rebuilt from checkpoint `path` alone."""
    path = resolve_checkpoint(path)
    cfg = read_checkpoint_config(path)
    model = build_checkpoint_model(cfg, Path(path) / "config.yaml", dtype)
    load_weights(model, path)
    return model.eval(), cfg


def ship_checkpoint(path: str | Path, out: str | Path, dtype: torch.dtype = torch.bfloat16) -> Path:
    """Copy checkpoint `path` to `out` for shipping: config, marker and trainable weights only (no
    trainer state), cast to `dtype` (bf16 halves the size; loading casts back to the model's dtype)."""
    path, out = resolve_checkpoint(path), Path(out)  # a folder, or a shipped model's name
    read_checkpoint_config(path)  # a complete checkpoint, or CheckpointError
    check_new_checkpoint_out(path, out)
    with staged(out, CHECKPOINT) as tmp:
        shutil.copytree(path, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("trainer_state.pt", "engine", "README.md"))
        for f in tmp.rglob("*.safetensors"):
            tensors = load_file(str(f))
            save_file({k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}, str(f))
    return out


def merge_lora_weights(model, parts: tuple[str, ...] = ("encoder", "llm")) -> None:
    """Fold LoRA into the base encoder and/or LLM in place (peft merge_and_unload); for inference only."""
    for part in parts:
        module = getattr(model, part)
        if hasattr(module, "peft_config"):
            setattr(model, part, module.merge_and_unload())


def export_merged(path: str | Path, out: str | Path) -> Path:
    """Merge the LoRA weights into the base encoder and LLM; write a standalone checkpoint to `out`. It
    decodes in one pass (decode.two_pass off): two passes need the LLM without its L-LoRA."""
    out = Path(out)
    check_new_checkpoint_out(resolve_checkpoint(path), out)
    model, cfg = load_checkpoint(path)
    with staged(out, CHECKPOINT) as tmp:
        _write_merged(model, cfg, tmp)
    return out


def _write_merged(model, cfg: Config, tmp: Path) -> None:
    merge_lora_weights(model)
    model.encoder.save_pretrained(str(tmp / "encoder"))
    model.llm.save_pretrained(str(tmp / "llm"))
    AutoTokenizer.from_pretrained(resolve_name(cfg.model.llm.name)).save_pretrained(str(tmp / "llm"))
    save_file({k: v.contiguous() for k, v in model.adaptor.state_dict().items()}, str(tmp / "adaptor.safetensors"))
    merged = from_dict(to_dict(cfg))
    merged.model.encoder.name = "./encoder"
    merged.model.llm.name = "./llm"
    merged.model.encoder.lora.enabled = False
    merged.model.llm.lora.enabled = False
    merged.decode = dataclasses.replace(merged.decode, two_pass=False)  # needs the LLM without its merged L-LoRA (and a text adapter is not merged)
    save_config(merged, tmp / "config.yaml")
    (tmp / "llast.json").write_text(json.dumps({"kind": "llast-checkpoint", "format": FORMAT, "merged": True, "parts": ["adaptor"]}))

