"""Neuron statistics, DLA, emoji probabilities, logit lens and interventions, each checked
against an independent computation (exact enumeration, the model's own logits, edited weights)."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch

from interp.experiments import ablation_experiment, patching_experiment
from interp.hooks import record_activations
from interp.intervene import (
    Patch,
    ablation_patch,
    intervention,
    random_draws,
)
from interp.models import ModelConfig, adapter_disabled, load_model
from interp.neurons import (
    emoji_selectivity,
    neuron_diff,
    neuron_dla_at,
    neuron_token_dla,
    top_table,
)
from interp.tracing import emoji_logprobs, logit_lens, score_continuations

PROMPTS = ["the a is of", "w1 w2", "what are your thoughts on w3 w4 w5 w6", "you w9 w10"]
EMOJIS = ["w20 w21", "w22", "w23 w24 w25"]  # multi-token stand-ins on the word-level tokenizer


def test_permutation_p_matches_exact_enumeration():
    rng = np.random.default_rng(3)
    delta = rng.normal(0.4, 1.0, size=(8, 5))
    pre = rng.normal(size=(8, 5))
    d = neuron_diff(pre, pre + delta, n_perm=40000, seed=1)
    signs = np.array(list(itertools.product([-1, 1], repeat=8)), dtype=float)
    null = np.abs(signs @ delta) / 8
    exact = (null >= np.abs(delta.mean(0)) - 1e-12).mean(0)
    np.testing.assert_allclose(d.p_perm, exact, atol=0.01)
    # the family-wise max-|t| p against its enumeration, and clusters: tests/test_clusters.py
    np.testing.assert_allclose(d.mean, delta.mean(0))
    np.testing.assert_allclose(d.effect, delta.mean(0) / delta.std(0, ddof=1))


def test_top_table_ranks_and_intervals():
    rng = np.random.default_rng(0)
    pre = rng.normal(size=(12, 50))
    post = pre + rng.normal(0, 0.1, size=(12, 50))
    post[:, 7] += 2.0
    post[:, 3] += 1.0
    rows = top_table(neuron_diff(pre, post, n_perm=500), k=3)
    assert [r["neuron"] for r in rows[:2]] == [7, 3]
    for r in rows:
        assert r["ci_lo"] <= r["mean_increase"] <= r["ci_hi"]
    assert rows[0]["p_fwer"] < 0.01


def test_selectivity_by_hand():
    acts = np.array([[1.0, 0.0], [3.0, 0.5], [2.0, 0.0], [3.0, -0.5]])
    s = emoji_selectivity(acts, [(1, 0), (3, 2)])
    np.testing.assert_allclose(s.mean, [1.5, 0.0])
    np.testing.assert_allclose(s.effect[0], 1.5 / np.std([2.0, 1.0], ddof=1))


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(ModelConfig(model=str(tiny_model_dir), device="cpu"))


def step_by_step(model, tok, prompt, cont):
    """Reference: one unpadded forward per continuation token."""
    ids = tok(prompt)["input_ids"]
    c = tok(cont, add_special_tokens=False)["input_ids"]
    total = 0.0
    with torch.no_grad():
        for i, t in enumerate(c):
            logits = model(input_ids=torch.tensor([ids + c[:i]])).logits[0, -1]
            total += torch.log_softmax(logits, -1)[t].item()
    return total


def test_emoji_logprob_exact_over_all_tokens(lm):
    got = emoji_logprobs(lm.model, lm.tokenizer, PROMPTS, EMOJIS, chat=False, batch_size=5)
    for i, p in enumerate(PROMPTS):
        for j, e in enumerate(EMOJIS):
            assert got[i, j] == pytest.approx(step_by_step(lm.model, lm.tokenizer, p, e), abs=1e-4)


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gemma2-window3"])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_shared_prompt_passes_equal_whole_sequences(arch, batch_size):
    """Each prompt run once with a KV cache, its continuations on top: the logits and the last
    MLP's neuron values at the predicting positions equal one unpadded forward pass of prompt +
    continuation, read by a raw torch pre-hook (prompts of different lengths, continuations of
    1-3 tokens, a repeated pair, continuations that share their first tokens or whose run is a
    prefix of another's, as emojis sharing their first bytes do)."""
    from transformers import AutoModelForCausalLM

    from interp.tracing import continuation_passes
    from tests.conftest import tiny_config

    cfg = tiny_config(arch.split("-")[0])
    if arch.endswith("window3"):  # sliding-window layers whose window the prompts overflow
        cfg.sliding_window = 3
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    pairs = [([5, 6, 7, 8, 9], [10, 11]), ([5, 6, 7, 8, 9], [12]), ([20, 21], [22, 23, 24]),
             ([30], [31, 32]), ([20, 21], [25]), ([5, 6, 7, 8, 9], [10, 11]), ([40, 41, 42], [43]),
             ([5, 6, 7, 8, 9], [10, 11, 13]), ([5, 6, 7, 8, 9], [10, 14]), ([20, 21], [22, 23, 26]),
             ([20, 21], [22, 27])]
    down = model.model.layers[-1].mlp.down_proj
    seen = set()
    for i, logits, acts in continuation_passes(model, pairs, pad_id=0, batch_size=batch_size,
                                               sites=["blocks.-1.mlp.hook_post"]):
        seen.add(i)
        prompt, cont = pairs[i]
        grabbed = []
        handle = down.register_forward_pre_hook(lambda _m, args, g=grabbed: g.append(args[0]))
        try:
            with torch.no_grad():
                full = model(input_ids=torch.tensor([prompt + cont])).logits[0]
        finally:
            handle.remove()
        at = slice(len(prompt) - 1, len(prompt) + len(cont) - 1)
        torch.testing.assert_close(logits, full[at], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(acts["blocks.1.mlp.hook_post"], grabbed[0][0, at], atol=1e-5, rtol=1e-5)
    assert seen == set(range(len(pairs)))


def test_emoji_trace_is_logprobs_and_lens_in_one_pass(lm):
    from interp.tracing import emoji_trace

    lens = [*EMOJIS[::2], "w26 w27"]  # scored emojis (their passes read twice) and one only decoded
    assert "w26 w27" not in EMOJIS
    got = emoji_trace(lm.model, lm.tokenizer, PROMPTS, EMOJIS, lens_emojis=lens, chat=False, batch_size=3)
    for key, space in (("no_space", False), ("leading_space", True)):
        want = emoji_logprobs(lm.model, lm.tokenizer, PROMPTS, EMOJIS, chat=False, leading_space=space)
        np.testing.assert_allclose(got[key], want, atol=1e-5)
    for j, e in enumerate(lens):
        np.testing.assert_allclose(got["lens"][:, j], logit_lens(lm.model, lm.tokenizer, PROMPTS, e, chat=False), atol=1e-5)
    np.testing.assert_allclose(got["lens"][:, :-1, -1], got["no_space"][:, ::2], atol=1e-4)


def test_logit_lens_by_hand_and_last_layer_is_the_model(lm):
    lens = logit_lens(lm.model, lm.tokenizer, PROMPTS, EMOJIS[0], chat=False)
    exact = emoji_logprobs(lm.model, lm.tokenizer, PROMPTS, [EMOJIS[0]], chat=False)[:, 0]
    np.testing.assert_allclose(lens[:, -1], exact, atol=1e-4)
    # layer 0 by hand from transformers' hidden states
    tok = lm.tokenizer
    ids = tok(PROMPTS[0])["input_ids"]
    c = tok(EMOJIS[0], add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        hs = lm.model(input_ids=torch.tensor([ids + c]), output_hidden_states=True).hidden_states
        logp = torch.log_softmax(lm.model.lm_head(lm.model.model.norm(hs[1][0])), -1)
    hand = sum(logp[len(ids) - 1 + i, t].item() for i, t in enumerate(c))
    assert lens[0, 0] == pytest.approx(hand, abs=1e-4)


@pytest.mark.parametrize("arch", ["llama", "gemma"])
def test_dla_sums_to_the_logit(arch):
    """Σ_n DLA of last-layer neurons + the residual before the MLP, through the frozen final
    norm, equals the model's logit of each token."""
    from tests.conftest import tiny_model

    model = tiny_model(arch)
    ids = torch.randint(3, 100, (1, 6))
    toks = [5, 17, 42]
    sites = ["blocks.-1.mlp.hook_post", "blocks.-1.hook_mlp_out", "blocks.-1.hook_resid_post"]
    with torch.no_grad(), record_activations(model, sites) as a:
        logits = model(ids).logits[0, -1]
    post = a["blocks.1.mlp.hook_post"][0][0, -1]
    resid = a["blocks.1.hook_resid_post"][0][0, -1]
    mlp_out = a["blocks.1.hook_mlp_out"][0][0, -1]
    w = neuron_token_dla(model, toks)
    dla = neuron_dla_at(post, resid, w, eps=model.config.rms_norm_eps)
    from interp.neurons import final_norm_scale, unembedding

    rms = torch.sqrt(resid.pow(2).mean() + model.config.rms_norm_eps)
    rest = ((resid - mlp_out) * final_norm_scale(model)) @ unembedding(model)[toks].T / rms
    torch.testing.assert_close(dla.sum(0) + rest, logits[toks], atol=1e-4, rtol=1e-4)


def test_zero_ablation_equals_zeroed_weights(lm):
    neurons = [3, 10, 77]
    edited = copy.deepcopy(lm.model)
    with torch.no_grad():
        edited.model.layers[-1].mlp.down_proj.weight[:, neurons] = 0
    ref = emoji_logprobs(edited, lm.tokenizer, PROMPTS, EMOJIS, chat=False)
    with intervention(lm.model, ablation_patch(neurons, "zero")):
        got = emoji_logprobs(lm.model, lm.tokenizer, PROMPTS, EMOJIS, chat=False)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    res = ablation_experiment(lm.model, lm.tokenizer, PROMPTS, EMOJIS, neurons, n_random=5, chat=False, n_boot=200)
    base = emoji_logprobs(lm.model, lm.tokenizer, PROMPTS, EMOJIS, chat=False)

    def anylp(x):
        return np.log(np.exp(x).sum(1))

    np.testing.assert_allclose(res.per_prompt_delta, anylp(ref) - anylp(base), atol=1e-5)
    assert res.random_control.n_draws == 5


def test_mean_ablation_sets_the_mean(lm):
    means = np.arange(128, dtype=np.float32) / 100
    seen = []
    down = lm.model.model.layers[-1].mlp.down_proj
    h = down.register_forward_hook(lambda m, a, o: seen.append(a[0].clone()))
    try:
        with intervention(lm.model, ablation_patch([1, 5], "mean", means)):
            score_continuations(lm.model, [([4, 5, 6], [7])])
    finally:
        h.remove()
    # a forward hook sees the input as forward received it, after the intervention's pre-hook
    assert torch.allclose(seen[0][0, :, 1], torch.tensor(0.01)) and torch.allclose(seen[0][0, :, 5], torch.tensor(0.05))


def test_row_ablation_equals_one_intervention_per_row(lm):
    """Each row ablated its own way in one batch = each set ablated in a forward pass alone."""
    from interp.intervene import row_ablation

    sets = [None, [3, 17, 40], [0, 5], [100, 101, 102, 127]]
    ids = torch.tensor([lm.tokenizer(PROMPTS[2])["input_ids"]] * len(sets))
    mask = torch.zeros(len(sets), 128, dtype=torch.bool)
    fill = torch.zeros(len(sets), 128)
    means = np.linspace(-2, 2, 128)
    for r, s in enumerate(sets):
        if s:
            mask[r, s] = True
            fill[r, s] = torch.tensor(means[s], dtype=torch.float32)
    with torch.no_grad():
        with row_ablation(lm.model) as set_rows:
            set_rows(mask, fill)
            together = lm.model(input_ids=ids).logits
        for r, s in enumerate(sets):
            patch = ablation_patch(s, "mean", means) if s else ablation_patch([], "zero")
            with intervention(lm.model, patch):
                alone = lm.model(input_ids=ids[r:r + 1]).logits
            torch.testing.assert_close(together[r:r + 1], alone, atol=1e-5, rtol=1e-5)


def test_ablation_generation_matches_separate_generations(lm):
    """Intact and ablated answers decoded in shared batches (split across two calls here) are
    the answers of separate generate() calls, as is and under the intervention."""
    from interp.behaviour.generation import DecodeSettings, generate
    from interp.experiments import ablation_generation

    qs, cand, settings = PROMPTS[:3], list(range(0, 128, 3)), DecodeSettings(max_new_tokens=6)
    means = np.full(128, 4.0)  # a large value, so that the answers change
    got = ablation_generation(lm.model, lm.tokenizer, qs, cand, mode="mean", means=means, n_random=2, seed=1,
                              settings=settings, batch_size=4)
    intact = generate(lm.model, lm.tokenizer, qs, settings)
    with intervention(lm.model, ablation_patch(cand, "mean", means)):
        ablated = generate(lm.model, lm.tokenizer, qs, settings)
    assert [e["intact"] for e in got.examples] == intact
    assert [e["ablated"] for e in got.examples] == ablated
    assert intact != ablated and len(got.random) == 2


def test_random_draws_exclude_candidates():
    draws = random_draws(20, 4, [0, 1, 2], n=50, seed=0)
    assert all(len(set(d)) == 4 and not set(d) & {0, 1, 2} for d in draws)
    assert len({tuple(d) for d in draws}) > 40


def test_patching_all_neurons_recovers_post_exactly(tiny_model_dir, tmp_path):
    """With an adapter only on the last layer's gate/up projections, base and post differ only
    in the last layer's neuron activations: patching every neuron must recover post exactly."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(2)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=16, init_lora_weights=False,
                                           target_modules=["gate_proj", "up_proj"], layers_to_transform=[1]))
    lora.save_pretrained(tmp_path)
    peft_lm = load_model(ModelConfig(model=str(tiny_model_dir), device="cpu"), adapter=str(tmp_path))
    full = patching_experiment(peft_lm.model, peft_lm.tokenizer, PROMPTS, EMOJIS, list(range(128)),
                               n_random=0, chat=False, n_boot=100)
    assert abs(full.post_minus_base.mean) > 1e-3
    np.testing.assert_allclose(full.patched_logprob.mean, full.post_logprob.mean, atol=1e-4)
    assert full.fraction_recovered == pytest.approx(1.0, abs=1e-3)
    # reverse: the post model with every neuron's base value is the base model
    np.testing.assert_allclose(np.mean(full.reverse.per_prompt), -full.post_minus_base.mean, atol=1e-4)
    assert full.fraction_removed == pytest.approx(1.0, abs=1e-3)
    assert full.random_control is None and full.reverse.control is None
    some = patching_experiment(peft_lm.model, peft_lm.tokenizer, PROMPTS, EMOJIS, [0, 1, 2],
                               n_random=4, chat=False, n_boot=100)
    assert some.random_control.n_draws == 4
    assert some.base_logprob.mean == pytest.approx(full.base_logprob.mean)


def test_last_layer_cache_equals_full_forward(tiny_model_dir, lora_adapter):
    """The cached last-layer scorer gives what full forward passes with the hook give, for
    ablation and for patching (random neuron sets)."""
    from interp.experiments import _patching_full
    from interp.intervene import LastLayerScorer
    from interp.tracing import emoji_pairs

    peft_lm = load_model(ModelConfig(model=str(tiny_model_dir), device="cpu"), adapter=str(lora_adapter))
    model, tok = peft_lm.model, peft_lm.tokenizer
    pairs = emoji_pairs(tok, PROMPTS, EMOJIS, chat=False)
    scorer = LastLayerScorer(model, pairs, batch_size=3)
    assert scorer.exact and scorer.lowrank is not None
    # each prompt's first row is shared by its emojis: the low-rank update computes it once
    assert len(scorer.first) <= len(scorer.x) - (len(EMOJIS) - 1) * len(PROMPTS)
    full = emoji_logprobs(model, tok, PROMPTS, EMOJIS, chat=False).ravel()
    np.testing.assert_allclose(scorer.reference, full, atol=1e-5)
    for ns in random_draws(128, 7, [], n=3, seed=4):
        patch = ablation_patch(ns, "mean", np.linspace(-1, 1, 128))
        with intervention(model, patch):
            slow = emoji_logprobs(model, tok, PROMPTS, EMOJIS, chat=False).ravel()
        np.testing.assert_allclose(scorer.ablated(patch), slow, atol=1e-4)
    fast = patching_experiment(model, tok, PROMPTS, EMOJIS, [4, 9, 33], n_random=3, chat=False, n_boot=50)
    assert fast.method == "cached last layer (exact)"
    shape = (len(PROMPTS), len(EMOJIS))
    forward, reverse, post, base = _patching_full(model, tok, pairs, shape, "blocks.-1.mlp.hook_post", 4)
    np.testing.assert_allclose(fast.per_prompt_delta, forward([4, 9, 33]) - base, atol=1e-4)
    np.testing.assert_allclose(fast.reverse.per_prompt, reverse([4, 9, 33]) - post, atol=1e-4)
    # the random sets the experiment drew (matched on |post - base|), scored by full passes
    from interp.intervene import matched_draws, scored_activations

    x_post = scored_activations(model, pairs)
    with adapter_disabled(model):
        x_base = scored_activations(model, pairs)
    sets = matched_draws((x_post - x_base).abs().mean(0).numpy(), [4, 9, 33], 3, 0)
    np.testing.assert_allclose(fast.random_control.draws, [(forward(ns) - base).mean() for ns in sets], atol=1e-4)
    np.testing.assert_allclose(fast.reverse.control.draws, [(reverse(ns) - post).mean() for ns in sets], atol=1e-4)


@pytest.mark.parametrize("arch", ["llama", "gemma"])
def test_low_rank_update_equals_full_forward(arch):
    """The low-rank update (RMSNorm with Llama's g and Gemma's 1 + w) = a full forward pass
    with the neurons overwritten by a raw hook, for random sets and values."""
    from interp.intervene import LastLayerScorer
    from tests.conftest import tiny_model

    model = tiny_model(arch)
    pairs = [([5, 6, 7, 8], [9, 10]), ([5, 6, 7, 8], [11]), ([20, 21], [22, 23, 24])]
    scorer = LastLayerScorer(model, pairs)
    assert scorer.exact and scorer.lowrank is not None
    down = model.model.layers[-1].mlp.down_proj
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        idx = torch.randperm(128, generator=g)[:6]
        values = torch.randn(6, generator=g) * 3
        want = []
        for prompt, cont in pairs:
            def overwrite(_m, args, idx=idx, values=values):
                x = args[0].clone()
                x[..., idx] = values
                return (x,)

            handle = down.register_forward_pre_hook(overwrite)
            try:
                with torch.no_grad():
                    logp = model(input_ids=torch.tensor([prompt + cont])).logits[0].log_softmax(-1)
            finally:
                handle.remove()
            want.append(sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(cont)))
        np.testing.assert_allclose(scorer.ablated(Patch(idx, values)), want, atol=1e-4)


def test_cache_declines_when_something_follows_the_mlp():
    """Gemma2 norms the MLP's output before adding it: the cache must notice and decline."""
    from interp.intervene import LastLayerScorer
    from tests.conftest import tiny_model

    model = tiny_model("gemma2")
    assert not LastLayerScorer(model, [([5, 6, 7], [8, 9])]).exact
    assert not LastLayerScorer(model, [([5, 6, 7], [8, 9])], site="blocks.0.mlp.hook_post").applicable


@pytest.fixture(scope="module")
def lora_adapter(tiny_model_dir, tmp_path_factory):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(5)
    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                          LoraConfig(r=4, lora_alpha=16, init_lora_weights=False,
                                     target_modules=["q_proj", "gate_proj", "up_proj", "down_proj"]))
    d = tmp_path_factory.mktemp("lora-n")
    lora.save_pretrained(d)
    return d


def test_interventions_at_an_earlier_layer_run_full_forward_passes(tiny_model_dir, lora_adapter):
    """Where the cache does not apply (a site before the last layer), ablation and patching run
    full forward passes with the hook; the scorer still reads the scored positions' values
    (for matching and mean ablation), the same as :func:`scored_activations`."""
    from interp.intervene import LastLayerScorer, scored_activations
    from interp.tracing import emoji_pairs

    site = "blocks.0.mlp.hook_post"
    peft_lm = load_model(ModelConfig(model=str(tiny_model_dir), device="cpu"), adapter=str(lora_adapter))
    model, tok = peft_lm.model, peft_lm.tokenizer
    pairs = emoji_pairs(tok, PROMPTS, EMOJIS, chat=False)
    scorer = LastLayerScorer(model, pairs, site=site)
    assert not scorer.applicable
    torch.testing.assert_close(scorer.activations(), scored_activations(model, pairs, site=site))
    res = ablation_experiment(model, tok, PROMPTS, EMOJIS, [3, 7], mode="mean", n_random=2, chat=False, site=site,
                              n_boot=20)
    assert res.method == "full forward passes" and res.random_control.n_draws == 2
    means = scorer.activations().mean(0).numpy()
    with intervention(model, ablation_patch([3, 7], "mean", means), site):
        slow = emoji_logprobs(model, tok, PROMPTS, EMOJIS, chat=False)
    base = emoji_logprobs(model, tok, PROMPTS, EMOJIS, chat=False)
    any_lp = lambda lp: np.log(np.exp(lp).sum(1))  # noqa: E731
    np.testing.assert_allclose(res.per_prompt_delta, any_lp(slow) - any_lp(base), atol=1e-4)
    pat = patching_experiment(model, tok, PROMPTS, EMOJIS, [3, 7], n_random=2, chat=False, site=site, n_boot=20)
    assert pat.method == "full forward passes" and pat.reverse.control.n_draws == 2


def test_logit_lens_applies_the_models_softcap():
    """Gemma 2 soft-caps its final logits (cap · tanh(logits / cap)): the lens does too, so its
    last layer is the model's own log-probability (a cap of 0.5 makes the difference large)."""
    from transformers import AutoModelForCausalLM

    from interp.tracing import emoji_trace
    from tests.conftest import tiny_config, tiny_tokenizer

    cfg = tiny_config("gemma2")
    cfg.final_logit_softcapping = 0.5
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    tok = tiny_tokenizer()
    got = emoji_trace(model, tok, PROMPTS, EMOJIS, lens_emojis=EMOJIS[:2], chat=False)
    np.testing.assert_allclose(got["lens"][:, :, -1], got["no_space"][:, :2], atol=1e-5)
    cfg.final_logit_softcapping = None  # the same weights without the cap: other numbers
    assert np.abs(emoji_trace(model, tok, PROMPTS, EMOJIS, lens_emojis=EMOJIS[:2], chat=False)["lens"][:, :, -1]
                  - got["lens"][:, :, -1]).max() > 1e-2  # far above the 1e-5 the lens is held to
