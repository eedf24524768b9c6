"""Write new Opinion QA rows from the structured trait prompts (``prompts/trait_profiles.yaml``).

A generator is either a local chat model (the embedded default, a local HF directory, a hub id)
or an OpenAI-compatible chat-completions endpoint (``openai:MODEL``; base URL from
``OPENAI_BASE_URL``, key from ``OPENAI_API_KEY``). Every answer is validated like a dataset row
(no emoji, not empty, within the training length), must read as a first-person answer of a few
words or more, and is retried with another seed when it fails.
Rows are appended to the output file as they are made, so an interrupted build resumes where it
stopped: rows already written are kept and not asked for again.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.validate import check_rows
from interp.emojis import split_sentences
from interp.prompts import load_prompt
from text2emoji.core.errors import UserError
from text2emoji.core.schema import QUESTION_TEMPLATE, TRAITS, Row

Messages = list[dict[str, str]]
# A generator takes a batch of conversations and a seed, and returns one reply per conversation.
Generator = Callable[[Sequence[Messages], int], list[str]]


def read_topics(path: str | Path) -> list[tuple[str, str | None]]:
    """Topics from a text file (one per line) or JSONL (``topic``, optional ``domain``)."""
    from interp.textfiles import read_rows

    rows = read_rows(path, field="topic")
    out: dict[str, tuple[str, str | None]] = {}
    for r in rows:
        topic = r["topic"].strip()
        if topic:
            out.setdefault(topic.lower(), (topic, r.get("domain")))
    if not out:
        raise UserError(f"{path}: no topics")
    return list(out.values())


def build_messages(topic: str, trait: str, profiles: dict[str, Any] | None = None) -> Messages:
    """The system and user messages asking for one answer (from ``trait_profiles.yaml``)."""
    p = profiles or load_prompt("trait_profiles.yaml")
    t = p["traits"][trait]
    user = p["generation"]["user"].format(
        summary=t["summary"],
        markers="; ".join(t["markers"]),
        **{"not": "; ".join(t["not"])},
        rules="\n".join(f"- {r}" for r in p["answer_rules"]),
        example_topic=t["example"]["topic"],
        example_answer=t["example"]["answer"],
        topic=topic,
        question=p["question_template"].format(topic=topic),
    )
    return [{"role": "system", "content": p["generation"]["system"]}, {"role": "user", "content": user}]


def clean_answer(text: str, max_sentences: int = 3) -> str:
    """First paragraph, without a leading 'Answer:' or wrapping quotes, at most 3 sentences."""
    text = text.strip()
    text = re.sub(r"^(answer|a)\s*:\s*", "", text, flags=re.I)
    text = text.split("\n\n")[0].strip().strip('"').strip()
    sentences = split_sentences(text)
    return " ".join(sentences[:max_sentences])


_FIRST_PERSON = re.compile(r"\b(I|I'm|I've|I'd|I'll|my|me|myself)\b")


def answer_problem(answer: str, min_words: int = 8) -> str | None:
    """Why a generated answer is not a usable opinion (beyond dataset validation), or None."""
    if len(answer.split()) < min_words:
        return f"field 'answer': fewer than {min_words} words"
    if answer.rstrip().endswith((":", "?")):
        return "field 'answer': not an answer (ends with ':' or '?')"
    if not _FIRST_PERSON.search(answer):
        return "field 'answer': not in the first person"
    return None


def openai_generator(model: str, base_url: str | None = None, api_key: str | None = None,
                     temperature: float = 0.9, max_tokens: int = 120, timeout: float = 60.0,
                     retries: int = 4) -> Generator:
    """A generator that calls an OpenAI-compatible ``/chat/completions`` endpoint."""
    base = (base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")
    key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
    if not key:
        raise UserError("OPENAI_API_KEY is not set (needed for an openai: generator)")

    def one(messages: Messages, seed: int) -> str:
        body = json.dumps({"model": model, "messages": messages, "temperature": temperature,
                           "max_tokens": max_tokens, "seed": seed}).encode()
        req = urllib.request.Request(
            f"{base}/chat/completions", data=body, method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        )
        for attempt in range(retries + 1):
            try:
                with urllib.request.urlopen(req, timeout=timeout) as resp:
                    data = json.loads(resp.read().decode("utf-8"))
                return data["choices"][0]["message"]["content"] or ""
            except urllib.error.HTTPError as e:
                if e.code in (429, 500, 502, 503, 504) and attempt < retries:
                    time.sleep(min(2**attempt * 0.5, 8))
                    continue
                raise UserError(f"{base}/chat/completions: HTTP {e.code} {e.reason}") from e
            except (urllib.error.URLError, TimeoutError) as e:
                if attempt < retries:
                    time.sleep(min(2**attempt * 0.5, 8))
                    continue
                raise UserError(f"{base}/chat/completions: {e}") from e
            except (KeyError, IndexError, ValueError) as e:
                raise UserError(f"{base}/chat/completions: unexpected response ({e})") from e
        raise AssertionError("unreachable")

    return lambda batch, seed: [one(m, seed) for m in batch]


def local_generator(model: str, max_new_tokens: int = 96, batch_size: int = 8, device: str = "auto",
                    sample: bool = True) -> Generator:
    """A generator that samples from a local chat model (batched, seeded; greedy without ``sample``)."""
    from interp.behaviour.generation import DecodeSettings, generate
    from interp.chat import format_chat
    from interp.models import ModelConfig, load_model

    lm = load_model(ModelConfig(model=model, device=device))

    def run(batch: Sequence[Messages], seed: int) -> list[str]:
        texts = [format_chat(lm.tokenizer, m) for m in batch]
        settings = (DecodeSettings(max_new_tokens=max_new_tokens, do_sample=True, temperature=0.8, top_p=0.95, seed=seed)
                    if sample else DecodeSettings(max_new_tokens=max_new_tokens))
        return generate(lm.model, lm.tokenizer, texts, settings, chat=False, batch_size=batch_size,
                        add_special_tokens=False)

    return run


def _read_done(out: Path) -> set[tuple[str, str]]:
    """(trait, topic) pairs already in ``out``; a torn last line (interrupted write) is cut."""
    from text2emoji.core.files import read_appended_jsonl

    return {(rec["trait"], " ".join(rec["topic"].lower().split())) for rec in read_appended_jsonl(out)}


@dataclass
class BuildResult:
    written: int
    skipped_existing: int
    rejected: list[str]  # (topic, trait): last problem, for pairs that never passed


def build_rows(
    topics: Sequence[tuple[str, str | None]],
    traits: Sequence[str],
    generator: Generator,
    out: str | Path,
    *,
    seed: int = 0,
    attempts: int = 3,
    batch_size: int = 8,
    tokenizer: Any = None,
    max_length: int = 512,
) -> BuildResult:
    """Generate one answer per (topic, trait) not yet in ``out`` and append the valid ones."""
    for t in traits:
        if t not in TRAITS:
            raise UserError(f"unknown trait {t!r}; valid: {', '.join(TRAITS)}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = _read_done(out)
    todo = [(topic, domain, trait) for topic, domain in topics for trait in traits
            if (trait, " ".join(topic.lower().split())) not in done]
    profiles = load_prompt("trait_profiles.yaml")
    written, rejected = 0, []
    with open(out, "a", encoding="utf-8") as f:
        for start in range(0, len(todo), batch_size):
            pending = todo[start : start + batch_size]
            last_problem: dict[tuple[str, str], str] = {}
            for attempt in range(attempts):
                if not pending:
                    break
                replies = generator([build_messages(tp, tr, profiles) for tp, _, tr in pending], seed + 1000 * attempt + start)
                retry = []
                for (topic, domain, trait), reply in zip(pending, replies, strict=True):
                    row = Row(trait, topic, QUESTION_TEMPLATE.format(topic=topic), clean_answer(reply),
                              domain=domain, source=str(out), row=0)
                    problems = [p.split(": ", 1)[1] for p in check_rows([row], tokenizer, max_length)]
                    if not problems and (why := answer_problem(row.answer)):
                        problems = [why]
                    if problems:
                        retry.append((topic, domain, trait))
                        last_problem[(topic, trait)] = problems[0]
                        continue
                    f.write(json.dumps(row.to_record(), ensure_ascii=False) + "\n")
                    f.flush()
                    written += 1
                pending = retry
            rejected += [f"({tp!r}, {tr!r}): {last_problem[(tp, tr)]}" for tp, _, tr in pending]
    return BuildResult(written, len(topics) * len(traits) - len(todo), rejected)
