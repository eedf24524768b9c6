"""Activation capture at one canonical hook site, with three interchangeable backends.

Backends read the same value (tests hold them to a raw torch hook within 1e-5 in float32):

* ``torch`` — a forward pre/post hook on the site's module (:mod:`interp.hooks`);
* ``nnsight`` — ``LanguageModel(model).trace(...)`` and ``.input`` / ``.output.save()``;
* ``transformer-lens`` — ``TransformerBridge.boot_transformers(hf_model=model)`` and
  ``run_with_cache(names_filter=site)``. The bridge runs eager attention, so on a model that
  normally uses SDPA it equals the raw hook of the same model in eager mode (1e-5); eager vs
  SDPA differ by float32 rounding (seen: 4e-5 on activations of magnitude 30).

Positions (the paper's "neuron activation just before token generation" is ``last``):

* ``last`` — each prompt's last real token, the one that predicts the next token;
* ``mean`` — the mean over a span of each prompt's tokens: the answer's tokens where an answer
  is given, else every real token;
* ``all`` — every real token, ragged: rows of all prompts stacked, with ``offsets``.

Prompts are tokenized one by one and left-padded by hand, with ``position_ids`` counted from
each prompt's first real token, so a padded batch computes what each prompt alone computes.
Results stream into a memory-mapped file (``.npy`` or ``.safetensors``) batch by batch, so memory
grows with the batch size, not with the number of prompts.

>>> from interp.capture import capture                                     # doctest: +SKIP
>>> acts = capture(lm.model, lm.tokenizer, ["I love parties!"])            # doctest: +SKIP
>>> acts.shape                                                             # doctest: +SKIP
(1, 1536)
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.chat import format_chat
from interp.hooks import DEFAULT_SITE, record_activations, resolve_site
from interp.models import is_peft
from text2emoji.core.presets import BATCH_SIZE

Backend = Literal["torch", "nnsight", "transformer-lens"]
Position = Literal["last", "mean", "all"]
BACKENDS: tuple[str, ...] = ("torch", "nnsight", "transformer-lens")
POSITIONS: tuple[str, ...] = ("last", "mean", "all")


@dataclass(frozen=True)
class Encoded:
    """One prompt's token ids and where its ``mean`` span starts."""

    ids: list[int]
    span_start: int = 0


def encode(
    tokenizer: Any,
    texts: Sequence[str],
    *,
    chat: bool = False,
    answers: Sequence[str] | None = None,
    system: str | None = None,
) -> list[Encoded]:
    """Token ids of each prompt (verbatim unless ``chat``), optionally followed by an answer.

    Raw text gets the tokenizer's special tokens (BOS where it adds one); chat-formatted text
    already holds them. An answer is tokenized on its own and appended, and the ``mean`` span
    then covers only the answer's tokens.
    """
    if answers is not None and len(answers) != len(texts):
        raise ValueError("answers needs one answer per prompt")
    out = []
    for i, text in enumerate(texts):
        prompt = format_chat(tokenizer, text, system=system) if chat else text
        ids = tokenizer(prompt, add_special_tokens=not chat)["input_ids"]
        if not ids:
            raise ValueError(f"prompt {i} is empty after tokenization")
        if answers is None:
            out.append(Encoded(list(ids)))
        else:
            ans = tokenizer(answers[i], add_special_tokens=False)["input_ids"]
            if not ans:
                raise ValueError(f"answer {i} is empty after tokenization")
            out.append(Encoded(list(ids) + list(ans), span_start=len(ids)))
    return out


def pad_id(tokenizer: Any) -> int:
    """The id padding uses (0 without a tokenizer or pad token: masked out either way)."""
    return getattr(tokenizer, "pad_token_id", None) or 0


def pad_left(
    seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu"
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """``input_ids``, ``attention_mask`` and ``position_ids`` of left-padded sequences.

    >>> ids, mask, pos = pad_left([[5, 6, 7], [8]], pad_id=0)
    >>> ids.tolist(), mask.tolist(), pos.tolist()
    ([[5, 6, 7], [0, 0, 8]], [[1, 1, 1], [0, 0, 1]], [[0, 1, 2], [0, 0, 0]])
    """
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(list(s), dtype=torch.long)
        mask[i, width - len(s):] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), pos.to(device)


# --- backends: each returns the site's value [batch, pos, d] for one padded batch -----------

SiteForward = Callable[..., Tensor]


def _forward_torch(model: Any, ids: Tensor, mask: Tensor, pos: Tensor, site: str, tokenizer: Any = None) -> Tensor:
    name = resolve_site(model, site).name
    with record_activations(model, [site]) as acts:
        # logits only where they are cheapest: they are not what is read
        model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1, use_cache=False)
    return acts[name][0]


_NNSIGHT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def nnsight_model(model: Any, tokenizer: Any) -> Any:
    """nnsight's ``LanguageModel`` around ``model`` (one wrapper per model, reused; a remote
    model's own wrapper, see :func:`register_nnsight`)."""
    if model not in _NNSIGHT:
        import warnings

        from nnsight import LanguageModel

        with warnings.catch_warnings():
            # 0.8 points to TransformersModel, a pipeline wrapper; a PEFT-wrapped model with
            # token-id inputs is what LanguageModel handles directly, so it stays for now.
            warnings.filterwarnings("ignore", message="LanguageModel is deprecated")
            _NNSIGHT[model] = LanguageModel(model, tokenizer=tokenizer)
    return _NNSIGHT[model]


def register_nnsight(model: Any, lm: Any) -> None:
    """Make ``lm`` the nnsight wrapper of ``model`` (:func:`interp.remote.remote_model`: the
    meta-device module of a hub model, whose wrapper carries the id NDIF loads it by)."""
    _NNSIGHT[model] = lm


def is_meta(model: Any) -> bool:
    """Whether ``model``'s weights are on the meta device (a remote model's local skeleton)."""
    return next(model.parameters()).device.type == "meta"


def input_device(model: Any) -> torch.device:
    """Where a forward's inputs go: the model's device; CPU for a remote model's meta skeleton
    (nnsight ships the inputs and the server moves them to its device)."""
    device = next(model.parameters()).device
    return torch.device("cpu") if device.type == "meta" else device


def check_remote(model: Any, backend: str, remote: bool) -> None:
    """``remote`` runs the nnsight backend only, and a meta model (no weights here) only remotely.

    Raises:
        ValueError: either rule is broken (a meta model run locally would make nnsight download
            every weight of it).
    """
    if remote and backend != "nnsight":
        raise ValueError(f"remote execution runs the nnsight backend, not {backend!r}")
    if not remote and is_meta(model):
        raise ValueError("this model has no weights here (a remote model): run it with remote=True")


def _envoy(root: Any, path: str) -> Any:
    node = root
    for part in path.split("."):
        node = node[int(part)] if part.isdigit() else getattr(node, part)
    return node


def _forward_nnsight(model: Any, ids: Tensor, mask: Tensor, pos: Tensor, site: str, tokenizer: Any = None,
                     remote: bool = False, last_only: bool = False) -> Tensor:
    """The site's value ``[batch, pos, d]`` (``[batch, 1, d]``: the last position only, cut where
    the model runs, when ``last_only``) through nnsight, on NDIF when ``remote``."""
    from interp.remote import remote_errors

    hp = resolve_site(model, site)
    lm = nnsight_model(model, tokenizer)
    prefix = "base_model.model." if is_peft(model) else ""
    env = _envoy(lm, prefix + hp.module_path)
    read_input = hp.read == "input"
    batch = {"input_ids": ids, "attention_mask": mask, "position_ids": pos}
    # the block below is what NDIF runs when remote: envoys, tensors and builtins only (no
    # function of this package, which the server does not have)
    with torch.no_grad(), remote_errors(remote):
        with lm.trace(batch, remote=remote, logits_to_keep=1, use_cache=False):
            value = env.input if read_input else env.output
            value = value[0] if isinstance(value, tuple | list) else value
            value = (value[:, -1:] if last_only else value).save()
    return value.detach()


@contextlib.contextmanager
def transformer_bridge(model: Any, tokenizer: Any) -> Iterator[Any]:
    """A TransformerLens ``TransformerBridge`` over ``model`` (adapters stay live).

    The bridge switches the model to eager attention (so its attention hooks fire); the model's
    own attention implementation is restored when the block exits.
    """
    from transformer_lens.model_bridge import TransformerBridge

    hf = model.get_base_model() if is_peft(model) else model
    before = hf.config._attn_implementation
    import logging

    quiet = logging.getLogger("transformer_lens")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        bridge = TransformerBridge.boot_transformers(
            hf.config.name_or_path or hf.config.model_type, hf_model=hf,
            device=str(next(hf.parameters()).device), tokenizer=tokenizer,
        )
        yield bridge
    finally:
        quiet.setLevel(level)
        hf.set_attn_implementation(before)


def _forward_tl(bridge: Any, ids: Tensor, mask: Tensor, pos: Tensor, name: str) -> Tensor:
    with torch.no_grad():
        _, cache = bridge.run_with_cache(
            ids, attention_mask=mask, position_ids=pos, names_filter=lambda n: n == name
        )
    if name not in cache:
        raise ValueError(f"TransformerBridge has no hook {name!r} for this model")
    return cache[name].detach()


# the backends that read the model directly with (model, ids, mask, pos, site, tokenizer);
# nnsight also takes remote and last_only; transformer-lens reads through a bridge it opens
_FORWARD: dict[str, SiteForward] = {"torch": _forward_torch, "nnsight": _forward_nnsight}


@contextlib.contextmanager
def _backend(model: Any, backend: str, site: str, tokenizer: Any, remote: bool = False,
             last_only: bool = False) -> Iterator[Callable[[Tensor, Tensor, Tensor], Tensor]]:
    """``forward(ids, mask, pos)`` -> the site's value ``[batch, pos, d]`` with ``backend``
    (nnsight with ``last_only``: ``[batch, 1, d]``, the last position)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    check_remote(model, backend, remote)
    if backend == "transformer-lens":
        name = resolve_site(model, site).name
        with transformer_bridge(model, tokenizer) as bridge:
            yield lambda ids, mask, pos: _forward_tl(bridge, ids, mask, pos, name)
        return
    fn = _FORWARD[backend]
    extra = (remote, last_only) if backend == "nnsight" else ()
    yield lambda ids, mask, pos: fn(model, ids, mask, pos, site, tokenizer, *extra)


# --- streaming writers ------------------------------------------------------------------------


class ActivationFile:
    """A float32 ``[rows, d]`` array written in place on disk, renamed into ``path`` on close.

    ``.npy`` gets a NumPy array; ``.safetensors`` gets tensor ``"activations"`` (plus int64
    ``"offsets"`` for ragged ``all``-position captures). Both are memory-mapped while written,
    so rows arrive batch by batch in any order; on an error the partial file is removed and an
    existing ``path`` is left as it was.
    """

    def __init__(self, path: str | Path, rows: int, d: int, offsets: np.ndarray | None = None):
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.partial")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        suffix = self.path.suffix
        if suffix == ".npy":
            if offsets is not None:
                raise ValueError(
                    f"{self.path}: --position all gives a ragged result; write it to a "
                    ".safetensors file (tensors 'activations' and 'offsets')"
                )
            self.array = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=np.float32, shape=(rows, d))
        elif suffix == ".safetensors":
            self.array = self._safetensors_memmap(rows, d, offsets)
        else:
            raise ValueError(f"{self.path}: output must end in .npy or .safetensors")

    def _safetensors_memmap(self, rows: int, d: int, offsets: np.ndarray | None) -> np.memmap:
        # the format: u64 header length, JSON header, then raw little-endian tensor bytes
        nbytes = rows * d * 4
        header: dict[str, Any] = {
            "activations": {"dtype": "F32", "shape": [rows, d], "data_offsets": [0, nbytes]},
        }
        if offsets is not None:
            header["offsets"] = {
                "dtype": "I64", "shape": [len(offsets)], "data_offsets": [nbytes, nbytes + 8 * len(offsets)],
            }
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # keep the data 8-byte aligned
        with open(self.tmp, "wb") as f:
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            f.truncate(8 + len(raw) + nbytes + (8 * len(offsets) if offsets is not None else 0))
        if offsets is not None:
            tail = np.memmap(self.tmp, dtype="<i8", mode="r+", offset=8 + len(raw) + nbytes, shape=(len(offsets),))
            tail[:] = offsets
            tail.flush()
            del tail
        return np.memmap(self.tmp, dtype="<f4", mode="r+", offset=8 + len(raw), shape=(rows, d))

    def close(self) -> Path:
        self.array.flush()
        del self.array
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        self.array = None
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


def load_activations(path: str | Path) -> Float[np.ndarray, "rows d"]:
    """Read what :func:`capture` wrote (``.npy`` or the ``activations`` tensor of safetensors)."""
    path = Path(path)
    if path.suffix == ".npy":
        return np.load(path)
    from safetensors.numpy import load_file

    return load_file(str(path))["activations"]


# --- the capture loop ---------------------------------------------------------------------------


@dataclass
class Captured:
    """What :func:`capture` returns: the activations and, for ``all``, each prompt's rows."""

    activations: np.ndarray  # [n_prompts, d] or [n_tokens, d] for position "all"
    offsets: np.ndarray | None = None  # [n_prompts + 1]: rows offsets[i]:offsets[i+1] = prompt i
    site: str = DEFAULT_SITE
    path: Path | None = None

    def prompt(self, i: int) -> Float[np.ndarray, "*pos d"]:
        if self.offsets is None:
            return self.activations[i]
        return self.activations[self.offsets[i]:self.offsets[i + 1]]


def reduce_positions(
    x: Float[Tensor, "batch pos d"], lengths: Sequence[int], span_starts: Sequence[int], position: str
) -> list[Float[Tensor, "*pos d"]]:
    """Per prompt of a left-padded batch: the last token's row, the span's mean, or all rows."""
    width = x.shape[1]
    out = []
    for i, (n, s) in enumerate(zip(lengths, span_starts, strict=True)):
        rows = x[i, width - n:]
        if position == "last":
            out.append(rows[-1])
        elif position == "mean":
            out.append(rows[s:].mean(0))
        elif position == "all":
            out.append(rows)
        else:
            raise ValueError(f"unknown position {position!r}; valid: {', '.join(POSITIONS)}")
    return out


def capture(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str] | Sequence[Encoded],
    *,
    site: str = DEFAULT_SITE,
    position: str = "last",
    backend: str = "torch",
    batch_size: int = BATCH_SIZE,
    chat: bool = False,
    answers: Sequence[str] | None = None,
    out: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    remote: bool = False,
) -> Captured:
    """Activations at ``site`` for each prompt, batched, reduced over ``position``.

    Args:
        model: a causal LM (plain, 4-bit, PEFT-wrapped or merged). Adapters are used as they
            stand: wrap the call in :func:`interp.models.adapter_disabled` for the base. With
            ``remote``: ``remote_model(id).pipeline.model`` (:mod:`interp.remote`).
        tokenizer: its tokenizer (only for text prompts).
        prompts: texts (used verbatim unless ``chat``) or pre-encoded :class:`Encoded` prompts.
        site: a canonical hook site (:mod:`interp.hooks`).
        position: ``last``, ``mean`` or ``all`` (see the module docstring).
        backend: ``torch``, ``nnsight`` or ``transformer-lens``.
        batch_size: prompts per forward pass; prompts are batched by length to limit padding.
        chat: wrap each text in the chat template as one user turn.
        answers: optional text appended to each prompt; ``mean`` then averages the answer tokens.
        out: a ``.npy`` or ``.safetensors`` path to stream into; in memory when None.
        progress: called as ``progress(done, total)`` after each batch.
        remote: run each batch's nnsight trace on NDIF (``backend="nnsight"`` only); with
            ``position="last"`` only the last position's row comes back.

    Returns:
        :class:`Captured` with float32 activations (a memory map of ``out`` when given).
    """
    if position not in POSITIONS:
        raise ValueError(f"unknown position {position!r}; valid: {', '.join(POSITIONS)}")
    if all(isinstance(p, Encoded) for p in prompts):
        enc = list(prompts)
    else:
        enc = encode(tokenizer, list(prompts), chat=chat, answers=answers)  # type: ignore[arg-type]
    n = len(enc)
    if n == 0:
        raise ValueError("no prompts to capture")
    hp = resolve_site(model, site)
    device = input_device(model)
    pad = pad_id(tokenizer)
    lengths = [len(e.ids) for e in enc]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64) if position == "all" else None
    rows = int(offsets[-1]) if offsets is not None else n
    # batch prompts of similar length together: less padding, same results
    order = sorted(range(n), key=lambda i: lengths[i])
    sink: ActivationFile | None = None
    array: np.ndarray | None = None
    done = 0
    try:
        # the nnsight backend cuts the last position where the model runs (remote: less to send)
        last_only = position == "last" and backend == "nnsight"
        with _backend(model, backend, site, tokenizer, remote, last_only) as forward:
            for start in range(0, n, batch_size):
                idx = order[start:start + batch_size]
                ids, mask, pos = pad_left([enc[i].ids for i in idx], pad, device)
                x = forward(ids, mask, pos)
                if array is None:
                    d = x.shape[-1]
                    if out is not None:
                        sink = ActivationFile(out, rows, d, offsets)
                        array = sink.array
                    else:
                        array = np.zeros((rows, d), dtype=np.float32)
                # a last-position-only value is each prompt's one row (left padding: all end there)
                n_rows = [1] * len(idx) if last_only else [lengths[i] for i in idx]
                parts = reduce_positions(x, n_rows, [enc[i].span_start for i in idx], position)
                for i, v in zip(idx, parts, strict=True):
                    v = v.float().cpu().numpy()
                    if offsets is None:
                        array[i] = v
                    else:
                        array[offsets[i]:offsets[i + 1]] = v
                done += len(idx)
                if progress is not None:
                    progress(done, n)
    except BaseException:
        if sink is not None:
            sink.abort()
        raise
    path = None
    if sink is not None:
        path = sink.close()
        array = load_activations(path) if path.suffix == ".safetensors" else np.load(path, mmap_mode="r")
    return Captured(array, offsets, hp.name, path)
