"""iofogd.state: the daemon's one mutable record, read as frozen snapshots."""
from __future__ import annotations

import pytest

from iofogd.state import CONTROLLER_NOT_CONNECTED, RUNNING, STARTING, AgentState, StateSnapshot


def test_snapshots_are_values_and_updates_replace_them() -> None:
    state = AgentState(clock=lambda: 1000.0)
    first = state.snapshot()
    assert (first.daemon_status, first.controller_status, first.started_at) == (
        STARTING, CONTROLLER_NOT_CONNECTED, 1000.0)
    second = state.update(daemon_status=RUNNING)
    assert state.snapshot() is second and second.daemon_status == RUNNING
    assert first.daemon_status == STARTING          # a reader's snapshot never changes under it
    with pytest.raises(TypeError):
        state.update(no_such_field=1)                # Record.replace refuses unknown fields


def test_microservice_configs_report_what_is_new_or_changed() -> None:
    state = AgentState()
    assert state.set_microservice_configs({"a": "{}", "b": '{"x":1}'}) == ["a", "b"]
    assert state.set_microservice_configs({"a": "{}", "b": '{"x":2}', "c": ""}) == ["b", "c"]
    assert state.set_microservice_configs({"a": "{}"}) == []           # a removal is no signal
    assert state.snapshot().microservice_configs == {"a": "{}"}


def test_edge_resources_and_message_count() -> None:
    state = AgentState()
    assert state.set_edge_resources([{"name": "lamp"}]) is True
    assert state.set_edge_resources([{"name": "lamp"}]) is False
    assert state.snapshot().edge_resources == ({"name": "lamp"},)
    state.count_message()
    state.count_message(4)
    assert state.snapshot().messages_processed == 5


def test_snapshot_equality_is_by_value() -> None:
    assert StateSnapshot(started_at=1.0) == StateSnapshot(started_at=1.0)
    assert StateSnapshot(started_at=1.0) != StateSnapshot(started_at=2.0)
