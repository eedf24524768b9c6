"""Where the canonical hook sites live in a transformers decoder: structural resolution.

A decoder-only causal LM is read the same way whatever its ``model_type``:

* the **decoder layers**: the first ``ModuleList`` of ``config.num_hidden_layers`` modules
  (``model.layers``, ``transformer.h``, ``gpt_neox.layers``, ``model.decoder.layers`` ...)
  whose blocks hold an attention child (``self_attn``, ``attn``, ``self_attention``,
  ``attention``);
* in each layer, the **MLP**: a child named ``mlp``, ``feed_forward`` or ``ffn``, or, where
  there is none (OPT, XGLM, BioGPT), the layer itself; its **output projection** is the one
  child named like one (:data:`DOWN_NAMES`: ``down_proj``, ``c_proj``, ``fc2``,
  ``dense_4h_to_h``, ``w2``, ``fc_out``); the neurons are that projection's input;
* the MLP's **pre-activation** (``mlp.hook_pre``): the gate projection (``gate_proj``) of a
  gated MLP, or the input projection of a plain one with exactly two projections (``c_fc``,
  ``fc_in``, ``fc1``, ``dense_h_to_4h``, ``up_proj``); a fused ``gate_up_proj`` has no
  gate-only output, so that site is a ValueError there;
* the **final norm**: a sibling of the layer list named ``norm``, ``ln_f``,
  ``final_layernorm``, ``final_layer_norm``, ``final_norm``, ``norm_f`` or ``layer_norm``;
* the **unembedding**: ``model.get_output_embeddings()``.

:data:`ARCHITECTURES` holds only what structure cannot settle: BLOOM's attention and MLP and
MPT's MLP return their output with the residual already added (their output projections are
read instead), and OPT runs its MLP on ``[batch * pos, d]`` (the hooks view it as
``[batch, pos, d]``). Anything that cannot be
resolved (an encoder-decoder, a mixture-of-experts MLP with no single output projection, an
MLP with two candidate output projections) is a ValueError naming the ``model_type`` and what
was not found. PEFT wrappers are seen through: paths are those of the wrapped ``*ForCausalLM``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from interp.models import base_config, is_peft

DEFAULT_SITE = "blocks.-1.mlp.hook_post"

SITE_NAMES = (
    "blocks.{L}.hook_resid_pre", "blocks.{L}.hook_resid_post", "blocks.{L}.hook_attn_out",
    "blocks.{L}.mlp.hook_pre", "blocks.{L}.mlp.hook_post", "blocks.{L}.hook_mlp_out",
    "ln_final.hook_normalized",
)
_SITE = re.compile(
    r"^blocks\.(?P<layer>-?\d+)\.(?P<hook>hook_resid_pre|hook_resid_post|hook_attn_out|"
    r"mlp\.hook_pre|mlp\.hook_post|hook_mlp_out)$"
)

ATTN_NAMES = ("self_attn", "attn", "self_attention", "attention")
MLP_NAMES = ("mlp", "feed_forward", "ffn")
DOWN_NAMES = ("down_proj", "c_proj", "fc2", "dense_4h_to_h", "w2", "fc_out")
IN_NAMES = ("c_fc", "fc_in", "fc1", "dense_h_to_4h", "up_proj")
FINAL_NORM_NAMES = ("norm", "ln_f", "final_layernorm", "final_layer_norm", "final_norm", "norm_f", "layer_norm")


@dataclass(frozen=True)
class ArchSpec:
    """What structure cannot settle for one ``model_type``: paths relative to a decoder layer
    (``None``: found structurally)."""

    attn_out: str | None = None  # module whose output is hook_attn_out
    mlp_out: str | None = None  # module whose output is hook_mlp_out
    down: str | None = None  # module whose input is mlp.hook_post
    pre: str | None = None  # module whose output is mlp.hook_pre
    flat_mlp: bool = False  # the layer flattens [batch, pos] into one axis before its MLP
    why: str = ""


ARCHITECTURES: dict[str, ArchSpec] = {
    # BloomAttention and BloomMLP take the residual and return output + residual; their output
    # projections return the sublayers' own contributions.
    "bloom": ArchSpec(attn_out="self_attention.dense", mlp_out="mlp.dense_4h_to_h",
                      why="attention and MLP modules add the residual themselves"),
    "mpt": ArchSpec(mlp_out="ffn.down_proj", why="MptMLP adds the residual itself"),
    # OPTDecoderLayer reshapes hidden states to [batch * pos, d] before fc1/fc2
    "opt": ArchSpec(flat_mlp=True, why="the MLP runs on [batch * pos, d]"),
}


@dataclass(frozen=True)
class HookPoint:
    """Where a canonical site lives: a module, and whether its input or output is the value."""

    name: str  # canonical name with the layer index made non-negative
    module: nn.Module
    module_path: str
    read: Literal["input", "output"]
    # the decoder layer whose input's [batch, pos] the value was flattened from (OPT's MLP)
    flat_from: nn.Module | None = None


def _root(model: Any) -> nn.Module:
    """The ``*ForCausalLM`` module (inside a PEFT wrapper, with LoRA layers injected)."""
    return model.get_base_model() if is_peft(model) else model


def _model_type(model: Any) -> str:
    return str(base_config(model).model_type)


def _child(module: nn.Module, names: tuple[str, ...]) -> str | None:
    """The first of ``names`` that is a submodule of ``module``, by attribute access (as
    ``get_submodule`` walks paths): a TransformerLens bridge, which a ``TransformerBridge``
    leaves in place of each module, forwards it to the module it wraps."""
    return next((n for n in names if isinstance(getattr(module, n, None), nn.Module)), None)


def _unwrap(module: nn.Module) -> nn.Module:
    """The module inside PEFT layers (``base_layer``) and TransformerLens bridges."""
    while True:
        inner = getattr(module, "base_layer", None) or getattr(module, "_original_component", None)
        if not isinstance(inner, nn.Module):
            return module
        module = inner


def _is_projection(module: nn.Module) -> bool:
    """A linear map: ``nn.Linear`` (bitsandbytes' included) or GPT-2's ``Conv1D``, possibly
    wrapped (LoRA, bridge)."""
    inner = _unwrap(module)
    return isinstance(inner, nn.Linear) or type(inner).__name__ == "Conv1D"


def d_in(module: nn.Module) -> int:
    """Input width of a projection (through LoRA wrappers; ``Conv1D`` stores ``[in, out]``)."""
    module = _unwrap(module)
    if isinstance(module, nn.Linear):
        return int(module.in_features)
    return int(module.weight.shape[0])


def _layers_path(model: Any) -> str:
    cfg = base_config(model)
    if getattr(cfg, "is_encoder_decoder", False):
        raise ValueError(f"model_type {cfg.model_type!r} is an encoder-decoder; hook sites are for decoder-only causal LMs")
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    n = getattr(text, "num_hidden_layers", None)
    for path, mod in _root(model).named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) == n and n and _child(mod[0], ATTN_NAMES):
            return path
    raise ValueError(
        f"cannot resolve hook sites for model_type {cfg.model_type!r}: no ModuleList of "
        f"num_hidden_layers={n} decoder layers with an attention child ({', '.join(ATTN_NAMES)})"
    )


def n_layers(model: Any) -> int:
    return len(_root(model).get_submodule(_layers_path(model)))


def _mlp_parts(model: Any, layer: nn.Module, block: str) -> tuple[str | None, str, str | None, str | None]:
    """``(mlp, down, pre, why_no_pre)`` relative to the decoder layer: the MLP child (None:
    the layer itself), its output projection, its pre-activation module (None: ``why_no_pre``)."""
    mt = _model_type(model)
    mlp_name = _child(layer, MLP_NAMES)
    mlp = layer.get_submodule(mlp_name) if mlp_name else layer
    prefix = f"{mlp_name}." if mlp_name else ""
    downs = [n for n in DOWN_NAMES if _child(mlp, (n,)) and _is_projection(mlp.get_submodule(n))]
    where = f"{block}.{mlp_name}" if mlp_name else block
    if len(downs) != 1:
        found = f"several ({', '.join(downs)})" if downs else f"none of {', '.join(DOWN_NAMES)}"
        raise ValueError(
            f"cannot resolve the MLP of model_type {mt!r}: {where} ({type(mlp).__name__}) has "
            f"{found} as its output projection (a mixture-of-experts MLP has no single one); "
            "add an ArchSpec to interp.sites.ARCHITECTURES"
        )
    projections = [n for n, c in _unwrap(mlp).named_children() if _is_projection(c)]
    if _child(mlp, ("gate_proj",)):
        pre, why = f"{prefix}gate_proj", None
    elif _child(mlp, ("gate_up_proj",)):
        pre, why = None, f"{where} fuses gate and up projections in gate_up_proj (no gate-only output)"
    elif len(projections) == 2 and (ins := [n for n in projections if n in IN_NAMES]):
        pre, why = f"{prefix}{ins[0]}", None
    else:
        pre, why = None, f"{where} has no gate_proj nor a single input projection ({', '.join(IN_NAMES)})"
    return mlp_name, f"{prefix}{downs[0]}", pre, why


def _layer_site(model: Any, layers: str, layer: int, hook: str) -> tuple[str, Literal["input", "output"]]:
    """Path (from the root) and read side of one per-layer site."""
    block = f"{layers}.{layer}"
    if hook in ("hook_resid_pre", "hook_resid_post"):
        return block, "input" if hook == "hook_resid_pre" else "output"
    mt = _model_type(model)
    spec = ARCHITECTURES.get(mt, ArchSpec())
    module = _root(model).get_submodule(block)
    if hook == "hook_attn_out":
        attn = spec.attn_out or _child(module, ATTN_NAMES)
        return f"{block}.{attn}", "output"
    mlp, down, pre, why = _mlp_parts(model, module, block)
    if hook == "mlp.hook_post":
        return f"{block}.{spec.down or down}", "input"
    if hook == "hook_mlp_out":
        return f"{block}.{spec.mlp_out or mlp or down}", "output"
    pre = spec.pre or pre
    if pre is None:
        raise ValueError(f"site blocks.{layer}.mlp.hook_pre is unavailable for model_type {mt!r}: {why}")
    return f"{block}.{pre}", "output"


def resolve_site(model: Any, site: str) -> HookPoint:
    """Map a canonical site name to its module in ``model``.

    Args:
        model: a transformers decoder-only causal LM, optionally wrapped by PEFT.
        site: e.g. ``"blocks.-1.mlp.hook_post"`` (see :data:`SITE_NAMES`).

    Returns:
        A :class:`HookPoint`.

    Raises:
        ValueError: unknown site, layer out of range, or a model whose structure does not
            provide the site (the message names the ``model_type`` and what is missing).

    >>> from tests.conftest import tiny_model
    >>> resolve_site(tiny_model("llama"), "blocks.-1.mlp.hook_post").module_path
    'model.layers.1.mlp.down_proj'
    """
    if site == "ln_final.hook_normalized":
        path = _final_norm_path(model)
        return HookPoint(site, _root(model).get_submodule(path), path, "output")
    m = _SITE.match(site)
    if m is None:
        raise ValueError(f"unknown hook site {site!r}; valid: {', '.join(SITE_NAMES)}")
    layers = _layers_path(model)
    n = len(_root(model).get_submodule(layers))
    layer = int(m["layer"])
    if not -n <= layer < n:
        raise ValueError(f"hook site {site!r}: layer {layer} out of range for {n} layers [-{n}, {n - 1}]")
    layer %= n
    path, read = _layer_site(model, layers, layer, m["hook"])
    root = _root(model)
    flat = ARCHITECTURES.get(_model_type(model), ArchSpec()).flat_mlp and "mlp" in m["hook"]
    return HookPoint(f"blocks.{layer}.{m['hook']}", root.get_submodule(path), path, read,
                     root.get_submodule(f"{layers}.{layer}") if flat else None)


def _final_norm_path(model: Any) -> str:
    layers = _layers_path(model)
    parent = layers.rpartition(".")[0]
    name = _child(_root(model).get_submodule(parent), FINAL_NORM_NAMES)
    if name is None:
        raise ValueError(
            f"cannot resolve the final norm of model_type {_model_type(model)!r}: no child of "
            f"{parent or 'the model'} named {', '.join(FINAL_NORM_NAMES)}"
        )
    return f"{parent}.{name}" if parent else name


def final_norm(model: Any) -> nn.Module:
    """The norm applied after the last layer (what ``ln_final.hook_normalized`` reads)."""
    return _root(model).get_submodule(_final_norm_path(model))


def logit_softcap(model: Any) -> float | None:
    """The cap of the model's final logit soft-capping (``cap · tanh(logits / cap)``, Gemma 2's
    ``final_logit_softcapping``), or None where the logits are the unembedding's output."""
    cap = getattr(base_config(model).get_text_config(), "final_logit_softcapping", None)
    return float(cap) if cap else None


def unembed(model: Any) -> nn.Module:
    """The unembedding (``get_output_embeddings()``: ``lm_head`` and its kin)."""
    out = _root(model).get_output_embeddings()
    if not isinstance(out, torch.nn.Module):
        raise ValueError(f"model_type {_model_type(model)!r} has no output embeddings (not a causal LM?)")
    return out
