"""Streaming text: characters split across tokens are never emitted broken, text that may start a
stop string is held back until it cannot, and a completed stop string ends the output before it."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from engine.detokenizer import IncrementalDetokenizer, OutputText
from engine.executors.tiny_model import build_tiny_tokenizer


@pytest.fixture(scope="module")
def tokenizer() -> object:
    return build_tiny_tokenizer()  # byte-level: every id decodes to one or two bytes


class Letters:
    """A stand-in tokenizer: token i is the character chr(i)."""

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(i) for i in ids)


def _stream(text: OutputText, ids: Sequence[int]) -> tuple[list[str], str | None]:
    pieces, stop = [], None
    for i, t in enumerate(ids):
        piece, stop = text.add([t], final=i == len(ids) - 1)
        pieces.append(piece)
        if stop is not None:
            break
    return pieces, stop


def test_multibyte_characters_split_across_tokens_come_out_whole(tokenizer: object) -> None:
    sentence = "naïve 世界 🙂 ok"
    ids = tokenizer.encode(sentence)  # type: ignore[attr-defined]
    assert len(ids) > len(sentence.split())  # the characters really are split
    pieces, _ = _stream(OutputText(IncrementalDetokenizer(tokenizer, tokenizer.encode("Say: "))), ids)  # type: ignore[attr-defined]
    assert "".join(pieces) == sentence
    assert not any("\ufffd" in p for p in pieces)
    assert "" in pieces  # some tokens completed no character and released nothing


def test_bytes_that_never_form_a_character_are_released_at_the_end(tokenizer: object) -> None:
    lone = tokenizer.encode("世")[:1]  # type: ignore[attr-defined]  # a lead byte with no continuation
    text = OutputText(IncrementalDetokenizer(tokenizer))
    assert text.add(lone) == ("", None)
    assert text.add([], final=True)[0] == "\ufffd"


def test_possible_stop_string_prefix_is_held_back_then_released() -> None:
    text = OutputText(IncrementalDetokenizer(Letters()), stop=["END"])
    assert text.add([ord("a"), ord("E")]) == ("a", None)  # "E" may start "END"
    assert text.add([ord("N")]) == ("", None)
    assert text.add([ord("x")]) == ("ENx", None)  # it did not


def test_stop_string_across_tokens_truncates_before_it() -> None:
    text = OutputText(IncrementalDetokenizer(Letters()), stop=["xyz", "END"])
    pieces, stop = _stream(text, [ord(c) for c in "abEN" + "D" + "tail"])
    assert stop == "END" and "".join(pieces) == "ab"


def test_earliest_of_several_stop_strings_wins_and_min_tokens_defers_them() -> None:
    pieces, stop = _stream(OutputText(IncrementalDetokenizer(Letters()), stop=["cd", "bc"]), [ord(c) for c in "abcd"])
    assert (stop, "".join(pieces)) == ("bc", "a")
    text = OutputText(IncrementalDetokenizer(Letters()), stop=["b"], min_tokens=3)
    pieces, stop = _stream(text, [ord(c) for c in "abab"])
    assert (stop, "".join(pieces)) == ("b", "aba")  # the first "b" came within min_tokens
