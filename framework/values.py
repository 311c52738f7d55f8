"""Checks on JSON values from outside, before anything stores them."""

from __future__ import annotations

from typing import Any


def holds_nul(value: Any) -> bool:
    """Whether a NUL character is in any string (key or value) of ``value``: PostgreSQL's text and jsonb cannot
    hold one, so input that has one is refused before any write, the same on every store."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(holds_nul(k) or holds_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(holds_nul(v) for v in value)
    return False
