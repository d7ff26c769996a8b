"""Scheduling policies as sort keys, and the waiting/swapped queue ordered by them.

A policy is one key: queues serve the smallest key first, and under block pressure the running
request with the largest key is preempted. fcfs: arrival order. priority: lower value first,
arrival breaking ties. sjf: fewest remaining output tokens first, as far as the declared max_tokens
tells (all a real scheduler knows). sjf-oracle: fewest tokens until the request really stops, an
upper bound no real scheduler reaches, named so wherever it is used.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator

from engine.request import Request

PolicyKey = Callable[[Request], tuple[float, ...]]


def _fcfs_key(req: Request) -> tuple[float, ...]:
    return (req.arrival_time, req.seq_no)


def _priority_key(req: Request) -> tuple[float, ...]:
    return (req.priority, req.arrival_time, req.seq_no)


def _sjf_key(req: Request) -> tuple[float, ...]:
    return (req.remaining_output_tokens, req.arrival_time, req.seq_no)


def _sjf_oracle_key(req: Request) -> tuple[float, ...]:
    return (req.num_tokens_to_stop, req.arrival_time, req.seq_no)


POLICY_KEYS: dict[str, PolicyKey] = {"fcfs": _fcfs_key, "priority": _priority_key, "sjf": _sjf_key,
                                     "sjf-oracle": _sjf_oracle_key}


def policy_key(policy: str) -> PolicyKey:
    try:
        return POLICY_KEYS[policy]
    except KeyError:
        raise ValueError(f"unknown policy {policy!r}; choose one of {', '.join(POLICY_KEYS)}") from None


class RequestQueue:
    """Requests ordered by a policy key; the key of a queued request must not change.

    Removal is lazy (the entry is skipped when it reaches the front), so aborting thousands of
    queued requests costs O(log n) each rather than a heap rebuild each.
    """

    def __init__(self, key: PolicyKey) -> None:
        self._key = key
        self._heap: list[tuple[tuple[float, ...], Request]] = []
        self._members: set[int] = set()  # seq_no of requests still queued

    def add(self, req: Request) -> None:
        heapq.heappush(self._heap, (self._key(req), req))
        self._members.add(req.seq_no)

    def _drop_removed(self) -> None:
        heap = self._heap
        while heap and heap[0][1].seq_no not in self._members:
            heapq.heappop(heap)

    def peek(self) -> Request:
        self._drop_removed()
        return self._heap[0][1]

    def pop(self) -> Request:
        self._drop_removed()
        req = heapq.heappop(self._heap)[1]
        self._members.discard(req.seq_no)
        return req

    def remove(self, req: Request) -> bool:
        """Take req out wherever it is (abort); False if it was not queued."""
        if req.seq_no not in self._members:
            return False
        self._members.discard(req.seq_no)
        return True

    def __len__(self) -> int:
        return len(self._members)

    def __bool__(self) -> bool:
        return bool(self._members)

    def earliest_arrival(self) -> float:
        """The earliest arrival time among queued requests (O(n); delay-factor scheduling only)."""
        return min(req.arrival_time for _, req in self._heap if req.seq_no in self._members)

    def __iter__(self) -> Iterator[Request]:
        """In service order (sorts a copy; for inspection, not the hot path)."""
        live = (item for item in self._heap if item[1].seq_no in self._members)
        return (req for _, req in sorted(live, key=lambda item: item[0]))
