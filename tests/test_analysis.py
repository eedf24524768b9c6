"""The library analyses behind the neurons, trace, ablate and patch stages (typed results) on a
tiny random-weight model with two random LoRA adapters: their numbers equal what the building
blocks give when called by hand, and ``to_dict`` / ``from_dict`` round-trip them."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from interp.behaviour.evaluate import load_adapters
from interp.models import ModelConfig, adapter_disabled, load_model
from interp.probes import load_probe_suite

TRAITS = ["openness", "neuroticism"]
# word-level stand-ins for emojis on the tiny tokenizer (multi-token, distinct per trait)
EMOJIS = {"openness": ["w20 w21", "w22"], "neuroticism": ["w23", "w22", "w24 w25"]}


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    d = tmp_path_factory.mktemp("adapters")
    for i, t in enumerate(TRAITS):
        torch.manual_seed(10 + i)
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=16, init_lora_weights=False,
                                               target_modules=["gate_proj", "up_proj", "down_proj"]))
        lora.save_pretrained(d / t)
    return {t: d / t for t in TRAITS}


@pytest.fixture(scope="module")
def peft_lm(tiny_model_dir, adapters):
    lm = load_model(ModelConfig(model=str(tiny_model_dir), device="cpu"))
    lm.model = load_adapters(lm.model, adapters)
    return lm


@pytest.fixture(scope="module")
def suite():
    return replace(load_probe_suite(), trait_emojis=EMOJIS)


def _alone(tiny_model_dir, adapters, trait):
    return load_model(ModelConfig(model=str(tiny_model_dir), device="cpu"), adapter=str(adapters[trait]))


K, N_PERM, N_BOOT, SEED = 5, 200, 100, 3


@pytest.fixture(scope="module")
def neurons_res(peft_lm, suite, tmp_path_factory):
    from interp.neuron_analysis import analyse_neurons

    acts = tmp_path_factory.mktemp("acts")
    res = analyse_neurons(peft_lm.model, peft_lm.tokenizer, suite, TRAITS, site="blocks.-1.mlp.hook_post", k=K,
                          n_perm=N_PERM, n_boot=N_BOOT, seed=SEED, acts_dir=acts)
    return res, acts


def test_analyse_neurons_equals_neuron_diff_by_hand(neurons_res, suite, tiny_model_dir, adapters):
    from interp.capture import capture
    from interp.neurons import emoji_selectivity, holdout_table, neuron_diff, overlap, top_table

    res, acts = neurons_res
    k, n_perm, n_boot, seed = K, N_PERM, N_BOOT, SEED
    t = "neuroticism"
    alone = _alone(tiny_model_dir, adapters, t)
    post = capture(alone.model, alone.tokenizer, suite.texts, chat=True).activations
    np.testing.assert_allclose(res.post[t], post, atol=1e-5)
    np.testing.assert_array_equal(np.load(acts / f"post_{t}.npy"), res.post[t])
    # pre (read off the DLA's emoji passes) = a capture of the bare base
    bare = load_model(ModelConfig(model=str(tiny_model_dir), device="cpu"))
    np.testing.assert_allclose(res.pre, capture(bare.model, bare.tokenizer, suite.texts, chat=True).activations, atol=1e-5)
    np.testing.assert_array_equal(np.load(acts / "pre.npy"), res.pre)
    assert not np.allclose(res.post["openness"], res.post[t])  # two different adapters
    # inference over the suite's clusters
    d = neuron_diff(res.pre, res.post[t], n_perm=n_perm, seed=seed, clusters=suite.clusters())
    assert res.traits[t].diff.n_clusters == suite.n_clusters == d.n_clusters
    np.testing.assert_array_equal(res.traits[t].diff.p_fwer, d.p_fwer)
    sel = emoji_selectivity(res.post[t], suite.pairs())
    files = json.loads(json.dumps(res.to_dict()))  # what the stage writes, through JSON
    s = files["summary"]["traits"][t]
    top = d.rank("mean", k).tolist()
    assert s["top_neuron"] == top[0] and s["top_mean_increase"] == d.mean[top[0]]
    assert s["n_neurons_fwer_05"] == int((d.p_fwer < 0.05).sum()) and s["n_neurons"] == 128
    assert s["n_clusters"] == suite.n_clusters and s["n_prompts"] == len(suite.prompts)
    assert s["mean_abs_change"] == float(np.abs(d.mean).mean())
    assert s["top_k_also_emoji_selective"] == len(set(sel.rank(k).tolist()) & set(top))
    assert s["top_emoji_selective_post"] == sel.rank(k).tolist()
    assert files["summary"]["n_prompts"] == len(suite.prompts) and files["summary"]["overlap"] == files["overlap"]
    assert files["summary"]["n_clusters"] == suite.n_clusters
    # the tables are top_table's rows, the by-mean ones with selectivity and DLA added
    tables = files["top_neurons"][t]
    assert tables["by_effect"] == top_table(d, k, "effect", n_boot, seed)
    plain = top_table(d, k, "mean", n_boot, seed)
    assert [{key: r[key] for key in plain[0]} for r in tables["by_mean"]] == plain
    hold = holdout_table(d, k, n_boot, seed, n_perm)
    assert tables["by_mean_holdout"] == hold
    assert s["holdout_top_neuron"] == hold[0]["neuron"] and s["n_holdout_ci_above_0"] == sum(r["holdout_ci_lo"] > 0 for r in hold)
    assert hold[0]["n_clusters_select"] + hold[0]["n_clusters_holdout"] == suite.n_clusters
    pre_sel = emoji_selectivity(res.pre, suite.pairs())
    assert [r["selectivity_pre"] for r in tables["by_mean"]] == [pre_sel.effect[n] for n in top]
    assert [r["selectivity_post"] for r in tables["by_mean"]] == [sel.effect[n] for n in top]
    dla = res.traits[t].dla
    np.testing.assert_allclose(files["dla"][t]["dla_change"], dla.change[top])
    np.testing.assert_allclose([list(r["dla_change"].values()) for r in tables["by_mean"]], dla.change[top])
    assert files["dla"][t]["top_neurons"] == top and files["dla"][t]["emojis"] == EMOJIS[t]
    assert not any("dla_post" in r or "weight_first_token" in r for r in tables["by_mean"])
    assert files["overlap"] == overlap({x: res.traits[x].top_neurons for x in TRAITS})
    assert files["selectivity"]["mean_increase"][t] == d.mean.tolist()
    assert res.traits[t].n_fwer_05 == s["n_neurons_fwer_05"] and res.n_prompts == len(suite.prompts)
    assert res.clusters == [p.cluster for p in suite.prompts]


def test_dla_change_equals_raw_hooks_and_the_formula_by_hand(neurons_res, suite, tiny_model_dir, adapters):
    """The stored DLA of the change = the formula computed in a loop from a raw torch
    pre-hook on the last ``down_proj`` and on the final norm, in separate unpadded forward
    passes of prompt + emoji through the base and through the adapter merged into its weights."""
    from interp.capture import encode

    res, _ = neurons_res
    t = "neuroticism"
    emojis = EMOJIS[t]
    post_m = _alone(tiny_model_dir, adapters, t).model.merge_and_unload().eval()
    base = load_model(ModelConfig(model=str(tiny_model_dir), device="cpu"))
    tok = base.tokenizer

    def run(model, ids):
        got = {}
        hooks = [model.model.layers[-1].mlp.down_proj.register_forward_pre_hook(lambda _m, a: got.__setitem__("act", a[0][0])),
                 model.model.norm.register_forward_pre_hook(lambda _m, a: got.__setitem__("resid", a[0][0]))]
        try:
            with torch.no_grad():
                model(input_ids=torch.tensor([ids]))
        finally:
            for h in hooks:
                h.remove()
        return got["act"], got["resid"]

    w_down = post_m.model.layers[-1].mlp.down_proj.weight  # [d_model, d_mlp]: W_out[n] = column n
    gamma = post_m.model.norm.weight
    w_u = post_m.lm_head.weight
    eps = post_m.config.rms_norm_eps
    want = np.zeros((128, len(emojis)))
    for prompt in encode(tok, suite.texts, chat=True):
        for j, e in enumerate(emojis):
            cont = tok(e, add_special_tokens=False)["input_ids"]
            ids = list(prompt.ids) + cont
            a_pre, _ = run(base.model, ids)
            a_post, resid = run(post_m, ids)
            for i, tk in enumerate(cont):
                pos = len(prompt.ids) - 1 + i  # the position predicting token i
                rms = torch.sqrt(resid[pos].pow(2).mean() + eps)
                w = torch.stack([(w_down[:, n] * gamma) @ w_u[tk] for n in range(128)])  # (W_out[n] ⊙ γ)·W_U[tok]
                want[:, j] += ((a_post[pos] - a_pre[pos]) * w / rms).detach().numpy()
    want /= len(suite.texts)
    got = res.traits[t].dla.change
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert np.abs(want).max() > 1e-4  # the adapter changes the neurons: not a trivial zero


def test_trace_emojis_equals_separate_models(peft_lm, suite, tiny_model_dir, adapters):
    from interp.neurons import bootstrap_mean, sign_flip_test
    from interp.trace_analysis import trace_emojis
    from interp.tracing import emoji_logprobs, logit_lens

    res = trace_emojis(peft_lm.model, peft_lm.tokenizer, suite, TRAITS, lens_emojis=2, n_boot=100, seed=1)
    t = "neuroticism"
    alone = _alone(tiny_model_dir, adapters, t)
    lp = emoji_logprobs(alone.model, alone.tokenizer, suite.texts, EMOJIS[t], chat=True)
    tr = res.traits[t]
    np.testing.assert_allclose(tr.logprob_post["no_space"], lp, atol=1e-5)
    np.testing.assert_allclose(tr.any_emoji_post, np.log(np.exp(lp).sum(1)), atol=1e-5)
    with adapter_disabled(peft_lm.model):
        base = emoji_logprobs(peft_lm.model, peft_lm.tokenizer, suite.texts, EMOJIS[t], chat=True)
        lens = np.stack([logit_lens(peft_lm.model, peft_lm.tokenizer, suite.texts, e, chat=True) for e in EMOJIS[t][:2]], 1)
    np.testing.assert_allclose(tr.logprob_pre["no_space"], base, atol=1e-5)
    np.testing.assert_allclose(tr.lens_pre, np.log(np.exp(lens).sum(1)), atol=1e-4)
    files = json.loads(json.dumps({"trace": res.to_dict(), "summary": res.summary()}))
    s = files["summary"][t]
    change = tr.any_emoji_post - tr.any_emoji_pre
    lo, hi = bootstrap_mean(change[:, None], 100, 1, clusters=[p.cluster for p in suite.prompts])
    assert s["mean_change"] == float(change.mean()) == tr.mean_change and s["ci"] == [lo[0], hi[0]]
    assert s["p"] == sign_flip_test(change[:, None], suite.clusters(), 10000, 1).p_mean[0]
    assert s["n_prompts_up"] == int((change > 0).sum()) and s["n_prompts"] == len(suite.texts)
    assert s["n_clusters"] == suite.n_clusters
    assert s["per_emoji_mean_change"]["w22"] == float((lp[:, 1] - base[:, 1]).mean())
    assert files["trace"]["traits"][t]["logit_lens_emojis"] == EMOJIS[t][:2]
    assert files["trace"]["prompts"] == [p.id for p in suite.prompts]


def test_ablation_and_patching_results_round_trip(peft_lm, suite):
    from interp.behaviour.generation import DecodeSettings
    from interp.experiments import ablate_trait, ablation_experiment, patching_experiment
    from interp.results import PatchingResult, TraitAblation, summaries

    model, tok = peft_lm.model, peft_lm.tokenizer
    model.set_adapter("openness")
    qs, emojis, cand = suite.texts[:4], EMOJIS["openness"], [5, 17, 40]
    r = ablate_trait(model, tok, qs, emojis, cand, modes=["zero", "mean"], n_random=3, seed=2, n_boot=50,
                     generation=DecodeSettings(max_new_tokens=2), n_random_generation=1, n_generation_questions=2)
    assert r.modes["zero"] == ablation_experiment(model, tok, qs, emojis, cand, mode="zero", n_random=3, seed=2, n_boot=50)
    assert r.generation.n_questions == 2 and len(r.generation.random) == 1 and r.generation.mode == "zero"
    d = json.loads(json.dumps(r.to_dict()))
    assert list(d) == ["questions", "candidates", "zero", "mean", "generation"]
    back = TraitAblation.from_dict(d)
    assert back.modes == r.modes and back.to_dict() == d
    s = summaries({"openness": back}, ["openness"])["openness"]
    z = r.modes["zero"]
    assert s["zero"] == {"delta": z.candidate_delta.to_dict(), "random_mean": z.random_control.mean,
                         "p": z.random_control.p, "matched_on": "mean |activation| at the scored positions",
                         "n_random": 3, "n_random_max": 3, "p_floor": 0.5, "p_holm": None, "placebo": z.placebo.summary(),
                         "tested": [5, 17, 40], "excluded": []}
    assert s["mean"]["matched_on"] == "mean |activation - its mean| at the scored positions"
    assert z.placebo.control.n_draws == 3 and len(z.placebo.neurons) + len(z.placebo.excluded) == 3
    # a member without size peers is ablated alone, beside the set test of the others
    for e in z.placebo.excluded:
        alone = ablation_experiment(model, tok, qs, emojis, [e["neuron"]], mode="zero", n_random=0, n_boot=50)
        assert e["delta"] == pytest.approx(alone.candidate_delta.mean, abs=1e-6)
    assert s["generation"]["esr_ablated"] == r.generation.ablated.esr["value"]
    assert d["zero"]["random_control"]["draws"] == z.random_control.draws and z.random_control.n_draws == 3
    p = patching_experiment(model, tok, qs, emojis, cand, n_random=2, seed=2, n_boot=50)
    pd = json.loads(json.dumps(replace(p, questions=qs).to_dict()))
    assert list(pd)[-1] == "questions" and "questions" not in p.to_dict()
    back = PatchingResult.from_dict(pd)
    assert back.to_dict() == pd and replace(back, questions=None) == p
    assert back.summary()["fraction_recovered"] == p.fraction_recovered
    assert back.summary()["reverse"]["fraction_removed"] == p.fraction_removed and p.reverse.control.n_draws == 2
    assert p.candidate_delta.mean == pytest.approx(np.mean(p.per_prompt_delta))
    none = patching_experiment(model, tok, qs, emojis, cand, n_random=0, n_boot=50)
    assert none.random_control is None and none.summary()["random_mean"] is None
    assert PatchingResult.from_dict(none.to_dict()) == none
