"""The LLM of a llast model run by llama.cpp (llama-cpp-python) on CPU: `--dtype gguf`.

llast-mini's LLM, Qwen2.5-Coder-0.5B-Instruct, is bundled as a Q4_K_M GGUF; the PyTorch model runs the same
weights dequantized to fp32 (llast.convert). llama.cpp runs them as they are, quantized, with its own CPU
kernels, and takes the rest as llama.cpp takes any multimodal model's: the speech embeddings of the
adaptor (llast.model.LLaST.embed_audio, PyTorch) are fed as embeddings between the prompt's tokens. The
LoRA adapters (L-LoRA, the text adapter) are converted to GGUF LoRA adapters (`lora_to_gguf`) and switched
per pass; llama.cpp applies them at run time, unmerged, at their trained scale.

Decoding is llast.beam's beam search (greedy at one beam), the same search as on PyTorch: several prompts
at once in one KV cache, each beam a llama.cpp sequence; reordering beams copies sequences (in a unified
cache the copy shares the prefix's cells).

    prompt (B rows): [token ids before the audio] [audio embeddings (N_i, H)] [token ids after]
      -> prefill: each row's three parts but the last token into its own sequence (seq_id = row)
      -> llast.beam.beam_search: each step, every live beam's newest token in one batch (LlamaCppLLM.forward),
         then the beams reordered (_Seqs.reorder_cache: llama_memory_seq_cp / seq_rm)
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import tempfile
import warnings
from importlib.util import find_spec
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from llast import beam
from llast.assets import gguf_file, resolve_checkpoint
from llast.checkpoint import TEXT_ADAPTER, load_weights, merge_lora_weights, read_checkpoint_config, read_tensors
from llast.config import DecodeConfig
from llast.errors import AssetError, ConfigError
from llast.lora import apply_lora
from llast.model import build_model, load_encoder, resolve_name

GGUF = "gguf"  # the --dtype that runs the LLM here
BASE = "base"  # the adapter name of the LLM without a LoRA (llast.quantize's, as two-pass decoding asks for it)
_MAX_SEQ = 256  # sequence ids of one llama.cpp context (its LLAMA_MAX_SEQ)
_PREFIX_SEQS = 4  # the top sequence ids: one cached prompt prefix per adapter (LlamaCppLLM._reuse_prefix)
_SEARCH_SEQS = _MAX_SEQ - _PREFIX_SEQS  # ids the prompts and their beams use


def runs(llm_name: str) -> bool:
    """Whether --dtype gguf can run LLM `llm_name` here: llama-cpp-python is installed and the LLM is a
    bundled GGUF model whose packages are installed (`llast models prepare NAME`)."""
    if find_spec("llama_cpp") is None:
        return False
    try:
        gguf_file(llm_name)
    except AssetError:
        return False
    return True


def _lib():
    try:
        import llama_cpp  # lazy: a compiled library; only --dtype gguf needs it
    except ImportError as e:
        raise ConfigError(f"--dtype gguf needs llama-cpp-python ({e}); scripts/setup.sh installs it, or "
                          "`pip install llama-cpp-python`") from None
    return llama_cpp


def lora_to_gguf(state: dict[str, torch.Tensor], alpha: float, out: str | Path, arch: str, n_layers: int) -> Path:
    """A PEFT LoRA state dict (get_peft_model_state_dict: `...X.lora_A.weight` (r, in), `...X.lora_B.weight`
    (out, r)) written as a GGUF LoRA adapter for llama.cpp: tensors `<GGUF name of X>.weight.lora_a` /
    `.lora_b` in those shapes (what llama.cpp expects), `alpha` as adapter.lora.alpha (llama.cpp scales by
    alpha / r, as PEFT does). arch: the LLM's model_type ("qwen2", "llama"); n_layers: its layer count."""
    import gguf  # lazy: the GGUF writer; only --dtype gguf needs it

    try:
        names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], n_layers)
    except KeyError:
        raise ConfigError(f"--dtype gguf: llama.cpp has no architecture {arch!r}") from None
    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(alpha))
    for key in sorted(state):
        stem, _, part = key.removeprefix("base_model.model.").rpartition(".lora_")
        name = names.get_name(stem)
        if name is None or part not in ("A.weight", "B.weight"):
            raise ConfigError(f"--dtype gguf: LoRA tensor {key} has no llama.cpp counterpart")
        writer.add_tensor(f"{name}.weight.lora_{part[0].lower()}", state[key].float().cpu().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(out)


class LlamaCppLLM(torch.nn.Module):
    """A GGUF model in a llama.cpp context with its LoRA adapters, for beam search over embedding prompts.
    A torch Module without parameters, so that it takes the HF LLM's place in llast.model.LLaST.

    gguf_path : the base model's GGUF
    adapters  : name -> GGUF LoRA adapter file (lora_to_gguf); llama.cpp reads the files here (they may be
                deleted afterwards). `active`: the adapter used outside `use` blocks (BASE: none).
    n_ctx     : KV cache cells shared by the prompts decoded at once (at most max_rows of them)
    """

    def __init__(self, gguf_path: str | Path, adapters: dict[str, Path], active: str = BASE, n_ctx: int = 8192,
                 max_rows: int = 16, n_batch: int = 512, threads: int | None = None):
        super().__init__()
        self.gguf_path = Path(gguf_path)
        lib = self.lib = _lib()
        _silence(lib)
        lib.llama_backend_init()
        self.model = lib.llama_model_load_from_file(str(gguf_path).encode(), lib.llama_model_default_params())
        if not self.model:
            raise ConfigError(f"{gguf_path}: llama.cpp could not load this GGUF")
        self.n_embd = lib.llama_model_n_embd(self.model)
        self.n_vocab = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(self.model))
        self.n_ctx, self.max_rows, self.n_batch = n_ctx, max_rows, max(n_batch, max_rows)
        cparams = lib.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = cparams.n_ubatch = self.n_batch
        cparams.n_seq_max = _MAX_SEQ
        cparams.kv_unified = True  # the beams share the n_ctx cells, and a copied sequence its prefix's
        cparams.n_threads = cparams.n_threads_batch = threads or torch.get_num_threads()
        self.ctx = lib.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            raise ConfigError(f"{gguf_path}: llama.cpp could not make a context of {n_ctx} tokens")
        self.adapters = {}
        for name, path in adapters.items():
            handle = lib.llama_adapter_lora_init(self.model, str(path).encode())
            if not handle:
                raise ConfigError(f"{path}: llama.cpp could not load this LoRA adapter for {gguf_path}")
            self.adapters[name] = handle
        self.names = set(self.adapters) | {BASE}
        if active not in self.names:
            raise ValueError(f"adapter {active!r}: not one of {sorted(self.names)}")
        self.active = active
        self._tokens = lib.llama_batch_init(self.n_batch, 0, 1)
        self._embeds = lib.llama_batch_init(self.n_batch, self.n_embd, 1)
        self.prefixes: dict[str, tuple[int, list[int]]] = {}  # adapter -> (its prefix sequence, the tokens in it)
        self.reuse_prefix = True

    @property
    def llast_adapters(self):
        """The adapter switch two-pass decoding uses (`use`, `names`), as llast.quantize's int8 LLM has one."""
        return self

    def check(self, decode) -> None:
        """ConfigError for what llama.cpp's decoding here cannot do: a repetition penalty."""
        if decode.repetition_penalty != 1.0:
            raise ConfigError("--dtype gguf decodes without a repetition penalty; leave decode.repetition_penalty at 1.0")

    @contextlib.contextmanager
    def use(self, name: str):
        """The adapter `name` (or BASE: none) active inside the block (two-pass decoding's text pass)."""
        before, self.active = self.active, name
        try:
            yield
        finally:
            self.active = before

    def generate(self, prompts: list[tuple[list[int], np.ndarray | None, list[int]]], decode: DecodeConfig,
                 eos: int, pad: int) -> torch.Tensor:
        """The best continuation of each of `prompts` by llast.beam.beam_search as `decode` asks (greedy at one
        beam), with the active adapter: (B, new_tokens) token ids, EOS included, then `pad`. A prompt is (ids
        before, embeddings (N, H) float32 or None, ids after) and ends in a token. As many prompts at once as
        the context holds, each beam a sequence of one KV cache."""
        self.check(decode)
        k = decode.num_beams
        rows = max(1, min(self.max_rows, self.n_batch // k, _SEARCH_SEQS // (2 * k)))  # 2 ids a beam: see _Seqs
        out: list[torch.Tensor] = []
        group: list = []
        cells = 0
        for p in prompts:
            need = len(p[0]) + (0 if p[1] is None else len(p[1])) + len(p[2]) + k * decode.max_new_tokens
            if need > self.n_ctx:
                raise ValueError(f"a prompt of {need - k * decode.max_new_tokens} positions + {k} beams of "
                                 f"{decode.max_new_tokens} new tokens exceeds llama.cpp's context of {self.n_ctx}")
            if group and (len(group) == rows or cells + need > self.n_ctx - self._prefix_cells()):
                out.append(self._search(group, decode, eos, pad))
                group, cells = [], 0
            group.append(p)
            cells += need
        if group:
            out.append(self._search(group, decode, eos, pad))
        width = max(o.shape[1] for o in out)
        return torch.cat([torch.nn.functional.pad(o, (0, width - o.shape[1]), value=pad) for o in out])

    def _search(self, prompts, decode: DecodeConfig, eos: int, pad: int) -> torch.Tensor:
        """`generate` for prompts that fit the context at once: each prompt but its last token prefilled into
        sequence `row`, then llast.beam.beam_search with this module as its LLM and a `_Seqs` as its cache."""
        lib = self.lib
        if self.active == BASE:
            lib.llama_set_adapters_lora(self.ctx, None, 0, None)
        else:
            handles = (lib.llama_adapter_lora_p_ctypes * 1)(self.adapters[self.active])
            lib.llama_set_adapters_lora(self.ctx, handles, 1, (ctypes.c_float * 1)(1.0))
        mem = lib.llama_get_memory(self.ctx)
        for seq in range(_SEARCH_SEQS):  # the last search's sequences; the cached prefixes stay
            lib.llama_memory_seq_rm(mem, seq, -1, -1)
        if any(not after and (embeds is not None or not before) for before, embeds, after in prompts):
            raise ValueError("llama.cpp decoding: a prompt must end in a token")
        prompts = [(before, embeds, after) if after else (before[:-1], None, before[-1:])
                   for before, embeds, after in prompts]
        # One prompt at a time (live decoding, one segment as it closes): its template's start from the cache
        # (bench/results/live/prefix_cache.txt: 2.00 -> 1.62 s a segment, greedy). Batches prefill whole: there
        # the cache measured no faster (beam 4: 47.7 -> 52.1 s for 24 segments), and their texts stay as they were.
        one = len(prompts) == 1 and self.reuse_prefix
        shared = self._reuse_prefix([before for before, _, _ in prompts]) if one else (None, 0)
        lengths, last = [], []
        for row, (before, embeds, after) in enumerate(prompts):
            p = 0
            if shared[1]:  # the prompt's first tokens: their cells, computed once, shared (no prefill)
                lib.llama_memory_seq_cp(mem, shared[0], row, 0, shared[1])
                p = shared[1]
            p = self._prefill(row, p, tokens=before[p:])
            if embeds is not None:
                p = self._prefill(row, p, embeds=embeds)
            p = self._prefill(row, p, tokens=after[:-1])
            lengths.append(p + 1)
            last.append(after[-1])
        mask = torch.zeros((len(prompts), max(lengths)), dtype=torch.long)  # left-padded, as llast.beam reads it
        for row, n in enumerate(lengths):
            mask[row, mask.shape[1] - n:] = 1
        cache = _Seqs(self, list(range(len(prompts))))
        return beam.beam_search(self, torch.tensor(last)[:, None], mask, cache, decode, [eos], pad)

    def _prefix_cells(self) -> int:
        """KV cells the cached prefixes hold: room a search leaves them (a prefix made by a search shares its
        cells with that search's prompts, which count them)."""
        return sum(len(tokens) for _, tokens in self.prefixes.values())

    def _reuse_prefix(self, befores: list[list[int]]) -> tuple[int | None, int]:
        """(sequence, n): the first n tokens of every prompt of `befores` are in `sequence`'s cells, computed
        with the active adapter: the prefix these prompts share with the one cached for this adapter (made
        now from these prompts if none is), kept across searches. The chat template's start (system message,
        instruction) is the same in every prompt, so it is computed once, not once per prompt."""
        common = befores[0]
        for before in befores[1:]:
            common = common[: _shared(common, before)]
        if len(common) < 2:
            return None, 0
        seq, cached = self.prefixes.get(self.active, (None, []))
        mem = self.lib.llama_get_memory(self.ctx)
        if seq is None:
            if len(self.prefixes) == _PREFIX_SEQS:
                return None, 0
            seq, cached = _MAX_SEQ - 1 - len(self.prefixes), []
        n = _shared(cached, common)
        if n < 2:  # another template: cache this group's prefix instead
            self.lib.llama_memory_seq_rm(mem, seq, -1, -1)
            n = self._prefill(seq, 0, tokens=common)
            cached = common
        elif n < len(cached):  # only the start is shared: keep that much
            self.lib.llama_memory_seq_rm(mem, seq, n, -1)
            cached = cached[:n]
        self.prefixes[self.active] = (seq, cached)
        return seq, n

    def get_input_embeddings(self):
        """llast.beam embeds each new token before the step that reads it; llama.cpp takes the token id itself."""
        return torch.nn.Identity()

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                past_key_values: _Seqs, use_cache: bool = True):
        """One step of llast.beam.beam_search: each row's newest token (inputs_embeds: (rows, 1) ids, the
        Identity "embedding") at its position (position_ids (rows, 1)) into its sequence (past_key_values.seqs)
        -> .logits (rows, 1, V), a view of llama.cpp's logits buffer, valid until the next step."""
        b, seqs = self._tokens, past_key_values.seqs
        n = len(seqs)
        for k in range(n):
            b.token[k], b.pos[k], b.n_seq_id[k], b.logits[k] = int(inputs_embeds[k, 0]), int(position_ids[k, 0]), 1, True
            b.seq_id[k][0] = seqs[k]
        self._decode(b, n)
        logits = np.ctypeslib.as_array(self.lib.llama_get_logits(self.ctx), shape=(n, self.n_vocab))
        return SimpleNamespace(logits=torch.from_numpy(logits)[:, None])

    def _prefill(self, row: int, start: int, tokens: list[int] | None = None, embeds: np.ndarray | None = None) -> int:
        """`tokens` (ids) or `embeds` (N, H) into sequence `row` from position `start`, n_batch at a time, no
        logits kept (the search's first step computes the last position's). Returns the next position."""
        batch = self._tokens if embeds is None else self._embeds
        n = len(tokens) if embeds is None else embeds.shape[0]
        for lo in range(0, n, self.n_batch):
            hi = min(n, lo + self.n_batch)
            for j in range(lo, hi):
                k = j - lo
                if embeds is None:
                    batch.token[k] = int(tokens[j])
                batch.pos[k], batch.n_seq_id[k], batch.logits[k] = start + j, 1, False
                batch.seq_id[k][0] = row
            if embeds is not None:
                chunk = np.ascontiguousarray(embeds[lo:hi], dtype=np.float32)
                ctypes.memmove(batch.embd, chunk.ctypes.data, chunk.nbytes)
            self._decode(batch, hi - lo)
        return start + n

    def _decode(self, batch, n: int) -> None:
        batch.n_tokens = n
        code = self.lib.llama_decode(self.ctx, batch)
        if code != 0:
            raise RuntimeError(f"llama.cpp: decoding a batch of {n} failed (code {code})")

    def close(self) -> None:
        """Free the context and the model (also done when the object is collected)."""
        lib = getattr(self, "lib", None)
        if lib is None:
            return
        if getattr(self, "ctx", None):
            lib.llama_batch_free(self._tokens)
            lib.llama_batch_free(self._embeds)
            lib.llama_free(self.ctx)
            self.ctx = None
        for handle in getattr(self, "adapters", {}).values():
            with contextlib.suppress(AttributeError):
                lib.llama_adapter_lora_free(handle)
        self.adapters = {}
        if getattr(self, "model", None):
            lib.llama_model_free(self.model)
            self.model = None

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()


class _Seqs:
    """The "cache" llast.beam.beam_search reorders, for a llama.cpp context: the sequence id of each row.
    Reordering (row i continues old row rows[i]) keeps a sequence for the first row that continues it and
    copies it (llama_memory_seq_cp: in a unified KV cache its cells are shared, not copied) for the others;
    sequences no row continues are removed, their cells freed. At most 2 ids per row are in use at once."""

    def __init__(self, llm: LlamaCppLLM, seqs: list[int]):
        self.llm, self.seqs = llm, seqs

    def reorder_cache(self, rows: torch.Tensor) -> None:
        lib, mem = self.llm.lib, self.llm.lib.llama_get_memory(self.llm.ctx)
        old, kept, new = self.seqs, set(), []
        free = iter(sorted(set(range(_SEARCH_SEQS)) - set(old)))
        for r in rows.tolist():
            seq = old[r]
            if seq in kept:
                copy = next(free)
                lib.llama_memory_seq_cp(mem, seq, copy, -1, -1)
                new.append(copy)
            else:
                kept.add(seq)
                new.append(seq)
        for seq in set(old) - kept:
            lib.llama_memory_seq_rm(mem, seq, -1, -1)
        self.seqs = new


def _shared(a: list[int], b: list[int]) -> int:
    """How many first tokens `a` and `b` have in common."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


_QUIET = []  # llama.cpp's log callback, kept alive here: llama.cpp is silent (its errors come back as codes)


def _silence(lib) -> None:
    if not _QUIET:
        _QUIET.append(lib.llama_log_callback(lambda level, text, user_data: None))
    lib.llama_log_set(_QUIET[0], ctypes.c_void_p(0))


def attach(model, llm_name: str, adapters: dict[str, tuple[dict, float]] | None = None, **context) -> None:
    """model.llm replaced by a LlamaCppLLM running the bundled GGUF of `llm_name` (llast.assets.gguf_file)
    with LoRA adapters converted to GGUF LoRA: `adapters` (name -> (PEFT state dict, alpha)), or those of
    model.llm itself, a peft model with its adapters unmerged; the same one active. `context`: LlamaCppLLM's
    n_ctx, max_rows, n_batch, threads."""
    llm = model.llm
    base_llm = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    config = base_llm.config
    active = getattr(llm, "active_adapter", BASE)
    if adapters is None:
        from peft import get_peft_model_state_dict  # lazy: peft costs ~4 s to import; only LoRA models need it

        adapters = {name: (get_peft_model_state_dict(llm, adapter_name=name), c.lora_alpha)
                    for name, c in getattr(llm, "peft_config", {}).items()}
    base = gguf_file(llm_name)
    with tempfile.TemporaryDirectory(prefix="llast-gguf-") as tmp:
        files = {name: lora_to_gguf(state, alpha, Path(tmp) / f"{name}.gguf", config.model_type,
                                    config.num_hidden_layers) for name, (state, alpha) in adapters.items()}
        model.llm = LlamaCppLLM(base, files, active=active if active in files else BASE, **context)


def load_checkpoint(path: str | Path, **context):
    """(LLaST whose LLM llama.cpp runs, Config) of checkpoint `path` (a folder or a shipped name), the LLM's
    weights never loaded in PyTorch: it is built on the meta device (no memory), so that the checkpoint's
    files are checked as strictly as llast.checkpoint.load_checkpoint checks them, and its LoRA adapters
    (llm_lora/, text_lora/) go from their files to llama.cpp. The encoder (S-LoRA merged) and the adaptor
    run in fp32."""
    from transformers import AutoConfig, AutoModelForCausalLM  # lazy: only --dtype gguf loads a model here

    path = resolve_checkpoint(path)
    cfg = read_checkpoint_config(path)
    encoder = load_encoder(cfg.model.encoder.name, torch.float32)
    with torch.device("meta"):
        llm = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(resolve_name(cfg.model.llm.name)))
    model = build_model(cfg.model, encoder=encoder, llm=llm)
    apply_lora(model, cfg.model)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*meta parameter.*")  # the LLM's LoRA: checked, not kept
        load_weights(model, path)
    merge_lora_weights(model, ("encoder",))
    model.encoder.float()
    model.adaptor.float()
    adapters = {}
    for name, folder in (("default", path / "llm_lora"), (TEXT_ADAPTER, path / "text_lora")):
        if folder.is_dir():
            alpha = json.loads((folder / "adapter_config.json").read_text())["lora_alpha"]
            adapters[name] = (read_tensors(folder / "adapter_model.safetensors"), alpha)
    attach(model, cfg.model.llm.name, adapters, **context)
    return model.eval(), cfg
