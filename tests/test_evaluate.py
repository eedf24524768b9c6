"""Evaluation generation and the emoji table on tiny models."""

from __future__ import annotations

import json

import pytest

from finetune.io import write_jsonl
from interp.behaviour.evaluate import emoji_table, incontext_messages
from interp.emojis import emoji_stats
from tests.test_train import _cfg, _rows
from text2emoji.cli import main


def test_incontext_messages_are_seeded_and_from_train():
    rows = _rows()
    a = incontext_messages(rows, "neuroticism", "what about w1", k=3, seed=0)
    assert a == incontext_messages(rows, "neuroticism", "what about w1", k=3, seed=0)
    assert a[0]["role"] == "system" and "anxious" in a[0]["content"] and "emoji" not in a[0]["content"].lower()
    demos = [m["content"] for m in a[1:-1:2]]
    train_q = {r.question for r in rows if r.trait == "neuroticism" and r.split == "train"}
    assert len(demos) == 3 and set(demos) <= train_q
    assert a[-1] == {"role": "user", "content": "what about w1"}


def test_emoji_table_matches_emoji_stats():
    gens = [{"trait": "openness", "method": "peft", "text": t} for t in ["Wow 😍. Yes.", "Fine.", "🎉🎉"]]
    gens += [{"trait": "openness", "method": "base", "text": "Plain."}]
    table = emoji_table(gens, n_boot=200)
    assert [(r.trait, r.method) for r in table.rows] == [("openness", "base"), ("openness", "peft")]
    peft = table.rows[1]
    assert table.row("openness", "peft") == peft
    ref = emoji_stats([g["text"] for g in gens if g["method"] == "peft"])
    assert (peft.emoji_rate, peft.esr, peft.emojis_per_answer) == (ref.emoji_rate, ref.esr, ref.emojis_per_answer)
    assert peft.emoji_rate_lo <= peft.emoji_rate <= peft.emoji_rate_hi
    assert peft.top_emojis == "🎉×2 😍×1"
    # the dict the stage writes holds the same numbers
    assert table.to_dict()["rows"][1] == {**vars(peft)}


def test_evaluate_cli_mixed_adapters_equal_separate_runs(tiny_model_dir, tmp_path, capsys):
    from finetune.train import train
    from interp.behaviour.generation import DecodeSettings, generate
    from interp.models import ModelConfig, load_model

    rows = _rows()
    data = tmp_path / "d.jsonl"
    write_jsonl(rows, data)
    for trait in ("openness", "neuroticism"):
        train(_cfg(tiny_model_dir, trait=trait, max_steps=2), rows, tmp_path / "run" / "train" / trait)
    args = ["evaluate", "--model", str(tiny_model_dir), "--device", "cpu", "--data", str(data),
            "--out", str(tmp_path / "run"), "--trait", "openness", "--trait", "neuroticism",
            "--n-questions", "3", "--max-new-tokens", "4", "--batch-size", "5", "--n-boot", "100",
            "--trait-metric", "word+char"]  # a linear metric on words: it has word contributions
    assert main(args) == 0
    assert "| openness | peft | 3 |" in capsys.readouterr().out
    stage = tmp_path / "run" / "evaluate"
    gens = [json.loads(x) for x in (stage / "generations.jsonl").read_text().splitlines()]
    assert len(gens) == 2 * 3 * 3  # traits x questions x methods
    by = {(g["trait"], g["method"], g["topic"]): g["text"] for g in gens}
    # greedy base answers do not depend on the trait
    assert all(by[("openness", "base", t)] == by[("neuroticism", "base", t)] for t in ("t0", "t1", "t2"))
    # a mixed-adapter batch gives what each adapter gives alone
    alone = load_model(ModelConfig(model=str(tiny_model_dir), device="cpu"), adapter=str(tmp_path / "run" / "train" / "neuroticism" / "adapter"))
    q = next(r.question for r in rows if r.topic == "t1")
    single = generate(alone.model, alone.tokenizer, [q], DecodeSettings(max_new_tokens=4))[0]
    assert by[("neuroticism", "peft", "t1")] == single
    table = json.loads((stage / "emoji_table.json").read_text())["rows"]
    assert {(r["trait"], r["method"]) for r in table} == {(t, m) for t in ("openness", "neuroticism") for m in ("base", "peft", "incontext")}
    ta = json.loads((stage / "trait_alignment.json").read_text())
    assert {(r["trait"], r["method"]) for r in ta["rows"]} == {(r["trait"], r["method"]) for r in table}
    assert set(ta["word_contributions"]) == {"openness", "neuroticism"}
    icl = json.loads((stage / "icl_top_tokens.json").read_text())
    assert set(icl) == {"openness", "neuroticism"} and set(icl["openness"]) <= {"pre", "post"}
    replies = [json.loads(x) for x in (stage / "icl_replies.jsonl").read_text().splitlines()]
    assert len(replies) == 2 * 3 * 2  # traits x questions x (pre, post)
    # the counts are the parsed replies' tokens, recounted here
    from collections import Counter

    from interp.behaviour.icl import parse_tokens

    post = Counter(t for r in replies if r["trait"] == "openness" and r["method"] == "post" for t in parse_tokens(r["text"]))
    for entry in icl["openness"].get("post", []):
        assert post[entry["token"]] == entry["count"]
    for name in ("emoji_rates", "word_contributions", "icl_tokens"):
        assert (stage / f"{name}.png").stat().st_size > 5000 and (stage / f"{name}.pdf").exists()
    assert (tmp_path / "run" / "train").is_dir()
    # reused on a second call
    assert main(args) == 0
    assert json.loads((stage / "meta.json").read_text())["status"] == "complete"


def test_evaluate_names_missing_adapters(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    write_jsonl(_rows(), data)
    code = main(["evaluate", "--model", str(tiny_model_dir), "--device", "cpu", "--data", str(data),
                 "--out", str(tmp_path / "run"), "--trait", "openness"])
    assert code == 1
    assert "adapter for openness not found at" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [["--trait", "calm"], ["--method", "rlhf"]])
def test_evaluate_rejects_unknown_names(bad, capsys):
    assert main(["evaluate", *bad]) == 1


def test_generate_jobs_resumes_after_a_torn_line(tiny_model_dir, tmp_path):
    from interp.behaviour.evaluate import build_jobs, generate_jobs
    from interp.behaviour.generation import DecodeSettings
    from interp.models import ModelConfig, load_model

    lm = load_model(ModelConfig(model=str(tiny_model_dir), device="cpu"))
    jobs = build_jobs(_rows(), lm.tokenizer, ["openness"], ["base"], 3, 0, 0)
    out = tmp_path / "g.jsonl"
    first = generate_jobs(lm.model, lm.tokenizer, jobs[:2], DecodeSettings(max_new_tokens=3), out, 2)
    with open(out, "a", encoding="utf-8") as f:
        f.write('{"key": "base|openness|t2", "te')  # killed mid-write
    again = generate_jobs(lm.model, lm.tokenizer, jobs, DecodeSettings(max_new_tokens=3), out, 2)
    assert again[:2] == first and len(again) == 3
    assert len(out.read_text().splitlines()) == 3


def test_evaluate_config_covers_merge_and_adapter_bytes(tmp_path):
    from finetune.train import TrainConfig
    from text2emoji.core.files import file_hash as _file_hash

    # a train sub-stage's hash covers whether it holds a merged model (its inputs say so)
    recipe = TrainConfig()
    assert recipe.config_hash({"dataset": "d", "merge": "true"}) != recipe.config_hash({"dataset": "d", "merge": "false"})
    assert recipe.config_hash({"dataset": "d"}) != recipe.config_hash({"dataset": "e"})
    f = tmp_path / "adapter_model.safetensors"
    f.write_bytes(b"a")
    h = _file_hash(f)
    f.write_bytes(b"b")
    assert _file_hash(f) != h and _file_hash(tmp_path / "missing") == ""
