"""Supervised examples for QLoRA: chat-formatted (question as user, answer as assistant), with
the loss on the answer's tokens only, length-grouped batches and dynamic padding."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from finetune.validate import training_text
from interp.chat import format_chat
from text2emoji.core.schema import Row

IGNORE = -100  # label id that cross-entropy skips (prompt tokens, padding)


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # IGNORE on the prompt's tokens

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_target(self) -> int:
        return sum(t != IGNORE for t in self.labels)


def encode(tokenizer: Any, row: Row, max_length: int) -> Example:
    """Tokenize one row; labels mask everything before the assistant's answer.

    Raises:
        ValueError: the template does not put the prompt first, or the example is too long.
    """
    prompt = format_chat(tokenizer, row.question)
    full = training_text(tokenizer, row.question, row.answer)
    if not full.startswith(prompt):
        raise ValueError(f"{row.where()}: chat template output does not start with the prompt")
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    if ids[:n_prompt] != tokenizer(prompt, add_special_tokens=False)["input_ids"]:
        raise ValueError(f"{row.where()}: prompt tokens change when the answer follows")
    if tokenizer.chat_template is None and tokenizer.eos_token_id is not None:
        ids = [*ids, tokenizer.eos_token_id]  # the fallback format has no end-of-turn token
    if len(ids) > max_length:
        raise ValueError(f"{row.where()}: {len(ids)} tokens, over max_length {max_length}")
    return Example(ids, [IGNORE] * n_prompt + ids[n_prompt:])


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, seed: int, mega: int = 50
) -> list[list[int]]:
    """Indices in batches of similar length (as transformers' ``group_by_length``): shuffle,
    cut into mega-batches of ``mega * batch_size``, sort each by length, cut into batches, and
    shuffle the batches. Seeded: the same seed gives the same order."""
    rng = random.Random(seed)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    batches = []
    step = mega * batch_size
    for start in range(0, len(idx), step):
        chunk = sorted(idx[start : start + step], key=lambda i: -lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(
    examples: Sequence[Example], pad_id: int
) -> dict[str, Int[Tensor, "batch pos"]]:
    """Right-pad a batch to its longest example (dynamic padding)."""
    width = max(len(e) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, : len(e)] = torch.tensor(e.input_ids)
        labels[i, : len(e)] = torch.tensor(e.labels)
        mask[i, : len(e)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def epoch_batches(
    examples: Sequence[Example], batch_size: int, seed: int, epoch: int
) -> Iterator[list[Example]]:
    for b in length_grouped_batches([len(e) for e in examples], batch_size, seed * 1000 + epoch):
        yield [examples[i] for i in b]
