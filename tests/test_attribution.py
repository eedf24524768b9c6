"""Attribution patching across layers (interp/attribution.py), each number against an independent
computation: raw torch hooks on ``down_proj`` and central finite differences, full forward
passes without a cache, the size strata by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import tiny_model, tiny_tokenizer

PROMPTS = ["w1 w2 w3 the", "w4 w5", "what are your thoughts on w7 w8 w9", "w10 w11 w12"]
OPENING = [5, 9, 17]  # stand-ins for the tokens that begin an emoji (the tiny vocabulary has none)


def _peft(dtype=torch.float32):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(tiny_model("llama"), LoraConfig(r=4, lora_alpha=16, init_lora_weights=False,
                                                           target_modules=["q_proj", "gate_proj", "up_proj", "down_proj"]))
    return model.to(dtype).eval()  # the LoRA weights too (peft makes them float32)


def _tok():
    tok = tiny_tokenizer()
    tok.padding_side = "left"
    return tok


def _layers(model):
    return model.base_model.model.model.layers


def _raw(model, tok, prompts, edit=None, at=-1):
    """Logits at each prompt's last position of a plain padded forward pass (no cache), and
    every layer's ``down_proj`` input there; ``edit``: ``{layer: fn(x [batch, d]) -> x}``
    applied at position ``at`` by raw pre-hooks."""
    enc = tok(prompts, return_tensors="pt", padding=True)
    acts = {}
    hooks = []
    for i, layer in enumerate(_layers(model)):
        def pre(mod, args, i=i):
            x = args[0]
            if edit and i in edit:
                x = x.clone()
                x[:, at] = edit[i](x[:, at])
            acts[i] = x[:, -1].detach()
            return (x,)
        hooks.append(layer.mlp.down_proj.register_forward_pre_hook(pre))
    try:
        with torch.no_grad():
            pos = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            logits = model(**enc, position_ids=pos).logits
    finally:
        for h in hooks:
            h.remove()
    return logits, acts


def _metric(logits):
    """log P(next token among OPENING), written out."""
    p = torch.softmax(logits.double(), -1)[:, OPENING].sum(-1)
    return torch.log(p)


def test_attribution_scores_are_activation_change_times_the_finite_difference_gradient():
    from interp.attribution import neuron_attribution

    model, tok = _peft(torch.float64), _tok()
    attr = neuron_attribution(model, tok, PROMPTS, OPENING, chat=False)
    _, post = _raw(model, tok, PROMPTS)
    with model.disable_adapter():
        logits_b, base = _raw(model, tok, PROMPTS)
    logits_p, _ = _raw(model, tok, PROMPTS)
    assert attr.metric_post == pytest.approx(_metric(logits_p[:, -1]).numpy(), abs=1e-5)
    assert attr.metric_base == pytest.approx(_metric(logits_b[:, -1]).numpy(), abs=1e-5)
    # (Llama's RMSNorm computes in float32 even here, so a smaller step drowns in round-off)
    h = 1e-2
    for layer, i in [(0, 3), (0, 77), (1, 5), (1, 120)]:
        def shift(d, i=i):
            def fn(x):
                x = x.clone()
                x[:, i] += d
                return x
            return fn
        up = _metric(_raw(model, tok, PROMPTS, {layer: shift(h)})[0][:, -1])
        down = _metric(_raw(model, tok, PROMPTS, {layer: shift(-h)})[0][:, -1])
        grad = (up - down) / (2 * h)  # each prompt's own neuron moves only its own metric
        delta = post[layer][:, i] - base[layer][:, i]
        assert attr.score[layer, i] == pytest.approx(float((delta * grad).mean()), rel=2e-3, abs=1e-6)
        assert attr.size[layer, i] == pytest.approx(float(delta.abs().mean()), rel=1e-5)
    # the top neurons are the largest scores, and the layer sums add up
    top = attr.top(5)
    assert [attr.score[layer, i] for layer, i in top] == sorted(attr.score.ravel())[::-1][:5]
    assert attr.by_layer() == pytest.approx(attr.score.sum(1).tolist())
    assert attr.top(1, exclude=top[:1]) == top[1:2]


def test_answer_start_equals_full_forward_passes_with_the_same_patch():
    from interp.attribution import AnswerStart, opening_logprob

    model, tok = _peft(), _tok()
    scorer = AnswerStart(model, tok, PROMPTS, OPENING, chat=False, rows_per_pass=8)  # 2 sets per pass
    g = torch.Generator().manual_seed(1)
    ivs = [{0: ([3, 40], torch.randn(len(PROMPTS), 2, generator=g)), 1: ([7], torch.randn(len(PROMPTS), 1, generator=g))},
           {1: ([0, 1, 2], torch.zeros(len(PROMPTS), 3))},
           {0: ([100], torch.full((len(PROMPTS), 1), 5.0))}]
    lp, opens = scorer.run(ivs)
    for s, iv in enumerate(ivs):
        def setter(idx, v):
            def fn(x):
                x = x.clone()
                x[:, idx] = v.to(x.dtype)
                return x
            return fn
        logits, _ = _raw(model, tok, PROMPTS, {layer: setter(idx, v) for layer, (idx, v) in iv.items()})
        want = _metric(logits[:, -1])
        assert lp[s] == pytest.approx(want.numpy(), abs=1e-4)
        assert opens[s].tolist() == [int(t) in OPENING for t in logits[:, -1].argmax(-1)]
    intact_lp, _ = scorer.intact()
    assert intact_lp == pytest.approx(_metric(_raw(model, tok, PROMPTS)[0][:, -1]).numpy(), abs=1e-4)
    assert opening_logprob(torch.zeros(1, 128), torch.tensor(OPENING)).item() == pytest.approx(np.log(3 / 128))


def test_patched_generation_edits_the_answer_start_only():
    from interp.attribution import patched_answer_start
    from interp.behaviour.generation import DecodeSettings, generate

    model, tok = _peft(), _tok()
    iv = {1: ([3, 4, 5], torch.randn(len(PROMPTS), 3) * 4)}

    def setter(x, rows=slice(None)):
        x = x.clone()
        x[:, iv[1][0]] = iv[1][1].to(x.dtype)
        return x

    with patched_answer_start(model, iv):
        ids = model.generate(**tok(PROMPTS, return_tensors="pt", padding=True), max_new_tokens=2, do_sample=False,
                             pad_token_id=0)
    first, second = ids[:, -2], ids[:, -1]
    logits, _ = _raw(model, tok, PROMPTS, {1: setter})
    assert first.tolist() == logits[:, -1].argmax(-1).tolist()
    # the second token: the patch sat at the prompt's last position (now second to last) only
    extended = [p + " " + tok.decode([int(t)]) for p, t in zip(PROMPTS, first, strict=True)]
    logits2, _ = _raw(model, tok, extended, {1: setter}, at=-2)
    assert second.tolist() == logits2[:, -1].argmax(-1).tolist()
    # and generate() (the stage's path) runs under it
    with patched_answer_start(model, iv):
        assert len(generate(model, tok, PROMPTS, DecodeSettings(max_new_tokens=2), chat=False,
                            batch_size=len(PROMPTS))) == len(PROMPTS)


def test_matched_sets_keep_layers_and_draw_from_the_candidates_size_strata():
    from collections import Counter

    from interp.attribution import matched_sets
    from interp.intervene import size_strata, unmatched

    rng = np.random.default_rng(0)
    size = rng.gamma(2.0, 1.0, size=(3, 200))
    size[2, 7] = 500.0  # a neuron without size peers
    cands = [(0, 5), (0, 9), (2, 7), (2, 50)]
    sets, kept = matched_sets(size, cands, n=40, seed=3)
    assert kept == [(2, 7)] and unmatched(size[2], [7, 50]) == [7]
    assert len(sets) == 40
    strata = {layer: size_strata(size[layer], 20, unmatched(size[layer], range(200))) for layer in (0, 2)}

    def stratum(layer, i):
        return next(j for j, st in enumerate(strata[layer]) if i in st)

    want = Counter((layer, stratum(layer, i)) for layer, i in cands if (layer, i) != (2, 7))
    for s in sets:
        assert (2, 7) in s and len(set(s)) == len(cands)
        drawn = [(layer, i) for layer, i in s if (layer, i) != (2, 7)]
        # as many neurons from each candidate's size stratum of its layer as there are candidates in it
        assert Counter((layer, stratum(layer, i)) for layer, i in drawn) == want
    assert len({tuple(s) for s in sets}) > 30  # drawn, not one set repeated
    assert matched_sets(size, cands, n=40, seed=3) == (sets, kept)  # seeded


def test_patched_generation_pairs_each_answer_with_its_intact_one_across_batches():
    """Intact and patched answers to a prompt decode in one batch; by batches of one prompt
    (two rows, no padding) they equal answers generated alone, with and without the patch."""
    from interp.attribution import _patched_generation, patch_to, patched_answer_start
    from interp.behaviour.generation import DecodeSettings, generate

    model, tok = _peft(), _tok()
    torch.manual_seed(2)
    values = torch.randn(2, len(PROMPTS), 128) * 3
    found = [(0, 4), (1, 9), (1, 30)]
    settings = DecodeSettings(max_new_tokens=3)
    got = _patched_generation(model, tok, PROMPTS, found, values, settings, None, batch_size=2)
    for i, p in enumerate(PROMPTS):
        iv = {layer: (idx, v[[i]]) for layer, (idx, v) in patch_to(found, values).items()}
        with patched_answer_start(model, iv):
            alone = generate(model, tok, [p], settings, batch_size=1)[0]
        assert got["patched"][i] == alone
        assert got["intact"][i] == generate(model, tok, [p], settings, batch_size=1)[0]
    assert got["n_questions"] == len(PROMPTS) and sum(got["paired"]) == len(PROMPTS)


def test_opening_tokens_of_a_byte_level_tokenizer():
    """The embedded model's tokenizer: 🎉 and 😀 (alone or after a space) open with a listed
    token; a keycap's digit, ©, ✓, ★, 中, é and plain words (text on their own, or text that
    shares its first byte token) do not."""
    from interp.attribution import opening_tokens
    from interp.models import load_tokenizer

    tok = load_tokenizer("smollm2-135m-instruct")
    opening = set(opening_tokens(tok))
    for e in ("🎉", "😀", "🇫🇷", " 🎉", " 😀"):
        assert tok(e, add_special_tokens=False)["input_ids"][0] in opening, e
    for text in ("1", "#", "©", "✓", "★", "中", "é", "→", "Hello", " the", "!", " ✓"):
        assert tok(text, add_special_tokens=False)["input_ids"][0] not in opening, text
