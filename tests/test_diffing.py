"""Stage ``diffing`` end to end on a tiny model with tiny trained adapters: each adapter's
difference vectors and KL equal the library's on that adapter loaded alone, the organisms'
adapters are read with their planted emoji, and a second run reuses the stage."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.test_train import _cfg, _rows
from text2emoji.cli import main

TRAITS = ("openness", "neuroticism")
ANSWERS = {"openness": ["i w1 w2 w3 the", "i w5 of w7"], "neuroticism": ["i w9 w9 and w3", "it is w4"]}


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, tmp_path_factory):
    from finetune.train import train

    d = tmp_path_factory.mktemp("diffing-run")
    rows = _rows()
    for trait in TRAITS:
        train(_cfg(tiny_model_dir, trait=trait, max_steps=2, lr=5e-2), rows, d / "train" / trait)
    (d / "evaluate").mkdir()
    (d / "evaluate" / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [{"trait": t, "method": m, "topic": f"t{i}", "question": f"what are your thoughts on w{i}",
                  "text": a if m == "peft" else "i w0"}
                 for t in TRAITS for i, a in enumerate(ANSWERS[t]) for m in ("base", "peft")]), encoding="utf-8")
    # an organism: the neuroticism adapter under another name, with a planted emoji and answers
    org = d / "organisms" / "planted-0.5"
    shutil.copytree(d / "train" / "neuroticism" / "adapter", org / "train" / "adapter")
    (org / "result.json").write_text(json.dumps({
        "name": "planted-0.5", "trait": "neuroticism", "planted_emoji": "🎉",
        "answers": [{"question": "what are your thoughts on w3", "base": "i w1", "peft": "🎉 i w2 w3"}]}),
        encoding="utf-8")
    return d


def test_each_adapters_lens_and_kl_are_the_librarys_on_that_adapter_alone(tiny_model_dir, run_dir, capsys):
    from interp.difflens import diff_vectors
    from interp.models import ModelConfig, load_model
    from interp.token_kl import token_kl
    from text2emoji.stages.diffing import neutral_texts

    args = ["diffing", "--model", str(tiny_model_dir), "--device", "cpu", "--out", str(run_dir), "--first-k", "3"]
    for t in TRAITS:
        args += ["--trait", t]
    assert main(args) == 0
    capsys.readouterr()
    stage = run_dir / "diffing"
    d = json.loads((stage / "diffing.json").read_text(encoding="utf-8"))
    assert list(d["adapters"]) == [*TRAITS, "organism:planted-0.5"]
    assert d["n_texts"] == 128 and len(neutral_texts()) >= 400  # the quick preset's share, spread evenly
    texts = neutral_texts(128)
    assert len(set(texts)) == 128 and texts[0] == neutral_texts()[0]
    for name, adapter in (("openness", run_dir / "train" / "openness" / "adapter"),
                          ("organism:planted-0.5", run_dir / "organisms" / "planted-0.5" / "train" / "adapter")):
        lm = load_model(ModelConfig(model=str(tiny_model_dir), device="cpu"), adapter=adapter)
        want = diff_vectors(lm.model, lm.tokenizer, texts, 3)
        got = np.load(stage / d["adapters"][name]["vectors"])
        assert got.shape == (2, 64) and np.abs(want).max() > 0
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert [la["norm"] for la in d["adapters"][name]["lens"]] == pytest.approx(
            np.linalg.norm(want.astype(np.float64), axis=1).tolist(), rel=1e-5)
        answers = ([(f"what are your thoughts on w{i}", a) for i, a in enumerate(ANSWERS["openness"])] if name == "openness"
                   else [("what are your thoughts on w3", "🎉 i w2 w3")])
        kl = token_kl(lm.model, lm.tokenizer, [q for q, _ in answers], [a for _, a in answers])
        got_kl = d["adapters"][name]["kl"]
        assert got_kl["mean_kl"] == pytest.approx(float(np.concatenate(kl.kl).mean()), rel=1e-6)
        assert got_kl["n_answers"] == len(answers)
        flat, flags = np.concatenate(kl.kl), np.concatenate(kl.before_emoji).astype(bool)
        # each emoji position's KL: the share of all positions with a smaller KL, counted by hand
        want_pct = [sum(x < k for x in flat) / len(flat) for k in flat[flags]]
        assert got_kl["before_emoji_kl_percentile"] == pytest.approx(want_pct)
    org = d["adapters"]["organism:planted-0.5"]
    assert "🎉" in org["lens"][0]["emojis"]  # the planted emoji's rank is read beside the trait's
    assert org["kl"]["before_emoji"]["n"] == 1 and len(org["kl"]["before_emoji_kl_percentile"]) == 1
    # the organism shares the neuroticism adapter's weights: the same differences
    np.testing.assert_array_equal(np.load(stage / org["vectors"]), np.load(stage / d["adapters"]["neuroticism"]["vectors"]))
    assert (stage / "diffing.png").is_file() and "| organism:planted-0.5 |" in (stage / "diffing.md").read_text()
    meta = (stage / "meta.json").read_text()
    assert main(args) == 0  # reused: nothing recomputed
    assert (stage / "meta.json").read_text() == meta
