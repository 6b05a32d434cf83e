"""The round's sender: a bounded window in flight, every reply collected, hung clients timed out."""

from __future__ import annotations

from types import SimpleNamespace

from server.messaging import send_and_receive


class FakeGrid:
    """Replies to a message on the pull after it was pushed; `hang` ids never reply."""

    def __init__(self, hang: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.hang, self.pushed, self.max_in_flight, self._in_flight = hang, [], 0, set()

    def push_messages(self, messages):  # type: ignore[no-untyped-def]
        ids = [str(m) for m in messages]
        self.pushed += ids
        self._in_flight.update(ids)
        self.max_in_flight = max(self.max_in_flight, len(self._in_flight))
        return ids

    def pull_messages(self, ids):  # type: ignore[no-untyped-def]
        done = [i for i in ids if i not in self.hang][:3]  # a few replies per pull, as they come
        self._in_flight.difference_update(done)
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i)) for i in done]


def test_every_message_is_sent_once_and_answered_within_the_window() -> None:
    grid = FakeGrid()
    replies = send_and_receive(grid, [f"m{i}" for i in range(50)], timeout=None, window=8, poll=0)
    assert sorted(r.metadata.reply_to_message_id for r in replies) == sorted(f"m{i}" for i in range(50))
    assert sorted(grid.pushed) == sorted(f"m{i}" for i in range(50))
    assert grid.max_in_flight <= 8


def test_a_hung_client_costs_the_timeout_not_the_round() -> None:
    grid = FakeGrid(hang={"m3"})
    replies = send_and_receive(grid, [f"m{i}" for i in range(10)], timeout=0.2, window=4, poll=0.01)
    assert sorted(r.metadata.reply_to_message_id for r in replies) == sorted(f"m{i}" for i in range(10) if i != 3)
