"""The mechanistic stages with ``--remote``: an adapter carried as an in-trace intervention gives
the PEFT model's own numbers (locally through nnsight, and through nnsight's simulation of the
NDIF server), for several architectures; the stages run that way write what they write locally."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from interp.remote_probe import Edit, emoji_trace_nnsight, read_lora, score_pairs
from interp.tracing import emoji_trace
from tests.test_remote import (  # noqa: F401
    EMOJIS,
    HUB_ID,
    PROMPTS,
    byte_level_tokenizer,
    hub_cache,
    ndif_simulated,
)
from text2emoji.cli import main
from text2emoji.core.errors import UserError

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LENS = [EMOJIS[0], EMOJIS[2], "👋"]  # two that are scored, one that is not


def bpe_model(arch: str):
    from transformers import AutoModelForCausalLM

    from tests.conftest import tiny_config

    tok = byte_level_tokenizer()
    cfg = tiny_config(arch)
    cfg.vocab_size = len(tok)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval(), tok


def peft_of(base, path, *, rslora: bool = False, targets=TARGETS, seed: int = 1):
    """``base`` with a random LoRA adapter (B not zero), saved to ``path``; the PEFT model."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    pm = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, use_rslora=rslora,
                                                        target_modules=targets, init_lora_weights=False))
    pm.eval()
    pm.save_pretrained(path)
    return pm


@pytest.mark.parametrize("arch,rslora", [("llama", False), ("gemma2", True), ("qwen3", False)])
def test_adapter_as_intervention_equals_peft(arch, rslora, tmp_path):
    """emoji_trace through nnsight on the bare base with the adapter's patches = emoji_trace of
    the PEFT model (exact multi-token log-probs, both variants, and the logit lens; Gemma 2 with
    a small final soft-cap, which the lens applies as the model does)."""
    base, tok = bpe_model(arch)
    if arch == "gemma2":
        base.config.final_logit_softcapping = 0.5
    pm = peft_of(base, tmp_path, rslora=rslora)
    patches = read_lora(tmp_path, base)
    assert len(patches) == 7 * base.config.num_hidden_layers
    assert patches[0].path == "model.layers.0.self_attn.q_proj" and patches[-1].path.endswith("1.mlp.down_proj")
    assert patches[0].scale == pytest.approx(8 / 2 if rslora else 8 / 4)
    ref = emoji_trace(pm, tok, PROMPTS, EMOJIS, lens_emojis=LENS, chat=False, batch_size=3)
    got = emoji_trace_nnsight(base, tok, PROMPTS, EMOJIS, lens_emojis=LENS, chat=False, patches=patches, batch_size=3)
    bare = emoji_trace(base, tok, PROMPTS, EMOJIS, lens_emojis=LENS, chat=False, batch_size=3)
    for key in ("no_space", "leading_space", "lens"):
        np.testing.assert_allclose(got[key], ref[key], atol=2e-5)
        assert np.abs(ref[key] - bare[key]).max() > 0.05  # the adapter matters: the test can fail
    assert got["lens"].shape == (len(PROMPTS), len(LENS), base.config.num_hidden_layers)
    np.testing.assert_allclose(got["lens"][..., -1][:, 0], got["no_space"][:, 0], atol=1e-5)  # last layer = the model


def test_site_read_and_edit_equal_torch_hooks(tmp_path):
    """The site's input read in the trace = a capture of the PEFT model; neurons set there = the
    torch intervention hook's scores (the adapter applied to the edited input, as PEFT does)."""
    from interp.capture import capture
    from interp.intervene import ablation_patch, intervention
    from interp.tracing import emoji_pairs, score_continuations

    base, tok = bpe_model("llama")
    pm = peft_of(base, tmp_path, targets=["up_proj", "down_proj"])
    patches = read_lora(tmp_path, base)
    pairs = emoji_pairs(tok, PROMPTS, EMOJIS[:2], chat=False)
    site = "blocks.-1.mlp.hook_post"
    neurons = [3, 17, 40]
    for mode, values in (("zero", None), ("mean", np.linspace(-1, 1, 128))):
        patch = ablation_patch(neurons, mode, values)
        with intervention(pm, patch, site):
            ref = [s.per_token for s in score_continuations(pm, pairs)]
        got = score_pairs(base, tok, pairs, patches=patches, site=site, edit=Edit(patch.neurons, patch.values),
                          batch_size=4)[0]
        for r, g in zip(ref, got, strict=True):
            np.testing.assert_allclose(g, r, atol=2e-5)
    intact = score_pairs(base, tok, pairs, patches=patches, batch_size=4)[0]
    assert max(abs(a - b) for r, g in zip(ref, intact, strict=True) for a, b in zip(r, g, strict=True)) > 1e-3
    # the site's value at the last position of each prompt alone = capture's
    from interp.capture import encode, pad_left
    from interp.remote_probe import trace_batch

    ids, mask, pos = pad_left([e.ids for e in encode(tok, PROMPTS)], 0)
    got = trace_batch(base, tok, ids, mask, pos, keep=2, patches=patches, site=site).site[:, -1]
    np.testing.assert_allclose(got.numpy(), capture(pm, tok, PROMPTS, site=site).activations, atol=1e-5)
    # read before the edit writes there (in place)
    edited = trace_batch(base, tok, ids, mask, pos, keep=2, patches=patches, site=site,
                         edit=Edit(torch.tensor([3]), torch.tensor([50.0])))
    np.testing.assert_array_equal(edited.site[:, -1].numpy(), got.numpy())
    assert np.abs(edited.logp.numpy() - trace_batch(base, tok, ids, mask, pos, keep=2, patches=patches).logp.numpy()).max() > 1e-3


def test_adapter_block_survives_serialization(tmp_path, ndif_simulated):  # noqa: F811
    """What NDIF would run, the adapter's tensors and the loop over envoys included: nnsight's
    simulation of the server (this package's modules hidden) gives the local numbers."""
    base, tok = bpe_model("llama")
    peft_of(base, tmp_path)
    patches = read_lora(tmp_path, base)
    local = emoji_trace_nnsight(base, tok, PROMPTS[:2], EMOJIS[:2], lens_emojis=EMOJIS[:1], chat=False, patches=patches)
    from interp.capture import _NNSIGHT

    _NNSIGHT.pop(base, None)
    shipped = emoji_trace_nnsight(base, tok, PROMPTS[:2], EMOJIS[:2], lens_emojis=EMOJIS[:1], chat=False,
                                  patches=patches, remote=True)
    for key in local:
        np.testing.assert_allclose(shipped[key], local[key], atol=1e-5)


def test_read_lora_refuses_what_it_cannot_apply(tmp_path):
    base, _ = bpe_model("llama")
    peft_of(base, tmp_path)
    cfg_file = tmp_path / "adapter_config.json"
    good = json.loads(cfg_file.read_text())
    for field, value in (("use_dora", True), ("bias", "lora_only"), ("modules_to_save", ["lm_head"]),
                         ("rank_pattern", {"q_proj": 8}), ("alpha_pattern", {"q_proj": 8}), ("fan_in_fan_out", True),
                         ("peft_type", "IA3"), ("layer_replication", [[0, 2]]), ("init_lora_weights", "pissa_niter_4"),
                         ("init_lora_weights", "loftq")):
        cfg_file.write_text(json.dumps({**good, field: value}))
        with pytest.raises(UserError, match=f"{cfg_file}: field {field}="):
            read_lora(tmp_path, base)
    cfg_file.write_text(json.dumps({**good, "init_lora_weights": "gaussian"}))  # initialisation alone: applies
    assert len(read_lora(tmp_path, base)) == 14
    cfg_file.write_text(json.dumps(good))
    from safetensors.torch import load_file, save_file

    tensors = load_file(tmp_path / "adapter_model.safetensors")
    for extra, message in (({"base_model.model.lm_head.lora_A.weight": torch.zeros(4, 64),
                             "base_model.model.lm_head.lora_B.weight": torch.zeros(300, 4)},
                            "an adapter on the unembedding"),
                           ({"base_model.model.model.layers.0.mlp.up_proj.lora_A.weight": torch.zeros(4, 63)},
                            "do not fit"),
                           ({"base_model.model.model.layers.0.mlp.up_proj.lora_A.weight": None}, "not both"),
                           ({"base_model.model.model.norm.weight": torch.zeros(64)}, "no LoRA matrix")):
        changed = dict(tensors)
        for k, v in extra.items():
            if v is None:
                changed.pop(k)
            else:
                changed[k] = v
        save_file(changed, tmp_path / "adapter_model.safetensors")
        with pytest.raises(UserError, match=message):
            read_lora(tmp_path, base)
    save_file(tensors, tmp_path / "adapter_model.safetensors")
    other, _ = bpe_model("qwen3")
    other.model.layers = other.model.layers[:1]  # the adapter names layer 1, which this model lacks
    with pytest.raises(UserError, match=r"adapter_model.safetensors: key base_model.model.model.layers.1"):
        read_lora(tmp_path, other)
    (tmp_path / "adapter_model.safetensors").unlink()
    with pytest.raises(UserError, match="adapter_model.safetensors: not found"):
        read_lora(tmp_path, base)


# --- the stages, end to end ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, tmp_path_factory):
    from finetune.io import write_jsonl
    from finetune.train import train
    from tests.test_train import _cfg, _rows

    d = tmp_path_factory.mktemp("remote-run")
    rows = _rows()
    write_jsonl(rows, d / "data.jsonl")
    for trait in ("openness", "neuroticism"):
        train(_cfg(tiny_model_dir, trait=trait, max_steps=2), rows, d / "local" / "train" / trait)
    return d


@pytest.fixture
def as_hub_model(monkeypatch, tiny_model_dir):
    """``--model tiny-org/tiny-llama --remote`` opens the tiny model (as NDIF would hold it) and
    the hub is not asked whether the id exists."""
    import interp.models
    import interp.remote_probe
    from interp.models import ModelConfig, load_model

    monkeypatch.setattr(interp.models, "_check_hub", lambda repo_id: None)
    real = interp.models.load_tokenizer
    # the dataset stage checks answer lengths with the model's tokenizer (from the hub, which this test lacks)
    monkeypatch.setattr(interp.models, "load_tokenizer",
                        lambda name, *a, **k: real(str(tiny_model_dir) if name == HUB_ID else name, *a, **k))
    opened = []

    def fake_open(model_id):
        assert model_id == HUB_ID
        lm = load_model(ModelConfig(model=str(tiny_model_dir), device="cpu"))
        opened.append(lm.model)
        return lm.model, lm.tokenizer

    monkeypatch.setattr(interp.remote_probe, "open_remote", fake_open)
    return opened


def test_trace_remote_writes_the_local_numbers(tiny_model_dir, run_dir, as_hub_model, ndif_simulated, capsys):  # noqa: F811
    common = ["--trait", "openness", "--trait", "neuroticism", "--n-boot", "100", "--adapters",
              str(run_dir / "local" / "train")]
    assert main(["trace", "--model", str(tiny_model_dir), "--device", "cpu", "--out", str(run_dir / "local"), *common]) == 0
    assert main(["trace", "--model", HUB_ID, "--remote", "--out", str(run_dir / "remote"), *common]) == 0, \
        capsys.readouterr().err
    assert len(as_hub_model) == 1
    local = json.loads((run_dir / "local" / "trace" / "trace.json").read_text())
    remote = json.loads((run_dir / "remote" / "trace" / "trace.json").read_text())
    assert remote["prompts"] == local["prompts"]
    for t, r in local["traits"].items():
        g = remote["traits"][t]
        for key in ("any_emoji_pre", "any_emoji_post", "logit_lens_pre", "logit_lens_post"):
            np.testing.assert_allclose(g[key], r[key], atol=1e-4)
        for key in ("logprob_pre", "logprob_post"):
            for v in ("no_space", "leading_space"):
                np.testing.assert_allclose(g[key][v], r[key][v], atol=1e-4)
    s_local = json.loads((run_dir / "local" / "trace" / "summary.json").read_text())
    s_remote = json.loads((run_dir / "remote" / "trace" / "summary.json").read_text())
    for t in s_local:
        assert s_remote[t]["p"] == pytest.approx(s_local[t]["p"]) and s_remote[t]["n_prompts"] == s_local[t]["n_prompts"]
    saved = json.loads((run_dir / "remote" / "trace" / "config.json").read_text())
    assert saved["config"]["remote"] is True


def test_remote_stage_refusals(tiny_model_dir, run_dir, capsys):
    out = ["--out", str(run_dir / "refused"), "--adapters", str(run_dir / "local" / "train"), "--trait", "openness"]
    assert main(["trace", "--remote", "--model", str(tiny_model_dir), *out]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--remote needs a hub model id" in err and "a local model" in err
    assert not (run_dir / "refused" / "trace").exists()


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_dla_pieces_equal_the_peft_model(arch, tmp_path):
    """The neurons stage's pieces through nnsight: the emoji passes (last-layer neurons and final
    residual at the emoji's positions) and the DLA weights (W_out ⊙ γ) · W_U[t], with the
    adapter on down_proj counted, equal those of the PEFT model."""
    from interp.neuron_analysis import emoji_passes
    from interp.neurons import neuron_token_dla
    from interp.remote_probe import dla_token_weights_nnsight, emoji_passes_nnsight

    base, tok = bpe_model(arch)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    pm = peft_of(base, tmp_path)
    patches = read_lora(tmp_path, base)
    ref = emoji_passes(pm, tok, PROMPTS, EMOJIS[:3], batch_size=4)
    got = emoji_passes_nnsight(base, tok, PROMPTS, EMOJIS[:3], patches=patches, batch_size=4)
    assert got.keys() == ref.keys()
    for key, (act, resid) in ref.items():
        np.testing.assert_allclose(got[key][0].numpy(), act.numpy(), atol=2e-5)
        np.testing.assert_allclose(got[key][1].numpy(), resid.numpy(), atol=2e-5)
    tokens = [5, 17, 60, len(tok) - 1]
    want = neuron_token_dla(pm, tokens)
    have = dla_token_weights_nnsight(base, tok, tokens, patches=patches, chunk=48)  # chunks that do not divide d_mlp
    np.testing.assert_allclose(have.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)
    assert np.abs(want.numpy() - neuron_token_dla(base, tokens).numpy()).max() > 1e-3  # down_proj's adapter counts


def test_neurons_remote_writes_the_local_numbers(tiny_model_dir, run_dir, as_hub_model, ndif_simulated, capsys):  # noqa: F811
    common = ["--trait", "openness", "--trait", "neuroticism", "--n-boot", "100", "--n-perm", "200", "--k", "5",
              "--adapters", str(run_dir / "local" / "train")]
    assert main(["neurons", "--model", str(tiny_model_dir), "--device", "cpu", "--out", str(run_dir / "local"), *common]) == 0
    assert main(["neurons", "--model", HUB_ID, "--remote", "--out", str(run_dir / "remote"), *common]) == 0, \
        capsys.readouterr().err
    local, remote = run_dir / "local" / "neurons", run_dir / "remote" / "neurons"
    for name in ("pre", "post_openness", "post_neuroticism"):
        np.testing.assert_allclose(np.load(remote / "activations" / f"{name}.npy"),
                                   np.load(local / "activations" / f"{name}.npy"), atol=1e-5)
    for t in ("openness", "neuroticism"):
        np.testing.assert_allclose(np.load(remote / f"dla_change_{t}.npy"), np.load(local / f"dla_change_{t}.npy"),
                                   rtol=1e-4, atol=1e-6)
    tops_l = json.loads((local / "top_neurons.json").read_text())
    tops_r = json.loads((remote / "top_neurons.json").read_text())
    assert [r["neuron"] for r in tops_r["openness"]["by_mean"]] == [r["neuron"] for r in tops_l["openness"]["by_mean"]]
    assert main(["neurons", "--model", HUB_ID, "--remote", "--site", "blocks.0.mlp.hook_post",
                 "--out", str(run_dir / "remote2"), *common]) == 1
    assert "site: --remote reads the last layer's neurons" in capsys.readouterr().err


def test_remote_scorer_equals_the_last_layer_cache(tmp_path):
    """Ablation through RemoteScorer (a full pass per intervention, the adapter as patches) =
    the PEFT model's LastLayerScorer: intact scores, the neurons' values, zero and mean ablation."""
    from interp.intervene import LastLayerScorer, ablation_patch
    from interp.remote_probe import RemoteScorer
    from interp.tracing import emoji_pairs

    base, tok = bpe_model("llama")
    tok.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    pm = peft_of(base, tmp_path)
    pairs = emoji_pairs(tok, PROMPTS, EMOJIS[:3])
    ref = LastLayerScorer(pm, pairs, site="blocks.-1.mlp.hook_post")
    got = RemoteScorer(base, tok, pairs, patches=read_lora(tmp_path, base), site="blocks.-1.mlp.hook_post", batch_size=4)
    assert ref.exact and got.n_pairs == ref.n_pairs
    np.testing.assert_allclose(got.reference, ref.reference, atol=2e-5)
    # what matching reads off the activations: each neuron's size, both ways (rows may come in
    # another order: the sizes are means over rows)
    from interp.experiments import _magnitude

    assert got.activations().shape == ref.activations().shape
    means = ref.activations().mean(0).numpy()
    for m in (None, means):
        np.testing.assert_allclose(_magnitude(got.activations(), m)[0], _magnitude(ref.activations(), m)[0], atol=1e-5)
    for mode in ("zero", "mean"):
        patch = ablation_patch([1, 7, 99], mode, means)
        np.testing.assert_allclose(got.ablated(patch), ref.ablated(patch), atol=2e-5)
        assert np.abs(got.ablated(patch) - got.reference).max() > 1e-4
    # several ablated sets in one request = one request each
    patches = [ablation_patch(ns, "mean", means) for ns in ([1, 7, 99], [5], [0, 1, 2, 3])]
    for one, many in zip([got.ablated(p) for p in patches], got.ablated_many(patches), strict=True):
        np.testing.assert_array_equal(one, many)
    # the sequential control drawn in chunks of 3 sets per request = drawn one by one
    from interp.experiments import ablation_experiment

    got.chunk = 3
    kw = dict(mode="mean", n_random=8, seed=4, n_boot=50, placebo=False, site="blocks.-1.mlp.hook_post")
    a = ablation_experiment(pm, tok, PROMPTS, EMOJIS[:3], [1, 7, 99], scorer=ref, **kw)
    b = ablation_experiment(base, tok, PROMPTS, EMOJIS[:3], [1, 7, 99], scorer=got, **kw)
    assert a.random_control.n_draws == b.random_control.n_draws > 3 and a.random_control.p == b.random_control.p
    np.testing.assert_allclose(b.random_control.mean, a.random_control.mean, atol=1e-5)
    np.testing.assert_allclose(b.per_prompt_delta, a.per_prompt_delta, atol=1e-5)


def test_ablate_remote_writes_the_local_numbers(tiny_model_dir, run_dir, as_hub_model, ndif_simulated, capsys):  # noqa: F811
    common = ["--trait", "openness", "--n-boot", "100", "--adapters", str(run_dir / "local" / "train")]
    for where, model in (("local", ["--model", str(tiny_model_dir), "--device", "cpu"]),
                         ("remote", ["--model", HUB_ID, "--remote"])):
        out = ["--out", str(run_dir / f"{where}-ablate")]
        assert main(["neurons", *model, *out, *common, "--n-perm", "50", "--k", "4"]) == 0
        assert main(["ablate", *model, *out, *common, "--data", str(run_dir / "data.jsonl"), "--k", "3",
                     "--n-random", "5", "--n-questions", "3", "--n-random-generation", "2", "--max-new-tokens", "5",
                     "--batch-size", "4"]) == 0, capsys.readouterr().err
    local = json.loads((run_dir / "local-ablate" / "ablate" / "ablation.json").read_text())["openness"]
    remote = json.loads((run_dir / "remote-ablate" / "ablate" / "ablation.json").read_text())["openness"]
    assert remote["candidates"] == local["candidates"] and remote["questions"] == local["questions"]
    for mode in ("zero", "mean"):
        lo, re_ = local[mode], remote[mode]
        assert re_["method"] == "full forward passes through nnsight (remote)"
        np.testing.assert_allclose(re_["per_prompt_delta"], lo["per_prompt_delta"], atol=1e-4)
        assert re_["random_control"]["n_draws"] == lo["random_control"]["n_draws"] == 5
        np.testing.assert_allclose(re_["random_control"]["p"], lo["random_control"]["p"])
        np.testing.assert_allclose(re_["placebo"]["delta"]["mean"], lo["placebo"]["delta"]["mean"], atol=1e-4)
    # ablated generation on the server: the same greedy answers, intact, ablated and random sets
    assert remote["generation"] == local["generation"]
    assert len(local["generation"]["random"]) == 2 and local["generation"]["examples"]


def test_remote_stages_without_ndif_are_one_line_and_never_the_key(run_dir, tmp_path, hub_cache):  # noqa: F811
    """The real path up to the request (the hub model's skeleton on the meta device, the adapters
    read against it, the envoys resolved), then NDIF unreachable: one line, no key anywhere."""
    from tests.test_remote import SECRET, assert_key_nowhere, closed_port, run_cli

    host = f"http://127.0.0.1:{closed_port()}"
    common = ["--model", HUB_ID, "--remote", "--out", str(tmp_path / "run"), "--trait", "openness",
              "--adapters", str(run_dir / "local" / "train")]
    for argv in (["trace", *common], ["neurons", *common],
                 ["ablate", *common, "--data", str(run_dir / "data.jsonl"), "--no-generation"]):
        if argv[0] == "ablate":  # it reads the neurons stage's ranking first
            (tmp_path / "run" / "neurons").mkdir(parents=True, exist_ok=True)
            (tmp_path / "run" / "neurons" / "top_neurons.json").write_text(json.dumps(
                {"openness": {"by_mean": [{"neuron": n} for n in range(10)]}}))
        proc = run_cli(argv, tmp_path, hub_cache, key=SECRET, host=host)
        assert proc.returncode == 1, proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith(f"text2emoji: error: NDIF at {host} is unreachable"), proc.stderr
        assert "Traceback" not in proc.stderr
        assert_key_nowhere(proc, tmp_path)
    assert not list((tmp_path / "run").glob("*/summary.json"))


def test_generation_with_row_ablation_equals_the_local_hooks(tiny_model_dir, tmp_path):
    """Greedy answers through nnsight's generate, the adapter as patches and each row's own
    neurons set at every step = the PEFT model under the row-wise ablation hook."""
    from interp.behaviour.generation import DecodeSettings, generate
    from interp.intervene import row_ablation
    from interp.models import ModelConfig, load_model
    from interp.remote_probe import generate_nnsight

    lm = load_model(ModelConfig(model=str(tiny_model_dir), device="cpu"))
    base, tok = lm.model, lm.tokenizer
    pm = peft_of(base, tmp_path)
    patches = read_lora(tmp_path, base)
    site = "blocks.-1.mlp.hook_post"
    qs = ["what are your thoughts on w3", "the a is", "i w1 w2 w3 w4 w5", "you", "w9 w8 w7"]
    mask, fill = torch.zeros(len(qs), 128, dtype=torch.bool), torch.zeros(len(qs), 128)
    mask[1, [3, 17]] = True
    mask[2, :64], fill[2, :64] = True, 2.0
    mask[4, 64:], fill[4, 64:] = True, -1.0
    settings = DecodeSettings(max_new_tokens=6)
    with row_ablation(pm, site) as current:
        current(mask, fill)
        ref = generate(pm, tok, qs, settings)
    # two batches (the second without ablation) in one call
    got, plain = generate_nnsight(base, tok, [(qs, mask, fill), (qs, None, None)], settings, patches=patches, site=site)
    assert got == ref
    assert plain == generate(pm, tok, qs, settings)
    assert plain[2] != got[2]  # the ablation changes answers
    with pytest.raises(ValueError, match="greedy"):
        generate_nnsight(base, tok, [(qs, None, None)], DecodeSettings(do_sample=True))
    tok.padding_side = "right"
    with pytest.raises(ValueError, match="pads on the left"):
        generate_nnsight(base, tok, [(qs, None, None)], settings)


def test_emoji_report_with_adapter_and_lens_equals_peft(tmp_path):
    from interp.remote_probe import emoji_report_nnsight
    from interp.tracing import emoji_report, logit_lens

    base, tok = bpe_model("llama")
    pm = peft_of(base, tmp_path)
    ref = emoji_report(pm, tok, PROMPTS[2], EMOJIS)
    got = emoji_report_nnsight(base, tok, PROMPTS[2], EMOJIS, patches=read_lora(tmp_path, base), lens=True)
    for r, g in zip(ref, got, strict=True):
        for key in ("no_space", "leading_space"):
            assert g[key]["token_ids"] == r[key]["token_ids"] and g[key]["tokens"] == r[key]["tokens"]
            np.testing.assert_allclose(g[key]["per_token_logprob"], r[key]["per_token_logprob"], atol=2e-5)
            assert g[key]["logprob"] == pytest.approx(r[key]["logprob"], abs=1e-4)
        np.testing.assert_allclose(g["logit_lens_logprob"], logit_lens(pm, tok, [PROMPTS[2]], r["emoji"], chat=False)[0],
                                   atol=2e-5)


def test_emoji_prob_remote_with_adapter_and_lens(tiny_model_dir, run_dir, as_hub_model, ndif_simulated, capsys):  # noqa: F811
    adapter = str(run_dir / "local" / "train" / "openness" / "adapter")
    args = ["--prompt", "what are your thoughts on w3", "--emoji", "🎉", "--emoji", "👍", "--chat", "--logit-lens",
            "--adapter", adapter]
    assert main(["emoji-prob", "--model", str(tiny_model_dir), "--device", "cpu", *args]) == 0
    local = json.loads(capsys.readouterr().out)
    assert main(["emoji-prob", "--model", HUB_ID, "--remote", *args]) == 0
    remote = json.loads(capsys.readouterr().out)
    assert remote["remote"] is True and local["remote"] is False
    for key in ("base", "adapter_model"):
        for r, g in zip(local[key], remote[key], strict=True):
            np.testing.assert_allclose(g["logit_lens_logprob"], r["logit_lens_logprob"], atol=1e-4)
            for v in ("no_space", "leading_space"):
                assert g[v]["logprob"] == pytest.approx(r[v]["logprob"], abs=1e-4)
    assert remote["adapter_model"][0]["no_space"]["logprob"] != pytest.approx(remote["base"][0]["no_space"]["logprob"])


def test_one_request_per_pass(tiny_model_dir, tmp_path, monkeypatch):
    """What goes to NDIF: every batch of a pass in one request (one session), 3 ablated sets in
    one request, every generation batch in one request."""
    from nnsight.intervention.backends.local import LocalSimulationBackend
    from nnsight.modeling.language import LanguageModel

    from interp.behaviour.generation import DecodeSettings
    from interp.intervene import ablation_patch
    from interp.remote_probe import RemoteScorer, generate_nnsight
    from interp.tracing import emoji_pairs

    requests = []

    def backend(self, *a, **k):
        requests.append(1)
        return LocalSimulationBackend(self)

    monkeypatch.setattr(LanguageModel, "_remote_backend", backend)
    base, tok = bpe_model("llama")
    tok.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    tok.padding_side = "left"
    peft_of(base, tmp_path)
    patches = read_lora(tmp_path, base)
    pairs = emoji_pairs(tok, PROMPTS, EMOJIS)
    score_pairs(base, tok, pairs, patches=patches, batch_size=4, remote=True)  # 7 batches
    assert len(requests) == 1
    scorer = RemoteScorer(base, tok, pairs, patches=patches, site="blocks.-1.mlp.hook_post", batch_size=8, remote=True)
    scorer.ablated_many([ablation_patch([n], "zero") for n in (1, 2, 3)])
    assert len(requests) == 3
    generate_nnsight(base, tok, [(PROMPTS[:2], None, None), (PROMPTS[2:], None, None)], DecodeSettings(max_new_tokens=2),
                     patches=patches, remote=True)
    assert len(requests) == 4


def test_open_remote_prepares_the_tokenizer(monkeypatch, tiny_model_dir):
    """A hub tokenizer as loaded (right padding, maybe no pad token) is made to pad on the left
    with a pad token, as load_model does for local models."""
    import types

    import interp.remote
    from interp.models import load_tokenizer
    from interp.remote_probe import open_remote

    tok = load_tokenizer(str(tiny_model_dir))
    tok.padding_side, tok.pad_token = "right", None
    module = torch.nn.Linear(1, 1)
    monkeypatch.setattr(interp.remote, "remote_key", lambda: "k")
    monkeypatch.setattr(interp.remote, "remote_model",
                        lambda model_id: types.SimpleNamespace(pipeline=types.SimpleNamespace(model=module), tokenizer=tok))
    got_model, got_tok = open_remote(HUB_ID)
    assert got_model is module and got_tok.padding_side == "left" and got_tok.pad_token == got_tok.eos_token


def test_adapter_in_bfloat16_rounds_as_peft(tmp_path):
    """On a bfloat16 base (as NDIF serves models) the update is computed in float32 and rounded
    once, as PEFT's LoRA layer does: the same numbers as the PEFT model on the same path, exactly."""
    from peft import PeftModel

    base, tok = bpe_model("llama")
    peft_of(base, tmp_path)
    base16 = base.to(torch.bfloat16)
    pm16 = PeftModel.from_pretrained(copy.deepcopy(base16), tmp_path).eval()
    assert {p.dtype for n, p in pm16.named_parameters() if "lora_" in n} == {torch.float32}
    got = emoji_trace_nnsight(base16, tok, PROMPTS, EMOJIS, chat=False, patches=read_lora(tmp_path, base16),
                              batch_size=3)
    ref = emoji_trace_nnsight(pm16, tok, PROMPTS, EMOJIS, chat=False, batch_size=3)  # PEFT's own layers
    for key in ("no_space", "leading_space"):
        np.testing.assert_array_equal(got[key], ref[key])
