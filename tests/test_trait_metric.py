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
    return TraitScorer()


def test_the_metric_set_is_independent_of_the_training_data_and_balanced():
    rows = read_metric_set()
    train_topics = {json.loads(line)["topic"].lower() for line in open("finetune/data/opinion_qa.jsonl", encoding="utf-8")}
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


def test_the_bundled_metric_keeps_the_low_pole_and_neutral_texts_off_the_trait(bundled):
    # measured on the held-out topics (card): 84% of introverted and calm texts kept off their
    # trait, 96% of neutral ones at "none"; the old metric: 40%, 90% and 0%
    assert bundled.label(INTROVERTED).count("extraversion") <= 1, bundled.label(INTROVERTED)
    assert bundled.label(CALM).count("neuroticism") <= 1, bundled.label(CALM)
    assert bundled.label(NEUTRAL).count(NONE) >= 3, bundled.label(NEUTRAL)
    assert bundled.label(["", "🎉🎉"]) == [NONE, NONE]


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
