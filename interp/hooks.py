"""Read and write hooks at canonical hook sites (TransformerLens names) of transformers models.

Sites, with ``L`` a layer index (negative counts from the end, ``-1`` = last layer):

================================  ==========================================================
``blocks.{L}.hook_resid_pre``     input of decoder layer L (residual stream)
``blocks.{L}.hook_resid_post``    output of decoder layer L
``blocks.{L}.hook_attn_out``      output of layer L's self-attention
``blocks.{L}.mlp.hook_pre``       pre-activation: the gate projection's output (gated MLPs)
                                  or the input projection's (plain MLPs)
``blocks.{L}.mlp.hook_post``      MLP neuron activations = input of the MLP's output
                                  projection (``down_proj``, ``c_proj``, ``fc2`` ...), i.e.
                                  ``act(gate(x)) * up(x)`` for gated MLPs
``blocks.{L}.hook_mlp_out``       output of layer L's MLP
``ln_final.hook_normalized``      output of the final norm (what the unembedding reads)
================================  ==========================================================

Sites are resolved from the model's structure (:mod:`interp.sites`), not from a list of
supported architectures: any decoder-only causal LM with the common layout (a list of decoder
layers, each with an attention and an MLP module; a final norm; an unembedding) works, and a
small registry (:data:`interp.sites.ARCHITECTURES`) holds only what structure cannot settle.
Everything that hooks a model goes through :func:`resolve_site`, :func:`final_norm` and
:func:`unembed`, so no code assumes Llama. PEFT wrappers are seen through: on a LoRA model,
``down_proj`` is a ``lora.Linear`` whose input is still the neuron activation and whose output
includes the adapter's contribution.

Reading (:func:`record_activations`) and writing (:func:`edit_site`) are context managers whose
hooks are removed when the block exits, also on an exception.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from jaxtyping import Float
from torch import Tensor

from interp.sites import (
    ARCHITECTURES,
    DEFAULT_SITE,
    SITE_NAMES,
    ArchSpec,
    HookPoint,
    d_in,
    final_norm,
    n_layers,
    resolve_site,
    unembed,
)

__all__ = [
    "ARCHITECTURES", "DEFAULT_SITE", "SITE_NAMES", "ArchSpec", "HookPoint", "d_in", "edit_site",
    "final_norm", "n_layers", "record_activations", "resolve_site", "unembed",
]


def _first_tensor(value: Any) -> Tensor:
    return value[0] if isinstance(value, tuple | list) else value


def _input_tensor(args: tuple, kwargs: dict[str, Any], site: str) -> Tensor:
    """The value an input site reads: the first positional argument or ``hidden_states``."""
    # decoder layers take hidden_states positionally today; keyword-safe anyway
    if args:
        return args[0]
    if "hidden_states" in kwargs:
        return kwargs["hidden_states"]
    raise ValueError(f"site {site}: the module was called without a positional input or hidden_states")


@contextlib.contextmanager
def _as_batch_pos(hp: HookPoint) -> Iterator[Callable[[Tensor], Tensor]]:
    """Yields ``view(x)``: the site's value as ``[batch, pos, d]``. Where the layer runs its MLP
    on ``[batch * pos, d]`` (OPT), batch and positions are read off the layer's input."""
    if hp.flat_from is None:
        yield lambda x: x
        return
    lead: list[int] = []

    def remember(_mod, args, kwargs):
        lead[:] = _input_tensor(args, kwargs, hp.name).shape[:-1]

    handle = hp.flat_from.register_forward_pre_hook(remember, with_kwargs=True)
    try:
        yield lambda x: x.view(*lead, x.shape[-1]) if x.dim() == 2 else x
    finally:
        handle.remove()


@contextlib.contextmanager
def record_activations(
    model: Any, sites: Sequence[str]
) -> Iterator[dict[str, list[Float[Tensor, "batch pos d"]]]]:
    """Record the values at ``sites`` for every forward pass inside the block.

    Yields a dict mapping each canonical name (layer made non-negative) to a list with one
    ``[batch, pos, d]`` tensor per forward pass (detached copies, so that a module editing its
    output in place later, as Falcon's layer does, leaves them as they were; generation adds
    one per step).
    The hooks are removed when the block exits, also on an exception.

    >>> import torch
    >>> from tests.conftest import tiny_model
    >>> model = tiny_model("llama")
    >>> with record_activations(model, ["blocks.-1.mlp.hook_post"]) as acts:
    ...     _ = model(torch.tensor([[5, 6, 7]]))
    >>> acts["blocks.1.mlp.hook_post"][0].shape
    torch.Size([1, 3, 128])
    """
    points = [resolve_site(model, s) for s in sites]
    store: dict[str, list[Tensor]] = {p.name: [] for p in points}
    with contextlib.ExitStack() as stack:
        for p in points:
            view = stack.enter_context(_as_batch_pos(p))
            if p.read == "input":

                def pre_hook(_mod, args, kwargs, name=p.name, view=view):
                    store[name].append(view(_input_tensor(args, kwargs, name)).detach().clone())

                handle = p.module.register_forward_pre_hook(pre_hook, with_kwargs=True)
            else:

                def hook(_mod, _args, output, name=p.name, view=view):
                    store[name].append(view(_first_tensor(output)).detach().clone())

                handle = p.module.register_forward_hook(hook)
            stack.callback(handle.remove)
        yield store


@contextlib.contextmanager
def edit_site(
    model: Any,
    site: str,
    fn: Callable[[Float[Tensor, "batch pos d"]], Float[Tensor, "batch pos d"]],
) -> Iterator[HookPoint]:
    """Replace the value at ``site`` by ``fn(value)`` in every forward pass inside the block
    (generation steps included); yields the resolved :class:`HookPoint`.

    An input site (``mlp.hook_post``, ``hook_resid_pre``) is edited by a forward pre-hook that
    replaces the module's first positional argument (or its ``hidden_states`` keyword); an
    output site by a forward hook that replaces the output, or its first element when the
    module returns a tuple (the rest is kept). The hook is removed when the block exits, also
    on an exception.

    Args:
        model: a transformers decoder-only causal LM, optionally wrapped by PEFT.
        site: a canonical site name (negative layer indices count from the end).
        fn: maps the site's ``[batch, pos, d]`` tensor to its replacement, of the same shape.

    >>> import torch
    >>> from tests.conftest import tiny_model
    >>> model = tiny_model("llama")
    >>> with edit_site(model, "blocks.-1.hook_resid_post", torch.zeros_like) as hp:
    ...     logits = model(torch.tensor([[5, 6, 7]])).logits
    >>> hp.name, bool((logits == 0).all())
    ('blocks.1.hook_resid_post', True)
    """
    hp = resolve_site(model, site)
    with contextlib.ExitStack() as stack:
        view = stack.enter_context(_as_batch_pos(hp))

        def apply(x: Tensor) -> Tensor:
            v = view(x)
            y = fn(v)
            if y.shape != v.shape:
                raise ValueError(f"edit at {hp.name} returned shape {tuple(y.shape)} for an input of shape {tuple(v.shape)}")
            return y.reshape(x.shape)

        if hp.read == "input":

            def pre_hook(_mod, args, kwargs):
                if args:
                    return (apply(args[0]), *args[1:]), kwargs
                return args, {**kwargs, "hidden_states": apply(_input_tensor(args, kwargs, hp.name))}

            handle = hp.module.register_forward_pre_hook(pre_hook, with_kwargs=True)
        else:

            def hook(_mod, _args, output):
                if isinstance(output, tuple):
                    return (apply(output[0]), *output[1:])
                return apply(output)

            handle = hp.module.register_forward_hook(hook)
        stack.callback(handle.remove)
        yield hp
