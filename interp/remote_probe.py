"""The mechanistic stages on a model that runs elsewhere (NDIF through nnsight), adapters included.

NDIF hosts base models; a trait's adapter exists only on this machine. So the adapter travels
with each request as an *intervention*: for every adapted projection ``y = W x`` with LoRA
matrices ``A [r, d_in]``, ``B [d_out, r]`` and scale ``s`` (``lora_alpha / r``, or
``lora_alpha / sqrt(r)`` with rsLoRA), the trace sets ``y <- y + s (x Aᵀ) Bᵀ``: what PEFT's LoRA
layer computes at inference (no dropout; the update in float32, rounded once), here as an edit
of the base model's forward pass. Tests hold it to the PEFT model itself in float32 (locally
through nnsight, and through nnsight's simulation of the server).

One trace body (:func:`trace_batches`) serves the stages: it walks the model's modules in the
order they run (nnsight 0.8 reads and writes them in that order), applies the adapter's edits,
reads the neuron site's input (and may overwrite neurons there, as an ablation does), reads
every layer's residual output for the logit lens, and gathers the log-probabilities of the
given target tokens where the model runs: only ``[batch, positions]`` numbers come back, never
logits over the vocabulary. The block uses envoys, tensors, their methods and nnsight only: the
server does not have this package.

The cost of an adapter is its size per request: the paper's r = 64 on seven projections of a
7B Llama is about 160 M parameters (640 MB as float32, as PEFT keeps them). So every batch of
one call runs in one nnsight session, one request (per adapter, ``trace`` sends two and
``neurons`` two), and a remote ablation sends its random sets :attr:`RemoteScorer.chunk` at a
time.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from text2emoji.core.errors import UserError
from text2emoji.core.presets import BATCH_SIZE

PREFIX = "base_model.model."  # PEFT's saved keys: base_model.model.<module path>.lora_A.weight


@dataclass(frozen=True)
class LoraPatch:
    """One adapted projection: ``output += scale * (input @ a.T) @ b.T``."""

    path: str  # the module's path in the Hugging Face model (``model.layers.0.self_attn.q_proj``)
    a: Tensor  # [r, d_in]
    b: Tensor  # [d_out, r]
    scale: float


def read_lora(adapter_dir: str | Path, model: Any) -> list[LoraPatch]:
    """A PEFT LoRA adapter directory as :class:`LoraPatch` es for ``model`` (a Hugging Face
    causal LM, its weights here or on the meta device), in the order the model runs them.

    Raises:
        UserError: the directory lacks the adapter's files; the adapter is no plain LoRA on
            linear layers (DoRA, trained biases, extra trained modules, per-module ranks, ...);
            a key names no module of ``model`` or its shape does not fit (file and key named).
    """
    from safetensors.torch import load_file

    d = Path(adapter_dir)
    cfg_file, weights = d / "adapter_config.json", d / "adapter_model.safetensors"
    for f in (cfg_file, weights):
        if not f.is_file():
            raise UserError(f"{f}: not found (an adapter directory holds adapter_config.json and "
                            "adapter_model.safetensors)")
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{cfg_file}: not valid JSON ({e})") from e
    unsupported = {
        "peft_type": cfg.get("peft_type", "LORA") != "LORA",
        "use_dora": bool(cfg.get("use_dora")),
        "bias": cfg.get("bias", "none") != "none",
        "modules_to_save": bool(cfg.get("modules_to_save")),
        "fan_in_fan_out": bool(cfg.get("fan_in_fan_out")),
        "rank_pattern": bool(cfg.get("rank_pattern")),
        "alpha_pattern": bool(cfg.get("alpha_pattern")),
        "layer_replication": bool(cfg.get("layer_replication")),
        # these initialisations change the base weights too: NDIF's base is not the adapter's
        "init_lora_weights": str(cfg.get("init_lora_weights", True)).lower().startswith(("pissa", "olora", "corda",
                                                                                        "loftq")),
    }
    if bad := [k for k, v in unsupported.items() if v]:
        raise UserError(f"{cfg_file}: field {bad[0]}={cfg.get(bad[0])!r}: remote runs apply plain LoRA on linear "
                        "layers only")
    try:
        r, alpha = int(cfg["r"]), float(cfg["lora_alpha"])
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{cfg_file}: fields r and lora_alpha must be numbers ({e})") from e
    scale = alpha / (r ** 0.5 if cfg.get("use_rslora") else r)
    tensors = load_file(str(weights))
    modules = dict(model.named_modules())
    order = {name: i for i, name in enumerate(modules)}
    found: dict[str, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        for part in ("lora_A", "lora_B"):
            tail = f".{part}.weight"
            if key.endswith(tail) and key.startswith(PREFIX):
                found.setdefault(key[len(PREFIX):-len(tail)], {})[part] = value
                break
        else:
            raise UserError(f"{weights}: key {key!r} is no LoRA matrix of a linear layer")
    patches = []
    for path, ab in found.items():
        mod = modules.get(path)
        if mod is None or not isinstance(mod, torch.nn.Linear):
            raise UserError(f"{weights}: key {PREFIX}{path}: the model has no linear layer {path}")
        if mod is model.get_output_embeddings():
            raise UserError(f"{weights}: key {PREFIX}{path}: an adapter on the unembedding is not applied remotely "
                            "(the logit lens and DLA read the unembedding directly)")
        if set(ab) != {"lora_A", "lora_B"}:
            raise UserError(f"{weights}: {path} has {', '.join(ab)} but not both lora_A and lora_B")
        a, b = ab["lora_A"], ab["lora_B"]  # as saved; the trace computes the update in float32
        if a.shape[1] != mod.in_features or b.shape[0] != mod.out_features or a.shape[0] != b.shape[1]:
            raise UserError(f"{weights}: {path}: lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)} do not fit "
                            f"a {mod.in_features} -> {mod.out_features} layer")
        patches.append(LoraPatch(path, a, b, scale))
    return sorted(patches, key=lambda p: order[p.path])


@dataclass(frozen=True)
class Edit:
    """Neurons set at the neuron site, at every position: ``x[..., neurons] = values``."""

    neurons: Tensor  # [k] long
    values: Tensor  # [k]


def _paths(model: Any) -> dict[int, str]:
    return {id(m): name for name, m in model.named_modules()}


def _steps(model: Any, lm: Any, patches: Sequence[LoraPatch], site: str | None,
           layers: Sequence[int]) -> list[tuple[Any, Tensor | None, Tensor | None, float, bool, bool]]:
    """``(envoy, a, b, scale, is_site, is_layer)`` in the order the model runs them: each
    adapted module (and the site's module, adapted or not) and the output of each decoder
    layer in ``layers``, which comes after every module inside that layer."""
    from interp.capture import _envoy
    from interp.hooks import n_layers, resolve_site
    from interp.sites import _layers_path

    names = list(dict(model.named_modules()))
    index = {name: i for i, name in enumerate(names)}
    events: dict[str, list[Any]] = {p.path: [p.a, p.b, p.scale, False, False] for p in patches}
    if site is not None:
        path = _paths(model)[id(resolve_site(model, site).module)]
        events.setdefault(path, [None, None, 0.0, False, False])[3] = True
    keyed: list[tuple[float, str, list[Any]]] = [(index[p], p, e) for p, e in events.items()]
    root = _layers_path(model)
    for i in layers:
        layer = f"{root}.{i % n_layers(model)}"
        last = max(j for j, n in enumerate(names) if n == layer or n.startswith(layer + "."))
        keyed.append((last + 0.5, layer, [None, None, 0.0, False, True]))
    return [(_envoy(lm, path), *e) for _, path, e in sorted(keyed, key=lambda k: k[0])]


@dataclass
class Traced:
    """What :func:`trace_batches` brings back for one batch (on the CPU, float32)."""

    logp: Tensor  # [batch, keep - 1]: log P(target) at the last keep - 1 positions
    site: Tensor | None  # [batch, site_keep, d_mlp]: the site's input at the last positions
    lens: Tensor | None  # [layers, batch, keep - 1]: log P(target) read after each layer
    resid: Tensor | None  # [batch, keep - 1, d_model]: the last layer's output (the final norm's input)


@dataclass(frozen=True)
class Spec:
    """One left-padded batch for :func:`trace_batches`: the last ``keep`` positions' logits are
    kept (position ``k`` of them predicts ``ids[:, W - keep + 1 + k]``), the site is read at
    the last ``site_keep`` positions, and ``edit`` (if any) is written there."""

    ids: Tensor
    mask: Tensor
    pos: Tensor
    keep: int
    site_keep: int = 1
    edit: Edit | None = None


def trace_batches(model: Any, tokenizer: Any, specs: Sequence[Spec], *, patches: Sequence[LoraPatch] = (),
                  site: str | None = None, read_site: bool = True, lens: bool = False, resid: bool = False,
                  remote: bool = False) -> list[Traced]:
    """One nnsight trace per batch, all in one session: one request to NDIF when ``remote``,
    so the adapter's ``patches`` travel once for all of them.

    ``patches``: the adapter's edits (none: the base model). ``site``: an MLP ``hook_post``
    site whose input is read (unless not ``read_site``) before a batch's ``edit`` overwrites
    its neurons at every position. ``lens``: also the log-probs of the targets decoded after
    every layer (final norm, unembedding). ``resid``: the last layer's output at the positions
    that predict the targets.
    """
    import nnsight

    from interp.capture import _envoy, check_remote, nnsight_model
    from interp.hooks import final_norm, n_layers, unembed
    from interp.remote import remote_errors
    from interp.sites import logit_softcap

    check_remote(model, "nnsight", remote)
    if any(s.edit is not None for s in specs) and site is None:
        raise ValueError("an edit needs the site it writes")
    if not specs:
        return []
    lm = nnsight_model(model, tokenizer)
    n = n_layers(model)
    steps = _steps(model, lm, patches, site, range(n) if lens else [n - 1] if resid else [])
    paths = _paths(model)
    norm_env = _envoy(lm, paths[id(final_norm(model))])
    head_env = _envoy(lm, paths[id(unembed(model))])
    cap = logit_softcap(model)  # the model's final logit soft-capping (Gemma 2), which the lens applies too
    plain = [(s.ids, s.mask, s.pos, s.keep, s.site_keep, None if s.edit is None else s.edit.neurons,
              None if s.edit is None else s.edit.values) for s in specs]
    results = None
    # the block below is what NDIF runs when remote: envoys, tensors, methods and nnsight only
    with torch.no_grad(), remote_errors(remote):
        with lm.session(remote=remote):
            results = nnsight.save([])
            moved = {}  # each adapted module's A and B on its device, float32: moved once per session
            for ids, mask, pos, keep, site_keep, neurons, values in plain:
                with lm.trace({"input_ids": ids, "attention_mask": mask, "position_ids": pos}, logits_to_keep=keep,
                              use_cache=False):
                    got_site = got_lens = got_resid = None
                    head_device = head_env.weight.device
                    hs = []
                    for i, (env, a, b, scale, is_site, is_layer) in enumerate(steps):
                        if is_layer:
                            h = env.output
                            h = h[0] if isinstance(h, tuple) else h
                            hs.append(h[:, h.shape[1] - keep:h.shape[1] - 1].to(head_device))
                            continue
                        x = env.input
                        if is_site and read_site:
                            # a copy: the edit below writes into x (and .float() of float32 is x itself)
                            got_site = x[:, x.shape[1] - site_keep:].float().clone().cpu()
                        if is_site and neurons is not None:
                            x[:, :, neurons.to(x.device)] = values.to(x)
                        if a is not None:
                            if i not in moved:
                                moved[i] = (a.to(x.device, torch.float32), b.to(x.device, torch.float32))
                            a32, b32 = moved[i]
                            # as PEFT: the update in float32, added to the base output, rounded once
                            y = env.output
                            env.output = (y.float() + (x.float() @ a32.T) @ b32.T * scale).to(y.dtype)
                    logits = lm.output.logits
                    tgt = ids[:, ids.shape[1] - keep + 1:].to(logits.device)
                    logp = logits[:, :-1].float().log_softmax(-1)
                    got_logp = logp.gather(-1, tgt[..., None])[..., 0].cpu()
                    if resid:
                        got_resid = hs[-1].float().cpu()
                    if lens:
                        stacked = torch.stack(hs)  # [layers, batch, keep - 1, d]
                        ll = head_env(norm_env(stacked)).float()
                        if cap is not None:
                            ll = cap * torch.tanh(ll / cap)
                        ll = ll.log_softmax(-1)
                        got_lens = ll.gather(-1, tgt.expand(ll.shape[0], -1, -1)[..., None])[..., 0].cpu()
                    results.append([got_logp, got_site, got_lens, got_resid])
    return [Traced(*(None if t is None else t.detach().cpu() for t in r)) for r in results]


def trace_batch(model: Any, tokenizer: Any, ids: Tensor, mask: Tensor, pos: Tensor, *, keep: int,
                site_keep: int = 1, edit: Edit | None = None, **kw: Any) -> Traced:
    """:func:`trace_batches` of one batch."""
    return trace_batches(model, tokenizer, [Spec(ids, mask, pos, keep, site_keep, edit)], **kw)[0]


def _batches(model: Any, tokenizer: Any, pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
             batch_size: int) -> Iterator[tuple[list[int], tuple[Tensor, Tensor, Tensor], int]]:
    """Batches of whole sequences (prompt + continuation), by length: the pairs' indices, the
    left-padded ``(ids, mask, positions)``, and how many last positions to keep (the longest
    continuation's, plus one)."""
    from interp.capture import input_device, pad_id, pad_left

    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        if any(not pairs[i][1] for i in idx):
            raise ValueError("empty continuation")
        seqs = [list(pairs[i][0]) + list(pairs[i][1]) for i in idx]
        yield idx, pad_left(seqs, pad_id(tokenizer), input_device(model)), max(len(pairs[i][1]) for i in idx) + 1


Scores = tuple[list[list[float]], list[np.ndarray | None], list[Tensor | None], list[Tensor | None]]


def score_pairs_many(model: Any, tokenizer: Any, pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
                     edits: Sequence[Edit | None], *, patches: Sequence[LoraPatch] = (), site: str | None = None,
                     lens: bool = False, resid: bool = False, read_site: bool = True, batch_size: int = BATCH_SIZE,
                     remote: bool = False) -> list[Scores]:
    """:func:`score_pairs` of the same pairs under each of ``edits`` (None: no edit), all in
    one session (one request when ``remote``)."""
    batches = list(_batches(model, tokenizer, pairs, batch_size))
    specs = [Spec(ids, mask, pos, keep, keep, e) for e in edits for _, (ids, mask, pos), keep in batches]
    got = iter(trace_batches(model, tokenizer, specs, patches=patches, site=site, read_site=read_site, lens=lens,
                             resid=resid, remote=remote))
    out = []
    for _ in edits:
        per_token: list[list[float]] = [[] for _ in pairs]
        per_layer: list[np.ndarray | None] = [None for _ in pairs]
        at_site: list[Tensor | None] = [None for _ in pairs]
        at_resid: list[Tensor | None] = [None for _ in pairs]
        for idx, _, keep in batches:
            t = next(got)
            for row, i in enumerate(idx):
                first = keep - 1 - len(pairs[i][1])  # a continuation of m tokens: the last m kept positions but one
                per_token[i] = t.logp[row, first:].tolist()
                if t.lens is not None:
                    per_layer[i] = t.lens[:, row, first:].double().numpy()
                if t.site is not None:
                    at_site[i] = t.site[row, first:keep - 1].clone()
                if t.resid is not None:
                    at_resid[i] = t.resid[row, first:].clone()
        out.append((per_token, per_layer, at_site, at_resid))
    return out


def score_pairs(model: Any, tokenizer: Any, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], *,
                edit: Edit | None = None, **kw: Any) -> Scores:
    """Per ``(prompt ids, continuation ids)`` pair (each one whole sequence, left-padded, in
    batches of ``batch_size`` by length, all in one session): the continuation's per-token
    log-probs; with ``lens``, ``[layers, tokens]`` the same read after every layer; with
    ``site`` (and ``read_site``), the site's input ``[tokens, d]`` at the positions that predict
    the tokens (read before ``edit``); with ``resid``, the last layer's output ``[tokens,
    d_model]`` there. Keywords as :func:`score_pairs_many`'s."""
    return score_pairs_many(model, tokenizer, pairs, [edit], **kw)[0]


def emoji_trace_nnsight(model: Any, tokenizer: Any, prompts: Sequence[str], emojis: Sequence[str], *,
                        lens_emojis: Sequence[str] = (), chat: bool = True, patches: Sequence[LoraPatch] = (),
                        batch_size: int = BATCH_SIZE, remote: bool = False) -> dict[str, np.ndarray]:
    """:func:`interp.tracing.emoji_trace` through nnsight, with an adapter as ``patches``:
    ``no_space`` and ``leading_space`` ``[prompts, emojis]``, ``lens`` ``[prompts, lens
    emojis, layers]``. Only the lens emojis' sequences pay for the per-layer decoding."""
    from interp.capture import encode
    from interp.hooks import n_layers
    from interp.tracing import emoji_token_ids

    enc = encode(tokenizer, prompts, chat=chat)
    variants = {"no_space": [emoji_token_ids(tokenizer, e, False) for e in emojis],
                "leading_space": [emoji_token_ids(tokenizer, e, True) for e in emojis]}
    lens_toks = [emoji_token_ids(tokenizer, e, False) for e in lens_emojis]
    out = {k: np.zeros((len(prompts), len(v))) for k, v in variants.items()}
    out["lens"] = np.zeros((len(prompts), len(lens_emojis), n_layers(model)))
    plain = [(p, k, j) for p in range(len(enc)) for k, v in variants.items() for j in range(len(v))
             if not (k == "no_space" and emojis[j] in lens_emojis)]
    lensed = [(p, j) for p in range(len(enc)) for j in range(len(lens_emojis))]
    lp, _, _, _ = score_pairs(model, tokenizer, [(enc[p].ids, variants[k][j]) for p, k, j in plain], patches=patches,
                        batch_size=batch_size, remote=remote)
    for (p, k, j), v in zip(plain, lp, strict=True):
        out[k][p, j] = sum(v)
    lp, layers, _, _ = score_pairs(model, tokenizer, [(enc[p].ids, lens_toks[j]) for p, j in lensed], patches=patches,
                                   lens=True, batch_size=batch_size, remote=remote)
    for (p, j), v, per_layer in zip(lensed, lp, layers, strict=True):
        out["lens"][p, j] = per_layer.sum(-1)
        if lens_emojis[j] in emojis:  # its no-space score is this sequence's
            out["no_space"][p, emojis.index(lens_emojis[j])] = sum(v)
    return out


def open_remote(model_id: str) -> tuple[Any, Any]:
    """The hub model ``model_id`` to run on NDIF: its meta-device module (registered as its
    nnsight wrapper's, so that the nnsight paths trace that wrapper) and its tokenizer, after
    the API key is read (:func:`interp.remote.remote_key`: without a key nothing else is tried)."""
    from interp.capture import register_nnsight
    from interp.models import prepare_tokenizer
    from interp.remote import remote_key, remote_model

    remote_key()
    lm = remote_model(model_id)
    register_nnsight(lm.pipeline.model, lm)
    return lm.pipeline.model, prepare_tokenizer(lm.tokenizer)


def emoji_passes_nnsight(model: Any, tokenizer: Any, texts: Sequence[str], emojis: Sequence[str], *,
                         patches: Sequence[LoraPatch] = (), batch_size: int = BATCH_SIZE, remote: bool = False,
                         ) -> dict[tuple[int, str], tuple[Tensor, Tensor]]:
    """:func:`interp.neuron_analysis.emoji_passes` through nnsight, with an adapter as
    ``patches``: per ``(prompt index, emoji)``, the last layer's neuron values ``[m, d_mlp]``
    and the final residual ``[m, d_model]`` at the ``m`` positions that predict the emoji's
    tokens (chat template, no leading space)."""
    from interp.neuron_analysis import DLA_SITE
    from interp.tracing import emoji_pairs

    pairs = emoji_pairs(tokenizer, texts, emojis, chat=True)
    _, _, acts, resid = score_pairs(model, tokenizer, pairs, patches=patches, site=DLA_SITE, resid=True,
                                    batch_size=batch_size, remote=remote)
    out = {}
    for i in range(len(pairs)):  # emojis vary fastest
        p, e = divmod(i, len(emojis))
        out[(p, emojis[e])] = (acts[i], resid[i])
    return out


def dla_token_weights_nnsight(model: Any, tokenizer: Any, tokens: Sequence[int], *,
                              patches: Sequence[LoraPatch] = (), remote: bool = False,
                              chunk: int = 1024) -> Tensor:
    """``[d_mlp, tokens]``: ``(W_out[n] ⊙ γ) · W_U[t]`` for every last-layer neuron ``n``, as
    :func:`interp.neurons.neuron_token_dla` computes it locally, from the weights where the
    model runs: ``W_out`` by running the last ``down_proj`` on the identity (plus the adapter's
    ``s A^T B^T`` where it adapts that projection), ``γ`` by the final norm of a constant
    vector, and the tokens' rows of the unembedding, multiplied in float32 ``chunk`` neurons at
    a time; only ``[d_mlp, tokens]`` comes back."""
    from interp.capture import _envoy, check_remote, input_device, nnsight_model
    from interp.hooks import final_norm, resolve_site, unembed
    from interp.models import base_config
    from interp.neuron_analysis import DLA_SITE
    from interp.neurons import n_neurons
    from interp.remote import remote_errors

    check_remote(model, "nnsight", remote)
    lm = nnsight_model(model, tokenizer)
    paths = _paths(model)
    down_path = paths[id(resolve_site(model, DLA_SITE).module)]
    down_env = _envoy(lm, down_path)
    norm_env = _envoy(lm, paths[id(final_norm(model))])
    head_env = _envoy(lm, paths[id(unembed(model))])
    lora = [(p.a, p.b, p.scale) for p in patches if p.path == down_path]
    d_mlp = n_neurons(model, DLA_SITE)
    d_model = base_config(model).get_text_config().hidden_size
    norm = final_norm(model)
    eps = float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 0.0)))
    c = 1e3
    rescale = (c**2 + eps) ** 0.5 / c
    toks = torch.tensor(list(tokens), dtype=torch.long)
    got = None
    # the block below is what NDIF runs when remote: envoys, tensors and methods only; the
    # forward pass (one token) is only the occasion, the weights are read after it
    with torch.no_grad(), remote_errors(remote):
        with lm.trace(torch.tensor([[0]], device=input_device(model)), remote=remote, logits_to_keep=1, use_cache=False):
            lm.output.logits  # noqa: B018 (after the forward pass)
            down_w, head_w = down_env.weight, head_env.weight
            dtype, device = down_w.dtype, down_w.device
            const = torch.full((1, d_model), c, device=head_w.device, dtype=dtype)
            gamma = norm_env(const)[0].float() * rescale  # the final norm's scale as applied
            w_u = head_w[toks.to(head_w.device)].float()  # [tokens, d_model]: only the tokens' rows
            parts = []
            for start in range(0, d_mlp, chunk):
                rows = torch.arange(start, min(start + chunk, d_mlp), device=device)
                eye = torch.nn.functional.one_hot(rows, d_mlp).to(dtype)  # these neurons at 1
                w = (down_env(eye) - down_env(torch.zeros_like(eye[:1]))).float()  # [chunk, d_model]
                for a, b, scale in lora:
                    w = w + (eye.float() @ a.to(w).T) @ b.to(w).T * scale
                parts.append(((w.to(w_u.device) * gamma) @ w_u.T).cpu())
            got = torch.cat(parts).save()
    return got.detach().cpu()


class RemoteScorer:
    """:class:`interp.intervene.LastLayerScorer`'s interface for a model measured elsewhere, so
    that :func:`interp.experiments.ablation_experiment` runs unchanged: the intact scores and
    the neurons' values at the scored positions from one pass, then every intervention one
    more pass over all pairs (:func:`score_pairs` with an :class:`Edit`; the adapter's
    ``patches`` in each)."""

    applicable = True  # the intact scores come from this scorer's own pass
    exact = True  # ablated() gives the model's own numbers (full forward passes, nothing rebuilt)
    method = "full forward passes through nnsight (remote)"
    chunk = 32  # ablated sets per request (a sequential control may use fewer: the rest are spare)

    def __init__(self, model: Any, tokenizer: Any, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], *,
                 patches: Sequence[LoraPatch] = (), site: str, batch_size: int = BATCH_SIZE, remote: bool = False):
        self._args = (model, tokenizer, pairs)
        self._kw: dict[str, Any] = {"patches": patches, "site": site, "batch_size": batch_size, "remote": remote}
        self.n_pairs = len(pairs)
        per_token, _, at_site, _ = score_pairs(model, tokenizer, pairs, **self._kw)
        self.reference = np.array([float(sum(v)) for v in per_token])
        self.x = torch.cat([a for a in at_site if a is not None])  # [rows, d_mlp], pair by pair

    def activations(self) -> Tensor:
        """The neurons' values at the scored positions, every pair's rows in pair order."""
        return self.x

    def ablated(self, patch: Any) -> np.ndarray:
        """Per pair log P(continuation) with ``patch`` (neurons and ``[k]`` values) written at the site."""
        return self.ablated_many([patch])[0]

    def ablated_many(self, patches: Sequence[Any]) -> list[np.ndarray]:
        """:meth:`ablated` of each of ``patches``, all in one request."""
        got = score_pairs_many(*self._args, [Edit(p.neurons, p.values) for p in patches], read_site=False, **self._kw)
        return [np.array([float(sum(v)) for v in per_token]) for per_token, _, _, _ in got]


def generate_nnsight(model: Any, tokenizer: Any, batches: Sequence[tuple[Sequence[str], Tensor | None, Tensor | None]],
                     settings: Any, *, patches: Sequence[LoraPatch] = (), site: str | None = None,
                     remote: bool = False) -> list[list[str]]:
    """Greedy answers to each batch of prompts (chat template) through nnsight's ``generate``,
    all batches in one session (one request when ``remote``), with the adapter's ``patches``
    and, at ``site``, a batch's row ``r`` neurons where ``mask[r]`` set to ``fill[r]``
    (``[batch, d_mlp]`` each; None: no ablation) at every position of every step: what
    :func:`interp.intervene.row_ablation` around :func:`interp.behaviour.generation.generate`
    does to a local model. ``settings``: a :class:`interp.behaviour.generation.DecodeSettings`
    (greedy only: a server's sampling cannot be seeded from here)."""
    import nnsight

    from interp.capture import check_remote, input_device, nnsight_model
    from interp.chat import format_chat
    from interp.remote import remote_errors

    check_remote(model, "nnsight", remote)
    if settings.do_sample:
        raise ValueError("generation through nnsight is greedy here (a server's sampling cannot be seeded)")
    if tokenizer.padding_side != "left" or tokenizer.pad_token_id is None:
        raise ValueError("generation needs a tokenizer that pads on the left, with a pad token "
                         "(interp.models.prepare_tokenizer)")
    if any((m is None) != (f is None) for _, m, f in batches) or (any(m is not None for _, m, _ in batches)
                                                                 and site is None):
        raise ValueError("a row ablation needs mask, fill and the site")
    lm = nnsight_model(model, tokenizer)
    ablating = any(m is not None for _, m, _ in batches)
    steps = _steps(model, lm, patches, site if ablating else None, [])
    device = input_device(model)
    plain, widths = [], []
    for prompts, mask, fill in batches:
        enc = tokenizer([format_chat(tokenizer, p) for p in prompts], return_tensors="pt", padding=True,
                        add_special_tokens=False)
        plain.append(({"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)},
                      mask, fill))
        widths.append(enc["input_ids"].shape[1])
    kwargs = {**settings.generate_kwargs(), "pad_token_id": tokenizer.pad_token_id}
    results = None
    # the block below is what NDIF runs when remote: envoys, tensors, methods and nnsight only
    with torch.no_grad(), remote_errors(remote), warnings.catch_warnings():
        # an open loop ends by asking for one step more than the run makes: by design
        warnings.filterwarnings("ignore", message=".*was never reached: the loop asked for a step")
        with lm.session(remote=remote):
            results = nnsight.save([])
            moved = {}  # each adapted module's A and B on its device, float32: moved once per session
            for batch, mask, fill in plain:
                with lm.generate(**kwargs) as tracer:
                    with tracer.invoke(batch):
                        for _ in tracer.all():  # every step: the prompt's pass, then each new token's
                            for i, (env, a, b, scale, is_site, _layer) in enumerate(steps):
                                x = env.input
                                if is_site and mask is not None:
                                    m = mask.to(x.device)[:, None]
                                    x.copy_(torch.where(m, fill.to(x)[:, None], x))
                                if a is not None:  # the adapter's edit, as in trace_batches (written out
                                    # again: a shipped block cannot call a function of this package)
                                    if i not in moved:
                                        moved[i] = (a.to(x.device, torch.float32), b.to(x.device, torch.float32))
                                    a32, b32 = moved[i]
                                    y = env.output
                                    env.output = (y.float() + (x.float() @ a32.T) @ b32.T * scale).to(y.dtype)
                    with tracer.invoke():  # the whole batch, after the open loop above
                        results.append(tracer.result.cpu())
    return [tokenizer.batch_decode(ids[:, w:], skip_special_tokens=True) for ids, w in zip(results, widths, strict=True)]


def emoji_report_nnsight(model: Any, tokenizer: Any, prompt: str, emojis: Sequence[str], *, chat: bool = False,
                         patches: Sequence[LoraPatch] = (), lens: bool = False,
                         remote: bool = False) -> list[dict[str, Any]]:
    """:func:`interp.tracing.emoji_report` through nnsight with an adapter as ``patches``; with
    ``lens``, each row's ``logit_lens_logprob`` (per layer, no leading space) as
    :func:`interp.tracing.logit_lens` gives it, decoded where the model runs."""
    from interp.tracing import Scored, report_pairs, report_rows

    ids, toks = report_pairs(tokenizer, prompt, emojis, chat=chat)
    per_token, per_layer, _, _ = score_pairs(model, tokenizer, [(ids, t) for _, _, t in toks], patches=patches,
                                          lens=lens, remote=remote)
    rows = report_rows(tokenizer, emojis, toks, [Scored(float(sum(v)), v) for v in per_token])
    if lens:
        for r in rows:
            j = next(i for i, (e, key, _) in enumerate(toks) if e == r["emoji"] and key == "no_space")
            r["logit_lens_logprob"] = per_layer[j].sum(-1).tolist()  # type: ignore[union-attr]
    return rows
