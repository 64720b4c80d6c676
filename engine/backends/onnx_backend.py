"""``StepBackend`` over onnxruntime sessions of an exported bundle (see docs/ONNX.md).

The decoding loops (ar, magnet, hybrid) run unchanged on this backend: tensors at the boundary
are torch CPU tensors, converted with ``torch.from_numpy`` (no copy).

KV cache: per layer, self-attention keys and values live in two preallocated device buffers
("ping" and "pong"), each big enough for ``[B, H, max_steps, Dh]``. A step binds the past input
``past_key_values.{i}.decoder.key`` to the current buffer with shape ``[B, H, n, Dh]`` and the
present output ``present.{i}.decoder.key`` to the other buffer with shape ``[B, H, n + S, Dh]``
(IOBinding with raw pointers), then the two swap roles. A contiguous ``[B, H, n + S, Dh]``
present is exactly the next step's contiguous past, so nothing is copied or allocated outside
the graph; the only cache traffic is the graph's own concat (past + new keys), which is what a
past-in/present-out step graph without an ``If`` node costs. Cross-attention keys/values are
computed once per generation by ``lm_cross`` and stay bound as device OrtValues.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.backends.base import ConditionTensors
from engine.backends.onnx_manifest import (  # noqa: F401  (sha256_file, is_bundle re-exported)
    MANIFEST_NAME, is_bundle, read_manifest, sha256_file)

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


# ---------------------------------------------------------------- sessions


_CUDA_WORKS: bool | None = None


def cuda_provider_works() -> bool:
    """Whether onnxruntime can really create its CUDA provider here (probed once, silently).

    The onnxruntime-gpu wheel lists CUDAExecutionProvider even where no GPU or CUDA runtime
    exists and then logs an error and a warning at every session; probing once with the logger
    at FATAL keeps a GPU-less machine quiet.
    """
    global _CUDA_WORKS
    if _CUDA_WORKS is None:
        import onnx
        import onnxruntime as ort
        _CUDA_WORKS = False
        if PROVIDERS["cuda"] in ort.get_available_providers():
            x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
            y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
            graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])],
                                           "probe", [x], [y])
            model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
            model.ir_version = 8
            opts = ort.SessionOptions()
            opts.log_severity_level = 4
            ort.set_default_logger_severity(4)
            try:
                sess = ort.InferenceSession(model.SerializeToString(), opts,
                                            providers=[PROVIDERS["cuda"], PROVIDERS["cpu"]])
                _CUDA_WORKS = PROVIDERS["cuda"] in sess.get_providers()
            except Exception:  # noqa: BLE001 - any failure means "no usable CUDA"
                _CUDA_WORKS = False
            finally:
                ort.set_default_logger_severity(3)
    return _CUDA_WORKS


def provider_names() -> list[str]:
    """Every accepted ``provider`` value: the short names and onnxruntime's full names."""
    return [*PROVIDERS, *PROVIDERS.values()]


def choose_provider(provider: str | None = None) -> str:
    """The device a bundle runs on: ``"cuda"`` or ``"cpu"``.

    ``None``: CUDA when onnxruntime can really create its provider here, else CPU (the silent
    fallback). An explicit ``provider`` (``"cpu"``, ``"cuda"``, ``"CPUExecutionProvider"``,
    ``"CUDAExecutionProvider"``; case-insensitive) is obeyed or refused: asking for CUDA where it
    does not work is a ValueError, never a silent fall back to CPU.
    """
    if provider is None:
        return "cuda" if cuda_provider_works() else "cpu"
    by_name = {k.lower(): short for short, full in PROVIDERS.items() for k in (short, full)}
    short = by_name.get(str(provider).strip().lower())
    if short is None:
        raise ValueError(f"unknown provider {provider!r}: expected one of "
                         f"{', '.join(provider_names())} (available here: "
                         f"{', '.join(available_providers())})")
    if short == "cuda" and not cuda_provider_works():
        raise ValueError(f"provider {provider!r} was asked for but onnxruntime cannot create its "
                         "CUDA execution provider here (no GPU, or the CUDA/cuDNN libraries or "
                         "the onnxruntime-gpu wheel are missing); available here: "
                         f"{', '.join(available_providers())}. Leave --provider out to fall "
                         "back to CPU automatically.")
    return short


def available_providers() -> list[str]:
    """The supported providers onnxruntime can really use on this machine (full names)."""
    return [PROVIDERS["cuda"]] * cuda_provider_works() + [PROVIDERS["cpu"]]


def make_session(path: Path, provider: str, threads: int | None = None,
                 quiet: bool = False) -> Any:
    """An InferenceSession with all graph optimisations and ``threads`` intra-op threads
    (``quiet``: not even errors logged, for probes whose failures are expected)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    # no busy-wait between ops: spinning threads steal the cores a step needs on a loaded CPU
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 4 if quiet else 3
    providers = [PROVIDERS["cpu"]] if provider == "cpu" else [PROVIDERS["cuda"], PROVIDERS["cpu"]]
    return ort.InferenceSession(str(path), opts, providers=providers)


class _Buffer:
    """Flat preallocated memory on the session's device, bound by pointer with any shape."""

    def __init__(self, n_elements: int, dtype: np.dtype, device: str) -> None:
        import onnxruntime as ort
        self.dtype, self.device = np.dtype(dtype), device
        if device == "cpu":
            self.array = np.empty(n_elements, dtype=self.dtype)
            self.ptr = self.array.ctypes.data
        else:
            self.value = ort.OrtValue.ortvalue_from_shape_and_type([n_elements], self.dtype,
                                                                   device, 0)
            self.ptr = self.value.data_ptr()
        self.size = n_elements

    def bind_input(self, binding: Any, name: str, shape: list[int]) -> None:
        assert int(np.prod(shape)) <= self.size, (name, shape, self.size)
        binding.bind_input(name, self.device, 0, self.dtype, shape, self.ptr)

    def bind_output(self, binding: Any, name: str, shape: list[int]) -> None:
        assert int(np.prod(shape)) <= self.size, (name, shape, self.size)
        binding.bind_output(name, self.device, 0, self.dtype, shape, self.ptr)

    def view(self, shape: list[int]) -> np.ndarray:
        """CPU only: the first prod(shape) elements as an array of ``shape`` (no copy)."""
        return self.array[: int(np.prod(shape))].reshape(shape)


# ---------------------------------------------------------------- LM step backend


@dataclass
class OnnxContext:
    """Per-generation state: every layer's cross keys/values as device OrtValues, by input name,
    and the rows' tempo for beat-conditioned graphs (zeros: no tempo)."""

    cross: dict[str, Any]
    batch: int
    beat: np.ndarray | None = None


class OnnxKVCache:
    """Ping-pong self-attention cache: two preallocated buffers per past/present tensor.

    ``length`` steps are valid, laid out contiguously as ``[B, H, length, Dh]`` in
    ``buffers[current]``; a step writes ``[B, H, length + S, Dh]`` into the other buffer.
    """

    def __init__(self, names: list[str], batch: int, heads: int, head_dim: int, max_steps: int,
                 device: str) -> None:
        size = batch * heads * max_steps * head_dim
        self.names = names
        self.buffers = [[_Buffer(size, np.float32, device) for _ in names] for _ in range(2)]
        self.batch, self.heads, self.head_dim, self.max_steps = batch, heads, head_dim, max_steps
        self.length = 0
        self.current = 0

    def shape(self, steps: int) -> list[int]:
        return [self.batch, self.heads, steps, self.head_dim]


class OnnxBackend:
    """``StepBackend`` over one LM's graphs: lm_cross (+ lm_prefill, lm_step for AR; lm_full for
    MAGNeT), as a bundle's manifest lists them."""

    def __init__(self, bundle_dir: Path, manifest: dict[str, Any], role: str,
                 provider: str = "cpu", threads: int | None = None) -> None:
        lm = manifest["lms"][role]
        graphs = manifest["graphs"]
        self.role, self.device = role, provider
        self.n_q, self.card = int(manifest["num_codebooks"]), int(manifest["card"])
        self.special_token_id = int(manifest["special_token_id"])
        self.num_layers, self.num_heads = int(lm["num_layers"]), int(lm["num_heads"])
        self.head_dim = int(lm["head_dim"])

        def session(name: str | None) -> Any:
            return None if name is None else make_session(bundle_dir / graphs[name]["file"],
                                                          provider, threads)
        self.cross_session = session(lm["graphs"]["cross"])
        self.prefill_session = session(lm["graphs"].get("prefill"))
        self.step_session = session(lm["graphs"].get("step"))
        self.full_session = session(lm["graphs"].get("full"))
        main = self.step_session or self.full_session
        self.reads_beat = main is not None and "beat" in {i.name for i in main.get_inputs()}
        self.reads_key = "key" in {i.name for i in self.cross_session.get_inputs()}
        # what the sessions really run on (onnxruntime's name), reported by /barforge/status
        self.provider: str = self.cross_session.get_providers()[0]
        L = self.num_layers
        self.past_names = [f"past_key_values.{i}.decoder.{kv}" for i in range(L)
                           for kv in ("key", "value")]
        self.present_names = [f"present.{i}.decoder.{kv}" for i in range(L)
                              for kv in ("key", "value")]
        self.cross_names = [f"past_key_values.{i}.encoder.{kv}" for i in range(L)
                            for kv in ("key", "value")]

    # ---- StepBackend

    def prepare(self, cond: ConditionTensors) -> OnnxContext:
        """Run lm_cross once: the cross keys/values stay on the device for every step."""
        if cond.prefix is not None:
            raise ValueError("ONNX bundles carry no prefix (melody) condition")
        if cond.cross is None or cond.cross_mask is None:
            raise ValueError("this LM cross-attends: the condition needs cross and cross_mask")
        binding = self.cross_session.io_binding()
        binding.bind_cpu_input("encoder_hidden_states", _np(cond.cross, np.float32))
        binding.bind_cpu_input("encoder_attention_mask", _np(cond.cross_mask, np.int64))
        if self.reads_key:    # no key is class 0, exactly as no key input in torch
            binding.bind_cpu_input("key", np.zeros(cond.batch, np.int64) if cond.key is None
                                   else np.ascontiguousarray(_np(cond.key, np.int64)))
        outputs = [o.name for o in self.cross_session.get_outputs()]
        for name in outputs:
            binding.bind_output(name, self.device)
        self.cross_session.run_with_iobinding(binding)
        values = binding.get_outputs()
        cross = {n.replace("present.", "past_key_values.", 1): v for n, v in zip(outputs, values)}
        beat = None
        if self.reads_beat:   # a row without tempo is zeros, exactly as no beat input in torch
            beat = (np.zeros((cond.batch, 3), np.float32) if cond.beat is None
                    else np.ascontiguousarray(_np(cond.beat, np.float32)))
        return OnnxContext(cross=cross, batch=cond.batch, beat=beat)

    def new_cache(self, ctx: OnnxContext, max_steps: int) -> OnnxKVCache:
        """Two preallocated buffers per layer key/value, each for ``max_steps`` steps."""
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")
        if self.prefill_session is None:
            raise ValueError(f"the bundle's {self.role} LM has no causal (AR) graphs")
        return OnnxKVCache(self.past_names, ctx.batch, self.num_heads, self.head_dim, max_steps,
                           self.device)

    def step(self, tokens: torch.Tensor, cache: OnnxKVCache,
             ctx: OnnxContext) -> tuple[torch.Tensor, OnnxKVCache]:
        """Logits [B, K, S, card]: lm_prefill on an empty cache, else lm_step once per step."""
        if tokens.dim() != 3 or tokens.shape[0] != cache.batch or tokens.shape[1] != self.n_q:
            raise ValueError(f"tokens must be [{cache.batch}, {self.n_q}, S], "
                             f"got {list(tokens.shape)}")
        S = tokens.shape[2]
        if cache.length + S > cache.max_steps:
            raise ValueError(f"KV cache overflow: {cache.length} cached + {S} new steps exceed "
                             f"max_steps {cache.max_steps}")
        ids = _np(tokens, np.int64)
        if cache.length == 0:
            return torch.from_numpy(self._run_causal(self.prefill_session, ids, cache, ctx)), cache
        logits = [self._run_causal(self.step_session, ids[:, :, s:s + 1], cache, ctx)
                  for s in range(S)]
        return torch.from_numpy(logits[0] if S == 1 else np.concatenate(logits, axis=2)), cache

    def _run_causal(self, session: Any, ids: np.ndarray, cache: OnnxKVCache,
                    ctx: OnnxContext) -> np.ndarray:
        B, K, S = ids.shape
        binding = session.io_binding()
        binding.bind_cpu_input("input_ids", np.ascontiguousarray(ids))
        if ctx.beat is not None:
            binding.bind_cpu_input("beat", ctx.beat)
        src, dst = cache.buffers[cache.current], cache.buffers[1 - cache.current]
        if session is self.step_session:
            for name, buf in zip(self.past_names, src):
                buf.bind_input(binding, name, cache.shape(cache.length))
        for name, value in ctx.cross.items():
            binding.bind_ortvalue_input(name, value)
        logits = np.empty((B, K, S, self.card), dtype=np.float32)
        binding.bind_output("logits", "cpu", 0, np.float32, list(logits.shape),
                            logits.ctypes.data)
        for name, buf in zip(self.present_names, dst):
            buf.bind_output(binding, name, cache.shape(cache.length + S))
        session.run_with_iobinding(binding)
        cache.current, cache.length = 1 - cache.current, cache.length + S
        return logits

    def full(self, tokens: torch.Tensor, ctx: OnnxContext, attn_band: int | None,
             codebook: int | None = None) -> torch.Tensor:
        """Non-causal logits: [B, T, card] for ``codebook``, else [B, K, T, card]."""
        if self.full_session is None:
            raise ValueError(f"the bundle's {self.role} LM has no non-causal (MAGNeT) graph")
        if attn_band is not None and (not isinstance(attn_band, int) or attn_band < 0):
            raise ValueError(f"attn_band must be None or an integer >= 0, got {attn_band!r}")
        if tokens.dim() != 3 or tokens.shape[1] != self.n_q:
            raise ValueError(f"tokens must be [B, {self.n_q}, T], got {list(tokens.shape)}")
        if codebook is None:
            return torch.stack([self.full(tokens, ctx, attn_band, k) for k in range(self.n_q)], 1)
        if not 0 <= codebook < self.n_q:
            raise ValueError(f"codebook must be in [0, {self.n_q}), got {codebook!r}")
        B, _, T = tokens.shape
        band = T if attn_band is None else min(attn_band, T)   # a band >= T attends everywhere
        binding = self.full_session.io_binding()
        binding.bind_cpu_input("input_ids", _np(tokens, np.int64))
        binding.bind_cpu_input("attn_band", np.array(band, dtype=np.int64))
        binding.bind_cpu_input("codebook", np.array(codebook, dtype=np.int64))
        if ctx.beat is not None:
            binding.bind_cpu_input("beat", ctx.beat)
        for name, value in ctx.cross.items():
            binding.bind_ortvalue_input(name, value)
        logits = np.empty((B, T, self.card), dtype=np.float32)
        binding.bind_output("logits", "cpu", 0, np.float32, list(logits.shape), logits.ctypes.data)
        self.full_session.run_with_iobinding(binding)
        return torch.from_numpy(logits)


def _np(t: torch.Tensor, dtype: type) -> np.ndarray:
    """A contiguous CPU numpy view of ``t`` (a copy only if dtype/layout/device differ)."""
    return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=dtype)


# ---------------------------------------------------------------- codec and text encoder


class OnnxCodec:
    """The codec_encoder / codec_decoder graphs behind ``EncodecModel``'s API."""

    def __init__(self, bundle_dir: Path, manifest: dict[str, Any], provider: str = "cpu",
                 threads: int | None = None) -> None:
        graphs = manifest["graphs"]
        self.encoder = make_session(bundle_dir / graphs["codec_encoder"]["file"], provider, threads)
        self.decoder = make_session(bundle_dir / graphs["codec_decoder"]["file"], provider, threads)
        codec = manifest["codec"]
        self.sample_rate, self.frame_rate = int(manifest["sample_rate"]), float(manifest["frame_rate"])
        self.channels, self.hop_length = int(codec["channels"]), int(codec["hop_length"])
        self.num_codebooks, self.cardinality = int(manifest["num_codebooks"]), int(codec["card"])
        # bundles exported before conv padding was branch-free record the shortest input their
        # codec graphs run on; newer graphs run from one frame up and record none
        self.min_frames = int(codec.get("min_frames", 0))

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """Waveform [B, C, N] -> codes [B, K, T] (int64)."""
        if wav.dim() != 3 or wav.shape[1] != self.channels:
            raise ValueError(f"wav must be [B, {self.channels}, N], got {list(wav.shape)}")
        if wav.shape[-1] < self.min_frames * self.hop_length:
            raise ValueError(f"the exported codec encoder needs at least "
                             f"{self.min_frames * self.hop_length} samples, got {wav.shape[-1]}")
        return torch.from_numpy(self.encoder.run(None, {"wav": _np(wav, np.float32)})[0])

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, K, T] -> waveform [B, C, T * hop]."""
        if codes.dim() != 3 or codes.shape[1] != self.num_codebooks:
            raise ValueError(f"codes must be [B, {self.num_codebooks}, T], got {list(codes.shape)}")
        if codes.shape[-1] < self.min_frames:
            raise ValueError(f"the exported codec decoder needs at least {self.min_frames} "
                             f"frames, got {codes.shape[-1]}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.cardinality):
            raise ValueError(f"codes must lie in [0, {self.cardinality})")
        return torch.from_numpy(self.decoder.run(None, {"codes": _np(codes, np.int64)})[0])


class _SessionAsEncoderModel(torch.nn.Module):
    """The text_encoder graph behind the ``model(input_ids=..., attention_mask=...)`` call the
    conditioners' tokenizer-side code makes (so tokenization and null-text handling exist once)."""

    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        from types import SimpleNamespace
        hidden = self.session.run(None, {"input_ids": _np(input_ids, np.int64),
                                         "attention_mask": _np(attention_mask, np.int64)})[0]
        return SimpleNamespace(last_hidden_state=torch.from_numpy(hidden))


def load_text_encoder(bundle_dir: Path, manifest: dict[str, Any], provider: str = "cpu",
                      threads: int | None = None) -> Any:
    """The bundle's text encoder: its tokenizer files + the text_encoder graph. A ``tokenizer.json``
    is read with Hugging Face ``tokenizers`` (fast to load); other tokenizer files (T5's
    SentencePiece model) with transformers' ``AutoTokenizer``."""
    from engine.conditioners.text import HFTokenizer, _HFTextEncoder

    info = manifest["text_encoder"]
    tok_dir = bundle_dir / info["tokenizer_dir"]
    max_length = info.get("max_length")
    if (tok_dir / "tokenizer.json").is_file() and _is_bert_tokenizer(tok_dir):
        from engine.conditioners.bert import BertTokenizer
        tokenizer: Any = BertTokenizer(tok_dir, max_length or 512)
    else:
        from transformers import AutoTokenizer
        tokenizer = HFTokenizer(AutoTokenizer.from_pretrained(str(tok_dir)), max_length)
    session = make_session(bundle_dir / manifest["graphs"]["text_encoder"]["file"], provider,
                           threads)
    return _HFTextEncoder(_SessionAsEncoderModel(session), tokenizer, dim=int(info["dim"]),
                          max_length=max_length)


def _is_bert_tokenizer(tok_dir: Path) -> bool:
    config = tok_dir / "tokenizer_config.json"
    return config.is_file() and "Bert" in str(json.loads(config.read_text()).get("tokenizer_class"))


# ---------------------------------------------------------------- bundle


@dataclass
class LoadedBundle:
    """What ``engine.models.pretrained`` builds a model from.

    ``backends``: one ``OnnxBackend`` per LM role in the bundle (``"ar"``, ``"magnet"``; one
    object under both keys when a single LM serves both).
    """

    manifest: dict[str, Any]
    backends: dict[str, OnnxBackend]
    codec: OnnxCodec
    text_encoder: Any
    provider: str          # onnxruntime's name of the provider the sessions run on

    @property
    def family(self) -> str:
        return self.manifest["family"]

    @property
    def max_duration(self) -> float:
        return float(self.manifest["max_duration"])


def open_bundle(bundle_dir: str | Path, provider: str | None = None,
                threads: int | None = None) -> LoadedBundle:
    """Verify a bundle (files, sha256) and open its sessions on ``provider`` (see
    ``choose_provider``: default CUDA when it works, else CPU; a named one is obeyed or refused
    with a ValueError). ``threads``: intra-op threads."""
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir, verify=True)
    device = choose_provider(provider)
    backends: dict[str, OnnxBackend] = {}
    by_graphs: dict[tuple, OnnxBackend] = {}
    for role, lm in manifest["lms"].items():
        key = tuple(sorted((k, v) for k, v in lm["graphs"].items() if v))
        if key not in by_graphs:
            by_graphs[key] = OnnxBackend(bundle_dir, manifest, role, device, threads)
        backends[role] = by_graphs[key]
    return LoadedBundle(manifest=manifest, backends=backends,
                        codec=OnnxCodec(bundle_dir, manifest, device, threads),
                        text_encoder=load_text_encoder(bundle_dir, manifest, device, threads),
                        provider=next(iter(backends.values())).provider)


def load_bundle(bundle_dir: str | Path, provider: str | None = None,
                threads: int | None = None) -> Any:
    """The model of a bundle with the public API: ``MusicGen`` or ``MAGNeT`` whose backends are
    onnxruntime sessions (engine.models.pretrained.load_model calls this for a bundle dir).
    ``provider``: as ``open_bundle``; ``model.provider`` is the one the sessions really use."""
    from engine.models.musicgen import MusicGen

    b = open_bundle(bundle_dir, provider, threads)
    name = Path(bundle_dir).name
    generation = dict(b.manifest.get("generation", {}))   # absent in bundles of older builds
    if b.family == "musicgen":
        return MusicGen(name, b.codec, None, b.text_encoder, max_duration=b.max_duration,
                        backend=b.backends["ar"], generation_defaults=generation)
    if b.family != "magnet":
        raise ValueError(f"bundle {bundle_dir}: unknown model family {b.family!r}")
    from engine.models.magnet import MAGNeT

    extra = b.manifest["magnet"]
    ar = b.backends.get("ar")
    kwargs = {} if ar is None else {"ar_backend": ar,
                                    "ar_max_duration": float(extra["ar_max_duration"])}
    return MAGNeT(name, b.codec, None, b.text_encoder, max_duration=b.max_duration,
                  backend=b.backends["magnet"], attn_band=extra["attn_band"],
                  generation_defaults=generation, extra={"span_len": extra.get("span_len", 3)},
                  **kwargs)
