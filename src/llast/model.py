"""The LLaST model: speech encoder -> adaptor -> audio embeddings spliced into the LLM prompt.

This file knows tensors and weights, not training or decoding: no tokenizer, optimizer, peft or
decoding strategy here (llast.decode chooses that). It reads model configs and weights; it writes no files.
Dimension legend: B clips, S samples, F feature frames, T encoder frames, N audio embeddings,
L tokens, D encoder width, H LLM hidden size.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from huggingface_hub import hf_hub_download
from safetensors import safe_open
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, WhisperConfig
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from llast import assets, beam
from llast.audio import HOP_LENGTH, N_SAMPLES_30S
from llast.config import AdaptorConfig, ModelConfig
from llast.errors import CheckpointError, ConfigError, LlastError

AUDIO_TOKEN_ID = -200  # placeholder id in input_ids; those positions receive adaptor outputs
IGNORE_INDEX = -100  # label of positions without loss (prompt, audio, padding)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ----------------------------------------------------------------------------- lengths


def encoder_family(encoder_config) -> str:
    """'whisper' or 'wav2vec2' (wav2vec 2.0 and HuBERT share the convolutional front end)."""
    model_type = getattr(encoder_config, "model_type", "")
    if model_type == "whisper":
        return "whisper"
    if model_type in ("wav2vec2", "hubert", "wav2vec2-conformer", "wavlm", "data2vec-audio"):
        return "wav2vec2"
    raise ConfigError(f"model.encoder.name: unsupported encoder type {model_type!r} (whisper, wav2vec2, hubert)")


def encoder_output_length(num_samples, encoder_config):
    """Encoder frames for `num_samples` real samples (int or LongTensor, elementwise)."""
    if encoder_family(encoder_config) == "whisper":
        frames = whisper_frames(num_samples // HOP_LENGTH)
        limit = encoder_config.max_source_positions
        return frames.clamp(1, limit) if torch.is_tensor(frames) else max(1, min(frames, limit))
    length = num_samples
    for kernel, stride in zip(encoder_config.conv_kernel, encoder_config.conv_stride):
        length = (length - kernel) // stride + 1
    return length.clamp(min=1) if torch.is_tensor(length) else max(1, length)


def whisper_frames(mel_frames):
    """Whisper encoder frames for `mel_frames` log-mel frames (conv2: kernel 3, stride 2, padding 1)."""
    return (mel_frames - 1) // 2 + 1


def adaptor_output_length(frames, adaptor: AdaptorConfig):
    """Audio embeddings the adaptor makes from `frames` encoder frames (int or LongTensor)."""
    if adaptor.type == "mlp":
        return (frames + adaptor.stack - 1) // adaptor.stack  # ceil: the last group is zero padded
    for _ in range(adaptor.conv_layers):
        pad = adaptor.conv_kernel // 2
        frames = (frames + 2 * pad - adaptor.conv_kernel) // adaptor.conv_stride + 1
    return frames


def encoder_frames(num_samples, encoder_config, cfg: ModelConfig):
    """Encoder frames handed on to the adaptor: the clip's own (`encoder_output_length`), or with
    input_length "pad30_full" every frame of the 30 s pad (1500 for Whisper), as the released code's
    models were trained to see."""
    if cfg.encoder.input_length == "pad30_full":
        full = encoder_output_length(N_SAMPLES_30S, encoder_config)
        return torch.full_like(num_samples, full) if torch.is_tensor(num_samples) else full
    return encoder_output_length(num_samples, encoder_config)


def audio_embed_length(num_samples, encoder_config, cfg: ModelConfig):
    """THE number of audio embeddings (prompt slots) a clip of `num_samples` samples yields.

    Prompt building, the model and the tests all call this one function.
    """
    return adaptor_output_length(encoder_frames(num_samples, encoder_config, cfg), cfg.adaptor)


# ----------------------------------------------------------------------------- adaptors


class MLPAdaptor(nn.Module):
    """Paper's adaptor: Linear-GELU-Linear-GELU-Linear, after stacking k consecutive frames.

    x : (B, T, D) -> (B, ceil(T / k), H)
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int | None = None, stack: int = 1):
        super().__init__()
        hidden = hidden or out_dim
        self.stack = stack
        self.mlp = nn.Sequential(
            nn.Linear(in_dim * stack, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, out_dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stack > 1:
            B, T, D = x.shape
            pad = (-T) % self.stack
            x = F.pad(x, (0, 0, 0, pad)).reshape(B, (T + pad) // self.stack, D * self.stack)  # (B, T/k, k*D)
        return self.mlp(x)


class LSTAdaptor(nn.Module):
    """LST's adaptor: 1-D convolution length adaptor (stride s, n layers) + linear modality adaptor.

    x : (B, T, D) -> (B, ~T / s^n, H)
    """

    def __init__(self, in_dim: int, out_dim: int, layers: int = 2, kernel: int = 3, stride: int = 2):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv1d(in_dim, in_dim, kernel, stride=stride, padding=kernel // 2) for _ in range(layers)
        )
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)  # (B, D, T)
        for conv in self.convs:
            x = F.gelu(conv(x))
        return self.proj(x.transpose(1, 2))  # (B, N, H)


def build_adaptor(cfg: AdaptorConfig, in_dim: int, out_dim: int) -> nn.Module:
    if cfg.type == "mlp":
        return MLPAdaptor(in_dim, out_dim, cfg.hidden_size, cfg.stack)
    return LSTAdaptor(in_dim, out_dim, cfg.conv_layers, cfg.conv_kernel, cfg.conv_stride)


# ----------------------------------------------------------------------------- the model


def _unwrap(module: nn.Module) -> nn.Module:
    """The base module under a peft wrapper (peft injects LoRA layers in place, so calling the
    base module's submodules runs LoRA too)."""
    return module.get_base_model() if hasattr(module, "peft_config") and hasattr(module, "get_base_model") else module


class LLaST(nn.Module):
    """Speech encoder + adaptor + causal LM.

    `encoder` is a transformers WhisperEncoder, Wav2Vec2Model or HubertModel; `llm` any causal LM.
    """

    def __init__(self, encoder: nn.Module, adaptor: nn.Module, llm: nn.Module, cfg: ModelConfig):
        super().__init__()
        self.encoder = encoder
        self.adaptor = adaptor
        self.llm = llm
        self.cfg = cfg
        self.encoder_config = _unwrap(encoder).config
        # The transformer blocks of both parts (HF names, e.g. WhisperEncoderLayer, LlamaDecoderLayer): what
        # FSDP shards one by one (Accelerate's TRANSFORMER_BASED_WRAP reads this attribute).
        present = {type(m).__name__ for m in self.modules()}
        blocks = [n for part in (encoder, llm) for n in (getattr(_unwrap(part), "_no_split_modules", None) or [])]
        self._no_split_modules = sorted({n for n in blocks if n in present})
        self.family = encoder_family(self.encoder_config)

    # ------------------------------------------------------------------ audio
    def encode(self, input_features: torch.Tensor, audio_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder states and their validity mask.

        input_features : (B, n_mels, F) Whisper log-mel, or (B, S) waveform for wav2vec2/HuBERT
        audio_lengths  : (B,) real samples per clip
        returns (B, T, D) states, (B, T) bool mask of real frames
        """
        enc = _unwrap(self.encoder)
        dtype = next(enc.parameters()).dtype
        x = input_features.to(dtype)
        n_frames = encoder_frames(audio_lengths, self.encoder_config, self.cfg)  # (B,)
        if self.family == "whisper":
            if self.cfg.encoder.input_length in ("pad30", "pad30_full"):
                states = self.encoder(x).last_hidden_state  # (B, 1500, D), exactly as Whisper was trained
            else:
                states = _whisper_encode_variable(enc, x, audio_lengths // HOP_LENGTH, n_frames)
        else:
            sample_mask = _lengths_to_mask(audio_lengths, x.shape[1])
            use_mask = getattr(self.encoder_config, "feat_extract_norm", "layer") == "layer"
            states = self.encoder(x, attention_mask=sample_mask.long() if use_mask else None).last_hidden_state
        T = int(n_frames.max())
        states = states[:, :T]
        return states, _lengths_to_mask(n_frames, states.shape[1])

    def embed_audio(
        self, input_features: torch.Tensor | None, audio_lengths: torch.Tensor, encoder_states: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Adaptor outputs and their mask: (B, N, H), (B, N) bool; N from `audio_embed_length`.

        encoder_states : (B, T, D) the frozen encoder's output computed earlier (llast.features cache);
                         given instead of `input_features`, the encoder is skipped.
        """
        if encoder_states is not None:
            n_frames = encoder_output_length(audio_lengths, self.encoder_config)  # (B,)
            states = encoder_states[:, : int(n_frames.max())]
            frame_mask = _lengths_to_mask(n_frames, states.shape[1])
        else:
            states, frame_mask = self.encode(input_features, audio_lengths)
        states = states * frame_mask.unsqueeze(-1).to(states.dtype)  # padded frames never reach the adaptor
        adaptor_dtype = next(self.adaptor.parameters()).dtype
        embeds = self.adaptor(states.to(adaptor_dtype))
        n_embeds = audio_embed_length(audio_lengths, self.encoder_config, self.cfg)
        return embeds, _lengths_to_mask(n_embeds, embeds.shape[1])

    def splice(self, input_ids: torch.Tensor, audio_embeds: torch.Tensor, audio_mask: torch.Tensor) -> torch.Tensor:
        """Prompt embeddings with the audio slots (AUDIO_TOKEN_ID) filled by the adaptor outputs.

        input_ids : (B, L); audio_embeds : (B, N, H); audio_mask : (B, N) -> (B, L, H)
        """
        slots = input_ids == AUDIO_TOKEN_ID  # (B, L)
        per_row_slots, per_row_audio = slots.sum(1), audio_mask.sum(1)
        if not torch.equal(per_row_slots, per_row_audio.to(per_row_slots.device)):
            raise ValueError(
                f"audio slots in the prompt {per_row_slots.tolist()} != audio embeddings {per_row_audio.tolist()} per clip; "
                "build prompts with llast.processor.Processor (it uses audio_embed_length)"
            )
        embed = self.llm.get_input_embeddings()
        text = embed(input_ids.masked_fill(slots, 0))  # (B, L, H)
        audio = audio_embeds[audio_mask].to(text.dtype)  # (sum N_i, H), row by row in order
        return text.masked_scatter(slots.unsqueeze(-1), audio)

    def inputs_embeds(self, input_features, audio_lengths, input_ids, encoder_states=None) -> torch.Tensor:
        audio_embeds, audio_mask = self.embed_audio(input_features, audio_lengths, encoder_states)
        return self.splice(input_ids, audio_embeds, audio_mask)

    # ------------------------------------------------------------------ adaptor pre-training
    def ctc_loss(self, audio_lengths, labels, vocab: torch.Tensor, input_features=None, encoder_states=None,
                 temperature: float = 0.05, ctc_targets=None) -> CausalLMOutputWithPast:
        """CTC between the audio embeddings and the target tokens in the LLM's own input-embedding space.

        Each audio embedding is scored against the LLM's (frozen) input embeddings of the tokens in
        `vocab` by cosine similarity / temperature; vocab[0] is the CTC blank. (Input embeddings are
        anisotropic: Qwen2.5's random token pairs have cosine 0.23 +- 0.12, so a match beats the rest by
        ~0.8; at temperature 0.05 that is a logit gap of ~16, enough to pick one token out of ~15k.) The adaptor thus learns to
        emit, in order, vectors that point at the embeddings of the tokens being spoken, so that the LLM
        starts the LM stage reading something close to text. A penalty keeps the embeddings' norms at the
        vocabulary's mean norm (cosine scores do not fix it). No LLM forward: only the adaptor (and the
        encoder, unless `encoder_states` are given) runs.

        labels : (B, L) as for forward(): -100 except the target tokens and the final EOS (dropped here)
        vocab  : (K,) token ids, blank first; every target token must be in it
        ctc_targets : (B, S) token ids to spell instead of the labels' (e.g. letters), -100 padded
        returns loss (CTC per target token + norm penalty) and logits (B, N, K)
        """
        embeds, mask = self.embed_audio(input_features, audio_lengths, encoder_states)  # (B, N, H), (B, N)
        table = self.llm.get_input_embeddings().weight[vocab].detach().float()  # (K, H)
        target_norm = table.norm(dim=-1).mean()
        embeds = embeds.float()
        logits = F.normalize(embeds, dim=-1) @ F.normalize(table, dim=-1).T / temperature  # (B, N, K)
        lookup = torch.full((int(vocab.max()) + 1,), -1, dtype=torch.long, device=vocab.device)
        lookup[vocab] = torch.arange(len(vocab), device=vocab.device)
        if ctc_targets is not None:
            targets = [row[row != IGNORE_INDEX] for row in ctc_targets]
        else:
            targets = [row[row != IGNORE_INDEX][:-1] for row in labels]  # target tokens without EOS
        if any(int(t.max()) >= len(lookup) or bool((lookup[t] < 0).any()) for t in targets if len(t)):
            raise ValueError("ctc_loss: a target token is not in `vocab`")
        flat = torch.cat([lookup[t] for t in targets])
        ctc = F.ctc_loss(
            logits.log_softmax(-1).transpose(0, 1), flat, input_lengths=mask.sum(1),
            target_lengths=torch.tensor([len(t) for t in targets], device=flat.device), blank=0,
            reduction="mean", zero_infinity=True,
        )
        norm_penalty = ((embeds.norm(dim=-1)[mask] / target_norm - 1) ** 2).mean()
        return CausalLMOutputWithPast(loss=ctc + norm_penalty, logits=logits)

    # ------------------------------------------------------------------ LM
    def forward(self, input_features=None, audio_lengths=None, input_ids=None, attention_mask=None, labels=None,
                encoder_states=None, ctc_vocab=None, ctc_targets=None, **kwargs):
        """Without labels: the LLM's output (logits (B, L, V)). With labels: `loss`, the mean
        cross-entropy over target tokens, with the vocabulary-sized LM head run on the target
        positions only (prompt and audio positions need no logits; most of a batch is audio).
        With `ctc_vocab`: the adaptor pre-training loss instead (see `ctc_loss`; no LLM forward)."""
        if ctc_vocab is not None:
            return self.ctc_loss(audio_lengths, labels, ctc_vocab, input_features, encoder_states, ctc_targets=ctc_targets)
        embeds = self.inputs_embeds(input_features, audio_lengths, input_ids, encoder_states)
        if labels is None:
            return self.llm(inputs_embeds=embeds, attention_mask=attention_mask, **kwargs)
        hidden = self.llm.get_decoder()(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False).last_hidden_state
        targets = labels[:, 1:]  # position t predicts token t+1
        keep = targets != IGNORE_INDEX  # (B, L-1)
        logits = self.llm.get_output_embeddings()(hidden[:, :-1][keep]).float()  # (n_targets, V)
        cap = getattr(self.llm.config.get_text_config(), "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        loss = F.cross_entropy(logits, targets[keep])
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    @torch.no_grad()
    def generate(self, input_features, audio_lengths, input_ids, attention_mask, encoder_states=None,
                 **generate_kwargs) -> torch.Tensor:
        """Token ids of the continuation only, (B, new_tokens): transformers' generate on the whole
        prompt (left padded). llast.generate.generate_ids chooses between this and the shared prefill."""
        embeds = self.inputs_embeds(input_features, audio_lengths, input_ids, encoder_states)
        return self.llm.generate(inputs_embeds=embeds, attention_mask=attention_mask, **generate_kwargs)

    @torch.no_grad()
    def prefill(self, input_features, audio_lengths, input_ids, attention_mask, encoder_states=None):
        """(prompt embeddings (B, L, H), KV cache of all but the last position, B rows): the prompt run once
        per clip, for a beam search to continue from (llast.generate.generate_ids). Prompts are left padded."""
        embeds = self.inputs_embeds(input_features, audio_lengths, input_ids, encoder_states)
        return embeds, beam.prefill(self.llm, embeds, attention_mask)


def _lengths_to_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    return torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]  # (B, width)


def _whisper_encode_variable(enc, mel: torch.Tensor, mel_lengths: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
    """Whisper encoder on real-length input (HF's forward insists on 3000 frames).

    Positional embeddings are sliced to the input length; padded frames are zeroed after each
    convolution and masked as attention keys, so a clip's states do not depend on its batch.
    mel : (B, n_mels, F), mel_lengths (B,), frame_lengths (B,) from `encoder_output_length` -> (B, ceil(F/2), D)
    """
    F_in = mel.shape[-1]
    mask_in = _lengths_to_mask(mel_lengths.clamp(max=F_in), F_in).to(mel.dtype)  # (B, F)
    x = F.gelu(enc.conv1(mel)) * mask_in[:, None, :]
    x = F.gelu(enc.conv2(x))  # (B, D, T)
    T = x.shape[-1]
    if T > enc.embed_positions.num_embeddings:
        raise ValueError(f"audio of {T} encoder frames exceeds Whisper's {enc.embed_positions.num_embeddings} (30 s)")
    mask = _lengths_to_mask(frame_lengths, T)  # (B, T)
    x = x * mask[:, None, :].to(x.dtype)
    x = x.permute(0, 2, 1) + enc.embed_positions.weight[:T]  # (B, T, D)
    x = F.dropout(x, p=enc.dropout, training=enc.training)
    # Additive key mask (B, 1, 1, T): works with the eager and sdpa attention kernels.
    bias = torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_fill(~mask, torch.finfo(x.dtype).min)
    bias = bias[:, None, None, :]
    for layer in enc.layers:
        x = layer(x, bias)
        if isinstance(x, tuple):
            x = x[0]
    return enc.layer_norm(x)


# ----------------------------------------------------------------------------- loading


def _cpu_has_amx_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (Intel AMX-BF16; Linux /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return "amx_bf16" in line.split()
    except OSError:
        pass
    return False


def inference_dtype(setting: str, device) -> torch.dtype:
    """The weights dtype for decoding. "auto": bf16 on CUDA GPUs that support it and on CPUs with
    AMX-BF16 (there bf16 matmuls run several times faster than fp32 at decoding batch sizes: see
    bench/matmul_dtype.py, removed after a58a4b4), else fp32."""
    if setting != "auto":
        if setting not in _DTYPES:
            raise ConfigError(f"dtype {setting!r}: expected one of auto, {', '.join(_DTYPES)}")
        return _DTYPES[setting]
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu":
        return torch.bfloat16 if _cpu_has_amx_bf16() else torch.float32
    return torch.float32


def resolve_name(name: str) -> str:
    """Bundled model name -> its prepared directory; local paths and hub ids pass through."""
    if Path(name).is_dir():
        return name

    return assets.resolve(name)


# The HF config.json files kept in the repository, one folder per hub repository name.
HF_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "hf"


def kept_config_dir(name: str) -> str:
    """Where `random_init` reads `name`'s config.json: a local folder or a prepared bundled model as
    given, else the kept copy configs/hf/<repo name>/ (hub id "openai/whisper-large-v2" ->
    configs/hf/whisper-large-v2). Never downloads."""
    if Path(name).expanduser().is_dir() or name in assets.ASSETS:
        return resolve_name(name)
    kept = HF_CONFIGS / name.rstrip("/").split("/")[-1]
    if not (kept / "config.json").is_file():
        known = sorted(p.name for p in HF_CONFIGS.glob("*") if (p / "config.json").is_file())
        raise ConfigError(f"{name}: model.random_init needs its config.json, not kept in {HF_CONFIGS} "
                          f"(kept: {', '.join(known) or 'none'}); pass a local folder with a config.json")
    return str(kept)


def load_encoder_config(name: str, random_init: bool = False):
    return AutoConfig.from_pretrained(kept_config_dir(name) if random_init else resolve_name(name))


def random_modules(cfg: ModelConfig, dtype: torch.dtype, device=None) -> tuple[nn.Module, nn.Module]:
    """(encoder, LLM) with random weights from their config.json alone (see `kept_config_dir`).

    device "meta": no storage at all (parameter counts and memory plans of 13B models in no RAM).
    Otherwise the weights are drawn under a fixed seed, so the same config always gives the same model.
    """
    enc_config = load_encoder_config(cfg.encoder.name, random_init=True)
    llm_config = AutoConfig.from_pretrained(kept_config_dir(cfg.llm.name))
    default = torch.get_default_dtype()
    try:  # drawn directly in `dtype`: no full-precision copy of a 13B model on the way
        with torch.random.fork_rng(devices=[]), torch.device(device) if device is not None else contextlib.nullcontext():
            torch.manual_seed(0)
            torch.set_default_dtype(dtype if dtype.is_floating_point else default)
            if encoder_family(enc_config) == "whisper":
                encoder = WhisperEncoder(enc_config)
            else:
                encoder = AutoModel.from_config(enc_config, dtype=dtype)
            llm = AutoModelForCausalLM.from_config(llm_config, dtype=dtype)
    finally:
        torch.set_default_dtype(default)
    return encoder.to(dtype).eval(), llm.to(dtype).eval()


def check_weights(state: dict, expected: dict, what: str) -> None:
    """THE check of every weight load: `state` (name -> tensor) holds exactly the names of `expected`
    (name -> tensor or torch.Size), each with the expected shape; else a CheckpointError that starts with
    `what` and names the missing, unexpected and mis-shaped tensors."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(getattr(expected[k], 'shape', expected[k]))}"
              for k in sorted(set(state) & set(expected))
              if tuple(state[k].shape) != tuple(getattr(expected[k], "shape", expected[k]))]
    if missing or unexpected or shapes:
        raise CheckpointError(f"{what}: {len(missing)} missing {missing[:8]}, {len(unexpected)} unexpected "
                              f"{unexpected[:8]}, {len(shapes)} with other shapes {shapes[:4]}")


def _weight_files(path: str) -> list[Path]:
    """Local safetensors/bin weight files of a model dir or hub id (downloaded through the HF cache)."""
    local = Path(path)
    if local.is_dir():
        files = sorted(local.glob("*.safetensors")) or sorted(local.glob("pytorch_model*.bin"))
        if not files:
            raise CheckpointError(f"{path}: no *.safetensors or pytorch_model*.bin weights found")
        return files

    try:
        index = hf_hub_download(path, "model.safetensors.index.json")
        shards = sorted(set(json.loads(Path(index).read_text())["weight_map"].values()))
        return [Path(hf_hub_download(path, s)) for s in shards]
    except Exception:
        return [Path(hf_hub_download(path, "model.safetensors"))]


def _read_prefixed(files: list[Path], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Tensors whose names start with one of `prefixes` (prefix stripped), read lazily."""
    out: dict[str, torch.Tensor] = {}
    for f in files:
        if f.suffix == ".safetensors":
            with safe_open(str(f), framework="pt") as sf:
                for k in sf.keys():
                    for p in prefixes:
                        if k.startswith(p):
                            out[k[len(p):]] = sf.get_tensor(k)
                            break
        else:
            sd = torch.load(f, map_location="cpu", weights_only=True)
            for k, v in sd.items():
                for p in prefixes:
                    if k.startswith(p):
                        out[k[len(p):]] = v
                        break
    return out


def load_whisper_encoder(name: str, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Whisper's ENCODER only: the decoder is neither built nor read from disk."""
    path = resolve_name(name)
    config = WhisperConfig.from_pretrained(path)
    files = _weight_files(path)
    state = _read_prefixed(files, ("model.encoder.", "encoder."))
    if not state:  # a bare WhisperEncoder saved on its own (llast export)
        state = _read_prefixed(files, ("",))
    with torch.device("meta"):
        encoder = WhisperEncoder(config)
    check_weights(state, encoder.state_dict(), f"{path}: Whisper encoder weights do not match the config")
    encoder.load_state_dict({k: v.to(dtype) for k, v in state.items()}, assign=True)
    return encoder.to(dtype).eval()


def load_encoder(name: str, dtype: torch.dtype = torch.float32) -> nn.Module:
    config = load_encoder_config(name)
    if encoder_family(config) == "whisper":
        return load_whisper_encoder(name, dtype)

    model = AutoModel.from_pretrained(resolve_name(name), dtype=dtype)  # Wav2Vec2Model / HubertModel (CTC head dropped)
    return model.eval()


def load_llm(name: str, dtype: torch.dtype = torch.float32) -> nn.Module:
    return AutoModelForCausalLM.from_pretrained(resolve_name(name), dtype=dtype).eval()


def build_model(cfg: ModelConfig, encoder: nn.Module | None = None, llm: nn.Module | None = None,
                device=None) -> LLaST:
    """LLaST with pretrained encoder and LLM loaded by name (bundled name, hub id or path) and a
    freshly initialised adaptor. Pass `encoder`/`llm` to use modules already in memory.
    With cfg.random_init, encoder and LLM get random weights from their config.json (`random_modules`);
    `device="meta"` then builds the whole model without storage."""
    dtype = _DTYPES[cfg.dtype]
    if cfg.random_init and (encoder is None or llm is None):
        rand_encoder, rand_llm = random_modules(cfg, dtype, device)
        encoder = encoder if encoder is not None else rand_encoder
        llm = llm if llm is not None else rand_llm
    encoder = encoder if encoder is not None else load_encoder(cfg.encoder.name, dtype)
    llm = llm if llm is not None else load_llm(cfg.llm.name, dtype)
    enc_config = _unwrap(encoder).config
    in_dim = enc_config.d_model if encoder_family(enc_config) == "whisper" else enc_config.hidden_size
    with torch.device(device) if device is not None else contextlib.nullcontext():
        adaptor = build_adaptor(cfg.adaptor, in_dim, llm.config.get_text_config().hidden_size)
    model = LLaST(encoder, adaptor, llm, cfg)
    if cfg.encoder.gradient_checkpointing:
        _unwrap(encoder).gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.llm.gradient_checkpointing:
        llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        llm.config.use_cache = False
    return model


def build_named_model(cfg: ModelConfig, device=None) -> LLaST:
    """`build_model` (no LoRA yet), with a model name that cannot be loaded (a bundled model not
    prepared, a missing folder, a hub id out of reach offline) reported as a ConfigError naming its
    key (model.encoder.name / model.llm.name). With cfg.random_init nothing is loaded (see `build_model`)."""
    if cfg.random_init:  # nothing to load: random weights from the kept config.json
        return build_model(cfg, device=device)
    dtype = _DTYPES[cfg.dtype]
    loaded = {}
    for key, loader in (("encoder", load_encoder), ("llm", load_llm)):
        name = getattr(cfg, key).name
        try:
            loaded[key] = loader(name, dtype)
        except (OSError, ValueError, KeyError, LlastError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"model.{key}.name: cannot load {name!r}: {first}") from None
    return build_model(cfg, encoder=loaded["encoder"], llm=loaded["llm"], device=device)
