"""Steering: add ``alpha * v`` to the residual stream after one decoder block, at every position,
while a model runs or generates; the vectors to steer with; and the base model's coherence of
what comes out.

Vectors (``[d_model]``):

* a row of :func:`interp.difflens.diff_vectors` (what an adapter adds on neutral text);
* a row of :func:`trait_vector`: mean ``resid_post`` over answers generated with the trait
  instruction of ``prompts/incontext.yaml`` as system message minus the mean over answers to
  the same questions without it (persona-vector / contrastive-activation style);
* any ``.npy`` (:func:`load_vector` reads and checks one).

>>> import torch
>>> from tests.conftest import tiny_model
>>> model = tiny_model()
>>> ids = torch.tensor([[5, 6, 7]])
>>> with steering(model, -1, torch.zeros(64), 3.0) as hp:
...     same = torch.equal(model(ids).logits, tiny_model()(ids).logits)
>>> hp.name, same
('blocks.1.hook_resid_post', True)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from interp.behaviour.evaluate import incontext_messages
from interp.behaviour.generation import DecodeSettings, generate
from interp.capture import pad_id
from interp.chat import format_chat
from interp.forced import encode_pairs, forced_passes
from interp.hooks import HookPoint, edit_site, n_layers
from interp.models import adapter_disabled, base_config, is_peft
from text2emoji.core.errors import UserError
from text2emoji.core.presets import BATCH_SIZE

GREEDY = DecodeSettings()
# the answers a trait vector is read from: the quick preset's answer length
TRAIT_DECODING = DecodeSettings(max_new_tokens=48)


def d_model(model: Any) -> int:
    """Width of the residual stream (the text config's ``hidden_size``)."""
    cfg = base_config(model)
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    return int(text.hidden_size)


def _as_vector(model: Any, vector: Tensor | np.ndarray) -> Tensor:
    v = torch.as_tensor(np.asarray(vector) if isinstance(vector, np.ndarray) else vector).detach()
    if v.dim() != 1 or v.shape[0] != d_model(model):
        raise ValueError(f"steering vector of shape {tuple(v.shape)}; the model's residual stream is [{d_model(model)}]")
    return v.float().cpu()


@contextlib.contextmanager
def steering(
    model: Any, layer: int, vector: Float[Tensor, "d_model"] | Float[np.ndarray, "d_model"], alpha: float
) -> Iterator[HookPoint]:
    """Add ``alpha * vector`` to ``blocks.{layer}.hook_resid_post`` (the output of decoder block
    ``layer``; negative counts from the end) at every position of every forward pass inside the
    block: prompt and generated tokens alike (padding too, which nothing attends to). The hook is
    removed when the block exits, also on an exception.

    ``alpha * vector`` is formed once in float32 and added in the residual stream's dtype, so
    ``alpha = 0`` (or a zero vector) leaves every value exactly as it was.

    Args:
        model: a transformers causal LM, optionally PEFT-wrapped.
        layer: the decoder block whose output is steered.
        vector: ``[d_model]``.
        alpha: the scale.

    Yields:
        The resolved :class:`~interp.hooks.HookPoint` (its ``name`` holds the layer made non-negative).

    Raises:
        ValueError: the vector is not ``[d_model]``; the layer is out of range.
    """
    delta = float(alpha) * _as_vector(model, vector)
    cast: dict[tuple[torch.dtype, torch.device], Tensor] = {}

    def add(x: Tensor) -> Tensor:
        key = (x.dtype, x.device)
        if key not in cast:
            cast[key] = delta.to(device=x.device, dtype=x.dtype)
        return x + cast[key]

    with edit_site(model, f"blocks.{layer}.hook_resid_post", add) as hp:
        yield hp


def steered_generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    vector: Float[Tensor, "d_model"] | Float[np.ndarray, "d_model"],
    layer: int,
    alpha: float,
    settings: DecodeSettings = GREEDY,
    *,
    chat: bool = True,
    batch_size: int = BATCH_SIZE,
    add_special_tokens: bool | None = None,
) -> list[str]:
    """:func:`~interp.behaviour.generation.generate` inside :func:`steering`: one answer per
    prompt, in batches (greedy unless ``settings.do_sample``).

    >>> import torch
    >>> from interp.behaviour.generation import DecodeSettings
    >>> from tests.conftest import tiny_model, tiny_tokenizer
    >>> tok = tiny_tokenizer(); tok.padding_side = "left"
    >>> out = steered_generate(tiny_model(), tok, ["w1 w2"], torch.ones(64), -1, 4.0,
    ...                        DecodeSettings(max_new_tokens=3), chat=False)
    >>> len(out)
    1
    """
    with steering(model, layer, vector, alpha):  # the same vector at every position: prompts may share a prefix pass
        return generate(model, tokenizer, prompts, settings, chat=chat, batch_size=batch_size,
                        add_special_tokens=add_special_tokens, share_prefix=True)


def answer_activations(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    answers: Sequence[str],
    *,
    chat: bool = True,
    add_special_tokens: bool | None = None,
    batch_size: int = BATCH_SIZE,
) -> Float[np.ndarray, "answers layers d_model"]:
    """Each answer's mean ``resid_post`` over its own tokens, per layer, teacher-forced under its
    own prompt (float64; an answer with no tokens gives a row of NaN)."""
    pairs = encode_pairs(tokenizer, prompts, answers, chat=chat, add_special_tokens=add_special_tokens)
    sites = [f"blocks.{i}.hook_resid_post" for i in range(n_layers(model))]
    out = np.full((len(pairs), len(sites), d_model(model)), np.nan)
    for i, _, acts in forced_passes(model, pairs, pad_id=pad_id(tokenizer), batch_size=batch_size,
                                    sites=sites, logits=False):
        if len(pairs[i][1]):
            out[i] = torch.stack([acts[s].double().mean(0) for s in sites]).cpu().numpy()
    return out


def trait_prompts(tokenizer: Any, questions: Sequence[str], trait: str) -> tuple[list[str], list[str]]:
    """The chat-formatted prompts of :func:`trait_vector`: each question with the trait
    instruction of ``prompts/incontext.yaml`` as system message (the in-context baseline's
    prompt, :func:`interp.behaviour.evaluate.incontext_messages`, without demonstrations), and
    the question alone (as the base method asks it: a template that adds a default system
    message, as SmolLM2's does, adds it there; the trait instruction replaces it)."""
    with_ = [format_chat(tokenizer, incontext_messages([], trait, q, k=0, seed=0)) for q in questions]
    return with_, [format_chat(tokenizer, q) for q in questions]


@dataclass(frozen=True)
class TraitVector:
    """:func:`trait_vector`'s result."""

    trait: str
    vector: np.ndarray  # float32 [n_layers, d_model]: mean with the instruction - mean without
    questions: list[str]
    answers_with: list[str]
    answers_without: list[str]
    n_with: int  # answers with at least one token, which the means are over
    n_without: int

    def to_dict(self) -> dict[str, Any]:
        """Everything but the vector (it goes to ``.npy``), plus its norm per layer."""
        d = asdict(self)
        d.pop("vector")
        d["norm_per_layer"] = [float(x) for x in np.linalg.norm(self.vector.astype(np.float64), axis=1)]
        return d


def trait_vector(
    model: Any,
    tokenizer: Any,
    questions: Sequence[str],
    trait: str,
    settings: DecodeSettings = TRAIT_DECODING,
    *,
    batch_size: int = BATCH_SIZE,
) -> TraitVector:
    """A trait direction at every layer, contrastive-activation style.

    Each question is answered twice by ``model`` (:func:`trait_prompts`): with the trait
    instruction as system message and without it. Every answer is then run teacher-forced under
    its own prompt, and its ``resid_post`` is averaged over its own tokens; each side's mean is
    the mean of those per-answer means (each answer weighs the same, however long), and the
    vector is ``mean(with) - mean(without)``. Answers with no tokens are left out.

    Args:
        model: the model whose answers and activations are read (the base model as a rule).
        tokenizer: its tokenizer, padding on the left.
        questions: user questions.
        trait: a Big Five trait (its summary fills the instruction).
        settings: how the answers are decoded.
        batch_size: prompts per generation / forward batch.

    Raises:
        ValueError: no questions, or one side has no non-empty answer.
    """
    if not questions:
        raise ValueError("trait_vector() needs at least one question")
    with_, without = trait_prompts(tokenizer, questions, trait)
    sides = []
    for prompts in (with_, without):
        answers = generate(model, tokenizer, prompts, settings, chat=False, batch_size=batch_size,
                           add_special_tokens=False,  # the chat template holds its special tokens
                           share_prefix=True)  # the instruction's system message, run once
        acts = answer_activations(model, tokenizer, prompts, answers, chat=False, add_special_tokens=False,
                                  batch_size=batch_size)
        used = ~np.isnan(acts[:, 0, 0])
        if not used.any():
            raise ValueError(f"trait_vector(): every answer {'with' if prompts is with_ else 'without'} the "
                             "instruction is empty")
        sides.append((answers, acts[used].mean(0), int(used.sum())))
    (aw, mw, nw), (ao, mo, no) = sides
    return TraitVector(trait, (mw - mo).astype(np.float32), list(questions), aw, ao, nw, no)


def coherence(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    answers: Sequence[str],
    *,
    chat: bool = True,
    add_special_tokens: bool | None = None,
    batch_size: int = BATCH_SIZE,
    base: bool = True,
) -> Float[np.ndarray, "answers"]:  # noqa: F821
    """The base model's mean negative log-likelihood per token of each answer given its prompt
    (nats; teacher-forced; NaN for an answer with no tokens): how plausible steered text stays.
    Call it outside :func:`steering`.

    Args:
        model: a causal LM; with ``base`` and a PEFT adapter, the adapter is switched off.
        tokenizer: its tokenizer.
        prompts: as :func:`interp.forced.encode_pairs` takes them.
        answers: one per prompt.
        chat: wrap each prompt in the chat template.
        add_special_tokens: the prompt's special tokens (default: only for raw text).
        batch_size: pairs per forward pass.
        base: score with the adapter off (when the model has one).
    """
    pairs = encode_pairs(tokenizer, prompts, answers, chat=chat, add_special_tokens=add_special_tokens)
    out = np.full(len(pairs), np.nan)
    ctx = adapter_disabled(model) if base and is_peft(model) else contextlib.nullcontext()
    with ctx:
        for i, logits, _ in forced_passes(model, pairs, pad_id=pad_id(tokenizer), batch_size=batch_size):
            toks = torch.tensor(pairs[i][1], dtype=torch.long, device=logits.device)
            if len(toks):
                lp = torch.log_softmax(logits.double(), -1).gather(-1, toks[:, None])[:, 0]
                out[i] = float(-lp.mean())
    return out


def load_vector(path: str | Path, d: int, *, row: int | None = None, n_layers: int | None = None,
                layer: int | None = None) -> tuple[Float[np.ndarray, "d_model"], int | None]:
    """Read a steering vector from ``.npy``: ``[d]`` as it is, or one row of ``[rows, d]``.

    Args:
        path: the file.
        d: the model's ``d_model``.
        row: which row of a 2-D file (negative counts from the end); default: row ``layer``
            of a file with one row per layer (``n_layers`` rows).
        n_layers: the model's layer count (for the default row).
        layer: the steering layer, non-negative (for the default row).

    Returns:
        The float32 vector and the row it came from (None for a 1-D file).

    Raises:
        UserError: one line naming the file and what is wrong.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such vector file" if not p.exists() else f"{p}: not a file")
    try:
        a = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"{p}: not a readable .npy array ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e
    if not isinstance(a, np.ndarray) or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise UserError(f"{p}: expected a real-valued array, got {getattr(a, 'dtype', type(a).__name__)}")
    if a.ndim not in (1, 2):
        raise UserError(f"{p}: expected shape [d_model] or [rows, d_model], got {list(a.shape)}")
    if a.shape[-1] != d:
        raise UserError(f"{p}: vectors of width {a.shape[-1]}, but the model's d_model is {d} (shape {list(a.shape)})")
    picked: int | None = None
    if a.ndim == 1 and row is not None:
        raise UserError(f"{p}: holds one vector of shape {list(a.shape)}; --row picks a row of a 2-D file")
    if a.ndim == 2:
        if row is None:
            if n_layers is None or layer is None or a.shape[0] != n_layers:
                raise UserError(f"{p}: {a.shape[0]} rows, not one per layer of the model ({n_layers}); "
                                "pick one with --row")
            row = layer
        if not -a.shape[0] <= row < a.shape[0]:
            raise UserError(f"{p}: row {row} out of range for {a.shape[0]} rows [-{a.shape[0]}, {a.shape[0] - 1}]")
        picked = row % a.shape[0]
        a = a[picked]
    if not np.isfinite(a).all():
        raise UserError(f"{p}: the vector holds NaN or infinite values")
    return a.astype(np.float32), picked
