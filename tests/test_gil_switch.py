"""The GIL switch interval is shortened for a block and restored after it, whatever happens."""

import sys

import pytest

from shared.gil_switch import short_switch_interval


def test_the_switch_interval_is_short_for_the_block_only() -> None:
    before = sys.getswitchinterval()
    with pytest.raises(RuntimeError):
        with short_switch_interval(0.0007):
            assert sys.getswitchinterval() == pytest.approx(0.0007)
            raise RuntimeError("a run that fails still restores it")
    assert sys.getswitchinterval() == before


@pytest.mark.parametrize("route", ["train", "evaluate"])
def test_client_handlers_run_with_the_short_interval(monkeypatch, route: str) -> None:
    from client import app, handlers
    from shared.gil_switch import SWITCH_INTERVAL

    seen = []
    monkeypatch.setattr(handlers, route, lambda msg, context: seen.append(sys.getswitchinterval()) or "reply")
    before = sys.getswitchinterval()
    assert getattr(app, route)("message", "context") == "reply"
    assert seen == [pytest.approx(SWITCH_INTERVAL)] and sys.getswitchinterval() == before
