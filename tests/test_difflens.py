"""The activation-difference lens (interp/difflens.py) and per-token KL (interp/token_kl.py), each
number against an independent computation: raw ``register_forward_hook`` on the decoder layers
with the adapter on and ``disable_adapter()``, each text run alone without padding; the lens by
``lm_head(norm(v))`` by hand; the KL from two plain forward passes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import tiny_model, tiny_tokenizer

# unequal lengths (padding in one batch); some shorter than K (+ the skipped first token); one
# opening with the BOS token <s>
TEXTS = ["w1 w2 w3 w4 w5 w6 w7", "the a", "<s> w9 w10 w11 w12 w13", "what are your thoughts on w7", "w20 w21"]
K = 4


def _peft(arch: str = "llama"):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, GPT2Config

    torch.manual_seed(0)
    if arch == "gpt2":
        base = AutoModelForCausalLM.from_config(GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=64, vocab_size=128,
                                                           pad_token_id=0, bos_token_id=1, eos_token_id=2)).eval()
        targets = ["c_attn", "c_fc", "c_proj"]
    else:
        base = tiny_model(arch)
        targets = ["q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"]
    lora = LoraConfig(r=4, lora_alpha=16, init_lora_weights=False, target_modules=targets,
                      fan_in_fan_out=arch == "gpt2")
    return get_peft_model(base, lora).eval()


def _layers(model):
    root = model.get_base_model()
    return root.transformer.h if hasattr(root, "transformer") else root.model.layers


def _resid_posts(model, ids: list[int]) -> torch.Tensor:
    """``[layers, pos, d]``: every decoder layer's output for one unpadded sequence (raw hooks)."""
    seen = []
    handles = [layer.register_forward_hook(lambda m, a, o: seen.append((o[0] if isinstance(o, tuple) else o)[0].detach().clone()))
               for layer in _layers(model)]
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor([ids]))
    finally:
        for h in handles:
            h.remove()
    return torch.stack(seen)


def _by_hand(model, tok, texts, k, skip_first):
    total, count = 0, 0
    for t in texts:
        ids = tok(t)["input_ids"]
        start = 1 if skip_first else 0
        post = _resid_posts(model, ids)  # the whole text: causal attention makes the first k the same
        with model.disable_adapter():
            pre = _resid_posts(model, ids)
        d = (post - pre)[:, start:start + k].double()
        total = total + d.sum(1)
        count += d.shape[1]
    return (total / count).numpy()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("skip_first", [True, False])
def test_diff_vectors_equal_raw_hooks_on_each_text_alone(arch, skip_first):
    from interp.difflens import diff_vectors

    model, tok = _peft(arch), tiny_tokenizer()
    got = diff_vectors(model, tok, TEXTS, K, batch_size=3, skip_first=skip_first)  # two padded batches
    want = _by_hand(model, tok, TEXTS, K, skip_first)
    assert got.dtype == np.float32 and got.shape == (2, 64)
    assert np.abs(want).max() > 1e-3  # the adapter changes something: the comparison is not 0 == 0
    np.testing.assert_allclose(got, want, atol=2e-6)
    # the counted positions are what diff-lens reports: min(K, tokens after a skipped first one)
    from interp.difflens import counted_ids

    n = sum(len(ids) - s for ids, s in counted_ids(tok, TEXTS, K, skip_first))
    assert n == (4 + 1 + 4 + 4 + 1 if skip_first else 4 + 2 + 4 + 4 + 2)


def test_diff_vectors_batch_size_does_not_change_them():
    from interp.difflens import diff_vectors

    model, tok = _peft(), tiny_tokenizer()
    np.testing.assert_allclose(diff_vectors(model, tok, TEXTS, K, batch_size=1),
                               diff_vectors(model, tok, TEXTS, K, batch_size=5), atol=2e-6)


def test_diff_vectors_of_two_adapters_sharing_the_base_passes_equal_each_alone():
    """One base_cache for two adapters of one base: the second call reads the base passes the
    first stored, and each adapter's vectors still equal the raw hooks with that adapter alone."""
    from peft import LoraConfig

    from interp.difflens import diff_vectors

    model, tok = _peft(), tiny_tokenizer()
    torch.manual_seed(1)
    model.add_adapter("other", LoraConfig(r=4, lora_alpha=16, init_lora_weights=False,
                                          target_modules=["q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"]))
    cache: dict = {}
    got = {}
    for name in ("default", "other"):
        model.set_adapter(name)
        got[name] = diff_vectors(model, tok, TEXTS, K, batch_size=3, base_cache=cache)
        assert sorted(cache) == [0, 3]  # the two batches' base passes, stored once
        np.testing.assert_allclose(got[name], _by_hand(model, tok, TEXTS, K, True), atol=2e-6)
    assert np.abs(got["default"] - got["other"]).max() > 1e-3


def test_diff_vectors_refuse_bad_input():
    from interp.difflens import diff_vectors

    model, tok = _peft(), tiny_tokenizer()
    with pytest.raises(ValueError, match="PEFT adapter"):
        diff_vectors(tiny_model(), tok, TEXTS, K)
    with pytest.raises(ValueError, match="first_k"):
        diff_vectors(model, tok, TEXTS, 0)
    with pytest.raises(ValueError, match="no texts"):
        diff_vectors(model, tok, [], K)
    with pytest.raises(ValueError, match="text 1 has one token only"):
        diff_vectors(model, tok, ["w1 w2", "w3"], K)
    with pytest.raises(ValueError, match="text 0 has no tokens"):
        diff_vectors(model, tok, [""], K, skip_first=False)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_lens_top_tokens_and_ranks_equal_unembed_of_norm_by_hand(arch):
    from interp.difflens import lens

    model, tok = _peft(arch), tiny_tokenizer()
    root = model.get_base_model()
    norm = root.transformer.ln_f if arch == "gpt2" else root.model.norm
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(2, 64)).astype(np.float32)
    res = lens(model, tok, vectors, top=5, emojis={"w7": "openness", "the": None})
    with torch.no_grad():
        logits = root.lm_head(norm(torch.from_numpy(vectors)))
    for i, layer in enumerate(res.layers):
        vals, idx = logits[i].topk(5)
        assert [t["id"] for t in layer.top] == idx.tolist()
        np.testing.assert_allclose([t["logit"] for t in layer.top], vals.numpy(), rtol=1e-6)
        assert layer.norm == pytest.approx(float(np.linalg.norm(vectors[i].astype(np.float64))))
        w7 = tok("w7", add_special_tokens=False)["input_ids"][0]
        rank = int((logits[i] > logits[i][w7]).sum()) + 1
        e = layer.emojis[0]
        assert (e.emoji, e.trait, e.token_id, e.rank) == ("w7", "openness", w7, rank)
        assert layer.emojis[1].trait is None
    # the top token's rank is 1
    best = res.layers[0].top[0]["id"]
    assert lens(model, tok, vectors, top=1, emojis=[tok.decode([best])]).layers[0].emojis[0].rank == 1
    assert res.to_dict()["layers"][0]["emojis"][0]["emoji"] == "w7"


def test_lens_reads_the_first_token_of_a_multi_token_emoji():
    from interp.difflens import lens

    tok = _byte_tokenizer()
    model = tiny_model()
    model.resize_token_embeddings(len(tok))
    res = lens(model, tok, np.ones((2, 64), dtype=np.float32), top=3, emojis=["🎉"])
    e = res.layers[0].emojis[0]
    assert e.token_id == tok("🎉", add_special_tokens=False)["input_ids"][0]
    assert len(tok("🎉", add_special_tokens=False)["input_ids"]) == 4 and e.token == "ð"
    assert e.space_token_id == tok(" ", add_special_tokens=False)["input_ids"][0]  # " 🎉": no merges here


# --- per-token KL ---------------------------------------------------------------------------------


def _byte_tokenizer():
    """Byte-level BPE without merges: every byte a token (an emoji is 4), offsets per character."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(["<pad>", *sorted(pre_tokenizers.ByteLevel.alphabet())])}
    t = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=t, pad_token="<pad>")


def _emoji_tokenizer():
    """The tiny word-level tokenizer with 🎉 and 😊 as words (each one token)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    base = tiny_tokenizer()
    vocab = dict(base.get_vocab())
    for e in ("🎉", "😊"):
        vocab[e] = len(vocab)
    t = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=t, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                  unk_token="<unk>")
    tok.padding_side = "left"
    return tok


def test_emoji_starts_mark_the_first_token_of_each_emoji():
    from interp.token_kl import emoji_starts

    assert emoji_starts(_emoji_tokenizer(), "w1 🎉 w2 😊 🎉").tolist() == [False, True, False, True, True]
    # byte-level: "Hi 🎉 ok" = H i Ġ ð Ł İ ī Ġ o k; the emoji starts at its first byte
    assert np.flatnonzero(emoji_starts(_byte_tokenizer(), "Hi 🎉 ok")).tolist() == [3]
    assert emoji_starts(_byte_tokenizer(), "").tolist() == []
    assert not emoji_starts(_emoji_tokenizer(), "w1 :) w2").any()  # an emoticon is no emoji


PROMPTS = ["w1 w2 w3", "what are your thoughts on w5", "the a"]
ANSWERS = ["w4 🎉 w6 w7", "w8 w9", "😊 w10 w11 🎉 w12"]


def test_token_kl_equals_kl_from_two_plain_forward_passes():
    from interp.token_kl import token_kl

    model, tok = _peft(), _emoji_tokenizer()
    res = token_kl(model, tok, PROMPTS, ANSWERS, chat=False, batch_size=2)
    for i, (p, a) in enumerate(zip(PROMPTS, ANSWERS, strict=True)):
        pi, ai = tok(p)["input_ids"], tok(a, add_special_tokens=False)["input_ids"]
        x = torch.tensor([pi + ai])
        with torch.no_grad():
            la = torch.log_softmax(model(input_ids=x).logits[0].double(), -1)
            with model.disable_adapter():
                lb = torch.log_softmax(model(input_ids=x).logits[0].double(), -1)
        span = slice(len(pi) - 1, len(pi) + len(ai) - 1)  # the positions that predict the answer
        want = torch.nn.functional.kl_div(la[span], lb[span], log_target=True, reduction="none").sum(-1)
        np.testing.assert_allclose(res.kl[i], want.numpy(), atol=1e-6)
        assert res.token_ids[i].tolist() == ai
        assert res.base_top[i].tolist() == lb[span].argmax(-1).tolist()
        assert res.adapter_top[i].tolist() == la[span].argmax(-1).tolist()
    assert [f.tolist() for f in res.before_emoji] == [[False, True, False, False], [False, False],
                                                      [True, False, False, True, False]]
    assert min(k.min() for k in res.kl) >= -1e-9 and max(k.max() for k in res.kl) > 1e-3


def test_kl_summary_splits_positions_before_an_emoji_by_hand():
    from interp.token_kl import TokenKL, kl_summary

    kl = [np.array([0.5, 3.0, 0.1]), np.array([0.2]), np.array([1.0, 0.0, 4.0, 0.3])]
    ids = [np.array([10, 11, 12]), np.array([13]), np.array([14, 15, 16, 17])]
    before = [np.array([False, True, False]), np.array([False]), np.array([False, False, True, False])]
    res = TokenKL(kl, ids, before, [a + 1 for a in ids], ids)
    s = kl_summary(res, tiny_tokenizer(), top_n=3, context=2)
    assert s.n_answers == 3 and s.n_tokens == 8
    assert s.mean_kl == pytest.approx(9.1 / 8)
    assert s.before_emoji == {"n": 2, "mean_kl": pytest.approx(3.5)}
    assert s.other == {"n": 6, "mean_kl": pytest.approx((0.5 + 0.1 + 0.2 + 1.0 + 0.0 + 0.3) / 6)}
    assert s.mean_kl_by_position == pytest.approx([(0.5 + 0.2 + 1.0) / 3, 1.5, 2.05, 0.3])
    assert s.n_by_position == [3, 2, 2, 1]
    assert [(t["answer"], t["position"]) for t in s.top] == [(2, 2), (0, 1), (2, 0)]
    assert s.n_top_before_emoji == 2
    top = s.top[0]
    assert (top["token_id"], top["token"], top["context"], top["before_emoji"]) == (16, "w12", "w10 w11", True)
    assert (top["base_top"], top["adapter_top"]) == (17, 16)
    assert s.to_dict()["before_emoji"]["n"] == 2
    # no emoji anywhere: the split says so instead of inventing a number
    none = kl_summary(TokenKL(kl, ids, [np.zeros(len(k), dtype=bool) for k in kl], ids, ids))
    assert none.before_emoji == {"n": 0, "mean_kl": None} and none.notes


def test_token_kl_needs_an_adapter():
    from interp.token_kl import token_kl

    with pytest.raises(ValueError, match="PEFT adapter"):
        token_kl(tiny_model(), _emoji_tokenizer(), PROMPTS, ANSWERS, chat=False)
