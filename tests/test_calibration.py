"""Calibration: each test's false-positive rate under nulls built by construction, and the
matched controls of the causal tests (the placebo problem of issue 12)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from interp.calibration import Rate, calibrate_neurons, calibrate_sets, calibrate_trace
from interp.intervene import matched_draws
from interp.results import RandomControl

# the old probe suite's cluster sizes: 12 units, most of its prompts in two clusters of six
OLD_SIZES = [6, 6, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1]


def clustered(rng: np.random.Generator, d: int, sizes=OLD_SIZES, within: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """Zero-mean differences ``[prompts, d]`` whose prompts share a strong cluster effect."""
    clusters = np.repeat(np.arange(len(sizes)), sizes)
    shared = rng.normal(size=(len(sizes), d))[clusters]
    return within * shared + (1 - within) * rng.normal(size=(len(clusters), d)), clusters


def test_rate_is_share_below_alpha_with_wilson_interval():
    r = Rate.of([0.001, 0.04, 0.05, 0.5], alpha=0.05)
    assert (r.false_positives, r.n_null, r.false_positive_rate) == (2, 4, 0.5)
    assert r.ci[0] < 0.5 < r.ci[1]
    assert Rate.of([0.2] * 20, 0.05).ci == [0.0, pytest.approx(0.161, abs=1e-3)]


def test_neuron_and_trace_nulls_calibrated_where_per_prompt_flips_are_not():
    """On clustered data the cluster test holds α; treating prompts as independent does not."""
    rng = np.random.default_rng(0)
    delta, clusters = clustered(rng, d=40)
    neurons = calibrate_neurons(delta, clusters, n_null=60, n_perm=400, seed=1)
    assert neurons.false_positive_rate <= 0.10
    assert neurons.comparison["false_positive_rate"] >= 0.3
    trace = calibrate_trace(delta[:, 0], clusters, n_null=60, n_perm=400, seed=2)
    assert trace.false_positive_rate <= 0.12
    assert trace.rate.n_null == 60 and len(trace.p) == 60


def test_trace_p_uniform_under_a_null_by_construction():
    """Independent clustered datasets with no effect: the cluster sign-flip p is uniform."""
    from interp.neurons import sign_flip_test

    rng = np.random.default_rng(0)
    sizes = [3, 2, 2, 1, 1, 4, 2, 1, 1, 3, 2, 1, 1, 2, 1, 1, 2, 1, 3, 1]
    p = []
    for i in range(200):
        x, clusters = clustered(rng, d=1, sizes=sizes)
        p.append(sign_flip_test(x, clusters, n_perm=300, seed=i).p_mean[0])
    assert stats.kstest(p, "uniform").pvalue > 0.01 and np.mean(np.array(p) < 0.05) <= 0.08


def test_matched_controls_hold_alpha_on_large_null_sets_where_uniform_controls_do_not():
    """The placebo problem, with a known answer: every neuron's effect scales with its size and
    no neuron is special. Sets drawn from the top decile by size 'beat' uniform random sets
    nearly always; against sets matched on size they are null."""
    rng = np.random.default_rng(0)
    mag = rng.lognormal(mean=-1.0, sigma=1.2, size=600)
    per_neuron = -mag * rng.normal(1.0, 0.3, size=600)

    def effect(ns):
        return float(per_neuron[list(ns)].sum())

    fam = calibrate_sets("ablation", effect, mag, 10, matched_on="size", n_null=60, n_random=60, seed=4)
    assert fam.false_positive_rate <= 0.12
    assert fam.comparison["false_positive_rate"] >= 0.9


def test_matched_p_uniform_for_random_sets():
    """A set drawn uniformly from the layer (less its neurons without size peers), against sets
    stratified on its members' sizes: p is uniform (the test is exact under this null)."""
    from interp.intervene import unmatched

    rng = np.random.default_rng(1)
    mag = rng.lognormal(size=400)
    per_neuron = mag * rng.normal(size=400)
    layer = np.setdiff1d(np.arange(400), unmatched(mag, range(400)))
    p = []
    for i in range(200):
        cand = sorted(rng.choice(layer, 5, replace=False).tolist())
        draws = [per_neuron[s].sum() for s in matched_draws(mag, cand, 99, seed=i)]
        p.append(RandomControl.of(per_neuron[cand].sum(), np.array(draws)).p)
    assert stats.kstest(p, "uniform").pvalue > 0.01
    assert np.mean(np.array(p) < 0.05) <= 0.08


def test_matched_draws_come_from_each_candidates_size_stratum():
    from interp.intervene import size_strata

    mag = np.geomspace(0.01, 1, 1000)
    strata = size_strata(mag, 20)
    assert [len(x) for x in strata] == [20] * 50 and strata[0][0] == 999  # largest first
    sets = matched_draws(mag, [999, 500, 3], n=30, seed=0, width=20)
    for s in sets:
        lo, mid, hi = sorted(s)
        assert lo <= 19 and 500 <= mid <= 519 and hi >= 980
    # each candidate's stratum holds it (under the null it is one draw of the scheme)
    assert any(999 in s for s in matched_draws(mag, [999], n=200, seed=1))
    # a neuron without size peers is in no stratum: never drawn, and refused as a candidate
    spiky = np.r_[np.ones(50), 100.0]
    assert 50 not in {x for s in matched_draws(spiky, [0, 1], n=100, seed=0) for x in s}
    with pytest.raises(ValueError, match="no size stratum"):
        matched_draws(spiky, [50], n=3, seed=0)


def test_calibrate_interventions_on_a_tiny_model(tiny_model_dir, tmp_path):
    """The ablation and patching families run end to end on a tiny random model with an
    adapter (exact cached scorer), with p-values in (0, 1]."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from interp.calibration import calibrate_interventions
    from interp.models import ModelConfig, load_model

    torch.manual_seed(5)
    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                          LoraConfig(r=4, lora_alpha=16, init_lora_weights=False, target_modules=["down_proj", "up_proj"]))
    lora.save_pretrained(tmp_path / "a")
    lm = load_model(ModelConfig(model=str(tiny_model_dir), device="cpu"), adapter=str(tmp_path / "a"))
    fams = calibrate_interventions(lm.model, lm.tokenizer, ["the a is of", "w1 w2", "you w9 w10"], ["w20 w21", "w22"], 3,
                                   n_null=6, n_random=9, seed=0)
    assert [f.family for f in fams] == ["ablation", "patching"]
    for f in fams:
        assert f.rate.n_null == 6 and all(0 < p <= 1 for p in f.p) and f.comparison["n_null"] == 6
        assert set(f.summary()) >= {"false_positive_rate", "n_null", "alpha", "ci", "null", "test"}


def test_an_older_one_sided_control_is_refused_with_a_clear_error():
    from text2emoji.core.errors import UserError

    old = {"n_draws": 2, "mean": 0.0, "sd": 1.0, "p2_5": -1.0, "p97_5": 1.0, "p_empirical": 0.3, "z": 0.1, "draws": [0, 1]}
    with pytest.raises(UserError, match="older version.*--force"):
        RandomControl.from_dict(old)


def test_sequential_p_is_valid_under_the_null():
    """Besag-Clifford two-sided p from exchangeable draws: P(p <= a) <= a."""
    rng = np.random.default_rng(0)
    p = np.array([RandomControl.sequential(rng.normal(), iter(rng.normal(size=300)), n_max=300).p for _ in range(3000)])
    for a in (0.01, 0.05, 0.1, 0.5):
        assert np.mean(p <= a) <= a + 0.015


def test_ablation_and_patching_p_uniform_on_a_tiny_model_under_an_exact_null(tiny_model_dir, tmp_path):
    """On a tiny random model with an adapter: candidate sets drawn at random from the layer
    (less neurons without size peers) are, member by member, draws from their size strata, so
    the stratified test is exact: its p (ablation and patching) is uniform."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from interp.capture import pad_id
    from interp.experiments import ablation_runner, patching_runners
    from interp.intervene import LastLayerScorer, unmatched
    from interp.models import ModelConfig, load_model
    from interp.tracing import emoji_pairs

    torch.manual_seed(7)
    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                          LoraConfig(r=4, lora_alpha=16, init_lora_weights=False, target_modules=["down_proj", "up_proj"]))
    lora.save_pretrained(tmp_path / "a")
    lm = load_model(ModelConfig(model=str(tiny_model_dir), device="cpu"), adapter=str(tmp_path / "a"))
    qs, emojis = ["the a is of", "w1 w2", "you w9 w10", "what are your thoughts on w3"], ["w20 w21", "w22"]
    scorer = LastLayerScorer(lm.model, emoji_pairs(lm.tokenizer, qs, emojis), pad_id=pad_id(lm.tokenizer))
    _, run = ablation_runner(lm.model, lm.tokenizer, qs, emojis, scorer)
    _, base, fwd, _, patch_size, _ = patching_runners(lm.model, lm.tokenizer, qs, emojis)
    rng = np.random.default_rng(0)
    for effect, size in ((lambda ns: float(run(ns).mean()), scorer.x.abs().mean(0).numpy()),
                         (lambda ns: float((fwd(ns) - base).mean()), patch_size)):
        layer = np.setdiff1d(np.arange(len(size)), unmatched(size, range(len(size))))
        p = []
        for i in range(60):
            cand = sorted(rng.choice(layer, 3, replace=False).tolist())
            draws = np.array([effect(s) for s in matched_draws(size, cand, 39, seed=i, width=10)])
            p.append(RandomControl.of(effect(cand), draws).p)
        assert stats.kstest(p, "uniform").pvalue > 0.01 and np.mean(np.array(p) < 0.05) <= 0.1
