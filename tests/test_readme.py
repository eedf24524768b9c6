"""The README's notebook example runs as written, on the embedded model, with an adapter made
here (random LoRA weights stand in for a trained adapter: the example is about mechanics), and
gives the numbers the ``neurons``, ``ablate`` and ``patch`` stages write for the same adapter,
questions and settings."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
TRAIT = "extraversion"
N_QUESTIONS = 3


def _notebook_block() -> str:
    m = re.search(r"<!-- notebook example -->\n```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert m, "README lost its notebook example"
    return m.group(1)


def _fill(code: str, old: str, new: str) -> str:
    assert old in code, f"README's notebook example lost {old!r}"
    return code.replace(old, new)


@pytest.fixture(scope="module")
def run(embedded_dir, tmp_path_factory):
    """An adapter under OUT/train/extraversion/adapter; the neurons, ablate and patch stages on
    it; then the README's block, with the adapter's path and the stages' questions filled in."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from text2emoji.core.runs import RunDir
    from text2emoji.stages.base import execute
    from text2emoji.stages.intervene import ABLATE, PATCH, AblateConfig, PatchConfig
    from text2emoji.stages.neurons import NEURONS, NeuronsConfig

    out = tmp_path_factory.mktemp("readme-run")
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(embedded_dir)
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                           target_modules=["gate_proj", "up_proj", "down_proj"]))
    adapter = out / "train" / TRAIT / "adapter"
    lora.save_pretrained(adapter)
    del base, lora
    # the README's settings: k=10, 10 random sets, defaults otherwise (seed 0, 5000 permutations,
    # 2000 bootstrap resamples); ablation in zero mode, no generation
    common = dict(traits=[TRAIT], run_dir=RunDir(out=str(out)))  # device "auto", as the README's ModelConfig()
    execute(NEURONS, NeuronsConfig(**common, k=10))
    inter = dict(common, k=10, n_random=10, n_questions=N_QUESTIONS)
    execute(ABLATE, AblateConfig(**inter, modes=["zero"], generation=False))
    execute(PATCH, PatchConfig(**inter))
    read = lambda rel: json.loads((out / rel).read_text(encoding="utf-8"))  # noqa: E731
    stages = {"summary": read("neurons/summary.json"), "top": read("neurons/top_neurons.json"),
              "ablation": read("ablate/ablation.json")[TRAIT], "patching": read("patch/patching.json")[TRAIT]}
    assert stages["ablation"]["questions"] == stages["patching"]["questions"]
    code = _fill(_notebook_block(), '"results/main/train/extraversion/adapter"', repr(str(adapter)))
    code = _fill(code, "questions = suite.texts", f"questions = {stages['ablation']['questions']!r}")
    ns: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, str(README), "exec"), ns)
    ns["__printed__"] = printed.getvalue()
    return ns, stages


@pytest.mark.slow
def test_readme_notebook_example_runs(run):
    ns, _ = run
    from interp.probes import load_probe_suite

    assert ns["post"].shape == (len(load_probe_suite().prompts), 1536)
    assert len(ns["top"]) == 10 and ns["abl"].random_control.n_draws == 10
    assert len(ns["questions"]) == N_QUESTIONS
    assert ns["pat"].candidate_delta.ci_lo <= ns["pat"].candidate_delta.mean <= ns["pat"].candidate_delta.ci_hi
    assert "mean_increase" in ns["__printed__"]


@pytest.mark.slow
def test_readme_notebook_example_gives_the_stages_numbers(run):
    ns, stages = run
    ext = ns["ext"]
    # neurons: the same top table, the same per-trait summary
    assert ext.top_neurons == [r["neuron"] for r in stages["top"][TRAIT]["by_mean"]]
    for mine, theirs in zip(ext.by_mean, stages["top"][TRAIT]["by_mean"], strict=True):
        assert mine.keys() == theirs.keys()
        for key in ("rank", "neuron"):
            assert mine[key] == theirs[key]
        for key in ("mean_increase", "ci_lo", "ci_hi", "effect_dz", "t", "p_perm", "p_fwer", "pre_mean", "post_mean",
                    "selectivity_pre", "selectivity_post"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-6, abs=1e-9), key
        assert mine["dla_change"] == pytest.approx(theirs["dla_change"], rel=1e-5, abs=1e-8)
    s, theirs = ext.summary(), stages["summary"]["traits"][TRAIT]
    assert s.keys() | {"top_p_fwer_holm"} == theirs.keys()  # Holm over traits is the whole result's
    assert ns["res"].summary()["traits"][TRAIT]["top_p_fwer_holm"] == theirs["top_p_fwer_holm"]  # one trait each
    for key in ("top_neuron", "n_neurons_fwer_05", "n_neurons", "top_k_also_emoji_selective", "top_emoji_selective_post"):
        assert s[key] == theirs[key], key
    assert s["top_mean_increase"] == pytest.approx(theirs["top_mean_increase"], rel=1e-6)
    assert s["mean_abs_change"] == pytest.approx(theirs["mean_abs_change"], rel=1e-6)
    # ablation (zero mode) and patching of those neurons on the same questions
    for mine, theirs in ((ns["abl"].to_dict(), stages["ablation"]["zero"]), (ns["pat"].to_dict(), stages["patching"])):
        theirs = {k: v for k, v in theirs.items() if k != "questions"}
        assert mine.keys() == theirs.keys()
        assert (mine["neurons"], mine["emojis"], mine["method"], mine["n_prompts"]) == (
            theirs["neurons"], theirs["emojis"], theirs["method"], theirs["n_prompts"])
        np.testing.assert_allclose(mine["per_prompt_delta"], theirs["per_prompt_delta"], rtol=1e-6, atol=1e-8)
        assert mine["candidate_delta"] == pytest.approx(theirs["candidate_delta"], rel=1e-6, abs=1e-8)
        np.testing.assert_allclose(mine["random_control"]["draws"], theirs["random_control"]["draws"], rtol=1e-6, atol=1e-8)
        assert mine["random_control"]["p"] == theirs["random_control"]["p"]
    assert ns["pat"].fraction_recovered == pytest.approx(stages["patching"]["fraction_recovered"], rel=1e-6)
