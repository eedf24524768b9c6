"""The behavioural half of the study: answers from base, PEFT and in-context models, and the
emoji table (the paper's Table 1, extended with ESR, emojis per answer and 95% intervals).

Methods, per trait, on that trait's test questions:

* ``base``: the base model (identical prompts share one generation, so greedy base answers are
  made once per question, not once per trait);
* ``peft``: base + the trait's adapter; every trait's adapter is loaded once on one base and
  the traits share batches (peft's mixed-adapter inference);
* ``incontext``: the base model with a trait instruction and k train-split demonstrations
  (``prompts/incontext.yaml``).
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from interp.behaviour.emoji_metrics import bootstrap_emoji_metrics
from interp.behaviour.generation import DecodeSettings, generate
from interp.chat import format_chat
from interp.models import load_peft_adapter
from interp.prompts import load_prompt
from text2emoji.core.errors import UserError
from text2emoji.core.files import atomic_write_json, atomic_write_text, read_appended_jsonl
from text2emoji.core.schema import TRAITS, Row

METHODS = ("base", "peft", "incontext")
# the emoji table's rows also come from the ``steering`` stage (the base model steered along a
# trait vector); it is no method of ``evaluate`` (``--method`` takes METHODS only)
TABLE_METHODS = (*METHODS, "steer")
BASE = "__base__"  # peft's adapter name for "adapters off" in a mixed batch


@dataclass(frozen=True)
class Job:
    trait: str
    method: str
    topic: str
    question: str
    prompt: str  # the full formatted prompt text
    adapter: str  # adapter name, or BASE

    def key(self) -> str:
        return f"{self.method}|{self.trait}|{self.topic}"


def incontext_messages(rows: Sequence[Row], trait: str, question: str, k: int, seed: int) -> list[dict[str, str]]:
    """System instruction for ``trait`` plus ``k`` seeded demonstrations from its train rows."""
    spec = load_prompt("incontext.yaml")
    summary = load_prompt("trait_profiles.yaml")["traits"][trait]["summary"]
    train = sorted((r for r in rows if r.trait == trait and r.split == "train"), key=lambda r: r.topic)
    demos = random.Random(f"{seed}-{trait}").sample(train, min(k, len(train)))
    msgs = [{"role": "system", "content": spec["system"].format(summary=summary)}]
    for d in demos:
        msgs += [{"role": "user", "content": d.question}, {"role": "assistant", "content": d.answer}]
    return msgs + [{"role": "user", "content": question}]


def build_jobs(
    rows: Sequence[Row], tokenizer: Any, traits: Sequence[str], methods: Sequence[str],
    n_questions: int, k: int, seed: int,
) -> list[Job]:
    """One job per (method, trait, test question); ``n_questions`` = 0 takes them all."""
    jobs = []
    for trait in traits:
        tests = sorted((r for r in rows if r.trait == trait and r.split == "test"), key=lambda r: r.topic.lower())
        for r in tests[: n_questions or None]:
            for method in methods:
                if method == "incontext":
                    prompt = format_chat(tokenizer, incontext_messages(rows, trait, r.question, k, seed))
                else:
                    prompt = format_chat(tokenizer, r.question)
                jobs.append(Job(trait, method, r.topic, r.question, prompt, trait if method == "peft" else BASE))
    return jobs


def require_adapters(adapters: dict[str, Path]) -> None:
    """Every trait's adapter directory holds an adapter config, or one error line naming the first that does not."""
    for name, path in adapters.items():
        if not (path / "adapter_config.json").is_file():
            raise UserError(f"adapter for {name} not found at {path}; run `text2emoji train --all-traits` first")


def load_adapters(model: Any, adapters: dict[str, Path]) -> Any:
    """Load every trait's adapter onto one base (PeftModel with one named adapter per trait)."""
    from peft import PeftModel

    require_adapters(adapters)
    peft_model = None
    for name, path in adapters.items():
        if peft_model is None:
            peft_model = load_peft_adapter(path, lambda p: PeftModel.from_pretrained(model, p, adapter_name=name))  # noqa: B023
        else:
            load_peft_adapter(path, lambda p: peft_model.load_adapter(p, adapter_name=name))  # noqa: B023
    peft_model.eval()
    return peft_model


def generate_jobs(
    model: Any, tokenizer: Any, jobs: Sequence[Job], settings: DecodeSettings, out: Path,
    batch_size: int, progress: Any = None,
) -> list[dict[str, Any]]:
    """Generate every job not yet in ``out`` (JSONL, appended per batch) and return all rows.

    Jobs with the same prompt and adapter share one generation (greedy decoding makes them
    identical; with sampling they share one sample, which keeps methods comparable).
    """
    done = {rec["key"]: rec for rec in read_appended_jsonl(out)}
    unique: dict[tuple[str, str], list[Job]] = {}
    for j in jobs:
        if j.key() not in done:
            unique.setdefault((j.prompt, j.adapter), []).append(j)
    # one trait's in-context prompts (the same demonstrations) in batches of their own, whose
    # shared prefix then runs once (generate's share_prefix); the rest by adapter, longest
    # first: a batch then holds one or two adapters (peft's mixed-batch forward gathers and
    # scatters the rows of each adapter in the batch in every LoRA layer, which costs more than
    # the LoRA products themselves on a CPU) and little padding
    groups: dict[str, list[tuple[str, str]]] = {}
    rest = []
    for pa, js in unique.items():
        if js[0].method == "incontext":
            groups.setdefault(js[0].trait + "\0" + pa[1], []).append(pa)
        else:
            rest.append(pa)
    rest.sort(key=lambda pa: (pa[1], -len(pa[0])))
    chunks = [g[i:i + batch_size] for _, g in sorted(groups.items()) for i in range(0, len(g), batch_size)]
    chunks += [rest[i:i + batch_size] for i in range(0, len(rest), batch_size)]
    todo = [pa for c in chunks for pa in c]
    with open(out, "a", encoding="utf-8") as f:
        start = 0
        for chunk in chunks:
            texts = generate(
                # each chunk its own sampling seed (generate seeds per call from settings.seed)
                model, tokenizer, [p for p, _ in chunk], replace(settings, seed=settings.seed + start),
                chat=False, batch_size=len(chunk),
                add_special_tokens=False,  # prompts are chat-formatted already
                adapter_names=[a for _, a in chunk] if hasattr(model, "peft_config") else None,
                share_prefix=True,
            )
            for (prompt, adapter), text in zip(chunk, texts, strict=True):
                for j in unique[(prompt, adapter)]:
                    rec = {"key": j.key(), "trait": j.trait, "method": j.method, "topic": j.topic,
                           "question": j.question, "adapter": j.adapter, "text": text}
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                    done[j.key()] = rec
            f.flush()
            start += len(chunk)
            if progress is not None:
                progress(start, len(todo))
    return [done[j.key()] for j in jobs]


@dataclass(frozen=True)
class EmojiRow:
    """One (trait, method) of the emoji table: emoji rate, ESR and emojis per answer, each with
    its 95% interval (:func:`~interp.behaviour.emoji_metrics.bootstrap_emoji_metrics`), and the top five emojis (``"🎉×2 😍×1"``)."""

    trait: str
    method: str
    n_answers: int
    emoji_rate: float | None
    emoji_rate_lo: float | None
    emoji_rate_hi: float | None
    esr: float | None
    esr_lo: float | None
    esr_hi: float | None
    emojis_per_answer: float | None
    emojis_per_answer_lo: float | None
    emojis_per_answer_hi: float | None
    n_sentences: int
    top_emojis: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EmojiTable:
    """:func:`emoji_table`: one row per (trait, method), traits in study order."""

    rows: list[EmojiRow]
    model: str = ""

    def row(self, trait: str, method: str) -> EmojiRow:
        return next(r for r in self.rows if (r.trait, r.method) == (trait, method))

    def to_dict(self) -> dict[str, Any]:
        """``emoji_table.json``."""
        return {"model": self.model, "rows": [r.to_dict() for r in self.rows]}


def emoji_table(generations: Sequence[dict[str, Any]], n_boot: int = 2000, seed: int = 0, *, model: str = "") -> EmojiTable:
    """One row per (trait, method): emoji rate, ESR, emojis per answer with 95% intervals
    (``model``: the base model's name, recorded with the table)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for g in generations:
        groups.setdefault((g["trait"], g["method"]), []).append(g["text"])
    table = []
    order = {t: i for i, t in enumerate(TRAITS)}
    for (trait, method), texts in sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], 99), TABLE_METHODS.index(kv[0][1]))):
        m = bootstrap_emoji_metrics(texts, n_boot=n_boot, seed=seed)
        stats = {}
        for metric in ("emoji_rate", "esr", "emojis_per_answer"):
            stats[metric] = m[metric]["value"]
            stats[f"{metric}_lo"] = m[metric]["lo"]
            stats[f"{metric}_hi"] = m[metric]["hi"]
        table.append(EmojiRow(trait=trait, method=method, n_answers=len(texts), **stats,
                              n_sentences=m["counts"]["n_sentences"],
                              top_emojis=" ".join(f"{e}×{c}" for e, c in m["counts"]["top_emojis"][:5])))
    return EmojiTable(table, model)


def _fmt(v: float | None, lo: float | None, hi: float | None, pct: bool) -> str:
    if v is None:
        return "–"
    f = (lambda x: f"{100 * x:.1f}%") if pct else (lambda x: f"{x:.2f}")
    return f"{f(v)} [{f(lo)}, {f(hi)}]" if lo is not None else f(v)


def write_table(table: EmojiTable, out_dir: Path) -> None:
    """emoji_table.json, .csv and .md (Markdown with 95% intervals)."""
    atomic_write_json(out_dir / "emoji_table.json", table.to_dict())
    rows = [r.to_dict() for r in table.rows]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["trait"])
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out_dir / "emoji_table.csv", buf.getvalue())
    lines = [f"Emoji use of `{table.model}` on each trait's test questions (95% intervals: Wilson for the emoji rate; for ESR and emojis per answer a bootstrap over answers, with an exact bound where it has no spread).", "",
             "| trait | method | n | emoji rate | ESR | emojis / answer | top emojis |",
             "|---|---|---:|---|---|---|---|"]
    for r in table.rows:
        lines.append(
            f"| {r.trait} | {r.method} | {r.n_answers} | "
            f"{_fmt(r.emoji_rate, r.emoji_rate_lo, r.emoji_rate_hi, True)} | "
            f"{_fmt(r.esr, r.esr_lo, r.esr_hi, True)} | "
            f"{_fmt(r.emojis_per_answer, r.emojis_per_answer_lo, r.emojis_per_answer_hi, False)} | "
            f"{r.top_emojis or '–'} |"
        )
    atomic_write_text(out_dir / "emoji_table.md", "\n".join(lines) + "\n")
