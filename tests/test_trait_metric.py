"""The trait metric (interp/behaviour/trait_metric.py) and ``text2emoji traits score``: mechanics
on small files, measurements against hand counts, and behaviour of the bundled metric on texts
written for these tests (the issue's failure cases of the old metric)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from interp.behaviour.trait_metric import (
    LABELS,
    NONE,
    MetricRow,
    TraitScorer,
    evaluate_scorer,
    read_metric_set,
)
from text2emoji.core.schema import TRAITS


@pytest.fixture(scope="module")
def bundled():
    return TraitScorer()  # the default: the embedded model's embedding (slow the first time: cached after)


def test_the_metric_set_is_independent_of_the_training_data_and_balanced():
    rows = read_metric_set()
    train_topics = {json.loads(line)["topic"].lower() for v in ("opinion_qa.jsonl", "opinion_qa_v2.jsonl")
                    for line in open(f"finetune/data/{v}", encoding="utf-8")}
    assert len(rows) >= 2000
    assert not {r.topic.lower() for r in rows} & train_topics
    for t in TRAITS:
        assert sum(r.trait == t and r.pole == "high" for r in rows) >= 200
        assert sum(r.trait == t and r.pole == "low" for r in rows) >= 150
    assert sum(r.pole == "neutral" for r in rows) >= 400
    # split by topic: no topic on both sides
    fit = {r.topic.lower() for r in rows if r.part == "fit"}
    held = {r.topic.lower() for r in rows if r.part == "held_out"}
    assert fit and held and not fit & held
    assert {r.label for r in rows} == set(LABELS)


@pytest.mark.slow
def test_scores_are_probabilities_over_the_five_traits_and_none(bundled):
    texts = ["I threw a huge party and danced with everyone until dawn!", "The museum opens at nine."]
    p = bundled.scores(texts)
    assert p.shape == (2, len(LABELS)) and np.allclose(p.sum(1), 1.0)
    assert bundled.label(texts) == [LABELS[i] for i in p.argmax(1)] == list(bundled.predict(texts))


def test_a_scorer_fits_on_its_fit_part_only(tmp_path):
    rows = [MetricRow(f"I love crowds and loud parties number {i} with friends", "extraversion", "high", f"t{i}", "opinion", "fit")
            for i in range(6)]
    rows += [MetricRow(f"The bridge is {i} metres long and opened in spring", None, "neutral", f"n{i}", "fact", "fit")
             for i in range(6)]
    rows += [MetricRow("The bridge is long", None, "neutral", "x", "fact", "held_out")]
    s = TraitScorer("word", rows)
    assert s.model.named_steps["lr"].classes_.tolist() == ["extraversion", NONE]  # held-out row not fitted on
    assert s.scores(["crowds and parties"])[0, LABELS.index("openness")] == 0.0  # unseen labels get 0
    with pytest.raises(ValueError, match="choose one of"):
        TraitScorer("roberta", rows)


def test_evaluate_scorer_counts_by_hand():
    held = [MetricRow("a", "extraversion", "high", "t", "opinion", "held_out"),
            MetricRow("b", "extraversion", "low", "t", "opinion", "held_out"),
            MetricRow("c", "neuroticism", "low", "t", "opinion", "held_out"),
            MetricRow("d", None, "neutral", "t", "fact", "held_out")]
    answers = {"a": "extraversion", "b": "extraversion", "c": NONE, "d": NONE}

    def label(texts):
        return [answers.get(t, "extraversion" if "with friends" in t else NONE) for t in texts]

    m = evaluate_scorer(label, held, [("a", "extraversion"), ("d", "openness")])
    # a right; b wrong (a low pole's label is "none"); c right; d right
    assert m["held_out_accuracy"] == 0.75 and m["high_pole_accuracy"] == 1.0
    assert m["low_pole_not_own_trait"] == 0.5 and m["low_pole_none"] == 0.5 and m["neutral_none"] == 1.0
    assert m["per_trait_low_not_own"] == {"extraversion": 0.0, "neuroticism": 1.0}
    assert m["bundled_test_accuracy"] == 0.5
    # "d with friends." moves to extraversion; no other keyword moves it
    assert m["keyword_flips"]["extraversion"] == 1.0
    assert all(v == 0.0 for k, v in m["keyword_flips"].items() if k != "extraversion")


# Written for this test, in none of the data: the old metric (TF-IDF fitted on the training
# answers) called 6/10 introverted and 9/10 calm statements extraversion and neuroticism, and
# every neutral fact, an empty answer and an emoji-only answer conscientiousness.
INTROVERTED = ["I avoid parties and would much rather spend Saturday reading alone.",
               "Crowds wear me out; one quiet coffee with a close friend is plenty.",
               "I skipped the office party and had a peaceful evening at home with my cat.",
               "Small talk with strangers drains me, so I keep to myself at gatherings."]
CALM = ["I never worry about exams; if one goes badly there is always another chance.",
        "When my flight was cancelled I shrugged, found a café and read my book.",
        "Bad news at work rarely bothers me, I deal with it and sleep fine.",
        "Deadlines do not stress me at all; I stay relaxed and it gets done."]
NEUTRAL = ["The library opens at nine and closes at six on weekdays.",
           "Water boils at 100 degrees Celsius at sea level.",
           "The train to Leeds leaves from platform four.",
           "Paris is the capital of France."]


@pytest.mark.slow
def test_the_bundled_metric_keeps_the_low_pole_and_neutral_texts_off_the_trait(bundled):
    # measured on the held-out topics (card): 84% of introverted and calm texts kept off their
    # trait, 96% of neutral ones at "none"; the old metric: 40%, 90% and 0%
    assert bundled.label(INTROVERTED).count("extraversion") <= 1, bundled.label(INTROVERTED)
    assert bundled.label(CALM).count("neuroticism") <= 1, bundled.label(CALM)
    assert bundled.label(NEUTRAL).count(NONE) >= 3, bundled.label(NEUTRAL)
    assert bundled.label(["", "🎉🎉"]) == [NONE, NONE]


@pytest.mark.slow
def test_traits_score_writes_one_json_line_per_row_in_order(tmp_path, capsys):
    from text2emoji.cli import main

    f = tmp_path / "a.jsonl"
    f.write_text("".join(json.dumps({"answer": t}) + "\n" for t in [*INTROVERTED[:2], *NEUTRAL[:2]]), encoding="utf-8")
    assert main(["traits", "score", str(f), "--field", "answer"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(out) == 4 and all(set(o) == {"label", "scores"} and set(o["scores"]) == set(LABELS) for o in out)
    assert all(o["label"] == max(o["scores"], key=o["scores"].get) for o in out)
    assert [o["label"] for o in out] == TraitScorer().label([*INTROVERTED[:2], *NEUTRAL[:2]])
    # a row without the field: the file, line and field named, nothing printed
    f.write_text(json.dumps({"answer": "x"}) + "\n" + json.dumps({"text": "y"}) + "\n", encoding="utf-8")
    assert main(["traits", "score", str(f), "--field", "answer"]) != 0
    cap = capsys.readouterr()
    assert cap.out == "" and f"{f}:2" in cap.err and "answer" in cap.err


def test_paired_alignment_change_is_the_discordant_difference():
    from interp.behaviour.alignment import paired_tests

    class Fixed:  # labels by the text itself
        def predict(self, texts):
            return np.asarray([t.split(":")[0] for t in texts])

    gens = []
    for q in range(10):  # PEFT aligned on 8 questions, base on 3 (both on 2)
        gens.append({"trait": "openness", "method": "peft", "question": f"q{q}", "text": "openness:" if q < 8 else "none:"})
        gens.append({"trait": "openness", "method": "base", "question": f"q{q}",
                     "text": "openness:" if q in (0, 1, 9) else "none:"})
    (t,) = paired_tests(gens, Fixed(), others=("base",))
    assert (t.both, t.only_a, t.only_b, t.neither) == (2, 6, 1, 1)
    assert t.diff == pytest.approx((6 - 1) / 10) and t.diff_ci[0] <= t.diff <= t.diff_ci[1]


def _tiny_classifier(path, labels):
    """A tiny random RoBERTa sequence classifier with a word-level tokenizer, saved locally."""
    import torch
    from transformers import RobertaConfig, RobertaForSequenceClassification

    from tests.conftest import tiny_tokenizer

    torch.manual_seed(0)
    tok = tiny_tokenizer()
    cfg = RobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64, pad_token_id=0, bos_token_id=1,
                        eos_token_id=2, num_labels=len(labels), id2label=dict(enumerate(labels)),
                        label2id={v: k for k, v in enumerate(labels)})
    RobertaForSequenceClassification(cfg).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_an_hf_classifier_plugs_in_with_its_labels_mapped(tmp_path, capsys):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from text2emoji.cli import main

    labels = ["Openness", "CON", "extraversion_high", "agree", "LABEL_4"]
    d = _tiny_classifier(tmp_path / "clf", labels)
    texts = ["w1 w2 the", "what are your thoughts on w7", "w10"]
    f = tmp_path / "t.txt"
    f.write_text("\n".join(texts) + "\n", encoding="utf-8")
    assert main(["traits", "score", str(f), "--metric", f"hf:{d}"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    # by hand: the model's softmax, each label's probability moved to its trait; LABEL_4 to none
    model, tok = AutoModelForSequenceClassification.from_pretrained(d).eval(), AutoTokenizer.from_pretrained(d)
    with torch.no_grad():
        p = model(**tok(texts, return_tensors="pt", padding=True)).logits.softmax(-1).numpy()
    want = {"openness": p[:, 0], "conscientiousness": p[:, 1], "extraversion": p[:, 2], "agreeableness": p[:, 3],
            "neuroticism": 0 * p[:, 0], NONE: p[:, 4]}
    for i, o in enumerate(out):
        assert o["scores"] == pytest.approx({k: float(v[i]) for k, v in want.items()}, abs=1e-5)
    # an explicit map wins; a map naming no trait is refused with the labels listed
    assert main(["traits", "score", str(f), "--metric", f"hf:{d}", "--label-map", '{"LABEL_4": "neuroticism"}']) == 0
    out2 = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["scores"]["neuroticism"] for o in out2] == pytest.approx(p[:, 4].tolist(), abs=1e-5)
    bad = _tiny_classifier(tmp_path / "bad", ["LABEL_0", "LABEL_1"])
    assert main(["traits", "score", str(f), "--metric", f"hf:{bad}"]) != 0
    assert "no label of the classifier names a trait (LABEL_0, LABEL_1)" in capsys.readouterr().err


def test_the_judge_rates_each_text_through_an_openai_compatible_endpoint(tmp_path, monkeypatch, capsys):
    from tests.test_build import FakeChatServer
    from text2emoji.cli import main

    class JudgeServer(FakeChatServer):
        pass

    replies = {"extraversion": "4", "neuroticism": "Score: 2 out of 5", "openness": "I cannot rate this."}
    srv = JudgeServer(key="sk-judge")
    handler = srv.httpd.RequestHandlerClass

    def do_POST(self):  # noqa: N802
        if self.headers.get("Authorization") != "Bearer sk-judge":
            self.send_error(401)
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv.requests.append(body)
        prompt = body["messages"][-1]["content"]
        trait = next(t for t in replies if f"trait {t} (" in prompt)
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": replies[trait]}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    handler.do_POST = do_POST
    f = tmp_path / "a.jsonl"
    rows = [{"text": "Parties every night!", "trait": "extraversion", "question": "Q1?"},
            {"text": "I fret about it.", "trait": "neuroticism"}, {"text": "Hmm.", "trait": "openness"}]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-judge")
    with srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.url)
        assert main(["traits", "judge", str(f), "--judge", "openai:judge-model"]) == 0
    cap = capsys.readouterr()
    assert [json.loads(line)["pae"] for line in cap.out.splitlines()] == [4, 2, None]
    assert "sk-judge" not in cap.out + cap.err
    first = srv.requests[0]
    assert first["model"] == "judge-model" and first["temperature"] == 0.0
    assert "Parties every night!" in first["messages"][0]["content"] and "Q1?" in first["messages"][0]["content"]
    # a row with an unknown trait: file, line and field named
    f.write_text(json.dumps({"text": "x", "trait": "grumpiness"}) + "\n", encoding="utf-8")
    assert main(["traits", "judge", str(f), "--judge", "openai:judge-model"]) != 0
    assert f"{f}:1: field 'trait'" in capsys.readouterr().err


def test_evaluate_takes_a_plugged_in_metric_and_a_judge(tiny_model_dir, tmp_path, monkeypatch):
    """``evaluate --trait-metric hf:DIR --judge openai:MODEL`` on a tiny model (base answers only):
    trait alignment by the classifier, PAE per answer and per (trait, method) by hand, and the
    key written nowhere."""
    from finetune.io import write_jsonl
    from tests.test_build import FakeChatServer
    from tests.test_evaluate import _rows
    from text2emoji.cli import main

    clf = _tiny_classifier(tmp_path / "clf", ["Openness", "CON", "EXT", "AGR", "NEU"])
    data = tmp_path / "d.jsonl"
    write_jsonl(_rows(), data)
    srv = FakeChatServer(key="sk-secret-judge")
    calls = []

    def do_POST(self):  # noqa: N802 (a judge that answers 3, then 5, then nonsense, in turn)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        calls.append(self.headers.get("Authorization"))
        reply = ["3", "5", "no idea"][(len(calls) - 1) % 3]
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        assert body["messages"]

    srv.httpd.RequestHandlerClass.do_POST = do_POST
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-judge")
    with srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.url)
        assert main(["evaluate", "--model", str(tiny_model_dir), "--device", "cpu", "--data", str(data),
                     "--out", str(tmp_path / "run"), "--trait", "openness", "--trait", "neuroticism",
                     "--method", "base", "--n-questions", "3", "--max-new-tokens", "3", "--n-boot", "50",
                     "--trait-metric", f"hf:{clf}", "--judge", "openai:judge"]) == 0
    stage = tmp_path / "run" / "evaluate"
    assert json.loads((stage / "trait_alignment.json").read_text())["metric"] == f"hf:{clf}"
    rows = [json.loads(line) for line in (stage / "pae.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and [r["pae"] for r in rows] == [3, 5, None, 3, 5, None]
    summary = json.loads((stage / "pae.json").read_text())["by_trait_method"]
    for key, s in summary.items():
        vals = [r["pae"] for r in rows if f"{r['trait']}/{r['method']}" == key]
        rated = [v for v in vals if v is not None]
        assert s["n_rated"] == len(rated) and s["n_unrated"] == len(vals) - len(rated)
        assert s["mean"] == pytest.approx(sum(rated) / len(rated))
    assert all(c == "Bearer sk-secret-judge" for c in calls)
    assert not any("sk-secret-judge" in p.read_text(errors="ignore") for p in (tmp_path / "run").rglob("*") if p.is_file())


def test_the_paired_difference_interval_covers_and_is_never_a_point():
    """Newcombe's paired interval: ± the Wilson bound with every pair concordant (by hand), and
    near its 95% coverage on 16 questions, simulated (Newcombe 1998 reports 0.93-0.97 for this
    method at small n)."""
    from interp.behaviour.alignment import paired_difference_ci
    from interp.behaviour.emoji_metrics import wilson

    assert paired_difference_ci(0, 0, 0, 16) == pytest.approx([-wilson(0, 16)["hi"], wilson(0, 16)["hi"]])
    lo, hi = paired_difference_ci(16, 0, 0, 0)
    assert lo < 0 < hi
    rng = np.random.default_rng(0)
    for probs in ([0.1, 0.3, 0.1, 0.5], [0.3, 0.1, 0.1, 0.5], [0.0, 0.5, 0.05, 0.45]):
        true = probs[1] - probs[2]
        covered = [lo <= true <= hi for lo, hi in (paired_difference_ci(*map(int, rng.multinomial(16, probs)))
                                                   for _ in range(1500))]
        assert 0.91 <= np.mean(covered) <= 0.99, (probs, np.mean(covered))


@pytest.mark.slow
def test_the_cards_default_row_is_what_the_metric_measures(bundled):
    """The metric set card's row for the default is what evaluate_scorer computes now."""
    import re
    from pathlib import Path

    from finetune.io import bundled_path
    from finetune.validate import load_rows

    card = (Path(__file__).resolve().parent.parent / "finetune/data/trait_metric/CARD.md").read_text(encoding="utf-8")
    row = re.search(r"\| \*\*embedding \(default\)\*\* \| \*\*([0-9.]+)%\*\* \| ([0-9.]+)% \| ([0-9.]+)% \| ([0-9.]+)% \| "
                    r"([0-9.]+)% \| ([0-9.]+)%", card)
    held = [r for r in read_metric_set() if r.part == "held_out"]
    test = [(r.answer, r.trait) for r in load_rows([bundled_path("v1")]) if r.split == "test"]
    m = evaluate_scorer(bundled.label, held, test)
    want = [m["held_out_accuracy"], m["high_pole_accuracy"], m["low_pole_not_own_trait"], m["low_pole_none"],
            m["neutral_none"], m["bundled_test_accuracy"]]
    # rounding, and float32 sums that differ between CPUs may move a text or two near a boundary
    assert [float(x) / 100 for x in row.groups()] == pytest.approx(want, abs=4e-3)


@pytest.mark.slow
def test_the_embedding_is_the_mean_residual_stream_after_14_blocks_read_by_hand(tmp_path, monkeypatch):
    """EmbeddingFeatures against transformers' own hidden states (output_hidden_states[14], one
    text at a time, no padding), through a batch of unequal texts; the cache is written on fit
    and read back equal."""
    import torch

    from interp.behaviour.trait_metric import EMBEDDING_LAYER, EmbeddingFeatures

    monkeypatch.setenv("TEXT2EMOJI_CACHE", str(tmp_path / "cache"))
    texts = ["Short.", "A much longer sentence about trains, weather and what I had for lunch today!", "Two words"]
    f = EmbeddingFeatures(batch_size=2)
    got = f.transform(texts)
    model, tok = f._lm.model, f._lm.tokenizer
    for i, t in enumerate(texts):
        with torch.no_grad():
            hs = model(**tok(t, return_tensors="pt"), output_hidden_states=True).hidden_states[EMBEDDING_LAYER]
        np.testing.assert_allclose(got[i], hs[0].mean(0).numpy(), rtol=1e-4, atol=1e-4)
    assert not list((tmp_path / "cache").rglob("*.npz"))  # scoring caches nothing
    fitted = f.fit_transform(texts)
    (cached,) = list((tmp_path / "cache").rglob("*.npz"))
    np.testing.assert_allclose(fitted, got, rtol=1e-5, atol=1e-5)
    f._embed = None  # a second fit must read every text from the cache
    np.testing.assert_array_equal(f.fit_transform(texts[::-1]), fitted[::-1])
    assert cached.is_file()


@pytest.mark.slow
def test_the_embedding_metric_has_no_word_contributions(bundled):
    assert bundled.kind == "embedding" and not hasattr(bundled, "named_steps")
