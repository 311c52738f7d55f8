"""Python functions the example blueprints call in expressions (``STAGEFLOW_BLUEPRINT_FUNCTIONS``).

Each takes and returns JSON values; the expression language checks that."""

from __future__ import annotations


def title_case(text: str) -> str:
    return text.title()


def cents_to_amount(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


FUNCTIONS = {"title_case": title_case, "cents_to_amount": cents_to_amount}
