"""Cluster-level inference: the probe suite's clusters, the cluster sign-flip test (per-neuron
p and the studentised max-|t| family-wise p) and the cluster bootstrap, each checked against
an exact enumeration, a simulation with a known truth, or a case whose answer is known."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from interp.neurons import bootstrap_mean, cluster_index, neuron_diff, sign_flip_test
from interp.probes import load_probe_suite
from text2emoji.core.errors import UserError

# the old suite's clusters: two sentences with six variants, five with/without pairs, five singles
OLD_SIZES = [6, 6, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1]


def _labels(sizes):
    return np.repeat(np.arange(len(sizes)), sizes)


# --- the probe suite's clusters --------------------------------------------------------------


def test_bundled_suite_has_enough_independent_clusters():
    suite = load_probe_suite()
    idx = suite.clusters()
    assert suite.n_clusters >= 40 and len(suite.prompts) < 90
    assert idx.tolist() == cluster_index([p.cluster for p in suite.prompts], len(idx)).tolist()
    assert sorted(set(idx.tolist())) == list(range(suite.n_clusters))
    by = {p.id: p for p in suite.prompts}
    # the walk/report variants share their pair's cluster; each with/without pair is one cluster
    assert {by[i].cluster for i in by if i.startswith("walk_")} == {"walk"}
    for e, p in suite.pairs():
        assert suite.prompts[e].cluster == suite.prompts[p].cluster
    assert by["chat_weekend"].cluster == "chat_weekend"
    texts = [p.text for p in suite.prompts]
    assert len(set(texts)) == len(texts)
    for trait in suite.trait_emojis:  # every trait has statements of its own beyond the pairs
        assert sum(p.kind == "trait" and p.trait == trait for p in suite.prompts) >= 2


def _write(tmp_path, rows):
    import yaml

    emojis = {t: ["🎉"] for t in ("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism")}
    f = tmp_path / "suite.yaml"
    f.write_text(yaml.safe_dump({"trait_emojis": emojis, "prompts": rows}, allow_unicode=True), encoding="utf-8")
    return f


def _row(id, text="A sentence.", pair=None, emoji=None, **kw):
    return {"id": id, "text": text, "kind": "neutral", "trait": None, "pair": pair, "emoji": emoji,
            "contrast": "c", **kw}


def test_cluster_defaults_to_pair_then_id(tmp_path):
    f = _write(tmp_path, [_row("a", pair="s"), _row("b", "A sentence. 🎉", pair="s", emoji="🎉"), _row("c"),
                          _row("d", cluster="topic"), _row("e", cluster="topic")])
    suite = load_probe_suite(f)
    assert [p.cluster for p in suite.prompts] == ["s", "s", "c", "topic", "topic"]
    assert suite.clusters().tolist() == [0, 0, 1, 2, 2] and suite.n_clusters == 3


def test_a_pair_split_across_clusters_is_an_error_naming_file_prompt_and_field(tmp_path):
    f = _write(tmp_path, [_row("a", pair="s", cluster="x"), _row("b", "A sentence. 🎉", pair="s", emoji="🎉", cluster="y")])
    with pytest.raises(UserError) as e:
        load_probe_suite(f)
    msg = str(e.value)
    assert str(f) in msg and "prompt 2 (b)" in msg and "field 'cluster'" in msg and "pair 's'" in msg
    bad = _write(tmp_path, [_row("a", cluster=""), _row("b")])
    with pytest.raises(UserError, match=r"prompt 1 \(a\): field 'cluster' must be a non-empty string"):
        load_probe_suite(bad)
    one = _write(tmp_path, [_row("a", cluster="x"), _row("b", cluster="x")])
    with pytest.raises(UserError, match=r"form 1 cluster\(s\).*at least 2"):
        load_probe_suite(one)


# --- the sign-flip test -----------------------------------------------------------------------


def _exact(delta, labels):
    """Every sign pattern of the clusters: per-column two-sided p of the mean and the max-|t| p."""
    idx = cluster_index(labels, len(delta))
    c = idx.max() + 1
    means = np.stack([delta[idx == k].mean(0) for k in range(c)])

    def t_of(m):
        sd = m.std(0, ddof=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(sd > 1e-12, m.mean(0) / (sd / np.sqrt(c)), 0.0)

    signs = np.array(list(itertools.product([-1.0, 1.0], repeat=c)))
    flipped_mean = np.abs(np.stack([(s[idx][:, None] * delta).mean(0) for s in signs]))
    max_t = np.array([np.abs(t_of(s[:, None] * means)).max() for s in signs])
    obs_mean, obs_t = np.abs(delta.mean(0)), np.abs(t_of(means))
    p = (flipped_mean >= obs_mean - 1e-12).mean(0)
    p_fwer = (max_t[:, None] >= obs_t - 1e-12).mean(0)
    return p, p_fwer, t_of(means)


@pytest.mark.parametrize("labels", [None, [0, 0, 1, 2, 2, 2, 3, 4, 5, 5]])
def test_sign_flip_matches_exact_enumeration(labels):
    rng = np.random.default_rng(3)
    delta = rng.normal(0.3, 1.0, size=(10, 6))
    delta[:, 5] = 0.0  # a neuron that never changes: t = 0, p = 1
    exact_p, exact_fwer, t = _exact(delta, labels)
    d = neuron_diff(np.zeros_like(delta), delta, n_perm=40000, seed=1, clusters=labels)
    np.testing.assert_allclose(d.p_perm, exact_p, atol=0.01)
    np.testing.assert_allclose(d.p_fwer, exact_fwer, atol=0.01)
    np.testing.assert_allclose(d.t, t)
    assert d.p_fwer[5] == 1.0 and d.p_perm[5] == 1.0 and d.t[5] == 0.0
    assert d.n_clusters == (10 if labels is None else 6)


def test_max_t_finds_a_quiet_effect_beside_a_loud_neuron():
    """A quiet neuron with a real effect (d_z ≈ 1.4) beside one loud neuron and 200 null ones:
    the studentised max-|t| test finds it family-wise; the max-|mean| test (the loud neuron's
    flipped means dwarf the quiet mean) cannot."""
    rng = np.random.default_rng(0)
    n, d = 24, 200
    delta = rng.normal(0, 1.0, size=(n, d))
    delta[:, 0] = rng.normal(20.0, 5.0, size=n)  # loud
    delta[:, 1] = rng.normal(0.14, 0.1, size=n)  # quiet, real
    delta[:, 1] = 0.14 + (delta[:, 1] - delta[:, 1].mean()) / delta[:, 1].std(ddof=1) * 0.1  # d_z exactly 1.4
    res = neuron_diff(np.zeros_like(delta), delta, n_perm=2000, seed=0)
    assert res.effect[1] == pytest.approx(1.4)
    assert res.p_fwer[1] < 0.05 and res.p_fwer[0] < 0.05
    # the max-|mean| family-wise p of the same neuron, same kind of permutations
    signs = np.random.default_rng(1).choice([-1.0, 1.0], size=(2000, n))
    max_mean = np.abs(signs @ delta / n).max(1)
    assert (1 + (max_mean >= abs(delta[:, 1].mean())).sum()) / 2001 > 0.5


def test_cluster_flips_keep_the_type_one_error_where_prompt_flips_do_not():
    """400 null datasets with the old suite's cluster sizes and strong within-cluster
    correlation (a shared cluster value plus small noise, mean zero): flipping whole clusters
    rejects at about α; flipping prompts as if independent rejects far too often."""
    rng = np.random.default_rng(7)
    labels = _labels(OLD_SIZES)
    n_sets = 400
    shared = rng.normal(0, 1.0, size=(len(OLD_SIZES), n_sets))[labels]  # [prompts, datasets]
    data = shared + 0.1 * rng.normal(size=shared.shape)
    per_cluster = sign_flip_test(data, labels, n_perm=999, seed=1).p_mean
    per_prompt = sign_flip_test(data, None, n_perm=999, seed=1).p_mean
    alpha = 0.05
    assert (per_cluster < alpha).mean() <= 0.07
    assert (per_prompt < alpha).mean() > 0.10


def test_per_neuron_p_is_uniform_under_a_null_by_construction():
    """Differences symmetric about zero within clusters of mixed sizes: the per-neuron p-values
    are uniform (KS test, loose threshold), and the family-wise rate of max-|t| is about α."""
    rng = np.random.default_rng(11)
    sizes = [3, 1, 2, 1, 1, 4, 1, 2, 1, 1, 2, 1, 1, 3, 1, 1, 2, 1, 1, 1]
    labels = _labels(sizes)
    data = rng.normal(size=(len(sizes), 600))[labels] + rng.normal(size=(len(labels), 600))
    p = sign_flip_test(data, labels, n_perm=1999, seed=2).p_mean
    assert stats.kstest(p, "uniform").pvalue > 0.01
    any_reject = [sign_flip_test(rng.normal(size=(len(sizes), 30))[labels], labels, n_perm=199, seed=s).p_max_t.min() < 0.05
                  for s in range(150)]
    assert np.mean(any_reject) <= 0.1


def test_sign_flip_is_memory_safe_and_chunk_free_in_its_answer():
    """5000 permutations of 1536 neurons run in chunks; a single-column call on one neuron gives
    that neuron's per-neuron p (the test is columnwise; only max-|t| looks across columns)."""
    rng = np.random.default_rng(0)
    labels = _labels([2] * 20 + [1] * 25)
    delta = rng.normal(0.05, 1, size=(len(labels), 1536))
    full = sign_flip_test(delta, labels, n_perm=5000, seed=4)
    one = sign_flip_test(delta[:, [7]], labels, n_perm=5000, seed=4)
    assert one.p_mean[0] == full.p_mean[7] and full.n_clusters == 45


# --- the cluster bootstrap ----------------------------------------------------------------------


def test_cluster_bootstrap_of_one_cluster_repeated_is_its_mean():
    x = np.array([[1.0, -2.0], [4.0, 0.0], [7.0, 5.0]])
    lo, hi = bootstrap_mean(x, n_boot=300, seed=0, clusters=[3, 3, 3])
    np.testing.assert_allclose(lo, x.mean(0))
    np.testing.assert_allclose(hi, x.mean(0))
    # several clusters that are copies of one: every resample has the same mean
    copies = np.tile(x, (4, 1))
    lo, hi = bootstrap_mean(copies, n_boot=300, seed=0, clusters=np.repeat(np.arange(4), 3))
    np.testing.assert_allclose(lo, x.mean(0))
    np.testing.assert_allclose(hi, x.mean(0))


def test_cluster_bootstrap_resamples_clusters_not_rows():
    """Each row its own cluster = the plain row bootstrap with the same draws; with clusters,
    the interval of strongly clustered data is wider than the row bootstrap's."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(15, 3))
    lo, hi = bootstrap_mean(x, n_boot=500, seed=2)
    idx = np.random.default_rng(2).integers(0, 15, size=(500, 15))
    means = x[idx].mean(1)
    np.testing.assert_allclose(lo, np.percentile(means, 2.5, axis=0))
    np.testing.assert_allclose(hi, np.percentile(means, 97.5, axis=0))
    labels = _labels(OLD_SIZES)
    y = (rng.normal(size=(len(OLD_SIZES), 1)) + 0.05 * rng.normal(size=(len(OLD_SIZES), 1)))[labels]
    c_lo, c_hi = bootstrap_mean(y, 2000, 0, clusters=labels)
    r_lo, r_hi = bootstrap_mean(y, 2000, 0)
    assert c_hi[0] - c_lo[0] > 1.2 * (r_hi[0] - r_lo[0])


# --- the report says what the numbers are -------------------------------------------------------


def test_report_states_cluster_level_p_max_t_and_the_number_of_clusters(tmp_path):
    from text2emoji.report import _neurons

    neurons = {"top_neuron": 7, "top_mean_increase": 0.5, "top_ci": [0.1, 0.9], "top_p_fwer": 0.01,
               "n_neurons_fwer_05": 3, "top_k_also_emoji_selective": 0, "n_clusters": 45, "holdout_top_neuron": 9,
               "holdout_top_mean_increase": 0.2, "holdout_top_ci": [-0.1, 0.4], "n_holdout_ci_above_0": 1}
    trace = {"emojis": ["🎉"], "mean_logprob_any_pre": -9.0, "mean_logprob_any_post": -8.0, "mean_change": 1.0,
             "ci": [0.5, 1.5], "p": 0.002, "n_clusters": 45}
    text = "\n".join(_neurons(tmp_path, {"neurons": {"extraversion": neurons}, "trace": {"extraversion": trace}}))
    assert "45 independent clusters" in text and "cluster-level" in text and "max-|t|" in text
    assert "changes after fine-tuning (two-sided)" in text and "neurons that change" in text
    assert "| 9: +0.20 [-0.10, +0.40] |" in text and "| 0.002 |" in text and "over 45 clusters" in text
    # results written before these keys existed still render
    old = {k: v for k, v in neurons.items() if not k.startswith(("holdout", "n_holdout", "n_clusters"))}
    assert "| — |" in "\n".join(_neurons(tmp_path, {"neurons": {"extraversion": old}}))


def test_holdout_p_values_come_from_the_held_out_clusters_only():
    """p_holdout and its family-wise p over the top k: the cluster sign-flip test run by hand
    on the held-out rows of the selected columns."""
    from interp.neurons import holdout_table, neuron_diff, sign_flip_test, split_clusters

    rng = np.random.default_rng(4)
    clusters = np.repeat(np.arange(12), 2)
    delta = rng.normal(0, 1, size=(24, 8))
    delta[:, 2] += 1.0
    d = neuron_diff(np.zeros_like(delta), delta, n_perm=300, clusters=clusters)
    rows = holdout_table(d, k=3, n_boot=100, seed=0, n_perm=300)
    held = ~split_clusters(12, 0)[clusters]
    idx = [r["neuron"] for r in rows]
    by_hand = sign_flip_test(delta[held][:, idx], clusters[held], 300, 0)
    assert [r["p_holdout"] for r in rows] == by_hand.p_mean.tolist()
    assert [r["p_holdout_fwer"] for r in rows] == by_hand.p_max_t.tolist()
    assert rows[0]["n_clusters_holdout"] == 6 and rows[0]["n_clusters_select"] == 6
