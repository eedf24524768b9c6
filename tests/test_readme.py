"""The README's notebook example runs as written, on the embedded model, with an adapter made
here (random LoRA weights stand in for a trained adapter: the example is about mechanics)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _notebook_block() -> str:
    m = re.search(r"<!-- notebook example -->\n```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert m, "README lost its notebook example"
    return m.group(1)


@pytest.mark.slow
def test_readme_notebook_example_runs(embedded_dir, tmp_path, capsys):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(embedded_dir)
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                           target_modules=["gate_proj", "up_proj", "down_proj"]))
    lora.save_pretrained(tmp_path / "adapter")
    code = _notebook_block()
    placeholder = '"results/main/train/extraversion/adapter"'
    assert placeholder in code
    code = code.replace(placeholder, repr(str(tmp_path / "adapter")))
    ns: dict = {}
    exec(compile(code, str(README), "exec"), ns)
    assert ns["post"].shape == (27, 1536)
    assert len(ns["top"]) == 10 and ns["abl"].random_control.n_draws == 10
    assert ns["pat"].candidate_delta.ci_lo <= ns["pat"].candidate_delta.mean <= ns["pat"].candidate_delta.ci_hi
    assert "mean_increase" in capsys.readouterr().out
