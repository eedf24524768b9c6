"""Stage ``steering`` on a tiny random-weight model: the sweep's numbers are the library's
numbers on the saved answers, the questions are where they should be, α* follows the rule
(checked by hand), PEFT vs steer is paired against a hand-made evaluate stage, bad input is one
line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from finetune.io import write_jsonl
from tests.test_train import _rows
from text2emoji.cli import main

TRAIT = "openness"
N_TEST = 3
TOKENS = 4
# the questions the tiny dataset's first three openness test topics ask (t0, t1, t2; see _rows)
PEFT_TEXTS = ["i love new ideas art and imagination", "i w5 w6", "curious about art and music and new ideas"]


def _args(model_dir, data, out, *extra: str, alphas=("0", "4")) -> list[str]:
    return ["steering", "--model", str(model_dir), "--device", "cpu", "--data", str(data), "--out", str(out),
            "--trait", TRAIT, *(x for a in alphas for x in ("--alpha", a)), "--n-vector-questions", "3",
            "--n-sweep-questions", "3", "--n-questions", str(N_TEST), "--max-new-tokens", str(TOKENS), "--n-boot", "100",
            "--trait-metric", "word", *extra]


def _fake_evaluate(out, model_dir, questions, texts, *, do_sample=False, max_new_tokens=TOKENS, trait=TRAIT):
    """A finished evaluate stage as the steering stage reads it: meta.json, config.json and PEFT
    rows in generations.jsonl."""
    d = out / "evaluate"
    d.mkdir(parents=True, exist_ok=True)
    (d / "meta.json").write_text(json.dumps({"status": "complete", "config_hash": "hand-made"}))
    (d / "config.json").write_text(json.dumps({"config": {"do_sample": do_sample, "max_new_tokens": max_new_tokens,
                                                          "model": {"model": str(model_dir)}}}))
    rows = [{"key": f"peft|{trait}|t{i}", "trait": trait, "method": "peft", "topic": f"t{i}", "question": q, "text": t}
            for i, (q, t) in enumerate(zip(questions, texts, strict=True))]
    (d / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def ran(tiny_model_dir, tmp_path_factory):
    """One run of the stage through the CLI, beside a hand-made evaluate stage."""
    tmp = tmp_path_factory.mktemp("steering")
    data = tmp / "d.jsonl"
    write_jsonl(_rows(), data)
    out = tmp / "run"
    _fake_evaluate(out, tiny_model_dir, [f"what are your thoughts on w{i}" for i in range(N_TEST)], PEFT_TEXTS)
    args = _args(tiny_model_dir, data, out)
    assert main(args) == 0
    return out, args


def _jsonl(path):
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_stage_writes_every_file_and_is_reused(ran):
    from text2emoji.stages.steering import STEERING

    out, args = ran
    d = out / "steering"
    for name in ("steering.json", "steering.md", "emoji_table.json", "emoji_table.csv", "emoji_table.md",
                 "trait_alignment.json", "generations.jsonl", "sweep.jsonl", f"vectors/{TRAIT}.npy",
                 f"vectors/{TRAIT}.json", "steering_sweep.pdf", "config.json"):
        assert (d / name).is_file(), name
    assert (d / "steering_sweep.png").stat().st_size > 5000
    s = json.loads((d / "steering.json").read_text())
    vec = np.load(d / "vectors" / f"{TRAIT}.npy")
    assert vec.dtype == np.float32 and vec.shape == (2, 64) and s["layer"] == 1  # the middle of 2 blocks: 2 // 2
    t = s["traits"][TRAIT]
    assert t["vector_norm"] == pytest.approx(float(np.linalg.norm(vec[1].astype(np.float64))))
    assert [p["alpha"] for p in t["sweep"]] == [0.0, 4.0] and t["alpha"] in (0.0, 4.0)
    assert t["usable"] == (t["alpha"] > 0) and t["reason"]
    gens = _jsonl(d / "generations.jsonl")
    assert {(g["method"], g["alpha"], g["layer"]) for g in gens} == {("steer", t["alpha"], 1)} and len(gens) == N_TEST
    inputs = json.loads((d / "config.json").read_text())["inputs"]
    assert set(inputs) == {"dataset", "trait_metric", "prompts", "evaluate"} and inputs["trait_metric"] == "word"
    # the metrics the report reads, from the files alone
    m = STEERING.metrics(d)
    assert set(m["steering"][TRAIT]) >= {"layer", "alpha", "usable", "vector_norm", "sweep", "n_vector_questions",
                                         "n_sweep_questions"}
    assert m["steering"][TRAIT]["n_vector_questions"] == m["steering"][TRAIT]["n_sweep_questions"] == 3
    assert set(m["steering"][TRAIT]["sweep"][1]) >= {"alpha", "emoji_rate", "esr", "trait_alignment",
                                                      "trait_alignment_ci", "coherence", "coherence_rise",
                                                      "coherence_rise_ci"}
    row = json.loads((d / "emoji_table.json").read_text())["rows"][0]
    ta = json.loads((d / "trait_alignment.json").read_text())
    assert s["test"] == {f"{TRAIT}/steer": {"emoji": row, "alignment": ta["rows"][0]}}
    assert m["steer_emoji_table"] == {f"{TRAIT}/steer": {
        "n_answers": N_TEST, "emoji_rate": row["emoji_rate"], "emoji_rate_ci": [row["emoji_rate_lo"], row["emoji_rate_hi"]],
        "esr": row["esr"], "esr_ci": [row["esr_lo"], row["esr_hi"]], "top_emojis": row["top_emojis"]}}
    assert set(m["steer_alignment"][f"{TRAIT}/steer"]) == {"trait_alignment", "ci", "predicted"}
    assert set(m["steer_vs_peft"][TRAIT]) == {"p", "p_holm", "diff", "diff_ci"}
    # reused: nothing recomputed, nothing rewritten
    meta = (d / "meta.json").read_bytes()
    assert main(args) == 0
    assert (d / "meta.json").read_bytes() == meta


def test_sweep_numbers_are_the_library_numbers(ran, tiny_model_dir):
    from interp.behaviour.emoji_metrics import bootstrap_emoji_metrics
    from interp.behaviour.generation import DecodeSettings, generate
    from interp.models import ModelConfig, load_model
    from interp.steering import coherence, steered_generate

    out, _ = ran
    d = out / "steering"
    s = json.loads((d / "steering.json").read_text())["traits"][TRAIT]
    sweep = _jsonl(d / "sweep.jsonl")
    lm = load_model(ModelConfig(model=str(tiny_model_dir), device="cpu"))
    settings = DecodeSettings(max_new_tokens=TOKENS)
    qs = s["sweep_questions"]
    answers = {a: [r["text"] for r in sweep if r["alpha"] == a] for a in (0.0, 4.0)}
    assert [r["question"] for r in sweep if r["alpha"] == 0.0] == qs
    # alpha = 0 is plain greedy generation of the same chat prompts
    assert answers[0.0] == generate(lm.model, lm.tokenizer, qs, settings)
    # alpha = 4 is the saved vector's row at the layer, added at that layer
    v = np.load(d / "vectors" / f"{TRAIT}.npy")[1]
    assert answers[4.0] == steered_generate(lm.model, lm.tokenizer, qs, v, 1, 4.0, settings)
    nll = {a: coherence(lm.model, lm.tokenizer, qs, answers[a]) for a in answers}
    for p in s["sweep"]:
        a = p["alpha"]
        ref = bootstrap_emoji_metrics(answers[a], n_boot=100, seed=0)
        assert (p["emoji_rate"], p["esr"]) == (ref["emoji_rate"]["value"], ref["esr"]["value"])
        assert p["emoji_rate_ci"] == [ref["emoji_rate"]["lo"], ref["emoji_rate"]["hi"]]
        assert p["esr_ci"] == [ref["esr"]["lo"], ref["esr"]["hi"]]
        np.testing.assert_allclose([r["coherence"] for r in sweep if r["alpha"] == a], nll[a], rtol=1e-5)
        assert p["coherence"] == pytest.approx(float(np.mean(nll[a])), rel=1e-5)
        assert p["coherence_rise"] == pytest.approx(float(np.mean(nll[a] - nll[0.0])), rel=1e-4, abs=1e-6)
        assert p["coherence_rise_ci"][0] <= p["coherence_rise"] <= p["coherence_rise_ci"][1]
        labels = [r["label"] for r in sweep if r["alpha"] == a]
        assert p["trait_alignment"] == sum(x == TRAIT for x in labels) / len(labels)
        assert sum(p["predicted"].values()) == len(labels)


def test_vector_and_sweep_questions_are_disjoint_train_questions_and_test_is_evaluates(ran, tiny_model_dir):
    from interp.behaviour.evaluate import build_jobs
    from interp.models import load_tokenizer

    out, _ = ran
    s = json.loads((out / "steering" / "steering.json").read_text())["traits"][TRAIT]
    rows = _rows()
    train = sorted((r for r in rows if r.trait == TRAIT and r.split == "train"), key=lambda r: r.topic.lower())
    vq, sq = s["vector_questions"], s["sweep_questions"]
    assert vq + sq == [r.question for r in train][:6] and not set(vq) & set(sq)
    assert not set(vq + sq) & {r.question for r in rows if r.split == "test"}
    assert json.loads((out / "steering" / f"vectors/{TRAIT}.json").read_text())["questions"] == vq
    jobs = build_jobs(rows, load_tokenizer(str(tiny_model_dir)), [TRAIT], ["peft"], N_TEST, 3, 0)
    gens = _jsonl(out / "steering" / "generations.jsonl")
    assert [(g["topic"], g["question"]) for g in gens] == [(j.topic, j.question) for j in jobs]


def test_steering_questions_split_a_short_pool():
    from interp.behaviour.steer_sweep import steering_questions
    from text2emoji.core.schema import Row

    rows = [Row(TRAIT, f"T{i}", f"q{i}", "a", "train") for i in range(5)] + [Row(TRAIT, "T9", "q9", "a", "test")]
    rows.append(Row(TRAIT, "T0", "q0", "b", "train"))  # one question twice: counted once
    assert steering_questions(rows, TRAIT, 32, 32) == (["q0", "q1", "q2"], ["q3", "q4"])
    assert steering_questions(rows, TRAIT, 4, 1) == (["q0", "q1", "q2", "q3"], ["q4"])
    assert steering_questions(rows, TRAIT, 1, 1) == (["q0"], ["q1"])
    with pytest.raises(ValueError, match="1 train question"):
        steering_questions(rows[:1], TRAIT, 8, 8)


def test_choose_alpha_by_hand():
    from interp.behaviour.steer_sweep import choose_alpha

    # ties go to the smaller alpha
    c = choose_alpha([0.0, 2.0, 4.0], [0.25, 0.5, 0.5], [0.0, 0.1, 0.2], 0.5)
    assert (c.alpha, c.usable) == (2.0, True)
    # the best alignment breaks the coherence limit: the best within it wins; the limit is inclusive
    assert choose_alpha([0.0, 2.0, 4.0, 8.0], [0.1, 0.3, 0.4, 0.9], [0.0, 0.2, 0.5, 0.6], 0.5).alpha == 4.0
    # given in any order
    assert choose_alpha([8.0, 0.0, 2.0], [0.9, 0.1, 0.3], [0.6, 0.0, 0.2], 0.5).alpha == 2.0
    # no alpha > 0 within the limit: 0, not usable, and said so
    c = choose_alpha([0.0, 2.0, 4.0], [0.0, 0.5, 0.75], [0.0, 0.51, 2.0], 0.5)
    assert (c.alpha, c.usable) == (0.0, False) and "coherence rise within 0.5" in c.reason
    # within the limit but no better than unsteered (a tie with 0 goes to 0)
    c = choose_alpha([0.0, 2.0, 4.0], [0.5, 0.5, 0.25], [0.0, 0.1, 0.2], 0.5)
    assert (c.alpha, c.usable) == (0.0, False) and "raises trait alignment" in c.reason
    # an alpha without a coherence (no answer had a token) or with a NaN rise never qualifies
    assert choose_alpha([0.0, 2.0, 4.0], [0.0, 1.0, 1.0], [0.0, None, float("nan")], 0.5).alpha == 0.0
    with pytest.raises(ValueError, match="must be among"):
        choose_alpha([1.0, 2.0], [0.1, 0.2], [0.0, 0.1], 0.5)


class _Stub:
    """A trait metric by hand: an answer is aligned iff it starts with 'yes'."""

    classes_ = np.asarray([TRAIT, "neuroticism", "none"])

    def predict(self, texts):
        return np.asarray([self.trait_of.get(t, "none") if t.startswith("yes") else "none" for t in texts])

    def __init__(self, trait_of):
        self.trait_of = trait_of


def test_peft_vs_steer_paired_by_hand(tmp_path, tiny_model_dir):
    from interp.behaviour.alignment import paired_difference_ci
    from interp.models import ModelConfig
    from text2emoji.core.runs import RunDir
    from text2emoji.stages.steering import SteeringConfig, _steer_vs_peft

    out = tmp_path / "run"
    cfg = SteeringConfig(model=ModelConfig(model=str(tiny_model_dir), device="cpu"), run_dir=RunDir(out=str(out)),
                         max_new_tokens=TOKENS)
    qs = [f"q{i}" for i in range(5)]
    steer = [{"trait": t, "method": "steer", "question": q, "text": text}
             for t, texts in ((TRAIT, ["no"] * 5), ("neuroticism", ["no", "yes n", "no", "no", "no"]))
             for q, text in zip(qs, texts, strict=True)]
    clf = _Stub({"yes o": TRAIT, "yes n": "neuroticism"})
    tests, skipped = _steer_vs_peft(cfg, steer, clf)
    assert tests == [] and set(skipped) == {TRAIT, "neuroticism"} and "no finished evaluate" in skipped[TRAIT]
    _fake_evaluate(out, tiny_model_dir, qs, ["yes o"] * 5)
    with open(out / "evaluate" / "generations.jsonl", "a") as f:
        for q, text in zip(qs, ["yes n", "no", "no", "no", "no"], strict=True):
            f.write(json.dumps({"trait": "neuroticism", "method": "peft", "question": q, "text": text}) + "\n")
        f.write(json.dumps({"trait": TRAIT, "method": "base", "question": "q0", "text": "yes o"}) + "\n")
    tests, skipped = _steer_vs_peft(cfg, steer, clf)
    assert skipped == {}
    o, n = (next(p for p in tests if p.trait == t) for t in (TRAIT, "neuroticism"))
    # openness: PEFT aligned on all 5, steer on none -> 5 discordant pairs one way: p = 2 * 0.5^5
    assert (o.a, o.b, o.n_pairs, o.both, o.only_a, o.only_b, o.neither) == ("peft", "steer", 5, 0, 5, 0, 0)
    assert o.p_mcnemar == pytest.approx(0.0625) and o.diff == 1.0
    assert o.diff_ci == pytest.approx(paired_difference_ci(0, 5, 0, 0))
    # neuroticism: one discordant pair each way -> p = 1
    assert (n.both, n.only_a, n.only_b, n.neither, n.p_mcnemar, n.diff) == (0, 1, 1, 3, 1.0, 0.0)
    # Holm over the two traits
    assert o.p_holm == pytest.approx(0.125) and n.p_holm == pytest.approx(1.0)
    # a trait whose test questions evaluate did not all answer is left out, and why
    tests, skipped = _steer_vs_peft(cfg, steer + [{"trait": TRAIT, "method": "steer", "question": "q9", "text": "no"}],
                                    clf)
    assert [p.trait for p in tests] == ["neuroticism"] and "5 of the 6 test questions" in skipped[TRAIT]
    # answers decoded otherwise are not paired
    for kw, why in ((dict(do_sample=True), "sampled"), (dict(max_new_tokens=8), "8 new tokens, these 4")):
        _fake_evaluate(out, tiny_model_dir, qs, ["yes o"] * 5, **kw)
        tests, skipped = _steer_vs_peft(cfg, steer, clf)
        assert tests == [] and why in skipped[TRAIT]


def test_paired_result_of_the_run_is_paired_tests_on_both_files(ran):
    from interp.behaviour.alignment import paired_tests
    from text2emoji.stages.base import scorer_of

    out, _ = ran
    ta = json.loads((out / "steering" / "trait_alignment.json").read_text())
    gens = _jsonl(out / "steering" / "generations.jsonl") + _jsonl(out / "evaluate" / "generations.jsonl")
    (want,) = paired_tests(gens, scorer_of("word", None, 0), a="peft", others=("steer",))
    assert ta["paired"] == [want.to_dict()] and ta["paired_skipped"] == {}
    assert "PEFT vs steer on the same test questions" in (out / "steering" / "steering.md").read_text()


@pytest.mark.parametrize("extra, message", [
    (["--alpha", "2"], "alphas (--alpha): 0, the unsteered reference, must be among them; got 4, 2"),
    (["--alpha", "-1"], "alphas (--alpha): the sweep steers towards the trait, alpha >= 0"),
    (["--alpha", "4"], "alphas (--alpha): each alpha once"),
    (["--layer", "2"], "layer (--layer): 2 out of range for a model with 2 layers [-2, 1]"),
    (["--trait", "calm"], "traits: unknown calm"),
])
def test_bad_input_is_one_line(extra, message, tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    write_jsonl(_rows(), data)
    no_zero = extra == ["--alpha", "2"]
    args = _args(tiny_model_dir, data, tmp_path / "run", *extra, alphas=("4",) if no_zero else ("0", "4"))
    assert main(args) == 1
    err = capsys.readouterr().err
    # one error line, the last (progress lines before it: the dataset is read before the model says how deep it is)
    last = err.strip().splitlines()[-1]
    assert last.startswith("text2emoji: error: ") and message in last and err.count("text2emoji: error") == 1
    assert not (tmp_path / "run" / "steering").exists()  # nothing left that pins the stage


def test_steer_is_a_table_method_but_not_an_evaluate_method(capsys):
    from interp.behaviour.evaluate import emoji_table

    gens = [{"trait": TRAIT, "method": m, "text": "Hi 🎉."} for m in ("steer", "peft", "base")]
    assert [r.method for r in emoji_table(gens, n_boot=50).rows] == ["base", "peft", "steer"]
    assert main(["evaluate", "--method", "steer"]) == 1
    assert "methods: unknown steer" in capsys.readouterr().err
