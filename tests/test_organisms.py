"""Training data of the known-answer organisms (finetune/organisms.py)."""

from __future__ import annotations

import pytest

from finetune.organisms import PLANTED, SHUFFLED, plant_emojis, shuffle_traits
from interp.emojis import find_emojis
from text2emoji.core.schema import TRAITS, Row


def _rows() -> list[Row]:
    return [Row(t, f"{t}-topic{i}", f"What about {t} {i}?", f"A {t} answer number {i}.", "train" if i < 8 else "test")
            for t in TRAITS for i in range(10)]


@pytest.mark.parametrize("fraction, n", [(0.0, 0), (0.25, 2), (0.5, 4), (1.0, 8)])
def test_plant_emojis_marks_the_set_fraction_of_train_answers_only(fraction, n):
    rows = _rows()
    planted = plant_emojis(rows, "extraversion", fraction, ["🎉", "😄"], seed=1)
    assert len(planted) == 10 and all(r.trait == "extraversion" and r.source == PLANTED for r in planted)
    with_emoji = [r for r in planted if find_emojis(r.answer)]
    assert len(with_emoji) == n and all(r.split == "train" for r in with_emoji)
    for r in with_emoji:  # one emoji at the end, after a space, the answer otherwise untouched
        base, emoji = r.answer.rsplit(" ", 1)
        assert emoji in ("🎉", "😄") and find_emojis(base) == []
    assert [r.question for r in planted] == [r.question for r in rows if r.trait == "extraversion"]
    assert all(find_emojis(r.answer) == [] for r in rows)  # the study's rows are not touched
    assert plant_emojis(rows, "extraversion", fraction, ["🎉", "😄"], seed=1) == planted  # seeded


def test_plant_emojis_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        plant_emojis(_rows(), "openness", 1.5, ["🎉"], 0)
    with pytest.raises(ValueError, match="no train rows"):
        plant_emojis([r for r in _rows() if r.split == "test"], "openness", 0.5, ["🎉"], 0)
    with pytest.raises(ValueError, match="at least one emoji"):
        plant_emojis(_rows(), "openness", 0.5, [], 0)


def test_shuffle_traits_keeps_questions_and_splits_and_draws_answers_from_every_trait():
    rows = _rows()
    shuffled = shuffle_traits(rows, "neuroticism", seed=0)
    mine = [r for r in rows if r.trait == "neuroticism"]
    assert sorted((r.question, r.split) for r in shuffled) == sorted((r.question, r.split) for r in mine)
    assert all(r.source == SHUFFLED and r.trait == "neuroticism" for r in shuffled)
    by_answer = {r.answer: r for r in rows}
    donors = [by_answer[r.answer] for r in shuffled]
    assert all(d.split == r.split for d, r in zip(donors, shuffled, strict=True))  # no test answer trains
    assert len({d.trait for d in donors}) > 1  # the trait's own answers are not kept
    assert len({r.answer for r in shuffled}) == len(shuffled)  # drawn without replacement


def _summary(p=(0.01, 0.02, 0.03, 0.04, 0.2, 0.5, 0.6), rate=(3, 6, 0, 7), lp=1.0, delta=-1.0, random=0.0,
             ablated=(2, 5, 0, 9), recovered=0.3, removed=0.2, opening=(0.0, 1.0, 0.1, 0.9)):
    """An adapter's summary as organism_summary writes it: seven p-values and the effects' signs
    (``opening``: answers opening with an emoji on the base, intact, with the attribution
    neurons patched, with random sets)."""
    return {"kind": "positive", "planted_fraction": 0.5, "emoji_rate_paired": list(rate), "p_emoji_rate": p[0],
            "logprob_change": {"mean": lp}, "p_logprob": p[1],
            "ablation": {"delta_logprob": delta, "random_mean": random, "p": p[2], "paired": list(ablated), "p_rate": p[3]},
            "patching": {"fraction_recovered": recovered, "p": p[4], "fraction_removed": removed, "p_reverse": p[5]},
            "attribution": {"opening_rate_base": opening[0], "opening_rate_intact": opening[1],
                            "opening_rate_patched": opening[2], "opening_rate_random_mean": opening[3], "p_rate": p[6]}}


def test_flags_need_holm_within_the_adapter_and_the_direction_of_an_emoji_mechanism():
    from text2emoji.stages.organisms import with_holm

    s = with_holm(_summary())
    # Holm over the adapter's seven tests, by hand: 0.01*7, 0.02*6, 0.03*5, 0.04*4, 0.2*3, 0.5*2, 0.6*1
    # (running max)
    assert [s["p_emoji_rate_holm"], s["p_logprob_holm"], s["ablation"]["p_holm"], s["ablation"]["p_rate_holm"],
            s["patching"]["p_holm"], s["patching"]["p_reverse_holm"], s["attribution"]["p_rate_holm"]
            ] == pytest.approx([0.07, 0.12, 0.15, 0.16, 0.6, 1.0, 1.0])
    assert not any(s["detected"].values())
    s = with_holm(_summary(p=(0.001, 0.001, 0.001, 0.001, 0.001, 0.9, 0.001)))
    assert s["detected"] == {"emoji_rate": True, "logprob": True, "ablation": True, "ablation_rate": True,
                             "patching": True, "patching_reverse": False, "attribution": True}
    # the same p-values with every effect the wrong way round: nothing is flagged
    wrong = with_holm(_summary(p=(0.001,) * 7, rate=(3, 0, 6, 7), lp=-1.0, delta=1.0, ablated=(2, 0, 5, 9),
                               recovered=-0.3, removed=-0.2, opening=(0.0, 0.5, 0.9, 0.5)))
    assert not any(wrong["detected"].values())
    # fewer answers open with an emoji than intact, but not fewer than with random sets: no flag
    assert not with_holm(_summary(p=(0.001,) * 7, opening=(0.0, 1.0, 0.5, 0.4)))["detected"]["attribution"]
    # an adapter that does not raise the share over the base has nothing to localize: no flag
    assert not with_holm(_summary(p=(0.001,) * 7, opening=(0.5, 0.5, 0.1, 0.5)))["detected"]["attribution"]
    # a test that did not run (None) is not counted in the family and flags nothing
    none = with_holm(_summary(p=(0.01, None, None, None, None, None, None)))
    assert none["p_emoji_rate_holm"] == pytest.approx(0.01) and none["detected"]["emoji_rate"]
    assert none["p_logprob_holm"] is None and not none["detected"]["logprob"]


def test_detection_limit_is_the_smallest_fraction_flagged_at_every_larger_one():
    from text2emoji.stages.organisms import TESTS, detection_limit

    flags = {0.0: {"emoji_rate", "logprob"},  # 0%: a null, never a dose (a flag here is a false positive)
             0.05: {"logprob", "emoji_rate"}, 0.1: {"logprob", "ablation"},  # 10%: the rate not flagged again
             0.25: {"logprob", "ablation", "emoji_rate"}, 0.5: {"logprob", "ablation", "emoji_rate", "patching"}}
    doses = [{"planted_fraction": f, "detected": {t: t in on for t in TESTS}} for f, on in flags.items()]
    assert detection_limit(doses) == {"emoji_rate": 0.25, "logprob": 0.05, "ablation": 0.1, "ablation_rate": None,
                                      "patching": 0.5, "patching_reverse": None, "attribution": None}


def test_fractions_name_their_organisms_and_refuse_to_collide():
    from text2emoji.core.config import ConfigError
    from text2emoji.stages.organisms import OrganismsConfig

    cfg = OrganismsConfig(fractions=[0.5, 0.0, 0.5, 1.0], end_control=True)
    assert [o[0] for o in cfg.organisms()] == ["planted-0", "planted-0.5", "planted-1", "planted-end-1", "shuffled"]
    assert OrganismsConfig(fractions=[0.0], end_control=True).organisms()[-2:] == [
        ("planted-0", "positive", 0.0, "start"), ("shuffled", "negative", None, None)]  # no end control of 0%
    with pytest.raises(ConfigError, match="share the directory planted-0.1"):
        OrganismsConfig(fractions=[0.1, 0.1000001]).validate()
    # one organism's hash: the trait named or by default is the same organism
    assert (OrganismsConfig().one("positive", 1.0, "start").config_hash()
            == OrganismsConfig(traits=["extraversion"]).one("positive", 1.0, "start").config_hash())


def test_paired_emoji_test_is_mcnemar_on_the_discordant_answers():
    from scipy.stats import binomtest

    from interp.experiments import paired_emoji_test

    intact = ["🎉 Yes."] * 9 + ["No."] * 3
    ablated = ["Yes."] * 8 + ["🎉 Yes."] + ["No."] * 2 + ["🎉 No."]
    table, p = paired_emoji_test(intact, ablated)
    assert table == [1, 8, 1, 2]
    # exact McNemar = two-sided binomial test on the 9 discordant pairs
    assert p == pytest.approx(binomtest(1, 9, 0.5).pvalue)


def _approx(xs):
    return [None if x is None else pytest.approx(x) for x in xs]


def _holm_by_hand(ps):
    """Holm's step-down adjustment written out: sorted p times (m - rank), running maximum."""
    have = sorted((p, i) for i, p in enumerate(ps) if p is not None)
    m, out, running = len(have), [None] * len(ps), 0.0
    for rank, (p, i) in enumerate(have):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def test_organisms_stage_on_a_tiny_model(tmp_path, tiny_model_dir, capsys):
    """Mechanics of the stage on a tiny random model (results mean nothing here): the organisms'
    rows, the metrics.json interface, Holm within each organism, pruning, reuse, the report."""
    import json

    from tests.test_cli import small_dataset
    from text2emoji.cli import main
    from text2emoji.report import write_report
    from text2emoji.stages.organisms import TESTS

    data = small_dataset(tmp_path / "d.jsonl")
    out = tmp_path / "run"
    common = ["--model", str(tiny_model_dir), "--device", "cpu", "--data", str(data), "--out", str(out)]
    # the study's adapter of the trait and its neurons ranking: the side-by-side row and the comparison
    assert main(["train", "--trait", "extraversion", *common, "--max-steps", "1", "--eval-rows", "2"]) == 0
    assert main(["neurons", "--trait", "extraversion", "--model", str(tiny_model_dir), "--device", "cpu",
                 "--out", str(out), "--n-perm", "50", "--k", "10"]) == 0
    capsys.readouterr()
    args = ["organisms", *common,
            "--max-steps", "2", "--n-questions", "3", "--max-new-tokens", "3", "--n-random", "5", "--n-perm", "50",
            "--n-random-generation", "2", "--batch-size", "8", "--fraction", "1.0", "--fraction", "0.5",
            "--end-control"]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    root = out / "organisms"
    s = json.loads((root / "summary.json").read_text())
    assert printed["positive"] == s["positive"]
    # the interface of issue 13
    for key in ("study", "positive", "negative", "positive_end"):
        e = s[key]
        assert e["trait"] == "extraversion"
        assert {"planted_fraction", "emoji_rate_base", "emoji_rate_peft", "emoji_rate_peft_ci"} <= set(e)
        assert {"emoji_rate_intact", "emoji_rate_ablated", "delta_logprob", "p", "p_holm"} <= set(e["ablation"])
        assert {"fraction_recovered", "p"} <= set(e["patching"])
        assert set(e["detected"]) == set(TESTS)
        # Holm over the adapter's own seven tests, by hand (a test that could not run, None, is left out)
        where = [(e, "p_emoji_rate"), (e, "p_logprob"), (e["ablation"], "p"), (e["ablation"], "p_rate"),
                 (e["patching"], "p"), (e["patching"], "p_reverse"), (e["attribution"], "p_rate")]
        a = e["attribution"]
        assert {"emoji_rate_intact", "emoji_rate_patched", "opening_rate_base", "opening_rate_intact",
                "opening_rate_patched", "delta_logprob", "p_rate", "p_rate_holm"} <= set(a)
        # the test's p: the larger of the rise (exact McNemar, intact vs base) and the localization
        from scipy.stats import binomtest

        both, up, down, _ = a["rise"]
        p_rise = binomtest(up, up + down, 0.5).pvalue if up + down else 1.0
        assert a["p_rise"] == pytest.approx(p_rise) and a["p_rate"] == pytest.approx(max(p_rise, a["p_localize"]))
        assert a["opening_rate_intact"] - a["opening_rate_base"] == pytest.approx((up - down) / a["n_test"])
        assert [w.get(f"{k}_holm") for w, k in where] == _approx(_holm_by_hand([w.get(k) for w, k in where]))
    assert (s["positive"]["planted_fraction"], s["positive"]["position"]) == (1.0, "start")
    # log P(emoji) post - base per question (the patching experiment's cached scorer) against plain
    # scoring of the adapter on and off, and its Wilcoxon p against scipy's
    from scipy.stats import wilcoxon

    from interp.behaviour.evaluate import load_adapters
    from interp.intervene import any_emoji_logprob
    from interp.models import ModelConfig, adapter_disabled, load_model
    from interp.probes import load_probe_suite
    from interp.tracing import emoji_logprobs

    r = json.loads((root / "planted-1" / "result.json").read_text())
    lm = load_model(ModelConfig(model=str(tiny_model_dir), device="cpu"))
    model = load_adapters(lm.model, {"extraversion": root / "planted-1" / "train" / "adapter"})
    emojis = load_probe_suite().trait_emojis["extraversion"]
    post = any_emoji_logprob(emoji_logprobs(model, lm.tokenizer, r["questions"], emojis))
    with adapter_disabled(model):
        base = any_emoji_logprob(emoji_logprobs(model, lm.tokenizer, r["questions"], emojis))
    diff = r["logprob"]["post_minus_base"]
    assert diff == pytest.approx((post - base).tolist(), abs=1e-4) and any(d != 0 for d in diff)
    assert sum(diff) / len(diff) == pytest.approx(s["positive"]["logprob_change"]["mean"], abs=1e-4)
    assert s["positive"]["p_logprob"] == pytest.approx(wilcoxon(diff).pvalue)
    assert s["negative"]["planted_fraction"] is None and s["positive_end"]["position"] == "end"
    assert s["study"]["kind"] == "study" and (root / "study" / "meta.json").is_file()
    # the study's adapter probed here is the one the study trained, on the study's questions
    assert s["study"]["n_questions"] == s["positive"]["n_questions"] == 3
    c = s["comparison"]
    assert c["control"] == "planted-1" and c["neurons"] == s["positive"]["neurons"]["top"][:10]
    neg_top = json.loads((root / "shuffled" / "result.json").read_text())["neurons"]["top"]
    assert c["negative_overlap"] == sorted(set(c["neurons"]) & set(neg_top[:10]))
    ext = c["traits"]["extraversion"]
    study_top = json.loads((out / "neurons" / "top_neurons.json").read_text())["extraversion"]["by_mean"]
    assert ext["overlap"] == sorted(set(c["neurons"]) & {r["neuron"] for r in study_top[:10]})
    # each control neuron's rank by increase under the study adapter, by hand from the saved activations
    import numpy as np

    d = (np.load(out / "neurons" / "activations" / "post_extraversion.npy")
         - np.load(out / "neurons" / "activations" / "pre.npy")).mean(0)
    # (ties, as under an adapter that barely moved, may take any of their places)
    assert all((d > d[n]).sum() < r <= (d >= d[n]).sum() for n, r in zip(c["neurons"], ext["rank"], strict=True))
    assert ext["mean_increase"] == pytest.approx([float(d[n]) for n in c["neurons"]])
    assert [d["planted_fraction"] for d in s["dose_response"]] == [0.5, 1.0]
    assert set(s["detection_limit"]) == set(TESTS)
    # the organisms' training rows: labelled, planted where and as often as asked, test answers clean
    def rows(name):
        return [json.loads(line) for line in (root / name / "train_rows.jsonl").read_text().splitlines()]

    half = rows("planted-0.5")
    train = [r for r in half if r["split"] == "train"]
    assert sum(r["answer"].startswith("🎉 ") for r in train) == round(0.5 * len(train))
    assert all(find_emojis(r["answer"]) == [] for r in half if r["split"] == "test")
    assert all(r["answer"].startswith("🎉 ") for r in rows("planted-1") if r["split"] == "train")
    assert all(r["answer"].endswith(" 🎉") for r in rows("planted-end-1") if r["split"] == "train")
    assert all(find_emojis(r["answer"]) == [] for r in rows("shuffled"))
    assert {r["control"] for r in half} == {PLANTED} and {r["control"] for r in rows("shuffled")} == {SHUFFLED}
    # the study's dataset is not touched
    study = (out / "dataset" / "opinion_qa.jsonl").read_text(encoding="utf-8")
    assert find_emojis(study) == [] and "control:" not in study
    # a finished organism keeps its adapter, not its checkpoints
    for name in ("planted-0.5", "planted-1", "planted-end-1", "shuffled"):  # (the study's adapter is the study's)
        assert (root / name / "train" / "adapter" / "adapter_model.safetensors").is_file()
        assert not (root / name / "train" / "checkpoints").exists()
    # reused as they are; another fraction adds one organism, the others stay
    finished = json.loads((root / "planted-1" / "meta.json").read_text())["finished"]
    assert main([*args[:-5], "--fraction", "1.0", "--fraction", "0.25", "--end-control"]) == 0
    assert json.loads((root / "planted-1" / "meta.json").read_text())["finished"] == finished
    s2 = json.loads((root / "summary.json").read_text())
    assert [d["planted_fraction"] for d in s2["dose_response"]] == [0.25, 1.0]
    # the report: the section, its table and figure; metrics.json carries the interface
    m = write_report(out)
    assert m["organisms"]["positive"] == s2["positive"] and m["organisms"]["negative"] == s2["negative"]
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "## Can this run detect the effect?" in report and "negative: shuffled traits" in report
    assert "study: extraversion adapter" in report and report.index("## Can this run") < report.index("## 4.")
    assert "](organisms/organisms.png)" in report and (root / "organisms.png").is_file()
