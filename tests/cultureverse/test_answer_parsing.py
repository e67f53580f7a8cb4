"""The answer-letter parser on the ways models really answer multiple-choice questions."""

import pytest

from evaluate_suite.answer_parsing import parse_choice

OPTIONS = ["kimono", "sari", "hanbok", "ao dai"]

# (model reply, expected letter or None for unparseable, expected reason when unparseable)
CASES = [
    ("B", "B", None),
    ("(B)", "B", None),
    ("B.", "B", None),
    ("B)", "B", None),
    ("b", "B", None),
    ("[C]", "C", None),
    ("**C**", "C", None),
    ("The answer is b", "B", None),
    ("Answer: C", "C", None),
    ("answer: (d)", "D", None),
    ("The correct option is (A).", "A", None),
    ("I choose c", "C", None),
    ("Option D", "D", None),
    ("I think the answer is C, since the collar is crossed.", "C", None),
    ("sari", "B", None),
    ("The image shows a sari.", "B", None),
    ("The answer is a sari.", "B", None),
    ("B. sari", "B", None),
    ("B) sari, because of the long drape", "B", None),
    ("D - ao dai", "D", None),
    ("C\nThe jacket is short and the skirt is full.", "C", None),
    ("It is hanbok (C).", "C", None),
    ("A kimono worn at a wedding.", "A", None),
    ("The correct choice is ao dai", "D", None),
    ("Answer: B. The sari is draped over one shoulder.", "B", None),
    ("A or B", None, "ambiguous"),
    ("The answer is A or B", None, "ambiguous"),
    ("Answer: A. On second thought, answer: B", None, "ambiguous"),
    ("It could be kimono or sari", None, "ambiguous"),
    ("B. kimono", None, "ambiguous"),
    ("E", None, "out_of_range"),
    ("", None, "empty"),
    ("   ", None, "empty"),
    ("I don't know", None, "no_choice_found"),
    ("�R�a�K�%", None, "no_choice_found"),
]


@pytest.mark.parametrize("reply,letter,reason", CASES)
def test_parse_choice_table(reply, letter, reason):
    parsed = parse_choice(reply, OPTIONS)
    assert parsed.letter == letter, parsed
    assert parsed.reason == reason


def test_table_is_large_enough():
    assert len(CASES) >= 20


def test_non_string_reply_is_unparseable():
    assert parse_choice(None, OPTIONS).reason == "empty"


def test_letter_beyond_two_options_is_out_of_range():
    assert parse_choice("C", ["yes", "no"]).reason == "out_of_range"
    assert parse_choice("The answer is B", ["yes", "no"]).letter == "B"
