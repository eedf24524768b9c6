"""QLoRA training mechanics on a tiny random-weight model (fallback chat format)."""

from __future__ import annotations

import csv

import pytest
import torch

from finetune.sft_data import IGNORE, collate, encode, length_grouped_batches
from finetune.train import TrainConfig, TrainingError, train
from tests.conftest import tiny_tokenizer
from text2emoji.core.config import build_config
from text2emoji.core.schema import TRAITS, Row


def _rows(n=24):
    rows = []
    for i in range(n):
        for t in TRAITS:
            words = " ".join(f"w{(i * 7 + k) % 100}" for k in range(3 + i % 5))
            rows.append(Row(t, f"t{i}", f"what are your thoughts on w{i}", f"i {words}", "test" if i < 4 else "train"))
    return rows


def _cfg(model_dir, **kw):
    base = dict(model=str(model_dir), device="cpu", trait="openness", preset="quick", max_steps=4,
                batch_size=4, eval_rows=8, eval_every=2, save_every=2, r=4, alpha=8, lr=1e-2)
    return build_config(TrainConfig, {**base, **kw})


def test_encode_masks_the_prompt():
    tok = tiny_tokenizer()
    ex = encode(tok, Row("openness", "t", "what are your thoughts", "i w1 w2", "train"), 64)
    n_prompt = sum(label == IGNORE for label in ex.labels)
    # "User: what are your thoughts\n\nAssistant:" = 6 words; then "i w1 w2" and </s>
    assert n_prompt == 6 and ex.n_target == 4
    assert tok.decode(ex.input_ids[n_prompt:]) == "i w1 w2 </s>"
    with pytest.raises(ValueError, match="over max_length 5"):
        encode(tok, Row("openness", "t", "what are your thoughts", "i w1 w2", "train"), 5)


def test_length_grouping_and_collate():
    lengths = [5, 1, 9, 3, 7, 2, 8, 4, 6, 10]
    a = length_grouped_batches(lengths, 3, seed=1, mega=2)
    assert a == length_grouped_batches(lengths, 3, seed=1, mega=2)
    assert sorted(i for b in a for i in b) == list(range(10))
    tok = tiny_tokenizer()
    exs = [encode(tok, Row("openness", "t", "what", "i " * n, "train"), 64) for n in (1, 4)]
    batch = collate(exs, pad_id=0)
    assert batch["input_ids"].shape == (2, len(exs[1]))
    assert batch["attention_mask"][0].sum() == len(exs[0])
    assert (batch["labels"][0, len(exs[0]):] == IGNORE).all()


def test_train_writes_a_loadable_adapter_and_learns(tiny_model_dir, tmp_path):
    summary = train(_cfg(tiny_model_dir, max_steps=8, save_every=4), _rows(), tmp_path / "run")
    assert summary["steps"] == 8
    assert summary["final_held_out_loss"] < summary["first_held_out_loss"]
    with open(tmp_path / "run" / "losses.csv") as f:
        hist = list(csv.DictReader(f))
    assert hist[0]["step"] == "0" and hist[-1]["step"] == "8"
    from text2emoji.stages.train import draw_losses

    (tmp_path / "train").mkdir()
    (tmp_path / "run").rename(tmp_path / "train" / "openness")
    paths = draw_losses(tmp_path / "train")
    assert [p.name for p in paths] == ["loss_curves.pdf", "loss_curves.png"]
    (tmp_path / "train" / "openness").rename(tmp_path / "run")

    import bitsandbytes as bnb
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = PeftModel.from_pretrained(base, tmp_path / "run" / "adapter")
    targets = {n.split(".")[-1] for n, m in peft_model.named_modules() if hasattr(m, "lora_A")}
    assert targets == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    lora_b = [p for n, p in peft_model.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b)  # trained: B starts at zero
    del bnb


def test_base_is_really_nf4(tiny_model_dir):
    import bitsandbytes as bnb

    from finetune.train import load_for_training

    model, _ = load_for_training(_cfg(tiny_model_dir).resolved())
    down = model.get_base_model().model.layers[0].mlp.down_proj
    assert isinstance(down.base_layer, bnb.nn.Linear4bit)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    # see _keep_nf4_differentiable; without it, on AVX512-BF16 CPUs, the resume test below fails
    assert all(not m.support_avx512bf16_for_cpu for m in model.modules() if isinstance(m, bnb.nn.Linear4bit))


def test_training_is_deterministic_and_resumes_exactly(tiny_model_dir, tmp_path, monkeypatch):
    rows = _rows()
    full = train(_cfg(tiny_model_dir), rows, tmp_path / "a")
    again = train(_cfg(tiny_model_dir), rows, tmp_path / "b")
    hist = lambda d: list(csv.DictReader(open(d / "losses.csv")))  # noqa: E731
    assert hist(tmp_path / "a") == hist(tmp_path / "b")

    import finetune.train as tr

    real_log = tr._log

    def crash_at_step_3(msg):
        real_log(msg)
        if "step 3/4" in msg:
            raise KeyboardInterrupt  # killed after step 3; the last checkpoint is step 2

    monkeypatch.setattr(tr, "_log", crash_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(tiny_model_dir), rows, tmp_path / "c")
    monkeypatch.setattr(tr, "_log", real_log)
    assert [p.name for p in tr._checkpoints(tmp_path / "c")] == ["step-2"]
    resumed = train(_cfg(tiny_model_dir), rows, tmp_path / "c")
    assert hist(tmp_path / "c") == hist(tmp_path / "a")
    assert resumed["final_held_out_loss"] == full["final_held_out_loss"] == again["final_held_out_loss"]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_model_dir, tmp_path, monkeypatch):
    import finetune.train as tr

    real = tr._loss_sum
    calls = {"n": 0}

    def nan_on_third_step(model, batch):
        out = real(model, batch)
        if model.training:
            calls["n"] += 1
            if calls["n"] == 3:
                return out * float("nan")
        return out

    monkeypatch.setattr(tr, "_loss_sum", nan_on_third_step)
    with pytest.raises(TrainingError, match=r"non-finite training loss at step 3 .*checkpoints/step-2"):
        train(_cfg(tiny_model_dir), _rows(), tmp_path / "n")
    assert (tmp_path / "n" / "checkpoints" / "step-2" / "adapter").is_dir()
    assert not (tmp_path / "n" / "adapter").exists()


def test_merge_equals_adapter_on_the_same_float_base(tiny_model_dir, tmp_path):
    """Merged into the float base, the model equals float base + adapter (up to float error);
    the drift to the nf4 base + adapter it was trained as is the quantization's, and is > 0."""
    from finetune.merge import logit_drift, merge_adapter
    from interp.models import ModelConfig, load_model

    train(_cfg(tiny_model_dir, max_steps=2), _rows(), tmp_path / "run")
    adapter = tmp_path / "run" / "adapter"
    merged_dir = merge_adapter(str(tiny_model_dir), adapter, tmp_path / "merged")
    float_adapter = load_model(ModelConfig(model=str(tiny_model_dir), device="cpu"), adapter=str(adapter))
    nf4_adapter = load_model(ModelConfig(model=str(tiny_model_dir), device="cpu", load_in_4bit=True), adapter=str(adapter))
    merged = load_model(ModelConfig(model=str(merged_dir), device="cpu"))
    texts = ["what are your thoughts on w1", "i w2 w3 w4 w5"]
    same = logit_drift(float_adapter.model, merged.model, merged.tokenizer, texts)
    assert same["max_abs_logit_diff"] < 1e-4 and same["top1_agreement"] == 1.0
    drift = logit_drift(nf4_adapter.model, merged.model, merged.tokenizer, texts)
    assert drift["max_abs_logit_diff"] > 1e-3 and drift["n_positions"] == 11
    # mean KL(nf4 || merged) over real positions, by hand
    import torch

    batch = merged.tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        pa = nf4_adapter.model(**batch).logits.log_softmax(-1)
        pb = merged.model(**batch).logits.log_softmax(-1)
    kls = [float((pa[b, t].exp() * (pa[b, t] - pb[b, t])).sum())
           for b in range(2) for t in range(pa.shape[1]) if batch["attention_mask"][b, t]]
    assert drift["mean_kl"] == pytest.approx(sum(kls) / len(kls), rel=1e-4)


def test_held_out_loss_equals_transformers_loss(tiny_llama):
    """Our answer-token loss over a batch equals the token-weighted mean of transformers'
    own per-example loss with the same labels."""
    from finetune.train import held_out_loss

    tok = tiny_tokenizer()
    exs = [encode(tok, Row("openness", "t", "what are your thoughts", "i " + "w1 " * n, "test"), 64) for n in (1, 5, 2)]
    ours = held_out_loss(tiny_llama, exs, pad_id=0, batch_size=2)
    total, n = 0.0, 0
    for e in exs:
        ids = torch.tensor([e.input_ids])
        with torch.no_grad():
            loss = tiny_llama(input_ids=ids, labels=torch.tensor([e.labels])).loss.item()
        total += loss * e.n_target
        n += e.n_target
    assert ours == pytest.approx(total / n, rel=1e-5)


def test_loss_sum_over_answer_logits_equals_full_logits(tiny_llama):
    """Logits from the batch's first answer position on give the loss of all positions' logits,
    with answers starting at different positions; a batch without answer tokens sums to 0."""
    from finetune.train import _loss_sum

    tok = tiny_tokenizer()
    rows = [Row("openness", "t", "what " * n + "are your thoughts", "i " + "w1 " * m, "test") for n, m in ((1, 4), (6, 2), (3, 7))]
    batch = collate([encode(tok, r, 64) for r in rows], pad_id=0)
    labels = batch["labels"][:, 1:]
    assert len({int((row != -100).nonzero()[0]) for row in labels}) == 3  # three different answer starts
    with torch.no_grad():
        full = tiny_llama(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        want = torch.nn.functional.cross_entropy(full[:, :-1].flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum")
        assert _loss_sum(tiny_llama, batch).item() == pytest.approx(want.item(), rel=1e-5)
        batch["labels"][:] = -100
        assert _loss_sum(tiny_llama, batch).item() == 0.0


def test_a_leftover_temp_checkpoint_is_ignored(tmp_path):
    import finetune.train as tr

    (tmp_path / "checkpoints" / "step-2").mkdir(parents=True)
    (tmp_path / "checkpoints" / "step-2" / "state.json").write_text("{}")
    (tmp_path / "checkpoints" / "step-4.tmp").mkdir()
    (tmp_path / "checkpoints" / "step-4.tmp" / "state.json").write_text("{}")
    assert [p.name for p in tr._checkpoints(tmp_path)] == ["step-2"]


def test_bf16_compute_learns_as_float32_within_tolerance(tiny_model_dir, tmp_path):
    """The quick preset trains the nf4 base in bfloat16 (as QLoRA on a GPU; ~30% faster on an
    AVX512-BF16 CPU): the held-out loss curve stays within 1% of float32's at every evaluation
    (on the embedded model: 3.318 vs 3.316 after 24 steps, bench/README.md)."""
    from finetune.train import load_for_training, training_model

    cfg32, cfg16 = _cfg(tiny_model_dir, compute_dtype="float32", max_steps=6), _cfg(tiny_model_dir, max_steps=6)
    assert cfg16.resolved().compute_dtype == "bfloat16"  # the quick preset's
    assert training_model(cfg16.resolved()).dtype == "bfloat16" and training_model(cfg32.resolved()).dtype == "float32"
    import bitsandbytes as bnb

    model, _ = load_for_training(cfg16.resolved())
    nf4 = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert nf4 and all(m.compute_dtype == torch.bfloat16 for m in nf4)  # the nf4 layers really compute in bf16
    train(cfg32, _rows(), tmp_path / "f32")
    train(cfg16, _rows(), tmp_path / "bf16")

    def held_out(d):
        with open(d / "losses.csv") as f:
            return [float(r["eval_loss"]) for r in csv.DictReader(f) if r["eval_loss"]]

    a, b = held_out(tmp_path / "f32"), held_out(tmp_path / "bf16")
    assert len(a) == len(b) == 4 and a[-1] < a[0] and b[-1] < b[0]
    assert b == pytest.approx(a, rel=0.01)
    assert b != a  # not the same computation
