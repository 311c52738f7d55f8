"""``STAGEFLOW_EVENT_LOOP``: uvloop when installed and asked for (or ``auto``), asyncio's loop otherwise."""

from __future__ import annotations

import sys

import pytest

from framework.errors import ConfigurationError
from framework.loops import loop_factory


def test_asyncio_is_asyncio_s_default_loop() -> None:
    assert loop_factory("asyncio") is None


def test_auto_and_uvloop_pick_uvloop_when_installed() -> None:
    uvloop = pytest.importorskip("uvloop")
    assert loop_factory("auto") is uvloop.new_event_loop
    assert loop_factory("uvloop") is uvloop.new_event_loop


def test_without_uvloop_auto_falls_back_and_uvloop_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if not installed: importing it raises ImportError
    assert loop_factory("auto") is None
    with pytest.raises(ConfigurationError, match="uvloop is not installed") as caught:
        loop_factory("uvloop")
    assert "stageflow[fast]" in (caught.value.hint or "")
