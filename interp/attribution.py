"""Emoji neurons across all layers, found by attribution patching and tested on other prompts.

The study's neuron ranking (:mod:`interp.neurons`) reads one layer and ranks neurons by how much
their activation rises under the adapter, which says nothing about emojis. This module asks
the causal question directly, for every MLP neuron of every layer, at the position where an
answer starts (each prompt's last token, which predicts the answer's first token):

* **metric** ``m`` = log P(the answer opens with an emoji): the log of the summed probability
  of the tokens that begin an RGI emoji (:func:`opening_tokens`; a keycap's digit or a text
  symbol such as ``©`` does not count, since it is text on its own);
* **attribution** (attribution patching: Nanda 2023; Syed, Rager & Conmy 2023): for neuron
  ``i`` with value ``a`` under the adapter and ``b`` on the base model (adapter disabled), the
  first-order estimate of what setting it back to ``b`` does to ``m`` is ``(b - a) ∂m/∂a``;
  its negative, ``(a - b) ∂m/∂a`` averaged over the prompts, is the neuron's **score** (how much
  of ``m``'s rise it carries). One backward pass scores all neurons of all layers.
* **test** (:class:`AnswerStart`): the top ``k`` neurons by score, chosen on *selection*
  prompts, are set to their base values on *other* prompts (reverse patching at the answer
  start) and ``m`` and the greedy first token are read exactly, against random sets drawn in
  the same layers and matched on the size of the patch ``|a - b|`` (:func:`matched_sets`).

Patching only the last prompt position leaves every earlier position as it was (attention is
causal), so :class:`AnswerStart` caches the prompts' keys and values once and each random set
costs one token per prompt.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp.capture import encode, pad_id, pad_left
from interp.hooks import edit_site, n_layers
from interp.intervene import matched_draws, unmatched
from interp.models import adapter_disabled
from text2emoji.core.presets import BATCH_SIZE

Neuron = tuple[int, int]  # (layer, neuron)


def layer_sites(model: Any) -> list[str]:
    """The neuron site of every layer, ``blocks.{L}.mlp.hook_post``."""
    return [f"blocks.{layer}.mlp.hook_post" for layer in range(n_layers(model))]


@functools.cache
def _all_emojis() -> tuple[str, ...]:
    import emoji

    return tuple(e for e, d in emoji.EMOJI_DATA.items() if d.get("status") == emoji.STATUS["fully_qualified"])


def _text_chars() -> list[str]:
    """Printable characters of the Basic Multilingual Plane that are no emoji in any form
    (letters of every script, punctuation, ✓, ★, arrows, CJK): what an answer may open with
    that is text."""
    import unicodedata

    import emoji

    # emojis by themselves or with U+FE0F (❤, ☺); not ©, ® or ™ (typography) nor a keycap's digit
    emoji_chars = {e[0] for e in emoji.EMOJI_DATA if len(e) == 1 or (len(e) == 2 and e[1] == "\ufe0f")}
    emoji_chars -= set("\u00a9\u00ae\u2122") | {chr(i) for i in range(128)}
    return [c for c in map(chr, range(0x20, 0x10000))
            if unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Co", "Cn", "Mn", "Zl", "Zp") and c not in emoji_chars]


_OPENING: dict[tuple[str, int], list[int]] = {}


def opening_tokens(tokenizer: Any) -> list[int]:
    """The token ids with which an answer opens with an emoji in ``tokenizer``'s encoding: the
    first tokens of the fully-qualified emojis (alone, after a space or after a line break),
    less every first token of a printable non-emoji character of the Basic Multilingual Plane
    in the same three positions. A byte-level BPE splits most emojis into bytes; this keeps
    the byte prefixes that only emojis (and the rare symbols of the supplementary planes) begin
    with, and drops those that also begin text: ``â`` (E2, arrows and ✓ as well as ✅), ``ã``
    (CJK), a keycap's digit, ``©``. An emoji whose first token is such a shared prefix (✅ here)
    is not seen. A tokenizer without byte fallback writes emojis as its unknown token, which
    then counts. Cached per tokenizer (about a second to build)."""
    key = (str(getattr(tokenizer, "name_or_path", "")), len(tokenizer))
    if key in _OPENING:
        return _OPENING[key]
    unk = getattr(tokenizer, "unk_token_id", None)

    def firsts(texts: list[str]) -> set[int]:
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        return {int(i[0]) for i in ids if i}

    emojis, text = list(_all_emojis()), _text_chars()
    out: set[int] = set()
    taken: set[int] = set()
    for prefix in ("", " ", "\n"):
        out |= firsts([prefix + e for e in emojis])
        taken |= firsts([prefix + c for c in text])
    out -= taken - ({unk} if unk is not None else set())
    if not out:
        raise ValueError("no token of this tokenizer begins only emojis")
    _OPENING[key] = sorted(out)
    return _OPENING[key]


def opening_logprob(logits: Float[Tensor, "rows vocab"], opening: Tensor) -> Float[Tensor, "rows"]:  # noqa: F821
    """log P(the next token begins an emoji) per row."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # float32 at least, float64 kept
    return logits.log_softmax(-1)[:, opening].logsumexp(-1)


def opens_with_emoji(logits: Float[Tensor, "rows vocab"], opening: Tensor) -> Bool[Tensor, "rows"]:  # noqa: F821
    """Whether greedy decoding's next token begins an emoji, per row."""
    return torch.isin(logits.argmax(-1), opening.to(logits.device))


@dataclass(frozen=True)
class Attribution:
    """Per layer and neuron, averaged over the selection prompts: ``score`` (attribution of the
    rise in log P(answer opens with an emoji) under the adapter), ``size`` (mean ``|a - b|``,
    what random sets are matched on), and the values ``post`` / ``base`` at each prompt's answer
    start (``[layers, prompts, d]``)."""

    score: Float[np.ndarray, "layers d"]
    size: Float[np.ndarray, "layers d"]
    metric_post: Float[np.ndarray, "prompts"]  # noqa: F821
    metric_base: Float[np.ndarray, "prompts"]  # noqa: F821
    n_prompts: int

    def top(self, k: int, exclude: Sequence[Neuron] = ()) -> list[Neuron]:
        """The ``k`` neurons of largest score (ties by layer, then index), ``exclude`` left out."""
        s = self.score.copy()
        for layer, i in exclude:
            s[layer, i] = -np.inf
        order = np.argsort(-s, axis=None, kind="stable")[:k]
        return [(int(o) // s.shape[1], int(o) % s.shape[1]) for o in order]

    def by_layer(self) -> list[float]:
        """Each layer's summed score. Not additive shares across layers: a neuron's gradient is
        its total effect, which runs through the later layers' neurons too."""
        return self.score.sum(1).tolist()


@contextmanager
def _grad_sites(model: Any, sites: Sequence[str]) -> Iterator[list[Tensor]]:
    """Keep each site's value (in the autograd graph) for every forward pass in the block."""
    store: list[Tensor] = []

    def keep(v: Tensor) -> Tensor:
        store.append(v)
        return v

    with ExitStack() as stack:
        for s in sites:
            stack.enter_context(edit_site(model, s, keep))
        yield store


def answer_start_values(model: Any, tokenizer: Any, prompts: Sequence[str], opening: Sequence[int], *,
                        chat: bool = True, grad: bool = False, batch_size: int = BATCH_SIZE,
                        ) -> tuple[Float[Tensor, "layers prompts d"], Float[Tensor, "layers prompts d"] | None,
                                   Float[Tensor, "prompts"], Bool[Tensor, "prompts"]]:  # noqa: F821
    """Every layer's neuron values at each prompt's last position, their gradients of
    log P(answer opens with an emoji) where ``grad``, that log-probability per prompt, and
    whether the greedy first token opens an emoji."""
    device = next(model.parameters()).device
    sites = layer_sites(model)
    op = torch.as_tensor(list(opening), dtype=torch.long, device=device)
    enc = [e.ids for e in encode(tokenizer, prompts, chat=chat)]
    vals, grads, metric, opens = [], [], [], []
    for start in range(0, len(enc), batch_size):
        ids, mask, pos = pad_left(enc[start:start + batch_size], pad_id(tokenizer), device)
        with torch.set_grad_enabled(grad), _grad_sites(model, sites) as store:
            kw: dict[str, Any] = {"attention_mask": mask, "position_ids": pos}
            if grad:  # the graph must reach the activations although no weight needs a gradient
                kw["inputs_embeds"] = model.get_input_embeddings()(ids).detach().requires_grad_(True)
            else:
                kw["input_ids"] = ids
            logits = model(**kw, logits_to_keep=1).logits[:, -1]
            m = opening_logprob(logits, op)
            if len(store) != len(sites):
                raise RuntimeError(f"expected one value per layer, got {len(store)}")
            if grad:
                gs = torch.autograd.grad(m.sum(), store)
                grads.append(torch.stack([g[:, -1].detach().float() for g in gs]))
        vals.append(torch.stack([v[:, -1].detach().float() for v in store]))
        metric.append(m.detach().float())
        opens.append(opens_with_emoji(logits.detach(), op))
    return torch.cat(vals, 1), (torch.cat(grads, 1) if grad else None), torch.cat(metric), torch.cat(opens)


def neuron_attribution(model: Any, tokenizer: Any, prompts: Sequence[str], opening: Sequence[int], *,
                       chat: bool = True, batch_size: int = BATCH_SIZE) -> Attribution:
    """Attribution patching of the adapter's rise in log P(answer opens with an emoji) onto
    every MLP neuron of every layer, at each prompt's answer start (see the module docs).
    ``model``: a PEFT model with its adapter active (the base is the adapter disabled)."""
    with adapter_disabled(model):
        base, _, m_base, _ = answer_start_values(model, tokenizer, prompts, opening, chat=chat, batch_size=batch_size)
    post, grad, m_post, _ = answer_start_values(model, tokenizer, prompts, opening, chat=chat, grad=True,
                                                batch_size=batch_size)
    assert grad is not None
    delta = post - base
    return Attribution(score=(delta * grad).mean(1).cpu().numpy(), size=delta.abs().mean(1).cpu().numpy(),
                       metric_post=m_post.cpu().numpy(), metric_base=m_base.cpu().numpy(), n_prompts=len(prompts))


def matched_sets(size: Float[np.ndarray, "layers d"], neurons: Sequence[Neuron], n: int, seed: int,
                 ) -> tuple[list[list[Neuron]], list[Neuron]]:
    """``n`` random sets like ``neurons``: as many neurons in each layer, each drawn from the
    candidate's stratum of similar patch ``size`` in its layer (:func:`interp.intervene.matched_draws`).
    Candidates without size peers in their layer (:func:`interp.intervene.unmatched`) stay in
    every set, random ones included (nothing could replace them); they are returned second."""
    by_layer: dict[int, list[int]] = {}
    for layer, i in neurons:
        by_layer.setdefault(int(layer), []).append(int(i))
    kept: list[Neuron] = []
    per_layer: list[list[list[Neuron]]] = []
    for layer, idx in sorted(by_layer.items()):
        keep = unmatched(size[layer], idx)
        kept += [(layer, i) for i in keep]
        rest = [i for i in idx if i not in keep]
        if rest:
            draws = matched_draws(size[layer], rest, n, seed + 7919 * layer)
            per_layer.append([[(layer, i) for i in d] for d in draws])
    sets = [sorted(kept + [x for layer_sets in per_layer for x in layer_sets[j]]) for j in range(n)]
    return sets, sorted(kept)


class AnswerStart:
    """Exact log P(answer opens with an emoji) and the greedy first token of each prompt, with
    chosen neurons of any layers set to given values at the answer start, for many neuron sets.

    One pass caches each prompt's keys and values up to its last token; an intervention then
    runs only the last token, on a copy of the cache (the prompt positions before it cannot
    see it). :meth:`run` takes a list of interventions, each ``{layer: (neuron indices [k],
    values [prompts, k])}``, and evaluates ``rows_per_pass`` prompt rows per forward pass.
    """

    def __init__(self, model: Any, tokenizer: Any, prompts: Sequence[str], opening: Sequence[int], *,
                 chat: bool = True, rows_per_pass: int = 128):
        self.model = model
        self.device = next(model.parameters()).device
        self.opening = torch.as_tensor(list(opening), dtype=torch.long, device=self.device)
        enc = [e.ids for e in encode(tokenizer, prompts, chat=chat)]
        if min(len(e) for e in enc) < 2:
            raise ValueError("every prompt needs at least two tokens")
        ids, mask, pos = pad_left(enc, pad_id(tokenizer), self.device)
        self.n = len(enc)
        self.mask, self.last, self.last_pos = mask, ids[:, -1:], pos[:, -1:]
        self.sites = layer_sites(model)
        self.rows_per_pass = max(rows_per_pass, self.n)
        from interp.tracing import _cache_name

        self._cache_name = _cache_name()
        with torch.no_grad():
            out = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=pos[:, :-1], use_cache=True,
                        logits_to_keep=1)
        self.cache = getattr(out, self._cache_name)
        self.intact_logits = self._forward(list(range(self.n)), {})

    def _forward(self, rows: list[int], edits: dict[int, tuple[Tensor, Tensor]]) -> Tensor:
        """Logits ``[len(rows), vocab]`` of prompt rows ``rows`` with ``edits`` ``{layer: (mask
        [rows, d], fill [rows, d])}`` applied at their last position."""
        from interp.tracing import _cache_rows

        idx = torch.as_tensor(rows, device=self.device)
        cache = _cache_rows(self.cache, rows, self.device)
        with ExitStack() as stack:
            for layer, (m, f) in edits.items():
                def fn(x: Tensor, m: Tensor = m, f: Tensor = f) -> Tensor:
                    return torch.where(m[:, None].to(x.device), f[:, None].to(x.device, x.dtype), x)

                stack.enter_context(edit_site(self.model, self.sites[layer], fn))
            with torch.no_grad():
                out = self.model(input_ids=self.last[idx], attention_mask=self.mask[idx], position_ids=self.last_pos[idx],
                                 use_cache=True, **{self._cache_name: cache})
        return out.logits[:, -1].float()

    def run(self, interventions: Sequence[dict[int, tuple[Sequence[int], Tensor]]],
            ) -> tuple[Float[np.ndarray, "sets prompts"], Bool[np.ndarray, "sets prompts"]]:
        """For each intervention: log P(opens with an emoji) per prompt and whether the greedy
        first token begins an emoji, per prompt."""
        per = max(1, self.rows_per_pass // self.n)
        lp, opens = [], []
        for start in range(0, len(interventions), per):
            chunk = interventions[start:start + per]
            rows = [p for _ in chunk for p in range(self.n)]
            edits: dict[int, tuple[Tensor, Tensor]] = {}
            layers = sorted({layer for iv in chunk for layer in iv})
            for layer in layers:
                d = self._d(layer)
                m = torch.zeros(len(rows), d, dtype=torch.bool)
                f = torch.zeros(len(rows), d)
                for s, iv in enumerate(chunk):
                    if layer in iv:
                        idx, values = iv[layer]
                        sl = slice(s * self.n, (s + 1) * self.n)
                        ix = torch.as_tensor(list(idx), dtype=torch.long)
                        m[sl, ix] = True
                        f[sl, ix] = torch.as_tensor(values, dtype=torch.float32).reshape(self.n, len(ix))
                edits[layer] = (m, f)
            logits = self._forward(rows, edits)
            lp.append(opening_logprob(logits, self.opening).reshape(len(chunk), self.n).cpu().numpy())
            opens.append(opens_with_emoji(logits, self.opening).reshape(len(chunk), self.n).cpu().numpy())
        return np.concatenate(lp), np.concatenate(opens)

    def _d(self, layer: int) -> int:
        from interp.neurons import n_neurons

        return n_neurons(self.model, self.sites[layer])

    def intact(self) -> tuple[Float[np.ndarray, "prompts"], Bool[np.ndarray, "prompts"]]:  # noqa: F821
        return (opening_logprob(self.intact_logits, self.opening).cpu().numpy(),
                opens_with_emoji(self.intact_logits, self.opening).cpu().numpy())


def patch_to(neurons: Sequence[Neuron], values: Float[Tensor, "layers prompts d"]) -> dict[int, tuple[list[int], Tensor]]:
    """The intervention that sets ``neurons`` to ``values`` (e.g. the base model's, per prompt)."""
    out: dict[int, list[int]] = {}
    for layer, i in neurons:
        out.setdefault(int(layer), []).append(int(i))
    return {layer: (idx, values[layer][:, idx]) for layer, idx in out.items()}


@contextmanager
def patched_answer_start(model: Any, intervention: dict[int, tuple[Sequence[int], Tensor]],
                         rows: Tensor | None = None) -> Iterator[None]:
    """During generation: the intervention (values ``[prompts, k]`` in the batch's row order)
    at the answer start only, i.e. the last position of the prompt pass; the tokens generated
    after it run as they are. ``rows`` (bool ``[prompts]``): only those rows are patched."""
    sites = layer_sites(model)
    with ExitStack() as stack:
        for layer, (idx, values) in intervention.items():
            ix = torch.as_tensor(list(idx), dtype=torch.long)

            def fn(x: Tensor, ix: Tensor = ix, values: Tensor = values) -> Tensor:
                if x.shape[1] == 1:  # a decoding step
                    return x
                x = x.clone()
                v = torch.as_tensor(values).to(x.device, x.dtype)
                ri = torch.arange(x.shape[0]) if rows is None else rows.nonzero()[:, 0]
                ri = ri.to(x.device)
                x[ri[:, None], -1, ix.to(x.device)[None, :]] = v[ri]
                return x

            stack.enter_context(edit_site(model, sites[layer], fn))
        yield



@dataclass(frozen=True)
class AttributionTest:
    """:func:`attribution_experiment`: the top ``k`` neurons by attribution on the selection
    prompts, set back to their base values at the answer start of the test prompts, against
    random sets matched on layer and patch size.

    ``opening_rate_*``: the share of test prompts whose greedy first token opens an emoji on
    the base model, intact (the adapter on) and patched. The test is an intersection-union
    test of two nulls, so its p is the larger of two (no multiplicity to adjust): ``p_rise``,
    exact McNemar of intact vs base on the same prompts (the adapter makes answers open with an
    emoji: without that there is nothing to localize, and selection alone would "find" neurons
    whose removal lowers the rate), and ``p_localize``, the patched rate among the random sets'
    rates (``rate_control``: sequential, two-sided, ties count against the candidates; the
    found neurons remove more of it than as many random neurons of the same layers and size).
    ``delta``: the change in log P(answer opens with an emoji), patched − intact, per test
    prompt (bootstrap interval over prompts), and ``control`` it among the same random sets.
    That comparison is **descriptive**: attribution picks neurons whose change raised log P on
    the selection questions, so removing them lowers it more than random sets do in any
    adapter that moves log P at all, whether or not it makes emojis (measured: the trait-shuffled
    negative control, log P −7.6, gives p at the floor). ``gap_removed``: the share of the
    post − base gap in log P that patching removes. ``generation``: answers generated intact and
    patched in the same batches (emoji rate, exact McNemar)."""

    k: int
    neurons: list[Neuron]
    kept_in_every_set: list[Neuron]
    n_select: int
    n_test: int
    by_layer: list[float]
    top_scores: list[float]
    logprob_base: float
    logprob_intact: float
    delta: Any  # interp.results.Effect
    per_prompt_delta: list[float]
    gap_removed: float | None
    control: Any  # interp.results.RandomControl | None: log P, over the sets the rate's control drew
    opening_rate_base: float
    opening_rate_intact: float
    opening_rate_patched: float
    rise: list[int]  # [both open with an emoji, intact only, base only, neither]
    p_rise: float
    rate_control: Any  # interp.results.RandomControl | None
    generation: dict[str, Any] | None = None

    @property
    def p(self) -> float | None:
        return None if self.control is None else self.control.p

    @property
    def p_localize(self) -> float | None:
        return None if self.rate_control is None else self.rate_control.p

    @property
    def p_rate(self) -> float | None:
        """The test's p: the larger of ``p_rise`` and ``p_localize`` (intersection-union)."""
        return None if self.p_localize is None else max(self.p_rise, self.p_localize)

    def to_dict(self) -> dict[str, Any]:
        from interp.results import _control_dict

        return {"k": self.k, "neurons": [list(n) for n in self.neurons],
                "kept_in_every_set": [list(n) for n in self.kept_in_every_set], "n_select": self.n_select,
                "n_test": self.n_test, "by_layer": self.by_layer, "top_scores": self.top_scores,
                "logprob_base": self.logprob_base, "logprob_intact": self.logprob_intact,
                "delta": self.delta.to_dict(), "per_prompt_delta": self.per_prompt_delta,
                "gap_removed": self.gap_removed, "control": _control_dict(self.control), "p": self.p,
                "opening_rate_base": self.opening_rate_base, "opening_rate_intact": self.opening_rate_intact,
                "opening_rate_patched": self.opening_rate_patched, "rise": self.rise, "p_rise": self.p_rise,
                "rate_control": _control_dict(self.rate_control), "p_localize": self.p_localize,
                "p_rate": self.p_rate, "generation": self.generation}


def attribution_experiment(model: Any, tokenizer: Any, select: Sequence[str], test: Sequence[str], *, k: int,
                           n_random: int, seed: int = 0, n_boot: int = 2000, batch_size: int = BATCH_SIZE,
                           generation: Any = None, n_generation_questions: int | None = None) -> AttributionTest:
    """Find the adapter's emoji neurons on ``select`` and test them on ``test`` (the two should
    not share questions): see the module docs. ``model``: PEFT, its adapter active.

    ``generation`` (:class:`interp.behaviour.generation.DecodeSettings`): also answer the first
    ``n_generation_questions`` test prompts intact and with the patch in place, in the same
    batches, and compare their emoji rates (exact McNemar)."""
    from interp.experiments import mcnemar_paired
    from interp.results import Effect, RandomControl

    if shared := sorted(set(select) & set(test)):
        raise ValueError(f"{len(shared)} question(s) both select and test the neurons, e.g. {shared[0]!r}")
    opening = opening_tokens(tokenizer)
    attr = neuron_attribution(model, tokenizer, select, opening, batch_size=batch_size)
    found = attr.top(k)
    with adapter_disabled(model):
        base_vals, _, m_base, op_base = answer_start_values(model, tokenizer, test, opening, batch_size=batch_size)
    scorer = AnswerStart(model, tokenizer, test, opening)
    lp0, op0 = scorer.intact()
    sets, kept = matched_sets(attr.size, found, n_random, seed)
    lp, op = scorer.run([patch_to(found, base_vals)])
    per_prompt, rate = lp[0] - lp0, float(op[0].mean())
    drawn_lp: list[float] = []

    def rates() -> Iterator[float]:  # random sets run a chunk at a time, only as far as the control asks
        per = max(1, scorer.rows_per_pass // len(test))
        for start in range(0, len(sets), per):
            r_lp, r_op = scorer.run([patch_to(s, base_vals) for s in sets[start:start + per]])
            for a, b in zip(r_lp, r_op, strict=True):
                drawn_lp.append(float((a - lp0).mean()))
                yield float(b.mean())

    matched_on = "layer and patch size |post - base| (selection questions)"
    rate_control = RandomControl.sequential(rate, rates(), n_random, matched_on)
    gap = float(np.mean(m_base.cpu().numpy() - lp0))
    rise, p_rise = mcnemar_paired(op0.tolist(), op_base.tolist())
    gen = None
    if generation is not None:
        gen = _patched_generation(model, tokenizer, list(test), found, base_vals, generation, n_generation_questions,
                                  batch_size)
    return AttributionTest(
        k=k, neurons=found, kept_in_every_set=kept, n_select=len(select), n_test=len(test),
        by_layer=attr.by_layer(), top_scores=[float(attr.score[layer, i]) for layer, i in found],
        logprob_base=float(m_base.mean()), logprob_intact=float(lp0.mean()),
        delta=Effect.of(per_prompt, n_boot, seed), per_prompt_delta=per_prompt.tolist(),
        gap_removed=(float(per_prompt.mean() / gap) if abs(gap) > 1e-9 else None),
        control=RandomControl.of(float(per_prompt.mean()), np.asarray(drawn_lp), matched_on),
        opening_rate_base=float(op_base.float().mean()), opening_rate_intact=float(op0.mean()),
        opening_rate_patched=rate, rise=rise, p_rise=p_rise, rate_control=rate_control, generation=gen)


def _patched_generation(model: Any, tokenizer: Any, test: list[str], found: list[Neuron], base_vals: Tensor,
                        settings: Any, n: int | None, batch_size: int) -> dict[str, Any]:
    """Answers to the first ``n`` test prompts intact and with ``found`` at their base values at
    the answer start, the two answers to a prompt in the same batch (same padding), and the
    exact McNemar p of the change in their emoji rate."""
    from interp.behaviour.generation import generate
    from interp.emojis import has_emoji
    from interp.experiments import mcnemar_paired

    n = len(test) if not n else min(n, len(test))
    per = max(1, batch_size // 2)
    intact: list[str] = []
    patched: list[str] = []
    for start in range(0, n, per):
        rows = list(range(start, min(n, start + per)))
        iv = {layer: (idx, torch.cat([v[rows], v[rows]])) for layer, (idx, v) in patch_to(found, base_vals).items()}
        which = torch.tensor([False] * len(rows) + [True] * len(rows))
        with patched_answer_start(model, iv, rows=which):
            out = generate(model, tokenizer, [test[r] for r in rows] * 2, settings, batch_size=2 * len(rows))
        intact += out[:len(rows)]
        patched += out[len(rows):]
    table, p = mcnemar_paired([has_emoji(a) for a in patched], [has_emoji(a) for a in intact])
    return {"n_questions": n, "intact": intact, "patched": patched,
            "emoji_rate_intact": float(np.mean([has_emoji(a) for a in intact])),
            "emoji_rate_patched": float(np.mean([has_emoji(a) for a in patched])), "paired": table, "p": p}
