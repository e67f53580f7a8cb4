"""Reading the chosen option out of a generative model's free-text answer to a multiple-choice question.

Models answer in many shapes: "B", "(B)", "B.", "b)", "The answer is b", "Answer: C", "**C**", the option's text,
"B. kimono", or a sentence around any of these. `parse_choice` recognises them in a fixed order of evidence:

1. explicit cues ("answer is X", "Answer: X", "option X", "correct choice: X"): every cue in the text counts;
2. a letter alone, or a letter opening the answer followed by ".", ")", ":" or a line break;
3. letters marked as choices elsewhere ("(B)", "B)") or bare capital letters in the option range;
4. the text of exactly one option (longest match wins when one option's text contains another's).

More than one distinct letter at the deciding level, or a letter that contradicts the one option text named, makes
the answer ambiguous; ambiguous and unanswerable replies are *unparseable* (counted by reason, scored as wrong),
never guessed.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

LETTERS = string.ascii_uppercase
UNPARSEABLE_REASONS = ("empty", "ambiguous", "out_of_range", "no_choice_found")

_DECORATION = re.compile(r"[*_`\"“”'‘’]+")
# "answer is B", "answer: (c)", "correct option is D", "I choose A", "option B", "choice: b". The letter must stand
# alone (not start a word), and may be followed by "or/and/, B" lists, which make the answer ambiguous.
_LETTER = r"\(?\[?([A-Za-z])\]?\)?(?![A-Za-z])"
_LIST = rf"{_LETTER}((?:\s*(?:,|/|\bor\b|\band\b|&)\s*{_LETTER})*)"
_CUE = re.compile(
    r"(?:\banswer\s*(?:is|would be|will be|should be)?\s*[:=\-]?|\b(?:option|choice|letter)\s*(?:is\s*)?[:=]?|"
    r"\bI\s+(?:choose|pick|select|would choose|would pick)\s*(?:option\s*)?)\s*" + _LIST,
    re.IGNORECASE,
)
_LEADING = re.compile(r"^\(?\[?([A-Za-z])\]?\)?(?:\s*$|\s*[.):\n]|\s+-\s)")
_MARKED = re.compile(r"(?<![A-Za-z])\(([A-Za-z])\)|(?<![A-Za-z(])([A-Za-z])\)")
_BARE_CAPITAL = re.compile(r"(?<![A-Za-z'’])([A-Z])(?![A-Za-z'’])")
_ARTICLE = re.compile(r"[Aa]\s+(?!(?:or|and|nor)\b)[a-z]")
_WORDS = re.compile(r"[^\W_]+", re.UNICODE)


@dataclass(frozen=True)
class ParsedChoice:
    """The chosen option index (None when unparseable) and, for unparseable answers, why."""

    index: int | None
    reason: str | None = None
    how: str | None = None  # which rule decided: cue, leading, marked, bare, text

    @property
    def letter(self) -> str | None:
        """The chosen letter ("A".."Z") or None."""
        return None if self.index is None else LETTERS[self.index]


def _normalise(text: str) -> str:
    return " ".join(_WORDS.findall(text.casefold()))


def _letters_in_range(letters: list[str], n_options: int) -> tuple[set[int], bool]:
    """Indices of the given letters, and whether any letter fell outside the options."""
    out, outside = set(), False
    for letter in letters:
        index = ord(letter.upper()) - ord("A")
        if 0 <= index < n_options:
            out.add(index)
        else:
            outside = True
    return out, outside


def _is_article(text: str, start: int) -> bool:
    """Whether the "a"/"A" at `start` is the English article (followed by a word other than or/and/nor)."""
    return bool(_ARTICLE.match(text, start))


def _cue_letters(text: str) -> list[str]:
    letters: list[str] = []
    for match in _CUE.finditer(text):
        if _is_article(text, match.start(1)):  # "the answer is a sari"
            continue
        letters.append(match.group(1))
        letters.extend(re.findall(r"([A-Za-z])(?![A-Za-z])", match.group(2) or ""))
    return letters


def _option_matches(text: str, options: list[str]) -> set[int]:
    """Options whose normalised text occurs in the answer as whole words (longest matches shadow shorter ones)."""
    answer = f" {_normalise(text)} "
    found = {}
    for i, option in enumerate(options):
        norm = _normalise(option)
        if norm and f" {norm} " in answer:
            found[i] = norm
    return {i for i, norm in found.items()
            if not any(j != i and norm != other and f" {norm} " in f" {other} " for j, other in found.items())}


def parse_choice(answer: object, options: list[str]) -> ParsedChoice:
    """The option a free-text `answer` picks among `options` (letters A, B, ... in order)."""
    if not isinstance(answer, str):
        return ParsedChoice(None, "empty")
    n = len(options)
    text = _DECORATION.sub("", answer).strip()
    if not text:
        return ParsedChoice(None, "empty")
    by_text = _option_matches(text, options)

    def decide(letters: list[str], how: str) -> ParsedChoice | None:
        indices, outside = _letters_in_range(letters, n)
        if len(indices) > 1:
            return ParsedChoice(None, "ambiguous", how)
        if not indices:
            return ParsedChoice(None, "out_of_range", how) if outside else None
        index = indices.pop()
        # "B. kimono" where kimono is option C: the letter and the text disagree.
        if by_text and index not in by_text and len(by_text) == 1:
            return ParsedChoice(None, "ambiguous", how)
        return ParsedChoice(index, None, how)

    cue = _cue_letters(text)
    if cue:
        return decide(cue, "cue") or ParsedChoice(None, "no_choice_found", "cue")
    leading = _LEADING.match(text)
    if leading:
        result = decide([leading.group(1)], "leading")
        if result is not None:
            return result
    marked = [a or b for a, b in _MARKED.findall(text)]
    if marked:
        result = decide(marked, "marked")
        if result is not None:
            return result
    # A capital in the option range counts, except a sentence-initial article "A" before a lower-case word.
    bare = [m.group(1) for m in _BARE_CAPITAL.finditer(text) if ord(m.group(1)) - ord("A") < n
            and not _is_article(text, m.start())]
    if bare:
        result = decide(bare, "bare")
        if result is not None:
            return result
    if len(by_text) == 1:
        return ParsedChoice(next(iter(by_text)), None, "text")
    if len(by_text) > 1:
        return ParsedChoice(None, "ambiguous", "text")
    return ParsedChoice(None, "no_choice_found")


def option_letter(index: int) -> str:
    """The letter of option `index` (0 -> "A")."""
    if not 0 <= index < len(LETTERS):
        raise ValueError(f"option index {index} has no letter")
    return LETTERS[index]


__all__ = ["LETTERS", "ParsedChoice", "UNPARSEABLE_REASONS", "option_letter", "parse_choice"]
