"""The sentence chunker: the first piece early at a clause boundary, then whole sentences, in Korean and English."""

from __future__ import annotations

import pytest

from plush.server.sentence_chunker import SentenceChunker, speakable, speech_weight


def chunk(deltas: list[str], **options: int) -> list[str]:
    chunker = SentenceChunker(**options)
    out = [piece for delta in deltas for piece in chunker.feed(delta)]
    if (rest := chunker.flush()) is not None:
        out.append(rest)
    return out


def tokens(text: str) -> list[str]:
    """Split like an LLM stream: a few characters at a time."""
    return [text[i : i + 3] for i in range(0, len(text), 3)]


@pytest.mark.parametrize(
    ("deltas", "pieces"),
    [
        (["Hello there. How", " are you? I'm fine"], ["Hello there.", "How are you?", "I'm fine"]),
        (["It costs 3.5 dollars. ", "OK"], ["It costs 3.5 dollars.", "OK"]),
        (["안녕하세요! 오늘", "은 뭐 할까요? 저는", " 좋아요"], ["안녕하세요!", "오늘은 뭐 할까요?", "저는 좋아요"]),
        (["Wow!!! ", "Really?! Yes"], ["Wow!!!", "Really?!", "Yes"]),
        (["no sentence end at all"], ["no sentence end at all"]),
        (["line one\nline two"], ["line one", "line two"]),
        (['He said "hi." Then', " left."], ['He said "hi."', "Then left."]),
        (["こんにちは。 元気？ はい"], ["こんにちは。", "元気？", "はい"]),
    ],
)
def test_sentences_end_at_their_punctuation(deltas: list[str], pieces: list[str]) -> None:
    assert chunk(deltas) == pieces


def test_the_first_piece_ends_at_the_first_comma_after_a_whole_word() -> None:
    text = "Well, that is a really good question, my friend. Let me think, okay? Yes, sure."
    assert chunk(tokens(text)) == [
        "Well,",  # the owner hears the first breath of the reply at once
        "that is a really good question, my friend.",
        "Let me think, okay?",  # after the first piece, whole sentences only
        "Yes, sure.",
    ]
    assert chunk(["I, for one, agree."]) == ["I, for one,", "agree."], "one letter is too short"
    assert chunk(tokens("Oh, what a lovely question!"))[0] == "Oh,", "one short word is enough"
    assert chunk(tokens("음, 좋은 질문이에요."))[0] == "음,"


def test_a_long_first_clause_is_cut_at_a_word_but_never_after_an_article() -> None:
    text = "I think the moon looks much bigger near the horizon because of the trees and houses around it. Yes."
    first, second, third = chunk(tokens(text))
    assert first == "I think the moon looks much bigger"
    assert second == "near the horizon because of the trees and houses around it."
    assert third == "Yes."


def test_the_first_korean_piece_ends_at_a_connective_ending() -> None:
    text = "오늘은 날씨가 정말 좋고 하늘도 파래요. 우리 밖에 나가서 놀까요?"
    assert chunk(tokens(text)) == ["오늘은 날씨가 정말 좋고", "하늘도 파래요.", "우리 밖에 나가서 놀까요?"]
    story = "아주 먼 옛날 숲 속에 작은 곰이 살았는데 꿀을 정말 좋아했어요."
    assert chunk(tokens(story))[0] == "아주 먼 옛날 숲 속에 작은 곰이 살았는데"


def test_abbreviations_and_initials_do_not_end_a_sentence() -> None:
    text = "Dr. Kim likes fruit, e.g. apples. J. K. Rowling wrote it. So do I. No. Plan A. Done."
    assert chunk(tokens(text), first_min_weight=1000) == [
        "Dr. Kim likes fruit, e.g. apples.",
        "J. K. Rowling wrote it.",
        "So do I.",
        "No.",
        "Plan A.",
        "Done.",
    ]


def test_numbers_keep_their_points_and_commas() -> None:
    assert chunk(tokens("Pi is 3.14159 and a million is 1,000,000. Neat!")) == [
        "Pi is 3.14159 and a million is 1,000,000.",
        "Neat!",
    ]


def test_a_run_on_sentence_is_cut_before_it_grows_too_long() -> None:
    pieces = chunk(tokens("and then " * 60), max_weight=100)
    assert len(pieces) > 4
    assert all(speech_weight(p) <= 100 for p in pieces)
    assert " ".join(pieces).split() == ("and then " * 60).split(), "no word is lost or split"


def test_emoji_never_reach_the_voice() -> None:
    pieces = chunk(tokens("I love you 🧸💕! 😀 Bye."))
    assert [speakable(p) for p in pieces] == ["I love you !", "Bye."]
    assert speakable("😀👍🏽 ") == "" and speakable("**Hi** there") == "Hi there"
    assert speakable("안녕 🐻") == "안녕"


def test_a_long_reply_without_sentence_ends_is_cut_into_speakable_pieces() -> None:
    """A run-on reply (6,000 characters, no punctuation) leaves in pieces of at most `max_weight`, none lost."""
    chunker = SentenceChunker()
    text = "la " * 2000
    pieces = chunker.feed(text)
    rest = chunker.flush()
    pieces += [rest] if rest else []
    assert len(pieces) > 20
    assert all(speech_weight(piece) <= chunker.max_weight for piece in pieces)
    assert " ".join(pieces).split() == text.split()
