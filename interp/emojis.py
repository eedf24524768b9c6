"""Emoji detection, sentence splitting and the study's emoji metrics (ESR, emoji rate).

Definitions (see DESIGN.md, "Emoji"):

* An **emoji** is a fully- or minimally-qualified emoji sequence in the ``emoji`` package's data
  (its copy of Unicode's RGI list): ZWJ sequences, skin-tone sequences, flags, subdivision flags
  and keycaps each count as one. Text-presentation characters without U+FE0F (``©``, ``™``,
  a bare ``❤``), lone components (a skin-tone modifier, one regional indicator) and ASCII
  emoticons are not emojis. A ZWJ sequence outside the RGI list counts as its parts.
* **ESR** (emoji sentence rate) = sentences containing at least one emoji / all sentences.
* **Emoji rate** = answers containing at least one emoji / all answers (the kind of figure the
  paper's abstract quotes, e.g. 99.5%).

Sentence rules (:func:`split_sentences`): a line break always ends a sentence; within a line a
run of end punctuation ends one when whitespace, an emoji or the line's end follows and the next
word does not start in lower case; common abbreviations, initials, "No. 5" and list markers
("1. ") do not end one. A fragment with no letter or digit (emojis after the end punctuation, an
emoji-only line) joins the sentence before it, so an emoji that follows a sentence's end
punctuation belongs to that sentence.

Without end punctuation, an emoji ends a sentence when whitespace follows it and then (after
any opening quotes or brackets) an upper-case letter, as in chat-style text: "Great news 🎉 I am
so happy for you 😊 Tell me more." is three sentences, "Great news 🎉", "I am so happy for you 😊"
and "Tell me more.". The emoji, or the whole run of emojis ("🎉🎊 🥳"), stays with the sentence
before. Exceptions, where the emoji is read as part of the sentence:

* fewer than two words with a letter precede it in the sentence: an emoji after a single word
  stands for a word ("I ❤️ New York.", "We 💙 Paris"), and a leading emoji or one after a list
  marker is a bullet ("✅ Done", "1. 🚀 Deploy", "- ✅ Fast setup");
* ©️, ®️ and ™️ go with a name ("©️ Acme") and never end a sentence;
* an emoji right after an abbreviation that the end punctuation rule skips
  ("We met Dr. 😊 Smith").

Known limits of the emoji rule: it reads capitals only, so a proper noun after an emoji splits
("I really ❤️ New York" is "I really ❤️" and "New York"), a new sentence that starts in lower
case, with a digit ("We won 🏆 2024 was great") or right after the emoji with no space
("news 🎉I am") does not split, and a one-word sentence before an emoji does not either
("Wow 🎉 That is great" stays one sentence).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import emoji

# Statuses in the emoji package's data that make an RGI emoji (component = 1 and
# unqualified = 4 are left out: a lone 🏽 or a bare © is not an emoji).
_QUALIFIED = {emoji.STATUS["fully_qualified"], emoji.STATUS["minimally_qualified"]}

_TERMINATORS = set(".!?…‼⁉。！？")
_CLOSERS = set("\"'”’)]»")
_OPENERS = set("\"'“‘([«")
# Letterlike symbols with an emoji form (©️ ®️ ™️): they go with a name ("©️ Acme"), never end a sentence.
_NAME_SYMBOLS = set("\u00a9\u00ae\u2122")
_LINE_BREAKS = re.compile(r"\r\n|[\n\r\u2028\u2029]")
# A "." after one of these words does not end a sentence (case-insensitive, inner dots kept).
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st mt vs v e.g i.e cf approx fig gen gov rep sen rev capt lt col "
    "sgt hon".split()
)


def _is_qualified(match: emoji.EmojiMatch) -> bool:
    return match.data is not None and match.data.get("status") in _QUALIFIED


def _emoji_spans(text: str) -> list[tuple[int, int, str]]:
    """Return ``(start, end, emoji)`` for every emoji in ``text``, in order."""
    spans = []
    for token in emoji.analyze(text, non_emoji=False, join_emoji=True):
        match = token.value
        if isinstance(match, emoji.EmojiMatchZWJNonRGI):
            # Not one RGI sequence: count the RGI emojis it joins, one by one.
            parts = match.emojis
        else:
            parts = [match]
        for part in parts:
            if _is_qualified(part):
                spans.append((part.start, part.end, part.emoji))
    return spans


def find_emojis(text: str) -> list[str]:
    """List the emojis in ``text`` in order of appearance, one element per emoji.

    Args:
        text: any string.

    Returns:
        The emojis; a ZWJ family, a flag or a keycap is one element.

    >>> find_emojis("Go team 👍🏽🇫🇷 :) ©")
    ['👍🏽', '🇫🇷']
    """
    return [e for _, _, e in _emoji_spans(text)]


def emoji_spans(text: str) -> list[tuple[int, int, str]]:
    """``(start, end, emoji)`` character offsets of every emoji in ``text``, in order (the same
    emojis as :func:`find_emojis`).

    >>> emoji_spans("Hi 🎉 there 👍🏽")
    [(3, 4, '🎉'), (11, 13, '👍🏽')]
    """
    return _emoji_spans(text)


# ASCII emoticons: faces with eyes : ; = (a nose - or ' allowed) and a mouth, hearts, and the
# common horizontal faces. Eyes before ) or ( may follow a letter ("fun:)") but not a digit
# (10:30) or a colon; a letter mouth (D P O) may not run into a word ("Note:Do"); the other
# mouths ([ ] | / \ *) need a space or the start before the eyes and nothing wordy or a "/"
# after ("http://"); "<3" may not follow a word character or "<" ("x<3", "<<3").
_EMOTICON = re.compile(
    r"(?<![\d:;=])[:;=][-']?(?:[)(]|[DPpOo3](?!\w))"
    r"|(?<![\w:;=])[:;=][-']?[\]\[|/\\*](?![/\w])"
    r"|(?<![\w<])</?3(?!\d)"
    r"|(?<!\w)(?:\^_\^|\^\^|-_-|T_T|o_O|O_o|XD|xD)(?!\w)"
)


def find_emoticons(text: str) -> list[str]:
    """ASCII emoticons in ``text`` (faces and hearts; not emojis, see the module docs), in order.

    >>> find_emoticons("So fun:) see you <3 ^_^ ;-) :'( :D")
    [':)', '<3', '^_^', ';-)', ":'(", ':D']
    >>> find_emoticons("At 10:30 (see note 3), ratio 3:1, http://x.org, Note:Do, x<3, a: (b)")
    []
    """
    return [m.group(0) for m in _EMOTICON.finditer(text)]


def find_text_symbols(text: str) -> list[str]:
    """Characters that are emojis only with U+FE0F, written without it (a bare ``❤``, ``☺``,
    ``✔``): the text-style form of an emoji. ©, ® and ™ (typography) and ASCII are left out.

    >>> find_text_symbols("I ❤ it, ☺ ✔ and ❤️ © ™ → ★")
    ['❤', '☺', '✔']
    """
    return [c for i, c in enumerate(text) if c in _text_style_chars() and text[i + 1:i + 2] != "\ufe0f"]


def _text_style_chars() -> frozenset[str]:
    global _TEXT_STYLE
    if _TEXT_STYLE is None:
        _TEXT_STYLE = frozenset(
            e[0] for e, d in emoji.EMOJI_DATA.items()
            if len(e) == 2 and e[1] == "\ufe0f" and d.get("status") in _QUALIFIED
            and not e[0].isascii() and e[0] not in _NAME_SYMBOLS
        )
    return _TEXT_STYLE


_TEXT_STYLE: frozenset[str] | None = None


def has_emoji(text: str) -> bool:
    """Whether ``text`` contains at least one emoji.

    >>> has_emoji("I ❤️ it"), has_emoji("I ❤ it <3")
    (True, False)
    """
    return bool(_emoji_spans(text))


def _word_before(line: str, i: int) -> str:
    """The run of letters and dots that ends just before position ``i``."""
    j = i
    while j > 0 and (line[j - 1].isalpha() or line[j - 1] == "."):
        j -= 1
    return line[j:i]


def _sentence_cut(line: str, start: int, end: int, after: int, emoji_at: dict[int, int]) -> int | None:
    """Where the sentence ends if the terminator run ``line[start:end]`` (closers up to
    ``after``) ends one, else ``None``. Emojis that follow the run are kept in the sentence."""
    if after < len(line) and not (line[after].isspace() or after in emoji_at):
        return None  # "3.14", "example.com", "U.S" inside a word
    nxt = after
    while nxt < len(line) and (line[nxt].isspace() or nxt in emoji_at):
        nxt = emoji_at.get(nxt, nxt + 1)
    if nxt < len(line) and line[nxt].islower():
        return None  # "Wait... maybe", "approx. three"
    if line[start:end] != ".":
        return nxt
    word = _word_before(line, start)
    if word.lower() in _ABBREVIATIONS:
        return None
    if len(word) == 1 and word.isupper():
        return None  # an initial: "J. K. Rowling"
    if word.lower() == "no" and nxt < len(line) and line[nxt].isdigit():
        return None  # "No. 5"
    head = line[:start].lstrip()
    if head.isdigit():
        return None  # a list marker at the start of the line: "1. First point"
    return nxt


def _emoji_cut(line: str, seg_start: int, start: int, end: int) -> int | None:
    """Where the sentence ends if the emoji ``line[start:end]`` ends one, else ``None``.

    It does when whitespace follows it, then (after any opening quotes or brackets) an upper-case
    letter, and at least two words with a letter precede it in the sentence: a leading emoji
    ("✅ Done", "1. 🚀 Deploy") and an emoji after a single word ("I ❤️ New York") are read as
    part of the sentence, and so are ©️, ®️, ™️ and an emoji after an abbreviation
    ("Dr. 😊 Smith"). The emoji stays with the sentence before the cut."""
    if line[start] in _NAME_SYMBOLS:
        return None  # "©️ Acme"
    if end >= len(line) or not line[end].isspace():
        return None  # the line's end, another emoji of the run, or glued text ("🎉Yes")
    nxt = end
    while nxt < len(line) and line[nxt].isspace():
        nxt += 1
    while nxt < len(line) and line[nxt] in _OPENERS:
        nxt += 1
    if nxt >= len(line) or not line[nxt].isupper():
        return None  # lower case, a digit, another emoji, a dash ...
    words = [w for w in line[seg_start:start].split() if any(c.isalpha() for c in w)]
    if len(words) < 2:
        return None  # "I ❤️ New York", "We 💙 Paris", "🔥 Hot take"
    if words[-1].endswith(".") and words[-1][:-1].lower() in _ABBREVIATIONS:
        return None  # "We met Dr. 😊 Smith", as the end punctuation rule reads "Dr."
    return end


def _line_segments(text: str, line_start: int, line: str) -> Iterable[tuple[int, int]]:
    """Yield ``(start, end)`` offsets in ``text`` of the raw sentence fragments of one line."""
    emoji_at = {s: e for s, e, _ in _emoji_spans(line)}
    seg_start, i = 0, 0
    while i < len(line):
        if i in emoji_at:
            cut = _emoji_cut(line, seg_start, i, emoji_at[i])
            if cut is not None:
                yield line_start + seg_start, line_start + cut
                seg_start = cut
            i = emoji_at[i]
            continue
        if line[i] not in _TERMINATORS:
            i += 1
            continue
        end = i
        while end < len(line) and line[end] in _TERMINATORS:
            end += 1
        after = end
        while after < len(line) and line[after] in _CLOSERS:
            after += 1
        cut = _sentence_cut(line, i, end, after, emoji_at)
        if cut is not None:
            yield line_start + seg_start, line_start + cut
            seg_start = after = cut
        i = after
    yield line_start + seg_start, line_start + len(line)


def _strip_span(text: str, start: int, end: int) -> tuple[int, int] | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def split_sentences(text: str) -> list[str]:
    """Split one answer into sentences (exact, stripped substrings of ``text``).

    Args:
        text: one answer.

    Returns:
        Its sentences; empty for empty or whitespace-only text.

    >>> split_sentences("I love it! 😍 Dr. Who agrees.\\nThanks!\\n😊")
    ['I love it! 😍', 'Dr. Who agrees.', 'Thanks!\\n😊']
    >>> split_sentences("Great news 🎉 I am so happy 😊 Tell me more. I ❤️ New York.")
    ['Great news 🎉', 'I am so happy 😊', 'Tell me more.', 'I ❤️ New York.']
    """
    spans: list[tuple[int, int]] = []
    pos = 0
    for brk in [*_LINE_BREAKS.finditer(text), None]:
        line_end = brk.start() if brk else len(text)
        for start, end in _line_segments(text, pos, text[pos:line_end]):
            span = _strip_span(text, start, end)
            if span is None:
                continue
            if spans and not any(c.isalnum() for c in text[span[0] : span[1]]):
                spans[-1] = (spans[-1][0], span[1])  # emojis after the end punctuation
            else:
                spans.append(span)
        pos = brk.end() if brk else len(text)
    return [text[s:e] for s, e in spans]


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


@dataclass(frozen=True)
class EmojiStats:
    """Emoji metrics of a set of answers (ratios are ``None`` when their denominator is 0)."""

    n_answers: int
    n_answers_with_emoji: int
    n_sentences: int
    n_sentences_with_emoji: int
    n_emoji: int
    esr: float | None
    emoji_rate: float | None
    emojis_per_answer: float | None
    top_emojis: list[list]  # [[emoji, count], ...], most frequent first

    def to_dict(self) -> dict:
        return asdict(self)


def emoji_stats(answers: Sequence[str], top_k: int = 10) -> EmojiStats:
    """Compute ESR, emoji rate and counts over ``answers``.

    Args:
        answers: generated answers, one string each (empty answers count as answers).
        top_k: how many of the most frequent emojis to list.

    Returns:
        An :class:`EmojiStats`; ``top_emojis`` is sorted by count, then by the emoji string.

    >>> s = emoji_stats(["Great! 😍 Love it.", "Fine."])
    >>> s.esr, s.emoji_rate, s.top_emojis
    (0.3333333333333333, 0.5, [['😍', 1]])
    """
    counts: Counter[str] = Counter()
    n_with, n_sent, n_sent_with = 0, 0, 0
    for answer in answers:
        found = find_emojis(answer)
        counts.update(found)
        n_with += bool(found)
        sentences = split_sentences(answer)
        n_sent += len(sentences)
        n_sent_with += sum(has_emoji(s) for s in sentences)
    n_emoji = sum(counts.values())
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]
    return EmojiStats(
        n_answers=len(answers),
        n_answers_with_emoji=n_with,
        n_sentences=n_sent,
        n_sentences_with_emoji=n_sent_with,
        n_emoji=n_emoji,
        esr=_ratio(n_sent_with, n_sent),
        emoji_rate=_ratio(n_with, len(answers)),
        emojis_per_answer=_ratio(n_emoji, len(answers)),
        top_emojis=[[e, c] for e, c in top],
    )
