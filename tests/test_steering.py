"""Steering (interp/steering.py) against raw torch hooks, the trait vector and coherence against
hand computations, and the ``diff-lens``, ``steer`` and ``trait-vector`` commands on a tiny model
with a tiny random LoRA adapter, bad input included."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import tiny_model, tiny_tokenizer
from text2emoji.cli import main

PROMPTS = ["w1 w2 w3", "what are your thoughts on w5", "the a"]


def _tok():
    tok = tiny_tokenizer()
    tok.padding_side = "left"
    return tok


def _peft():
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    return get_peft_model(tiny_model(), LoraConfig(r=4, lora_alpha=16, init_lora_weights=False,
                                                   target_modules=["q_proj", "v_proj", "up_proj", "down_proj"])).eval()


def _layers(model):
    root = model.get_base_model() if hasattr(model, "get_base_model") else model
    return root.model.layers


def _vector(seed: int = 1) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=64).astype(np.float32))


def _batch(tok, prompts=PROMPTS):
    return tok(list(prompts), return_tensors="pt", padding=True)


def _greedy_ids(model, tok, n=8):
    enc = _batch(tok)
    with torch.no_grad():
        return model.generate(**enc, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)


@pytest.mark.parametrize("peft", [False, True])
def test_alpha_zero_and_a_zero_vector_change_nothing(peft):
    from interp.behaviour.generation import DecodeSettings, generate
    from interp.steering import steered_generate, steering

    model, tok = (_peft() if peft else tiny_model()), _tok()
    plain = _greedy_ids(model, tok)
    with steering(model, 0, _vector(), 0.0):
        assert torch.equal(_greedy_ids(model, tok), plain)  # token for token
    with steering(model, -1, torch.zeros(64), 5.0):
        assert torch.equal(_greedy_ids(model, tok), plain)
    enc = _batch(tok)
    with torch.no_grad():
        logits = model(**enc).logits
        with steering(model, 1, np.zeros(64, dtype=np.float32), 3.0):
            assert torch.equal(model(**enc).logits, logits)
    settings = DecodeSettings(max_new_tokens=8)
    base = generate(model, tok, PROMPTS, settings, chat=False)
    assert steered_generate(model, tok, PROMPTS, _vector(), 0, 0.0, settings, chat=False) == base
    # and a real push does change the answers (so the equalities above are not vacuous)
    assert steered_generate(model, tok, PROMPTS, _vector(), 0, 8.0, settings, chat=False) != base
    with torch.no_grad():  # the hook is gone after the block
        assert torch.equal(model(**enc).logits, logits)


@pytest.mark.parametrize("peft", [False, True])
@pytest.mark.parametrize("layer", [0, 1])
def test_steered_forward_equals_adding_the_vector_by_hand_in_a_raw_hook(peft, layer):
    from interp.steering import steering

    model, tok = (_peft() if peft else tiny_model()), _tok()
    v, alpha = _vector(), 2.5
    enc = _batch(tok)

    def add(_mod, _args, out):
        if isinstance(out, tuple):
            return (out[0] + alpha * v, *out[1:])
        return out + alpha * v

    handle = _layers(model)[layer].register_forward_hook(add)
    try:
        with torch.no_grad():
            want = model(**enc).logits
    finally:
        handle.remove()
    with torch.no_grad(), steering(model, layer, v, alpha) as hp:
        got = model(**enc).logits
        assert hp.name == f"blocks.{layer}.hook_resid_post"
    with torch.no_grad():
        assert not torch.allclose(model(**enc).logits, want)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_layer_minus_one_is_the_last_layer_and_bad_input_is_refused():
    from interp.steering import steering

    model, tok = tiny_model(), _tok()
    enc = _batch(tok)
    with torch.no_grad():
        with steering(model, -1, _vector(), 1.5) as hp:
            a = model(**enc).logits
        with steering(model, 1, _vector(), 1.5):
            b = model(**enc).logits
    assert hp.name == "blocks.1.hook_resid_post" and torch.equal(a, b)
    with pytest.raises(ValueError, match="out of range"), steering(model, 2, _vector(), 1.0):
        pass
    with pytest.raises(ValueError, match=r"residual stream is \[64\]"), steering(model, 0, torch.zeros(32), 1.0):
        pass


def _hand_answer_means(model, tok, prompts, answers):
    """Per answer with tokens: mean over its tokens of every layer's output (raw hooks, alone)."""
    rows = []
    for p, a in zip(prompts, answers, strict=True):
        pi, ai = tok(p, add_special_tokens=False)["input_ids"], tok(a, add_special_tokens=False)["input_ids"] if a else []
        if not ai:
            continue
        seen = []
        handles = [layer.register_forward_hook(lambda m, x, o, seen=seen: seen.append((o[0] if isinstance(o, tuple) else o)[0]))
                   for layer in _layers(model)]
        try:
            with torch.no_grad():
                model(input_ids=torch.tensor([pi + ai]))
        finally:
            for h in handles:
                h.remove()
        rows.append(torch.stack([s[len(pi):].double().mean(0) for s in seen]).numpy())
    return np.mean(rows, axis=0)


def test_trait_vector_equals_the_hand_computation_on_two_questions():
    from interp.behaviour.generation import DecodeSettings
    from interp.chat import format_chat
    from interp.prompts import load_prompt
    from interp.steering import trait_vector

    model, tok = tiny_model(), _tok()
    questions = ["what are your thoughts on w1", "what are your thoughts on w2 w3"]
    settings = DecodeSettings(max_new_tokens=5)
    res = trait_vector(model, tok, questions, "extraversion", settings, batch_size=2)
    summary = load_prompt("trait_profiles.yaml")["traits"]["extraversion"]["summary"]
    system = load_prompt("incontext.yaml")["system"].format(summary=summary)
    with_ = [format_chat(tok, [{"role": "system", "content": system}, {"role": "user", "content": q}]) for q in questions]
    without = [format_chat(tok, q) for q in questions]
    assert with_[0].startswith("System: You are a person with high extraversion")
    # each answer is the greedy continuation of its own prompt, generated alone
    for prompts, answers in ((with_, res.answers_with), (without, res.answers_without)):
        for p, a in zip(prompts, answers, strict=True):
            ids = torch.tensor([tok(p, add_special_tokens=False)["input_ids"]])
            with torch.no_grad():
                out = model.generate(input_ids=ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
            assert a == tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    want = _hand_answer_means(model, tok, with_, res.answers_with) - _hand_answer_means(model, tok, without, res.answers_without)
    assert res.vector.dtype == np.float32 and res.vector.shape == (2, 64)
    assert (res.n_with, res.n_without) == (2, 2)
    assert np.abs(want).max() > 1e-3
    np.testing.assert_allclose(res.vector, want, atol=2e-6)
    d = res.to_dict()
    assert "vector" not in d and len(d["norm_per_layer"]) == 2 and d["questions"] == questions


def test_coherence_is_the_base_models_mean_nll_by_hand():
    from interp.steering import coherence

    model, tok = _peft(), _tok()
    answers = ["w4 w5 w6", "w7", ""]
    got = coherence(model, tok, PROMPTS, answers, chat=False, batch_size=2)
    for i, (p, a) in enumerate(zip(PROMPTS, answers, strict=True)):
        if not a:
            assert np.isnan(got[i])
            continue
        pi, ai = tok(p)["input_ids"], tok(a, add_special_tokens=False)["input_ids"]
        with torch.no_grad(), model.disable_adapter():
            lp = torch.log_softmax(model(input_ids=torch.tensor([pi + ai])).logits[0].double(), -1)
        want = -np.mean([float(lp[len(pi) - 1 + j, t]) for j, t in enumerate(ai)])
        assert got[i] == pytest.approx(want, abs=1e-6)
    # base=False scores with the adapter on: another number
    assert coherence(model, tok, PROMPTS[:1], answers[:1], chat=False, base=False)[0] != pytest.approx(got[0])


# --- the commands ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    d = tmp_path_factory.mktemp("adapter")
    get_peft_model(base, LoraConfig(r=4, lora_alpha=16, init_lora_weights=False,
                                    target_modules=["q_proj", "v_proj", "up_proj", "down_proj"])).save_pretrained(d)
    return d


def _lm(tiny_model_dir, adapter=None):
    from interp.models import ModelConfig, load_model

    return load_model(ModelConfig(model=str(tiny_model_dir), device="cpu"), adapter=adapter)


def _one_line_error(capsys, *pieces: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("text2emoji: error: ") and err.count("\n") == 1, err
    for p in pieces:
        assert p in err, (p, err)
    return err


def test_diff_lens_command_writes_what_the_library_computes(tiny_model_dir, adapter_dir, tmp_path, capsys):
    from interp.difflens import diff_vectors

    texts = tmp_path / "texts.txt"
    texts.write_text("w1 w2 w3 w4 w5\n\nthe a\nwhat are your thoughts on w7\n", encoding="utf-8")
    out = tmp_path / "lens"
    assert main(["diff-lens", "--model", str(tiny_model_dir), "--device", "cpu", "--adapter", str(adapter_dir),
                 "--texts", str(texts), "--first-k", "3", "--top", "4", "--emoji", "🎉", "--batch-size", "2",
                 "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    # the first token of each text is not counted (--skip-first): 3 + 1 + 3 positions
    assert printed["shape"] == [2, 64] and printed["n_texts"] == 3 and printed["n_positions"] == 3 + 1 + 3
    lm = _lm(tiny_model_dir, adapter_dir)
    want = diff_vectors(lm.model, lm.tokenizer, ["w1 w2 w3 w4 w5", "the a", "what are your thoughts on w7"], 3)
    np.testing.assert_allclose(np.load(out / "diff_vectors.npy"), want, atol=1e-6)
    res = json.loads((out / "diff_lens.json").read_text(encoding="utf-8"))
    assert [r["layer"] for r in res["layers"]] == [0, 1] and len(res["layers"][0]["top"]) == 4
    assert res["layers"][0]["emojis"][0]["emoji"] == "🎉" and res["difference"] == "adapter minus base"
    assert res["dtype"] == "float32" and "difference vector itself" in res["norm_choice"]
    assert (out / "diff_lens.png").stat().st_size > 0 and (out / "diff_lens.pdf").is_file()
    # default: the bundled metric set's neutral texts, every trait emoji
    from text2emoji.tools import neutral_texts

    assert main(["diff-lens", "--model", str(tiny_model_dir), "--device", "cpu", "--adapter", str(adapter_dir),
                 "--out", str(tmp_path / "default")]) == 0
    assert json.loads(capsys.readouterr().out)["n_texts"] == len(neutral_texts()) >= 100
    res = json.loads((tmp_path / "default" / "diff_lens.json").read_text(encoding="utf-8"))
    assert len(res["layers"][0]["emojis"]) == 15 and res["layers"][0]["emojis"][0]["trait"] == "openness"


def test_diff_lens_bad_input_is_one_line(tiny_model_dir, adapter_dir, tmp_path, capsys):
    base = ["diff-lens", "--model", str(tiny_model_dir), "--device", "cpu", "--out", str(tmp_path / "o")]
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    assert main([*base, "--adapter", str(adapter_dir), "--texts", str(empty)]) == 1
    _one_line_error(capsys, str(empty), "no texts")
    assert main([*base, "--adapter", str(adapter_dir), "--texts", str(tmp_path / "missing.txt")]) == 1
    _one_line_error(capsys, str(tmp_path / "missing.txt"), "cannot read")
    assert main(base) == 1
    _one_line_error(capsys, "--adapter DIR is required")
    assert main([*base, "--adapter", str(tmp_path / "nope")]) == 1
    _one_line_error(capsys, str(tmp_path / "nope"), "does not exist")
    short = tmp_path / "short.txt"
    short.write_text("w1 w2\nw3\n", encoding="utf-8")
    assert main([*base, "--adapter", str(adapter_dir), "--texts", str(short)]) == 1
    _one_line_error(capsys, str(short), "text 1 has one token only, which skip_first (--skip-first) leaves out")
    assert not (tmp_path / "o" / "diff_vectors.npy").exists()


def _steer(tiny_model_dir, vector, *extra):
    return main(["steer", "--model", str(tiny_model_dir), "--device", "cpu", "--prompt", "w1 w2 w3",
                 "--vector", str(vector), "--max-new-tokens", "6", *extra])


def test_steer_command_alpha_zero_is_the_base_answer_and_rows_follow_the_layer(tiny_model_dir, tmp_path, capsys):
    from interp.behaviour.generation import DecodeSettings, generate
    from interp.steering import steered_generate

    lm = _lm(tiny_model_dir)
    vectors = np.random.default_rng(3).normal(size=(2, 64)).astype(np.float32) * 4
    np.save(tmp_path / "v2.npy", vectors)
    np.save(tmp_path / "v1.npy", vectors[0])
    base = generate(lm.model, lm.tokenizer, ["w1 w2 w3"], DecodeSettings(max_new_tokens=6), chat=False)[0]
    assert _steer(tiny_model_dir, tmp_path / "v2.npy", "--layer", "-1", "--alpha", "0") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["text"] == base and out["layer"] == 1 and out["alpha"] == 0.0 and out["row"] == 1
    assert out["vector"] == str(tmp_path / "v2.npy") and out["vector_norm"] == pytest.approx(float(np.linalg.norm(vectors[1])), rel=1e-5)
    assert out["site"] == "blocks.1.hook_resid_post"
    # alpha 3 at layer 0 with the default row (0) = the library with vectors[0]; --row picks another
    want = steered_generate(lm.model, lm.tokenizer, ["w1 w2 w3"], vectors[0], 0, 3.0, DecodeSettings(max_new_tokens=6), chat=False)[0]
    assert _steer(tiny_model_dir, tmp_path / "v2.npy", "--layer", "0", "--alpha", "3") == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["text"], out["row"]) == (want, 0)
    assert _steer(tiny_model_dir, tmp_path / "v1.npy", "--layer", "0", "--alpha", "3") == 0
    assert json.loads(capsys.readouterr().out)["text"] == want
    assert _steer(tiny_model_dir, tmp_path / "v2.npy", "--layer", "0", "--alpha", "3", "--row", "-1") == 0
    assert json.loads(capsys.readouterr().out)["row"] == 1


def test_steer_bad_input_is_one_line(tiny_model_dir, tmp_path, capsys):
    ok = tmp_path / "ok.npy"
    np.save(ok, np.zeros((3, 64), dtype=np.float32))
    cases = {
        "missing.npy": (None, ["no such vector file"]),
        "garbage.npy": (b"not an array", ["not a readable .npy array"]),
        "cube.npy": (np.zeros((2, 2, 64)), ["expected shape [d_model] or [rows, d_model]", "[2, 2, 64]"]),
        "narrow.npy": (np.zeros(32), ["width 32", "d_model is 64"]),
        "words.npy": (np.array(["a", "b"]), ["expected a real-valued array"]),
        "nan.npy": (np.full(64, np.nan), ["NaN or infinite"]),
        "rows.npy": (np.zeros((3, 64)), ["3 rows, not one per layer of the model (2)", "--row"]),
    }
    for name, (content, pieces) in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            np.save(path, content)
        assert _steer(tiny_model_dir, path, "--layer", "0", "--alpha", "1") == 1, name
        _one_line_error(capsys, str(path), *pieces)
    assert _steer(tiny_model_dir, ok, "--layer", "0", "--alpha", "1", "--row", "3") == 1
    _one_line_error(capsys, str(ok), "row 3 out of range for 3 rows")
    assert _steer(tiny_model_dir, ok, "--layer", "2", "--alpha", "1", "--row", "0") == 1
    _one_line_error(capsys, "--layer", "2 out of range for a model with 2 layers [-2, 1]")
    assert _steer(tiny_model_dir, ok, "--alpha", "1") == 1
    _one_line_error(capsys, "--layer L is required")
    np.save(tmp_path / "one.npy", np.zeros(64))
    assert _steer(tiny_model_dir, tmp_path / "one.npy", "--layer", "0", "--alpha", "1", "--row", "0") == 1
    _one_line_error(capsys, "one vector", "--row")


def test_trait_vector_command_writes_the_vector_and_its_answers(tiny_model_dir, tmp_path, capsys):
    from finetune.io import bundled_path

    # a slice of the bundled set (validating all of it takes seconds)
    rows = [json.loads(line) for line in bundled_path().read_text(encoding="utf-8").splitlines()[:60]]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    train = sorted((r for r in rows if r["trait"] == "extraversion" and r["split"] == "train"), key=lambda r: r["topic"].lower())
    out = tmp_path / "v" / "extraversion.npy"
    assert main(["trait-vector", "--model", str(tiny_model_dir), "--device", "cpu", "--trait", "extraversion",
                 "--data", str(data), "--questions", "2", "--max-new-tokens", "4", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    v = np.load(out)
    assert v.shape == (2, 64) and v.dtype == np.float32 and printed["n_questions"] == 2
    meta = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert meta["questions"] == [r["question"] for r in train[:2]]
    assert len(meta["answers_with"]) == 2 and meta["split"] == "train"
    assert meta["norm_per_layer"] == pytest.approx(np.linalg.norm(v.astype(np.float64), axis=1).tolist(), rel=1e-5)
    # the vector steers: its layer-0 row is what `steer` picks by default
    assert _steer(tiny_model_dir, out, "--layer", "0", "--alpha", "1") == 0
    assert json.loads(capsys.readouterr().out)["row"] == 0
    assert main(["trait-vector", "--model", str(tiny_model_dir), "--trait", "joy", "--out", str(out)]) == 1
    _one_line_error(capsys, "--trait must be one of openness")
    assert main(["trait-vector", "--model", str(tiny_model_dir), "--trait", "openness", "--out", str(tmp_path / "v.txt")]) == 1
    _one_line_error(capsys, "--out must end in .npy")
