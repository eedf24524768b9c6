"""The mechanistic commands end to end on a tiny model with tiny trained adapters."""

from __future__ import annotations

import json

import numpy as np
import pytest

from finetune.io import write_jsonl
from tests.test_train import _cfg, _rows
from text2emoji.cli import main

TRAITS = ("openness", "neuroticism")


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, tmp_path_factory):
    from finetune.train import train

    d = tmp_path_factory.mktemp("probe-run")
    rows = _rows()
    write_jsonl(rows, d / "data.jsonl")
    for trait in TRAITS:
        train(_cfg(tiny_model_dir, trait=trait, max_steps=2), rows, d / "run" / "train" / trait)
    return d


def _holm_by_hand(ps: list[float]) -> list[float]:
    """Holm's step-down: sorted p times (m - rank), running maximum, capped at 1."""
    order, running, out = np.argsort(ps, kind="stable"), 0.0, [0.0] * len(ps)
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        out[i] = running
    return out


def _common(tiny_model_dir, run_dir):
    args = ["--model", str(tiny_model_dir), "--device", "cpu", "--out", str(run_dir / "run"), "--n-boot", "100"]
    for t in TRAITS:
        args += ["--trait", t]
    return args


def test_activations_cli_writes_what_capture_computes(tiny_model_dir, tmp_path, capsys):
    from interp.capture import capture
    from interp.models import ModelConfig, load_model

    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"text": "the a is"}\n{"text": "w1 w2 w3 w4"}\n', encoding="utf-8")
    out = tmp_path / "acts.npy"
    assert main(["activations", "--model", str(tiny_model_dir), "--device", "cpu", "--prompts", str(prompts),
                 "--out", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["shape"] == [2, 128] and info["site"] == "blocks.1.mlp.hook_post"
    lm = load_model(ModelConfig(model=str(tiny_model_dir), device="cpu"))
    ref = capture(lm.model, lm.tokenizer, ["the a is", "w1 w2 w3 w4"]).activations
    np.testing.assert_array_equal(np.load(out), ref)
    # plain text, one prompt per line; all positions to safetensors
    plain = tmp_path / "p.txt"
    plain.write_text("the a is\nw1 w2 w3 w4\n", encoding="utf-8")
    assert main(["activations", "--model", str(tiny_model_dir), "--device", "cpu", "--prompts", str(plain),
                 "--position", "all", "--out", str(tmp_path / "all.safetensors"), "--backend", "nnsight"]) == 0
    assert json.loads(capsys.readouterr().out)["shape"][0] == len(lm.tokenizer("the a is")["input_ids"]) + 4


def test_activations_cli_errors_name_the_problem(tiny_model_dir, tmp_path, capsys):
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"text": "ok"}\n{"txt": "no"}\n', encoding="utf-8")
    assert main(["activations", "--model", str(tiny_model_dir), "--prompts", str(bad), "--out", str(tmp_path / "a.npy")]) == 1
    assert f"{bad}:2: field 'text' missing" in capsys.readouterr().err
    assert main(["activations", "--model", str(tiny_model_dir), "--prompts", str(bad), "--position", "all",
                 "--out", str(tmp_path / "a.npy")]) == 1
    assert "ragged" in capsys.readouterr().err


def test_emoji_prob_cli_base_and_adapter(tiny_model_dir, run_dir, capsys):
    adapter = run_dir / "run" / "train" / "openness" / "adapter"
    assert main(["emoji-prob", "--model", str(tiny_model_dir), "--device", "cpu", "--adapter", str(adapter),
                 "--prompt", "the a is", "--emoji", "🎉", "--emoji", "👍", "--logit-lens"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["emoji"] for r in out["base"]] == ["🎉", "👍"]
    r = out["adapter_model"][0]
    assert r["no_space"]["logprob"] == pytest.approx(sum(r["no_space"]["per_token_logprob"]))
    assert r["logit_lens_logprob"][-1] == pytest.approx(r["no_space"]["logprob"], abs=1e-4)
    assert out["base"][0]["no_space"]["logprob"] != pytest.approx(r["no_space"]["logprob"])
    assert main(["emoji-prob", "--model", str(tiny_model_dir), "--prompt", "x", "--emoji", ":)"]) == 1
    assert "is not one RGI emoji" in capsys.readouterr().err


def test_neurons_trace_ablate_patch_stages(tiny_model_dir, run_dir, capsys):
    common = _common(tiny_model_dir, run_dir)
    data = ["--data", str(run_dir / "data.jsonl")]
    assert main(["ablate", *common, *data]) == 1
    assert "run `text2emoji neurons" in capsys.readouterr().err
    assert main(["neurons", *common, "--n-perm", "200", "--k", "5"]) == 0
    summary = json.loads(capsys.readouterr().out)
    stage = run_dir / "run" / "neurons"
    tops = json.loads((stage / "top_neurons.json").read_text())
    pre = np.load(stage / "activations" / "pre.npy")
    post = np.load(stage / "activations" / "post_openness.npy")
    # the ranking is the one the saved activations give
    assert [r["neuron"] for r in tops["openness"]["by_mean"]] == list(np.argsort(-(post - pre).mean(0), kind="stable")[:5])
    assert summary["traits"]["openness"]["top_neuron"] == tops["openness"]["by_mean"][0]["neuron"]
    for f in ("neurons.md", "neuron_heatmap.png", "emoji_selectivity.pdf", "overlap.json", "dla.json"):
        assert (stage / f).is_file(), f
    from interp.probes import load_probe_suite

    n_clusters = load_probe_suite().n_clusters
    md = (stage / "neurons.md").read_text()
    assert f"in {n_clusters} independent clusters" in md and "max-|t|" in md and "Selected on" in md
    assert summary["traits"]["openness"]["n_clusters"] == n_clusters
    assert set(tops["openness"]) == {"by_mean", "by_effect", "by_mean_holdout"}
    dla = np.load(stage / "dla_change_openness.npy")
    dla_json = json.loads((stage / "dla.json").read_text())["openness"]
    assert dla.shape == (128, 3) and dla_json["dla_change"] == dla[dla_json["top_neurons"]].tolist()
    assert main(["trace", *common]) == 0
    tr = json.loads((run_dir / "run" / "trace" / "trace.json").read_text())
    trs = json.loads((run_dir / "run" / "trace" / "summary.json").read_text())["openness"]
    assert trs["n_clusters"] == n_clusters and 0 < trs["p"] <= 1
    both = json.loads((run_dir / "run" / "trace" / "summary.json").read_text())
    p1, p2 = sorted(both[t]["p"] for t in ("openness", "neuroticism"))  # Holm over two traits, by hand
    assert sorted(both[t]["p_holm"] for t in both) == pytest.approx([min(1, 2 * p1), max(min(1, 2 * p1), p2)])
    assert len(tr["traits"]["openness"]["logit_lens_post"]) == 2
    assert (run_dir / "run" / "trace" / "logit_lens.png").is_file()
    # the stage's post-PEFT emoji probability = the adapter loaded alone, scored independently
    from interp.models import ModelConfig, load_model
    from interp.probes import load_probe_suite
    from interp.tracing import emoji_logprobs

    suite = load_probe_suite()
    alone = load_model(ModelConfig(model=str(tiny_model_dir), device="cpu"), adapter=str(run_dir / "run" / "train" / "openness" / "adapter"))
    lp = emoji_logprobs(alone.model, alone.tokenizer, suite.texts, suite.trait_emojis["openness"], chat=True)
    np.testing.assert_allclose(tr["traits"]["openness"]["any_emoji_post"], np.log(np.exp(lp).sum(1)), atol=1e-4)
    # pre-PEFT (scored once for all traits, then split by trait) = the base loaded alone
    from interp.tracing import logit_lens

    base = load_model(ModelConfig(model=str(tiny_model_dir), device="cpu"))
    for t in ("openness", "neuroticism"):
        emojis = suite.trait_emojis[t]
        lp = emoji_logprobs(base.model, base.tokenizer, suite.texts, emojis, chat=True)
        np.testing.assert_allclose(tr["traits"][t]["any_emoji_pre"], np.log(np.exp(lp).sum(1)), atol=1e-4)
        np.testing.assert_allclose(tr["traits"][t]["logprob_pre"]["no_space"], lp, atol=1e-4)
        lens = logit_lens(base.model, base.tokenizer, suite.texts, emojis[0], chat=True)
        np.testing.assert_allclose(tr["traits"][t]["logit_lens_pre"], lens.mean(0), atol=1e-4)
    capsys.readouterr()
    n = ["--k", "3", "--n-random", "4", "--n-questions", "3"]
    assert main(["ablate", *common, *data, *n, "--n-random-generation", "1", "--max-new-tokens", "3"]) == 0
    ab = json.loads((run_dir / "run" / "ablate" / "ablation.json").read_text())
    assert ab["openness"]["zero"]["random_control"]["n_draws"] == 4
    assert ab["openness"]["candidates"] == [r["neuron"] for r in tops["openness"]["by_mean"][:3]]
    assert "emoji_rate" in ab["openness"]["generation"]["intact"]
    # Holm over traits x modes, by hand
    keys = [(t, m) for t in ("openness", "neuroticism") for m in ("zero", "mean")]
    holm = _holm_by_hand([ab[t][m]["random_control"]["p"] for t, m in keys])
    assert [ab[t][m]["p_holm"] for t, m in keys] == pytest.approx(holm)
    assert main(["patch", *common, *data, *n]) == 0
    pa = json.loads((run_dir / "run" / "patch" / "patching.json").read_text())
    assert pa["neuroticism"]["random_control"]["n_draws"] == 4
    assert (run_dir / "run" / "patch" / "patching_vs_random.png").is_file()
    # Holm over traits x directions, by hand: sorted p times (m - rank), running max, capped at 1
    ps = [pa[t][key] for key in ("random_control", "reverse") for t in ("openness", "neuroticism")]
    ps = [(x["p"] if key == "random_control" else x["random_control"]["p"])
          for key, x in zip(["random_control"] * 2 + ["reverse"] * 2, ps, strict=True)]
    got = [pa["openness"]["p_holm"], pa["neuroticism"]["p_holm"], pa["openness"]["p_holm_reverse"],
           pa["neuroticism"]["p_holm_reverse"]]
    assert got == pytest.approx(_holm_by_hand(ps))
    assert main(["calibrate", *common, *data, "--k", "3", "--n-null", "4", "--n-random-null", "3", "--n-perm", "50",
                 "--n-questions", "3"]) == 0
    cal = json.loads((run_dir / "run" / "calibrate" / "summary.json").read_text())
    assert list(cal) == ["neurons", "trace", "ablation", "patching"]
    for fam in cal.values():
        assert fam["n_null"] == 4 and fam["alpha"] == 0.05 and 0 <= fam["false_positive_rate"] <= 1
        assert fam["comparison"]["n_null"] == 4
    assert (run_dir / "run" / "calibrate" / "calibration.png").is_file()
    capsys.readouterr()
    # finished stages are reused
    assert main(["patch", *common, *data, *n]) == 0
    assert (run_dir / "run" / "patch" / "meta.json").is_file()
