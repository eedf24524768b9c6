"""Choose the trait metric by measurement: each candidate of ``interp.behaviour.trait_metric``
fitted on the metric set's ``fit`` topics, and, as the baseline, the metric the study used
before (TF-IDF + logistic regression fitted on the bundled v1 train answers, five traits, no
"none"), each measured on the metric set's held-out topics and the bundled v1 test split
(``evaluate_scorer``), the v2 test split's accuracy beside it, with its fitting time and
scoring speed (on 300 held-out texts; fitting the embedding metric the first time also embeds
the fit part, then cached). Prints one JSON object.

    python bench/trait_metric.py          # from the repository root, with the project's venv
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from finetune.io import bundled_path  # noqa: E402
from finetune.validate import load_rows  # noqa: E402
from interp.behaviour.alignment import fit_trait_classifier  # noqa: E402
from interp.behaviour.trait_metric import CANDIDATES, TraitScorer, evaluate_scorer, read_metric_set  # noqa: E402


def main() -> None:
    import argparse

    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    rows = read_metric_set()
    held = [r for r in rows if r.part == "held_out"]
    bundled = load_rows([bundled_path("v1")])  # the old metric is fitted on v1's train answers
    test = [(r.answer, r.trait) for r in bundled if r.split == "test"]
    test_v2 = [(r.answer, r.trait) for r in load_rows([bundled_path("v2")]) if r.split == "test"]
    out = {"n_fit": sum(r.part == "fit" for r in rows), "n_held_out": len(held), "n_bundled_test": len(test),
           "candidates": {}}
    arms = {f"metric set: {k}": (lambda k=k: TraitScorer(k, rows)) for k in CANDIDATES}
    arms["metric set: word+char, classes unweighted"] = lambda: TraitScorer("word+char", rows, balanced=False)
    arms["baseline: word TF-IDF on the training answers"] = lambda: fit_trait_classifier(
        [r for r in bundled if r.split == "train"])
    for name, make in arms.items():
        t0 = time.perf_counter()
        model = make()
        fit_s = time.perf_counter() - t0
        texts = [r.text for r in held[:300]]
        t0 = time.perf_counter()
        model.predict(texts)
        per_s = len(texts) / (time.perf_counter() - t0)
        res = evaluate_scorer(lambda xs, m=model: list(m.predict(xs)), held, test)
        v2 = list(model.predict([t for t, _ in test_v2]))
        res["bundled_v2_test_accuracy"] = sum(p == t for p, (_, t) in zip(v2, test_v2, strict=True)) / len(test_v2)
        out["candidates"][name] = {**res, "fit_seconds": round(fit_s, 2), "texts_per_second": round(per_s)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
