"""Canonical hook sites (TransformerLens names) resolved to the modules of transformers models.

Sites, with ``L`` a layer index (negative counts from the end, ``-1`` = last layer):

================================  ==========================================================
``blocks.{L}.hook_resid_pre``     input of decoder layer L (residual stream)
``blocks.{L}.hook_resid_post``    output of decoder layer L
``blocks.{L}.hook_attn_out``      output of layer L's self-attention
``blocks.{L}.mlp.hook_pre``       gate projection output, before the activation
``blocks.{L}.mlp.hook_post``      MLP neuron activations = input of ``down_proj``,
                                  i.e. ``act(gate(x)) * up(x)`` for gated MLPs
``blocks.{L}.hook_mlp_out``       output of layer L's MLP
``ln_final.hook_normalized``      output of the final norm (what the unembedding reads)
================================  ==========================================================

One registry (:data:`ARCHITECTURES`) maps each architecture's module paths; everything that
hooks a model goes through :func:`resolve_site`, so no code assumes Llama. PEFT wrappers are
seen through: on a LoRA model, ``down_proj`` is a ``lora.Linear`` whose input is still the
neuron activation and whose output includes the adapter's contribution.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from interp.models import base_config, is_peft


@dataclass(frozen=True)
class ArchSpec:
    """Module paths of one architecture family, relative to the ``*ForCausalLM`` model."""

    layers: str = "model.layers"
    attn: str = "self_attn"
    mlp: str = "mlp"
    gate: str = "gate_proj"
    down: str = "down_proj"
    final_norm: str = "model.norm"
    unembed: str = "lm_head"


# Llama, Mistral, Qwen2/3 and Gemma/Gemma2 share the same layout under different model_types.
_LLAMA_LIKE = ArchSpec()
ARCHITECTURES: dict[str, ArchSpec] = {
    name: _LLAMA_LIKE for name in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2")
}

_SITE = re.compile(
    r"^blocks\.(?P<layer>-?\d+)\.(?P<hook>hook_resid_pre|hook_resid_post|hook_attn_out|"
    r"mlp\.hook_pre|mlp\.hook_post|hook_mlp_out)$"
)
SITE_NAMES = (
    "blocks.{L}.hook_resid_pre", "blocks.{L}.hook_resid_post", "blocks.{L}.hook_attn_out",
    "blocks.{L}.mlp.hook_pre", "blocks.{L}.mlp.hook_post", "blocks.{L}.hook_mlp_out",
    "ln_final.hook_normalized",
)


@dataclass(frozen=True)
class HookPoint:
    """Where a canonical site lives: a module, and whether its input or output is the value."""

    name: str  # canonical name with the layer index made non-negative
    module: torch.nn.Module
    module_path: str
    read: Literal["input", "output"]


def arch_spec(model: Any) -> ArchSpec:
    """The :class:`ArchSpec` of ``model``, or a ValueError naming the supported ones."""
    model_type = base_config(model).model_type
    if model_type not in ARCHITECTURES:
        raise ValueError(
            f"hook sites are not mapped for architecture {model_type!r}; supported: "
            f"{', '.join(sorted(ARCHITECTURES))} (add an ArchSpec to interp.hooks.ARCHITECTURES)"
        )
    return ARCHITECTURES[model_type]


def _root(model: Any) -> torch.nn.Module:
    """The ``*ForCausalLM`` module (inside a PEFT wrapper, with LoRA layers injected)."""
    return model.get_base_model() if is_peft(model) else model


def n_layers(model: Any) -> int:
    return len(_root(model).get_submodule(arch_spec(model).layers))


def resolve_site(model: Any, site: str) -> HookPoint:
    """Map a canonical site name to its module in ``model``.

    Args:
        model: a transformers causal LM, optionally wrapped by PEFT.
        site: e.g. ``"blocks.-1.mlp.hook_post"``.

    Returns:
        A :class:`HookPoint`.

    Raises:
        ValueError: unknown site, layer out of range, or unmapped architecture.
    """
    spec = arch_spec(model)
    root = _root(model)
    if site == "ln_final.hook_normalized":
        return HookPoint(site, root.get_submodule(spec.final_norm), spec.final_norm, "output")
    m = _SITE.match(site)
    if m is None:
        raise ValueError(f"unknown hook site {site!r}; valid: {', '.join(SITE_NAMES)}")
    n = n_layers(model)
    layer = int(m["layer"])
    if not -n <= layer < n:
        raise ValueError(f"hook site {site!r}: layer {layer} out of range for {n} layers [-{n}, {n - 1}]")
    layer %= n
    block = f"{spec.layers}.{layer}"
    path, read = {
        "hook_resid_pre": (block, "input"),
        "hook_resid_post": (block, "output"),
        "hook_attn_out": (f"{block}.{spec.attn}", "output"),
        "mlp.hook_pre": (f"{block}.{spec.mlp}.{spec.gate}", "output"),
        "mlp.hook_post": (f"{block}.{spec.mlp}.{spec.down}", "input"),
        "hook_mlp_out": (f"{block}.{spec.mlp}", "output"),
    }[m["hook"]]
    name = f"blocks.{layer}.{m['hook']}"
    return HookPoint(name, root.get_submodule(path), path, read)


def _first_tensor(value: Any) -> Tensor:
    return value[0] if isinstance(value, tuple | list) else value


@contextlib.contextmanager
def record_activations(
    model: Any, sites: Sequence[str]
) -> Iterator[dict[str, list[Float[Tensor, "batch pos d"]]]]:
    """Record the values at ``sites`` for every forward pass inside the block.

    Yields a dict mapping each canonical name (layer made non-negative) to a list with one
    ``[batch, pos, d]`` tensor per forward pass (detached; generation adds one per step).
    The hooks are removed when the block exits, also on an exception.

    >>> with record_activations(model, ["blocks.-1.mlp.hook_post"]) as acts:  # doctest: +SKIP
    ...     model(**batch)
    >>> acts["blocks.29.mlp.hook_post"][0].shape                             # doctest: +SKIP
    torch.Size([2, 17, 1536])
    """
    points = [resolve_site(model, s) for s in sites]
    store: dict[str, list[Tensor]] = {p.name: [] for p in points}
    handles = []
    try:
        for p in points:
            if p.read == "input":

                def pre_hook(_mod, args, kwargs, name=p.name):
                    # decoder layers take hidden_states positionally today; keyword-safe anyway
                    x = args[0] if args else kwargs["hidden_states"]
                    store[name].append(x.detach())

                handles.append(p.module.register_forward_pre_hook(pre_hook, with_kwargs=True))
            else:

                def hook(_mod, _args, output, name=p.name):
                    store[name].append(_first_tensor(output).detach())

                handles.append(p.module.register_forward_hook(hook))
        yield store
    finally:
        for h in handles:
            h.remove()
