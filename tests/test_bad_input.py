"""Bad input, tried as a hostile new user would: every case ends in one line
``text2emoji: error: ...`` on stderr and exit status 1, before any work, and writes nothing.
A few inputs that look odd but are valid must keep working."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from text2emoji.cli import main

# {t}: the test's folder; {m}: a tiny valid model directory; fixtures below fill the rest
CASES = [
    # choices, types and unknown flags (argparse)
    "train --dtype float64", "run --preset huge", "train --trait joy", "ablate --rank-by best",
    "run --seed abc", "evaluate --temperature abc", "neurons --backend tf", "activations --position first",
    "esr {t}/answers.txt --format xml", "run --bogus-flag", "", "data", "model", "run --max-steps 1.5",
    # ranges: counts, sizes, probabilities, finite floats
    "train --lr nan", "train --lr inf", "train --lr 0", "train --dropout 1.5", "train --dropout -0.1",
    "train --max-steps -1", "train --r 0", "train --alpha 0", "train --epochs 0", "train --grad-accum 0",
    "train --batch-size 0", "train --eval-every 0", "train --save-every 0", "train --max-length 0",
    "train --eval-rows -1", "evaluate --batch-size 0", "evaluate --n-questions -195", "evaluate --top-p 1.5",
    "evaluate --top-p 0", "evaluate --temperature 0", "evaluate --n-boot 0", "evaluate --k-demos -1",
    "evaluate --max-new-tokens 0", "neurons --n-perm -5", "neurons --k 0", "neurons --n-boot 0",
    "trace --lens-emojis 0", "ablate --n-random -1", "ablate --k 0", "ablate --max-new-tokens 0",
    "ablate --n-random-generation -1", "ablate --n-generation-questions -2", "patch --n-questions -1",
    "run --batch-size 0", "run --max-new-tokens 0", "run --n-random -3", "run --n-questions -1",
    "run --max-steps -2", "esr {t}/answers.txt --top-k -1", "data split {t}/answers.txt --out {t}/s.jsonl --test-fraction 1.5",
    "data split {t}/answers.txt --out {t}/s.jsonl --test-fraction 0", "data build --topics {t}/answers.txt --attempts 0",
    "data build --topics {t}/answers.txt --batch-size 0", "data validate {t}/answers.txt --max-length 0",
    "activations --prompts {t}/answers.txt --out {t}/a.npy --batch-size 0",
    # names and missing values
    "evaluate --trait calm", "evaluate --method rlhf", "neurons --trait joy", "ablate --mode half",
    "neurons --site blocks.-1.hook_resid_post", "emoji-prob --prompt hi --emoji :)", "emoji-prob --emoji 🎉",
    "emoji-prob --prompt hi", "activations --out {t}/a.npy", "activations --prompts {t}/answers.txt --out {t}/a.txt",
    "activations --prompts {t}/answers.txt --out {t}/a.npy --position all",
    # devices and models
    "run --device cuda", "run --device tpu", "model info --device cuda:3", "run --model /nonexistent/dir",
    "run --model 'not a model'", "model info --model {t}/emptydir", "model info --model {t}/badconfig",
    "model info --model {t}/truncated", "model info --model {m} --adapter {t}/nothing",
    "model info --model {m} --adapter {t}/corrupt-adapter", "model info --model {m} --adapter {t}/empty-adapter",
    "model info --model {m} --adapter {t}/wrong-target", "model info --model {m} --adapter {t}/no-config-adapter",
    "model info --model {m} --dtype float64", "train --merge --model {t}/x.gguf",
    "model info --model nobody-here/no-such-model",  # no cache, no hub: seconds, not a minute of retries
    # outputs that cannot be written
    "run --out {t}/afile", "run --out {t}/afile/sub", "neurons --out {t}/afile", "evaluate --out {t}/afile/x",
    "train --out {t}/afile", "figures {t}/emptydir", "figures {t}/afile", "figures {t}/nonexistent",
    "figures {t}/other-tool", "figures {t}/shapeless", "data split {t}/answers.txt --out {t}/afile/x.jsonl",
    "activations --prompts {t}/answers.txt --out {t}/afile/a.npy", "data quality --out {t}/afile",
    # config files
    "run --config {t}/missing.toml", "run --config {t}/bad.toml", "run --config {t}/conf.json",
    "run --config {t}/unknown.toml", "run --config {t}/wrongtype.toml", "run --config {t}/list.yaml",
    # data
    "run --data {t}/missing.jsonl --out {t}/out", "data stats {t}/missing.jsonl",
    # stages whose inputs are missing: refused before their directory is made
    "neurons --model {m} --out {t}/run", "trace --model {m} --out {t}/run", "ablate --model {m} --out {t}/run",
    "patch --model {m} --out {t}/run", "evaluate --model {m} --out {t}/run --trait openness",
    # the known-answer organisms
    "organisms --fraction 1.5", "organisms --fraction -0.1", "organisms --fraction nan", "organisms --trait joy",
    "organisms --trait openness --trait extraversion", "organisms --k 0", "organisms --n-perm 0",
    "organisms --site blocks.-1.hook_resid_post", "organisms --out {t}/afile", "organisms --data {t}/missing.jsonl",
    "organisms --n-random-generation -1", "train --target qkv_proj",
]


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_dir):
    """The files the cases refer to."""
    from peft import LoraConfig, get_peft_model

    from tests.conftest import tiny_model

    t = tmp_path_factory.mktemp("bad")
    (t / "answers.txt").write_text("Great news 🎉\nFine.\n")
    (t / "afile").write_text("not a directory")
    for d in ("emptydir", "badconfig", "truncated", "nothing", "corrupt-adapter", "empty-adapter",
              "no-config-adapter", "other-tool"):
        (t / d).mkdir()
    (t / "badconfig" / "config.json").write_text("{not json")
    for f in tiny_model_dir.iterdir():
        (t / "truncated" / f.name).write_bytes(f.read_bytes())
    weights = t / "truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: len(weights.read_bytes()) // 2])
    (t / "corrupt-adapter" / "adapter_config.json").write_text('{"peft_type": "LORA", ')
    (t / "empty-adapter" / "adapter_config.json").write_text("")
    (t / "no-config-adapter" / "adapter_model.safetensors").write_bytes(b"\0" * 8)
    lora = get_peft_model(tiny_model("llama"), LoraConfig(r=2, target_modules=["q_proj"]))
    lora.save_pretrained(t / "wrong-target")
    cfg = json.loads((t / "wrong-target" / "adapter_config.json").read_text())
    cfg["target_modules"] = ["no_such_proj"]
    (t / "wrong-target" / "adapter_config.json").write_text(json.dumps(cfg))
    (t / "other-tool" / "results.json").write_text("{}")
    # a run directory whose neurons stage holds files of another shape
    (t / "shapeless" / "neurons").mkdir(parents=True)
    (t / "shapeless" / "neurons" / "meta.json").write_text(json.dumps({"status": "complete", "config_hash": "x"}))
    for name in ("top_neurons.json", "selectivity.json", "summary.json"):
        (t / "shapeless" / "neurons" / name).write_text(json.dumps({"rows": [1, 2]}))
    (t / "bad.toml").write_text("preset = \n")
    (t / "conf.json").write_text("{}")
    (t / "unknown.toml").write_text("colour = 'red'\n")
    (t / "wrongtype.toml").write_text("max_steps = 'abc'\n")
    (t / "list.yaml").write_text("- a\n- b\n")
    return t


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_exit_1(case, world, tiny_model_dir, capsys, monkeypatch):
    import shlex

    monkeypatch.chdir(world)  # anything a case would write by default lands where we look
    before = _files(world)
    argv = shlex.split(case.format(t=world, m=tiny_model_dir))
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1, (case, err)
    assert len(lines) == 1 and lines[0].startswith("text2emoji: error: "), (case, err)
    assert _files(world) == before, f"{case}: wrote or changed files"
    assert not (world / "results").exists() and not (world / "run").exists() and not (world / "out").exists()


def test_at_least_sixty_cases():
    assert len(CASES) >= 60 and len(set(CASES)) == len(CASES)


# --- inputs that must stay valid ------------------------------------------------------------


def test_a_long_line_is_one_answer(tmp_path, capsys):
    f = tmp_path / "long.txt"
    f.write_text("word " * 400_000 + "🎉\n")  # one 2 MB answer
    assert main(["esr", str(f)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_answers"] == 1 and out["emoji_rate"] == 1.0


def test_an_empty_file_has_its_documented_nulls(tmp_path, capsys):
    f = tmp_path / "empty.txt"
    f.write_text("")
    assert main(["esr", str(f)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_answers"] == 0 and out["esr"] is None and out["emoji_rate"] is None


def test_help_still_exits_0(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "--help"])
    assert e.value.code == 0 and "--verbose" in capsys.readouterr().out


def test_a_stage_that_fails_before_results_leaves_nothing(tmp_path, tiny_model_dir, monkeypatch, capsys):
    """A failed first attempt must not pin the stage: the next call with other flags runs."""
    from dataclasses import dataclass

    from text2emoji.core.config import Config, option
    from text2emoji.core.runs import open_stage

    @dataclass
    class C(Config):
        n: int = option(1, help="n")

    with pytest.raises(RuntimeError), open_stage(tmp_path, "s", C(n=1)):
        raise RuntimeError("model failed to load")
    assert not (tmp_path / "s").exists()
    with open_stage(tmp_path, "s", C(n=2)) as st:  # another config: not refused
        st.write_json("r.json", {"ok": True})
    with pytest.raises(RuntimeError), open_stage(tmp_path, "s", C(n=2), force=True) as st:
        st.write_json("partial.json", {})
        raise RuntimeError("interrupted after a partial result")
    assert (tmp_path / "s" / "partial.json").exists()  # partial results stay, to resume
