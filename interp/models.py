"""Model loading: the embedded default by name, a local HF directory, or a hub id.

Options: nf4 4-bit (bitsandbytes, CPU and CUDA), a PEFT adapter that :func:`adapter_disabled`
switches off (pre = base, post = base + adapter in one loaded model), device and dtype.

>>> from interp.models import ModelConfig, load_model        # doctest: +SKIP
>>> lm = load_model(ModelConfig())                            # doctest: +SKIP
>>> lm.info()["n_layers"]                                     # doctest: +SKIP
30
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from interp.embedded import DEFAULT_MODEL, EMBEDDED, fetch
from text2emoji.core.config import Config, ConfigError, option
from text2emoji.core.errors import UserError

# "owner/name" as the HF hub spells repository ids.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class ModelConfig(Config):
    """Which model to load and how."""

    model: str = option(
        DEFAULT_MODEL,
        help=f"embedded model name ({', '.join(sorted(EMBEDDED))}), a local HF directory, "
        "or a hub id (owner/name)",
    )
    load_in_4bit: bool = option(False, help="quantize linear layers to nf4 with bitsandbytes")
    device: str = option("auto", help="cpu, cuda, cuda:N, or auto (cuda when available)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = option(
        "auto", help="weight/compute dtype; auto = float32 on CPU, bfloat16 on CUDA"
    )

    def validate(self) -> None:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ConfigError(f"device: expected cpu, cuda, cuda:N or auto, got {self.device!r}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device: {self.device} requested but CUDA is not available")
        check_model_files(resolve_source(self.model))


@dataclass(frozen=True)
class ModelSource:
    kind: Literal["embedded", "local", "hub"]
    name: str  # what the user gave
    path: str  # what from_pretrained receives (filled for embedded after fetch)


def resolve_source(model: str) -> ModelSource:
    """Classify ``model`` as embedded name, local directory or hub id, or raise one clear line."""
    if model in EMBEDDED:
        return ModelSource("embedded", model, model)
    p = Path(model).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise UserError(f"model directory {p} has no config.json (not an HF model directory)")
        return ModelSource("local", model, str(p))
    if model.endswith(".gguf"):
        raise UserError(f"model {model}: a GGUF file is not loaded directly; give the embedded model's name "
                        f"({', '.join(sorted(EMBEDDED))}) or an HF model directory")
    looks_like_path = model.startswith((".", "/", "~")) or model.count("/") != 1
    if not looks_like_path and _HUB_ID.match(model):
        return ModelSource("hub", model, model)
    valid = ", ".join(sorted(EMBEDDED))
    if looks_like_path and "/" in model:
        raise UserError(
            f"model directory {model} does not exist; valid embedded models: {valid} "
            f"(or an existing HF directory, or a hub id owner/name)"
        )
    raise UserError(
        f"unknown model {model!r}; valid embedded models: {valid} "
        f"(or an existing HF directory, or a hub id owner/name)"
    )


@functools.cache  # one look-up per process: every stage's config names the model
def _check_hub(repo_id: str) -> None:
    """A hub id must be in the local Hugging Face cache or the hub must answer, once, within
    seconds (from_pretrained would retry for most of a minute before failing)."""
    from huggingface_hub import HfApi, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return
    try:
        HfApi().model_info(repo_id, timeout=10)
    except Exception as e:  # no network, unknown or gated repo: all end here the same way
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"model {repo_id}: not in the local Hugging Face cache and not reachable on the hub "
                        f"({first}); download it where there is network, or give a local HF directory") from e


def check_model_files(source: ModelSource) -> None:
    """A local model directory's config.json must parse and each safetensors file's header must
    be whole: a broken directory fails here, before any work, naming the file."""
    if source.kind == "hub":
        _check_hub(source.name)
    if source.kind != "local":
        return
    import json

    from safetensors import SafetensorError, safe_open

    cfg = Path(source.path) / "config.json"
    try:
        json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{cfg}: not a readable JSON model config ({e})") from e
    for f in sorted(Path(source.path).glob("*.safetensors")):
        try:
            with safe_open(str(f), framework="pt") as st:
                st.keys()
        except (SafetensorError, OSError) as e:
            raise UserError(f"{f}: unreadable or truncated safetensors file ({e})") from e


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device} requested but CUDA is not available")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        # bf16 halves memory and is fast on GPUs; CPUs run float32 faster and exactly.
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


@dataclass
class LoadedModel:
    """A loaded causal LM with its tokenizer and where it came from."""

    model: Any  # transformers PreTrainedModel or peft PeftModel
    tokenizer: Any
    config: ModelConfig
    path: str  # the directory or hub id actually loaded
    adapter: str | None = None  # the PEFT adapter directory loaded on top, if any

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def info(self) -> dict[str, Any]:
        return model_info(self)


def load_model(config: ModelConfig, adapter: str | Path | None = None) -> LoadedModel:
    """Load the model and tokenizer that ``config`` names, and optionally a PEFT adapter.

    Args:
        config: a :class:`ModelConfig` (a stage config's ``model`` member).
        adapter: a PEFT adapter directory to load on top (``adapter_disabled`` switches it off).

    Returns:
        A :class:`LoadedModel` in eval mode. The tokenizer pads on the left (generation and
        last-token reads want the prompts' ends aligned) and always has a pad token.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    if adapter is not None and not Path(adapter).is_dir():
        raise UserError(f"adapter: directory {adapter} does not exist")
    source = resolve_source(config.model)
    path = str(fetch(source.name)) if source.kind == "embedded" else source.path
    device = pick_device(config.device)
    dtype = pick_dtype(config.dtype, device)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if config.load_in_4bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
        # bitsandbytes quantizes while placing weights, so the device goes in at load time.
        kwargs["device_map"] = {"": device}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load model {config.model} from {path}: {e}") from e
    if not config.load_in_4bit:
        model.to(device)
    prepare_tokenizer(tokenizer)
    if adapter is not None:
        from peft import PeftModel

        model = load_peft_adapter(adapter, lambda path: PeftModel.from_pretrained(model, path))
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, config=config, path=path,
                       adapter=None if adapter is None else str(adapter))


def prepare_tokenizer(tokenizer: Any) -> Any:
    """``tokenizer`` as generation and batching here expect it: padding on the left, with a pad
    token (EOS where the model has none)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_peft_adapter(adapter: str | Path, load: Any) -> Any:
    """``load(str(adapter))`` (a call of peft's ``from_pretrained`` or ``load_adapter``), with a
    missing, unparseable or mismatched adapter turned into one error line naming its directory."""
    config = Path(adapter) / "adapter_config.json"
    try:
        import json

        json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{config}: not a readable PEFT adapter config ({e})") from e
    try:
        return load(str(adapter))
    except (ValueError, KeyError, TypeError, OSError, RuntimeError) as e:
        # peft: unknown fields, target modules absent from this model, weights of another shape
        raise UserError(f"adapter {adapter}: cannot be loaded on this model ({str(e).splitlines()[0]})") from e


def load_tokenizer(model: str) -> Any:
    """The tokenizer of ``model`` (embedded name, local directory or hub id), without weights."""
    from transformers import AutoTokenizer

    source = resolve_source(model)
    path = str(fetch(source.name)) if source.kind == "embedded" else source.path
    try:
        return AutoTokenizer.from_pretrained(path)
    except OSError as e:
        raise UserError(f"cannot load the tokenizer of {model} from {path}: {e}") from e


def is_peft(model: Any) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


@contextlib.contextmanager
def adapter_disabled(model: Any) -> Iterator[Any]:
    """Run the base model inside the block (peft's ``disable_adapter``).

    Raises:
        ValueError: ``model`` has no adapter (a silent no-op would make pre equal post).
    """
    if not is_peft(model):
        raise ValueError("adapter_disabled() needs a model with a PEFT adapter loaded")
    with model.disable_adapter():
        yield model


def base_config(model: Any) -> Any:
    """The transformers config of ``model`` (through a PEFT wrapper)."""
    return (model.get_base_model() if is_peft(model) else model).config


def model_info(lm: LoadedModel) -> dict[str, Any]:
    """Facts about a loaded model, as ``text2emoji model info`` prints them."""
    cfg = base_config(lm.model)
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    return {
        "name": lm.config.model,
        "architecture": (cfg.architectures or [type(lm.model).__name__])[0],
        "model_type": cfg.model_type,
        "n_layers": text_cfg.num_hidden_layers,
        "d_model": text_cfg.hidden_size,
        "d_mlp": text_cfg.intermediate_size,
        "n_heads": text_cfg.num_attention_heads,
        "vocab_size": text_cfg.vocab_size,
        "has_chat_template": bool(getattr(lm.tokenizer, "chat_template", None)),
        "path": lm.path,
        "adapter": lm.adapter,
        "load_in_4bit": lm.config.load_in_4bit,
        "device": str(lm.device),
        "dtype": str(next(lm.model.parameters()).dtype).removeprefix("torch."),
        "n_parameters": sum(p.numel() for p in lm.model.parameters()),
    }
