"""Remote execution (``--remote``, NDIF through nnsight): the nnsight path run locally equals the
torch backend; the block NDIF would run survives nnsight's own serialize-and-run simulation of a
server; without a key, without NDIF, or with a model NDIF cannot load, the commands end in one
line, and the key appears in no output and no file."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from interp.capture import capture
from interp.models import ModelConfig, load_model
from interp.tracing import (
    emoji_logprobs,
    emoji_report,
    score_continuations,
    score_continuations_nnsight,
)
from text2emoji.cli import main

PROMPTS = ["the a is of 🎉", "w1 w2", "what are your thoughts on w3 w4 w5 w6", "i", "you w9 w10 😄"]
ANSWERS = ["w1 w2 w3", "the", "w7 w8", "w11 w12 w13 w14", "a 🥳"]
EMOJIS = ["🎉", "😄", "🥳", "👍", "❤️"]
SITES = ["blocks.-1.mlp.hook_post", "blocks.0.hook_resid_post"]  # an input read and an output read
HUB_ID = "tiny-org/tiny-llama"  # a hub id that only the test's offline hub cache holds
SECRET = "ndif-test-key-Zq7vX2"  # stands in for a real key: must show up nowhere


def byte_level_tokenizer():
    """A byte-level BPE tokenizer (offline, trained here) under which emojis are several tokens,
    as in real models; pad/BOS/EOS as the tiny models expect."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(PROMPTS + ANSWERS + ["what a party", "the thoughts of you"] * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


@pytest.fixture(scope="module")
def bpe_lm():
    """A tiny random-weight Llama over :func:`byte_level_tokenizer`'s vocabulary."""
    from transformers import AutoModelForCausalLM

    from tests.conftest import tiny_config

    tok = byte_level_tokenizer()
    cfg = tiny_config("llama")
    cfg.vocab_size = len(tok)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    return model, tok


@pytest.fixture(scope="module")
def tiny_lm(tiny_model_dir):
    return load_model(ModelConfig(model=str(tiny_model_dir), device="cpu"))


@pytest.fixture
def ndif_simulated(monkeypatch):
    """``remote=True`` runs nnsight's LocalSimulationBackend instead of contacting NDIF: the
    block is serialized as for the server, deserialized with this project's modules hidden
    (as on the server, which does not have them) and run on the local model."""
    from nnsight.intervention.backends.local import LocalSimulationBackend
    from nnsight.modeling.language import LanguageModel

    monkeypatch.setattr(LanguageModel, "_remote_backend", lambda self, *a, **k: LocalSimulationBackend(self))


# --- the same code path: nnsight (local) equals torch ----------------------------------------------


@pytest.mark.parametrize("site", SITES)
def test_nnsight_local_activations_equal_torch(tiny_lm, site):
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    for position, answers in (("last", None), ("mean", ANSWERS), ("all", None)):
        ref = capture(model, tok, PROMPTS, site=site, position=position, answers=answers, batch_size=3)
        got = capture(model, tok, PROMPTS, site=site, position=position, answers=answers, batch_size=3,
                      backend="nnsight", remote=False)
        np.testing.assert_allclose(got.activations, ref.activations, rtol=1e-5, atol=1e-6)
        assert got.site == ref.site
        if position == "all":
            np.testing.assert_array_equal(got.offsets, ref.offsets)


def test_emojis_are_several_tokens(bpe_lm):
    _, tok = bpe_lm
    lengths = [len(tok(e, add_special_tokens=False)["input_ids"]) for e in EMOJIS]
    assert max(lengths) >= 3 and min(lengths) >= 1 and len(set(lengths)) > 1, lengths


def test_nnsight_local_emoji_logprobs_equal_torch(bpe_lm):
    """Exact multi-token emoji log-probs: the nnsight path (one sequence per pair, log P gathered
    in the trace) equals the torch path (shared prompt passes with a KV cache)."""
    model, tok = bpe_lm
    for space in (False, True):
        ref = emoji_logprobs(model, tok, PROMPTS, EMOJIS, chat=False, leading_space=space, batch_size=4)
        got = emoji_logprobs(model, tok, PROMPTS, EMOJIS, chat=False, leading_space=space, batch_size=4,
                             backend="nnsight", remote=False)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    ref_rows = emoji_report(model, tok, PROMPTS[0], EMOJIS)
    got_rows = emoji_report(model, tok, PROMPTS[0], EMOJIS, backend="nnsight")
    for r, g in zip(ref_rows, got_rows, strict=True):
        for key in ("no_space", "leading_space"):
            assert g[key]["token_ids"] == r[key]["token_ids"]
            np.testing.assert_allclose(g[key]["per_token_logprob"], r[key]["per_token_logprob"], rtol=1e-5, atol=1e-5)


def test_nnsight_scores_every_length_in_one_batch(bpe_lm):
    """Continuations of 1 to 4 tokens, prompts of different lengths, all in one padded batch."""
    model, tok = bpe_lm
    pairs = [([1, 5, 6, 7], [8]), ([1, 9], [10, 11, 12, 13]), ([1, 5, 6, 7], [8, 14]), ([1], [20, 21, 22])]
    ref = score_continuations(model, pairs, pad_id=0)
    got = score_continuations_nnsight(model, tok, pairs, pad_id=0, batch_size=len(pairs))
    for r, g in zip(ref, got, strict=True):
        assert len(g.per_token) == len(r.per_token)
        np.testing.assert_allclose(g.per_token, r.per_token, rtol=1e-5, atol=1e-5)


def test_remote_block_survives_serialization(tiny_lm, bpe_lm, ndif_simulated):
    """What NDIF would run: nnsight's simulation of the server runs the shipped blocks (nothing
    of this package in them) and gives the torch backend's numbers."""
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    ref = capture(model, tok, PROMPTS, batch_size=3)
    got = capture(model, tok, PROMPTS, batch_size=3, backend="nnsight", remote=True)
    np.testing.assert_allclose(got.activations, ref.activations, rtol=1e-5, atol=1e-6)
    bmodel, btok = bpe_lm
    ref = emoji_logprobs(bmodel, btok, PROMPTS[:2], EMOJIS, chat=False)
    got = emoji_logprobs(bmodel, btok, PROMPTS[:2], EMOJIS, chat=False, backend="nnsight", remote=True)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_remote_needs_nnsight_and_a_meta_model_needs_remote(tiny_lm):
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    with pytest.raises(ValueError, match="runs the nnsight backend"):
        capture(model, tok, PROMPTS, backend="torch", remote=True)
    with pytest.raises(ValueError, match="runs the nnsight backend"):
        emoji_logprobs(model, tok, PROMPTS, EMOJIS, chat=False, remote=True)
    meta = torch.nn.Linear(2, 2, device="meta")
    from interp.capture import check_remote

    with pytest.raises(ValueError, match="remote=True"):
        check_remote(meta, "nnsight", remote=False)


# --- the commands: one line, never the key ----------------------------------------------------------


def test_remote_needs_a_hub_id(tiny_model_dir, tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("the a is\n", encoding="utf-8")
    cases = [
        (["activations", "--remote", "--prompts", str(prompts), "--out", str(tmp_path / "a.npy")], "the embedded model"),
        (["activations", "--remote", "--model", str(tiny_model_dir), "--prompts", str(prompts),
          "--out", str(tmp_path / "a.npy")], "a local model"),
        (["emoji-prob", "--remote", "--model", str(tiny_model_dir), "--prompt", "hi", "--emoji", "🎉"], "a local model"),
        (["emoji-prob", "--remote", "--prompt", "hi", "--emoji", "🎉"], "the embedded model"),
    ]
    for argv, what in cases:
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("text2emoji: error: --remote needs a hub model id"), err
        assert what in err
    assert not list(tmp_path.glob("*.npy"))


def test_remote_refuses_what_needs_local_weights(tiny_model_dir, tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("the a is\n", encoding="utf-8")
    act = ["activations", "--remote", "--model", HUB_ID, "--prompts", str(prompts), "--out", str(tmp_path / "a.npy")]
    cases = [
        (act + ["--adapter", str(tmp_path)], "activations --remote reads the base model on NDIF"),
        (act + ["--backend", "torch"], "--remote runs the nnsight backend"),
        (act + ["--load-in-4bit"], "--load-in-4bit does not apply"),
    ]
    for argv, message in cases:
        # the hub id is checked against the hub before these: make it look cached
        import interp.models

        interp.models._check_hub.cache_clear()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(interp.models, "_check_hub", lambda repo_id: None)
            assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


def test_help_describes_remote(capsys):
    for cmd in ("activations", "emoji-prob"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        out = " ".join(capsys.readouterr().out.split())
        assert "--remote" in out and "NDIF_API_KEY" in out and "hub id" in out


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory) -> Path:
    """An offline Hugging Face cache holding :data:`HUB_ID`: its config and tokenizer, no weights
    (a remote model needs none here)."""
    from tests.conftest import tiny_config, tiny_tokenizer

    root = tmp_path_factory.mktemp("hub")
    repo = root / ("models--" + HUB_ID.replace("/", "--"))
    commit = "0" * 40
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    tiny_config("llama").save_pretrained(snap)
    tiny_tokenizer().save_pretrained(snap)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return root


def closed_port() -> int:
    """A local TCP port that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(argv: list[str], tmp: Path, hub: Path, key: str | None, host: str | None = None) -> subprocess.CompletedProcess:
    """``text2emoji argv`` in a fresh process: offline hub cache, a HOME of its own (where nnsight
    would save a key), and the hub's answer to "which repository is this id?" stubbed (the model
    key nnsight sends NDIF needs it; no network here)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NDIF_", "NNSIGHT_", "HF_"))}
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), HF_HUB_CACHE=str(hub), HF_HUB_OFFLINE="1")
    if key is not None:
        env["NDIF_API_KEY"] = key
    if host is not None:
        env["NDIF_HOST"] = host
    code = ("import sys, types, huggingface_hub as h; "
            "h.HfApi.model_info = lambda self, repo_id, **k: types.SimpleNamespace(id=repo_id); "
            "from text2emoji.cli import main; sys.exit(main(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", code, *argv], env=env, cwd=tmp, capture_output=True, text=True,
                          timeout=300)


def commands(tmp: Path) -> list[list[str]]:
    prompts = tmp / "p.txt"
    prompts.write_text("the a is\nw1 w2\n", encoding="utf-8")
    return [["activations", "--remote", "--model", HUB_ID, "--prompts", str(prompts), "--out", str(tmp / "out" / "a.npy")],
            ["emoji-prob", "--remote", "--model", HUB_ID, "--prompt", "the a is", "--emoji", "🎉"]]


def assert_key_nowhere(proc: subprocess.CompletedProcess, tmp: Path) -> None:
    assert SECRET not in proc.stdout and SECRET not in proc.stderr
    for f in tmp.rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f


def test_remote_without_key_is_one_line(tmp_path, hub_cache):
    for argv in commands(tmp_path):
        proc = run_cli(argv, tmp_path, hub_cache, key=None)
        assert proc.returncode == 1, proc.stderr
        assert proc.stdout == ""
        assert proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith("text2emoji: error: --remote needs an NDIF API key in the environment "
                                      "variable NDIF_API_KEY"), proc.stderr
    assert not (tmp_path / "out").exists()


def test_remote_with_ndif_unreachable_is_one_line_and_never_the_key(tmp_path, hub_cache):
    host = f"http://127.0.0.1:{closed_port()}"
    for argv in commands(tmp_path):
        proc = run_cli(argv, tmp_path, hub_cache, key=SECRET, host=host)
        assert proc.returncode == 1, proc.stderr
        assert proc.stdout == ""
        assert proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith(f"text2emoji: error: NDIF at {host} is unreachable"), proc.stderr
        assert_key_nowhere(proc, tmp_path)
    assert not list(tmp_path.glob("out/*.npy"))
    # nnsight saves a key only through CONFIG.set_default_api_key (~/.config/nnsight/config.yaml)
    assert not (tmp_path / "home" / ".config" / "nnsight").exists()


def test_remote_with_hub_unreachable_is_one_line(tmp_path, hub_cache):
    """Without the stub the offline hub cannot confirm the id NDIF loads the model by."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NDIF_", "NNSIGHT_", "HF_"))}
    env.update(HOME=str(tmp_path), HF_HUB_CACHE=str(hub_cache), HF_HUB_OFFLINE="1", NDIF_API_KEY=SECRET)
    proc = subprocess.run([sys.executable, "-m", "text2emoji.cli", *commands(tmp_path)[1]], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"model {HUB_ID}: the Hugging Face hub must confirm the id for NDIF" in proc.stderr
    assert_key_nowhere(proc, tmp_path)


@pytest.fixture
def refusing_ndif():
    """A local HTTP server that answers every request (the websocket handshake included) with
    401 and a JSON detail, as a server that rejects the key would."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Refuse(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            body = b'{"detail": "Invalid API key"}'
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_remote_with_key_refused_is_one_line(tmp_path, hub_cache, refusing_ndif):
    proc = run_cli(commands(tmp_path)[0], tmp_path, hub_cache, key=SECRET, host=refusing_ndif)
    assert proc.returncode == 1 and proc.stdout == "" and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"text2emoji: error: NDIF at {refusing_ndif}: connection refused with HTTP "
                                  "status 401 (is NDIF_API_KEY a valid key?)"), proc.stderr
    assert_key_nowhere(proc, tmp_path)


def test_remote_errors_are_one_line_without_the_key(monkeypatch):
    """A job that fails on the server, or a refused request, in one line with the host; the key
    is masked even where a server would echo it."""
    from nnsight import CONFIG
    from nnsight.intervention.backends.remote import RemoteError

    from interp.remote import remote_errors
    from text2emoji.core.errors import UserError

    monkeypatch.setattr(CONFIG.API, "APIKEY", SECRET)
    monkeypatch.setattr(CONFIG.API, "HOST", "https://ndif.example")
    job = "Traceback (most recent call last):\n  File \"x\", line 1\nValueError: model not deployed"
    with pytest.raises(UserError) as e, remote_errors(True):
        raise RemoteError(job)
    assert str(e.value) == "NDIF at https://ndif.example: ValueError: model not deployed"
    with pytest.raises(UserError) as e, remote_errors(True):
        raise RemoteError(f"Failed to send request: key {SECRET} is not valid")
    assert SECRET not in str(e.value) and "Failed to send request: key *** is not valid" in str(e.value)
    with pytest.raises(ConnectionRefusedError), remote_errors(False):  # local runs: errors unchanged
        raise ConnectionRefusedError(111, "Connection refused")
