"""The ``text2emoji`` command line: outputs, errors and exit codes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

from text2emoji.cli import build_parser, commands, main


def run_cli(capsys, *argv: str) -> tuple[int, dict | None, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else None), err


def test_console_script_is_installed():
    exe = shutil.which("text2emoji") or f"{sys.prefix}/bin/text2emoji"
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("text2emoji ")


def test_every_subcommand_has_help_for_every_flag():
    parser = build_parser()
    for cmd in commands():
        sub = parser
        for word in cmd.path:
            sub = next(a for a in sub._actions if hasattr(a, "choices") and a.choices and word in a.choices).choices[word]
        for action in sub._actions:
            assert action.help, f"{' '.join(cmd.path)} {action.option_strings}: no help text"


def test_every_help_page_prints(capsys):
    """Every --help page renders (argparse %-formats help strings: "95% intervals" once broke the
    top-level page)."""
    pages = [[]] + [list(cmd.path) for cmd in commands()] + [[cmd.path[0]] for cmd in commands() if len(cmd.path) == 2]
    for page in pages:
        with pytest.raises(SystemExit) as e:
            build_parser().parse_args([*page, "--help"])
        assert e.value.code == 0, page
    assert "95% intervals" in " ".join(capsys.readouterr().out.split())


def test_esr_jsonl(tmp_path, capsys):
    f = tmp_path / "answers.jsonl"
    rows = [
        {"text": "I love cricket! 😍 It is fun.", "trait": "extraversion"},
        {"text": "Cricket worries me.", "trait": "neuroticism"},
        {"text": "Let's play 🏏🏏. Now!", "trait": "extraversion"},
    ]
    f.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    code, out, _ = run_cli(capsys, "esr", str(f))
    assert code == 0
    # sentences: [I love cricket! 😍 | It is fun.] [Cricket worries me.] [Let's play 🏏🏏. | Now!]
    assert out == {
        "n_answers": 3, "n_answers_with_emoji": 2, "n_sentences": 5, "n_sentences_with_emoji": 2,
        "n_emoji": 3, "esr": 2 / 5, "emoji_rate": 2 / 3, "emojis_per_answer": 1.0,
        "top_emojis": [["🏏", 2], ["😍", 1]],
    }
    code, by, _ = run_cli(capsys, "esr", str(f), "--by", "trait")
    assert code == 0 and set(by) == {"extraversion", "neuroticism"}
    assert by["extraversion"]["esr"] == 2 / 4 and by["neuroticism"]["esr"] == 0.0
    assert by["extraversion"]["n_answers"] == 2


def test_esr_plain_text(tmp_path, capsys):
    f = tmp_path / "answers.txt"
    f.write_text("Hello there 👋\n\nNo emoji here. Two sentences.\n", encoding="utf-8")
    code, out, _ = run_cli(capsys, "esr", str(f))
    assert code == 0
    assert (out["n_answers"], out["n_sentences"], out["esr"], out["emoji_rate"]) == (2, 3, 1 / 3, 0.5)


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"text": "ok"}\n{"text": \n', r"answers.jsonl:2: invalid JSON"),
        (b'{"text": "ok"}\n{"txt": "x"}\n', r"answers.jsonl:2: field 'text' missing"),
        (b'{"text": 5}\n', r"answers.jsonl:1: field 'text' must be a string, got int"),
        (b'{"text": "ok"}\n\n{"text": "\xff"}\n', r"answers.jsonl:3: not valid UTF-8"),
        (b'[1, 2]\n', r"answers.jsonl:1: expected a JSON object, got list"),
    ],
)
def test_esr_bad_input_names_file_and_line(tmp_path, capsys, content, message):
    f = tmp_path / "answers.jsonl"
    f.write_bytes(content)
    code, out, err = run_cli(capsys, "esr", str(f))
    assert code == 1 and out is None
    assert err.startswith("text2emoji: error: ") and len(err.strip().splitlines()) == 1
    assert re.search(message, err)


def test_esr_by_missing_field(tmp_path, capsys):
    f = tmp_path / "a.jsonl"
    f.write_text('{"text": "a", "trait": "x"}\n{"text": "b"}\n')
    code, _, err = run_cli(capsys, "esr", str(f), "--by", "trait")
    assert code == 1 and "a.jsonl:2: field 'trait' missing" in err


def test_esr_by_needs_jsonl(tmp_path, capsys):
    f = tmp_path / "a.txt"
    f.write_text("Hi 👋\n")
    code, _, err = run_cli(capsys, "esr", str(f), "--by", "trait")
    assert code == 1 and "a.txt: --by needs JSONL input" in err


def test_esr_missing_file(tmp_path, capsys):
    code, _, err = run_cli(capsys, "esr", str(tmp_path / "nope.jsonl"))
    assert code == 1 and "nope.jsonl: cannot read" in err


def test_config_file_for_esr(tmp_path, capsys):
    f = tmp_path / "a.jsonl"
    f.write_text('{"answer": "Hi 👋", "g": 1}\n')
    cfg = tmp_path / "esr.toml"
    cfg.write_text('field = "answer"\ntop-k = 1\n')
    code, out, _ = run_cli(capsys, "esr", str(f), "--config", str(cfg))
    assert code == 0 and out["n_emoji"] == 1
    cfg.write_text('fields = "answer"\n')
    code, _, err = run_cli(capsys, "esr", str(f), "--config", str(cfg))
    assert code == 1 and "esr.toml: unknown field(s) fields" in err


def test_unknown_model_is_one_line_exit_1(capsys):
    code, _, err = run_cli(capsys, "model", "info", "--model", "gpt-17")
    assert code == 1
    assert err == (
        "text2emoji: error: unknown model 'gpt-17'; valid embedded models: smollm2-135m-instruct "
        "(or an existing HF directory, or a hub id owner/name)\n"
    )
    code, _, err = run_cli(capsys, "model", "fetch", "--model", "gpt-17")
    assert code == 1 and "valid: smollm2-135m-instruct" in err


def test_model_info_local_dir(capsys, tiny_model_dir):
    code, out, _ = run_cli(capsys, "model", "info", "--model", str(tiny_model_dir), "--device", "cpu")
    assert code == 0
    for key in ("name", "architecture", "n_layers", "d_model", "d_mlp", "vocab_size", "has_chat_template", "path"):
        assert key in out
    assert out["path"] == str(tiny_model_dir)


@pytest.mark.slow
def test_model_info_embedded(capsys, embedded_dir):
    code, out, _ = run_cli(capsys, "model", "info")
    assert code == 0
    assert out["name"] == "smollm2-135m-instruct"
    assert (out["n_layers"], out["d_model"], out["d_mlp"], out["vocab_size"]) == (30, 576, 1536, 49152)
    assert out["has_chat_template"] is True and out["path"] == str(embedded_dir)


@pytest.mark.slow
def test_fetch_corrupted_gguf_exit_1(tmp_path, capsys, monkeypatch, embedded_dir):
    monkeypatch.setenv("TEXT2EMOJI_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "truncated.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 100)
    code, _, err = run_cli(capsys, "model", "fetch", "--gguf", str(bad))
    assert code == 1 and "truncated.gguf: SHA-256 mismatch" in err
    assert not (tmp_path / "cache").exists()


def small_dataset(path, n_topics=40):
    """A valid project-layout dataset without a split (the run's dataset stage adds one)."""
    from finetune.io import write_jsonl
    from text2emoji.core.schema import QUESTION_TEMPLATE, TRAITS, Row

    rows = [Row(t, f"Topic {i}", QUESTION_TEMPLATE.format(topic=f"Topic {i}"), f"I think about topic {i} a lot.")
            for i in range(n_topics) for t in TRAITS]
    write_jsonl(rows, path)
    return path


def test_run_chains_every_stage_writes_the_report_and_reuses(tmp_path, capsys, tiny_model_dir):
    """The whole study on a tiny model at a tiny scale: mechanics of the chain, not results."""
    out_dir = tmp_path / "run"
    data = small_dataset(tmp_path / "d.jsonl")
    args = ("run", "--out", str(out_dir), "--model", str(tiny_model_dir), "--device", "cpu", "--data", str(data),
            "--max-steps", "2", "--n-questions", "2", "--max-new-tokens", "3", "--n-random", "3")
    code, summary, _ = run_cli(capsys, *args)
    assert code == 0
    stats = json.loads((out_dir / "dataset" / "stats.json").read_text())
    assert stats["per_trait"]["openness"] == {"test": 8, "train": 32, "total": 40}
    stages = ["dataset", "quality", "model", *(f"train/{t}" for t in ("openness", "neuroticism")), "evaluate", "neurons",
              "trace", "ablate", "patch"]
    for stage in stages:
        meta = json.loads((out_dir / stage / "meta.json").read_text())
        assert meta["status"] == "complete", stage
        assert json.loads((out_dir / stage / "config.json").read_text())["config_hash"] == meta["config_hash"]
    # what each stage's hash covers beside its config: the content of the files it read
    from text2emoji.core.files import file_hash

    dataset_hash = json.loads((out_dir / "dataset" / "config.json").read_text())["config_hash"]
    train_inputs = json.loads((out_dir / "train" / "openness" / "config.json").read_text())["inputs"]
    assert train_inputs == {"dataset": dataset_hash, "merge": "false"}
    # a finished trait keeps its adapter, not the checkpoints that only served resuming it
    assert not (out_dir / "train" / "openness" / "checkpoints").exists()
    assert (out_dir / "train" / "openness" / "adapter" / "adapter_model.safetensors").is_file()
    weights = {t: file_hash(out_dir / "train" / t / "adapter" / "adapter_model.safetensors") for t in ("openness", "neuroticism")}
    for stage in ("evaluate", "neurons", "trace", "ablate", "patch"):
        inputs = json.loads((out_dir / stage / "config.json").read_text())["inputs"]
        assert all(inputs[t] == h != "" for t, h in weights.items()), stage
    assert json.loads((out_dir / "ablate" / "config.json").read_text())["inputs"]["neurons"] == file_hash(
        out_dir / "neurons" / "top_neurons.json")
    metrics = json.loads((out_dir / "metrics.json").read_text())
    table = json.loads((out_dir / "evaluate" / "emoji_table.json").read_text())["rows"]
    # the report's numbers are the stages' numbers
    row = next(r for r in table if r["trait"] == "openness" and r["method"] == "peft")
    assert metrics["emoji_table"]["openness/peft"]["emoji_rate"] == row["emoji_rate"]
    assert metrics["ablate"]["openness"]["zero"]["delta"] == json.loads(
        (out_dir / "ablate" / "ablation.json").read_text())["openness"]["zero"]["candidate_delta"]
    assert summary["top_neuron"]["openness"] == metrics["neurons"]["openness"]["top_neuron"]
    assert summary["emoji_rate"]["openness/peft"] == row["emoji_rate"] and summary["wall_seconds"] > 0
    report = (out_dir / "report.md").read_text()
    assert (out_dir / "quality" / "wordclouds.png").is_file()
    for section in ("## 1. Emoji use", "## 4. Last-layer neurons", "## 5. Ablation", "## Provenance"):
        assert section in report
    # the known-answer organisms, beside the study's adapter probed alike, before the mechanistic results
    org = metrics["organisms"]
    assert org["positive"]["planted_fraction"] == 1.0 and org["negative"]["kind"] == "negative"
    assert org["study"]["kind"] == "study" and org["comparison"]["traits"]
    assert "peft" in json.loads((out_dir / "organisms" / "study" / "result.json").read_text())["reused"]
    assert report.index("## Can this run detect the effect?") < report.index("## 4. Last-layer neurons")
    # calibrate read the neurons' and trace's numbers instead of recomputing them
    assert {"activations", "trace"} <= set(json.loads((out_dir / "calibrate" / "config.json").read_text())["inputs"])
    html = (out_dir / "report.html").read_text()
    assert "<table>" in html and "data:image/png;base64," in html and 'src="evaluate/' not in html
    finished = json.loads((out_dir / "patch" / "meta.json").read_text())["finished"]
    code, _, err = run_cli(capsys, *args)
    assert code == 0 and "loading" not in err
    assert json.loads((out_dir / "patch" / "meta.json").read_text())["finished"] == finished
    # figures rebuild from results alone
    (out_dir / "neurons" / "neuron_heatmap.png").unlink()
    assert main(["figures", str(out_dir)]) == 0
    assert (out_dir / "neurons" / "neuron_heatmap.png").is_file()
    # a changed dataset is a different config: refused without --force, never overwritten silently
    small_dataset(data, n_topics=45)
    code, _, err = run_cli(capsys, *args)
    assert code == 1 and "holds results of another config" in err and "--force" in err


def test_run_paper_preset_sets_the_study_scale(tmp_path, capsys, tiny_model_dir):
    """--preset paper reaches every stage with the study's settings (here cut short by the
    overrides): the reference QLoRA recipe, 5 random sets ablated during generation over every
    question, the logit lens over all three emojis of a trait."""
    out_dir = tmp_path / "run"
    data = small_dataset(tmp_path / "d.jsonl")
    code, _, err = run_cli(capsys, "run", "--preset", "paper", "--out", str(out_dir), "--model", str(tiny_model_dir),
                         "--device", "cpu", "--data", str(data), "--max-steps", "1", "--n-questions", "2",
                         "--max-new-tokens", "3", "--n-random", "2")
    assert code == 0, [line for line in err.splitlines() if "error" in line]
    recipe = json.loads((out_dir / "train" / "openness" / "train_summary.json").read_text())["resolved_config"]
    assert {k: recipe[k] for k in ("r", "alpha", "dropout", "lr", "batch_size", "grad_accum", "max_length")} == {
        "r": 64, "alpha": 16, "dropout": 0.1, "lr": 2e-4, "batch_size": 2, "grad_accum": 2, "max_length": 512}
    ablation = json.loads((out_dir / "ablate" / "ablation.json").read_text())["openness"]
    assert len(ablation["generation"]["random"]) == 5 and ablation["generation"]["n_questions"] == 2
    assert ablation["zero"]["random_control"]["n_draws"] == 2
    trace = json.loads((out_dir / "trace" / "trace.json").read_text())["traits"]["openness"]
    assert trace["logit_lens_emojis"] == trace["emojis"] and len(trace["emojis"]) == 3
    assert "## 6. Logit lens" in (out_dir / "report.md").read_text()


def test_run_rejects_a_bad_dataset_before_loading_the_model(tmp_path, capsys, tiny_model_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"trait": "openness", "topic": "x", "question": "q", "answer": "Hi 🙂"}\n', encoding="utf-8")
    code, _, err = run_cli(capsys, "run", "--out", str(tmp_path / "r"), "--data", str(bad),
                           "--model", str(tiny_model_dir), "--device", "cpu")
    assert code == 1
    assert f"{bad}:row 1: field 'answer': contains emoji 🙂" in err
    assert "loading" not in err and not (tmp_path / "r" / "model").exists()
