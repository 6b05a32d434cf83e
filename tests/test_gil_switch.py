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
    """Through the ClientApp object, its mods included, as a SuperNode calls it."""
    from flwr.app import ConfigRecord, Context, Message, RecordDict
    from inprocess import server_task

    from client import handlers
    from client.app import app
    from shared.gil_switch import SWITCH_INTERVAL

    seen = []

    def handler(msg: Message, context: Context) -> Message:
        seen.append(sys.getswitchinterval())
        return Message(RecordDict(), reply_to=msg)

    monkeypatch.setattr(handlers, route, handler)
    with server_task(7):
        msg = Message(RecordDict({"config": ConfigRecord({"server-round": 1})}), dst_node_id=2, message_type=route)
    msg.metadata.__dict__["_message_id"] = "m"
    before = sys.getswitchinterval()
    app(msg, Context(run_id=7, node_id=2, node_config={"partition-id": 0}, state=RecordDict(), run_config={}))
    assert seen == [pytest.approx(SWITCH_INTERVAL)] and sys.getswitchinterval() == before
