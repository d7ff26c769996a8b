"""Synthetic prompts: token ids made up on demand, so 10,000 long prompts cost no memory."""

from __future__ import annotations

from collections.abc import Sequence
from typing import overload

FIRST_ORDINARY_TOKEN = 1000  # stay clear of the special tokens at the start of most vocabularies


class SyntheticPrompt(Sequence[int]):
    """A deterministic pseudo-random token sequence of a given length for one request."""

    __slots__ = ("_len", "_offset", "_span")

    def __init__(self, length: int, salt: int, vocab_size: int) -> None:
        if vocab_size <= FIRST_ORDINARY_TOKEN:
            raise ValueError(f"vocab_size must exceed {FIRST_ORDINARY_TOKEN}, got {vocab_size}")
        self._len = length
        self._offset = (salt * 7_919) % (vocab_size - FIRST_ORDINARY_TOKEN)
        self._span = vocab_size - FIRST_ORDINARY_TOKEN

    def _token(self, i: int) -> int:
        return FIRST_ORDINARY_TOKEN + (self._offset + i * 2_654_435_761) % self._span

    @overload
    def __getitem__(self, index: int) -> int: ...

    @overload
    def __getitem__(self, index: slice) -> list[int]: ...

    def __getitem__(self, index: int | slice) -> int | list[int]:
        if isinstance(index, slice):
            return [self._token(i) for i in range(*index.indices(self._len))]
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError("synthetic prompt index out of range")
        return self._token(index)

    def __len__(self) -> int:
        return self._len
