"""Verifiable rewards on GSM8K-style ("#### N") and boxed answers."""

import pytest

from rlinf.envs.text.tasks import _gsm8k_answer
from rlinf.workers.reward.verifiers import exact_match, extract_answer, math_verify


@pytest.mark.parametrize("response,answer,want", [
    ("Mia has 7 + 5 = 12 pencils.\n#### 12", "12", 1.0),
    ("So the total is \\boxed{12}.", "12", 1.0),
    ("#### 1,000", "1000", 1.0),
    ("#### 12.0", "12", 1.0),
    ("#### -3", "-3", 1.0),
    ("#### 12\nThe answer is 12.", "12", 1.0),
    ("\\boxed{\\frac{1}{2}}", "0.5", 1.0),
    ("#### 13", "12", 0.0),
    ("#### ", "12", 0.0),
    ("", "12", 0.0),
    ("I do not know.", "12", 0.0),
])
def test_math_verify(response, answer, want):
    assert math_verify(response, answer) == want


def test_gsm8k_reference_answers_feed_the_verifiers():
    answer = _gsm8k_answer("She has 3 + 4 = 7 boxes of 1,000 pens, 7 * 1000 = 7000.\n#### 7,000")
    assert answer == "7000"
    assert math_verify("7 * 1000 = 7000\n#### 7000", answer) == 1.0
    assert exact_match("#### 7,000", answer) == 1.0


def test_extract_answer_prefers_the_last_marker():
    assert extract_answer("#### 3\nwait, no\n#### 4") == "4"
    assert extract_answer("\\boxed{1} then \\boxed{2}") == "2"
    assert extract_answer("  42 ") == "42"
