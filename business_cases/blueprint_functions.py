"""Python functions the example blueprints call in expressions (``STAGEFLOW_BLUEPRINT_FUNCTIONS``).

Each takes and returns JSON values; the expression language checks that."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def title_case(text: str) -> str:
    return text.title()


def cents_to_amount(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


FUNCTIONS: dict[str, Callable[..., Any]] = {"title_case": title_case, "cents_to_amount": cents_to_amount}
