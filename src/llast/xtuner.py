"""Import checkpoints of the released LLaST code (an XTuner fork, trained with DeepSpeed).

The released training writes ``mp_rank_00_model_states.pt``: a torch pickle whose ``module`` entry holds
only what trained, in fp16:

    projector.model.{0,2,4}.{weight,bias}                                   -> adaptor.mlp.{0,2,4}.*
    llm.base_model.model.model.layers.{i}.{self_attn.{q,k,v,o}_proj,mlp.{gate,up,down}_proj}.lora_{A,B}.default.weight
                                                                            -> the same key (L-LoRA)
    speech_encoder.base_model.model.encoder.layers.{i}.{self_attn.*,fc1,fc2}.lora_{A,B}.default.weight
                                                                            -> encoder.base_model.model.layers.{i}... (S-LoRA)
    speech_encoder.base_model.model.decoder.*  LoRA of Whisper's decoder, which LLaST never runs: dropped, counted

The import is strict: every key of ``module`` is used or dropped by name, and every adaptor/LoRA tensor the
config's model expects must be there with its shape. The pickle is read with ``weights_only=True``; any
other object in the file (DeepSpeed and mmengine metadata) is rebuilt as an inert placeholder, so nothing
in the file can run code (globals of modules torch blocks outright, such as os or subprocess, make the
file refused). The written checkpoint decodes as the released code did: prompt preset
``released`` and encoder input ``pad30_full`` (all 1500 frames of the 30 s pad go to the LLM).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import serialization

from llast.checkpoint import save_checkpoint
from llast.config import Config, from_dict, to_dict
from llast.errors import CheckpointError
from llast.memory import meta_model
from llast.model import check_weights

_PROJECTOR = re.compile(r"^projector\.model\.(\d+)\.(weight|bias)$")
_LLM_LORA = "llm.base_model.model."
_ENC_LORA = "speech_encoder.base_model.model.encoder."
_DEC_LORA = "speech_encoder.base_model.model.decoder."


def _placeholder(qualified_name: str) -> type:
    """An inert class standing for a global the file names: it stores its arguments and does nothing."""

    def init(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def setstate(self, state):
        self.state = state

    module, _, name = qualified_name.rpartition(".")
    return type(name or "Placeholder", (), {"__init__": init, "__setstate__": setstate, "__module__": module,
                                             "qualified_name": qualified_name})


def read_released(path: str | Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(the `module` state dict, the globals that were replaced by placeholders) of a DeepSpeed model-states file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")

    try:
        unsafe = sorted(serialization.get_unsafe_globals_in_checkpoint(str(path)))
        with serialization.safe_globals([(_placeholder(n), n) for n in unsafe]):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file becomes one clear error
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        why = next((ln for ln in lines if "GLOBAL" in ln), lines[0] if lines else type(e).__name__)
        raise CheckpointError(f"{path}: refused, not a safely readable torch checkpoint: {why}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("module"), dict):
        raise CheckpointError(f"{path}: no 'module' state dict (top-level keys: {sorted(obj)[:10] if isinstance(obj, dict) else type(obj).__name__})")
    bad = [k for k, v in obj["module"].items() if not torch.is_tensor(v)]
    if bad:
        raise CheckpointError(f"{path}: 'module' holds non-tensors: {bad[:5]}")
    return obj["module"], unsafe


def map_keys(module: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int, list[str]]:
    """(tensors under llast's model.state_dict() names, decoder LoRA tensors dropped, unknown keys)."""
    out, dropped, unknown = {}, 0, []
    for key, value in module.items():
        m = _PROJECTOR.match(key)
        if m:
            out[f"adaptor.mlp.{m.group(1)}.{m.group(2)}"] = value
        elif key.startswith(_LLM_LORA) and "lora_" in key:
            out[key] = value
        elif key.startswith(_ENC_LORA) and "lora_" in key:
            out["encoder.base_model.model." + key[len(_ENC_LORA):]] = value
        elif key.startswith(_DEC_LORA) and "lora_" in key:
            dropped += 1
        else:
            unknown.append(key)
    return out, dropped, unknown


def released_config(cfg: Config) -> Config:
    """`cfg` set up to decode as the released code: released prompts, all 1500 frames to the LLM."""
    cfg = from_dict(to_dict(cfg))
    cfg.model.prompt.preset = "released"
    cfg.model.encoder.input_length = "pad30_full"
    return cfg


def import_xtuner(ckpt: str | Path, cfg: Config, out: str | Path, say=print) -> Path:
    """Write a llast checkpoint at `out` from the released code's `ckpt` for the model `cfg` describes."""
    ckpt = Path(ckpt)
    cfg = released_config(cfg)
    module, placeholders = read_released(ckpt)
    state, dropped, unknown = map_keys(module)
    if unknown:
        raise CheckpointError(f"{ckpt}: {len(unknown)} keys of 'module' are neither projector nor LoRA weights: {unknown[:6]}")
    if cfg.model.adaptor.type != "mlp" or cfg.model.adaptor.stack != 1:
        raise CheckpointError(f"{ckpt}: the released projector is the 3-layer MLP without stacking: set "
                              "model.adaptor.type=mlp model.adaptor.stack=1")
    model = meta_model(cfg)
    trainable = {k: v.shape for k, v in model.state_dict().items() if k.startswith("adaptor.") or "lora_" in k}
    check_weights(state, trainable, f"{ckpt}: does not match the config's model (check model.*.lora.r, the LLM and the encoder)")
    state = {k: v.float() for k, v in state.items()}
    save_checkpoint(model, cfg, out, state_dict=state)
    say(f"imported {len(state)} tensors from {ckpt} ({sum(v.numel() for v in state.values()):,} parameters); "
        f"dropped {dropped} Whisper-decoder LoRA tensors (LLaST never runs the decoder)")
    if placeholders:
        say(f"metadata objects read as inert placeholders: {', '.join(placeholders)}")
    return Path(out)
