"""The README's "write your first case" snippets run as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _first_case_snippets() -> str:
    text = README.read_text()
    section = text.split("## Write your first case", 1)[1].split("\n## ", 1)[0]
    return "\n".join(re.findall(r"```python\n(.*?)```", section, flags=re.S))


async def test_readme_first_case_runs() -> None:
    namespace: dict[str, object] = {"__name__": "readme_example"}
    exec(compile(_first_case_snippets(), str(README), "exec"), namespace)  # noqa: S102 - our own README
    await namespace["test_order"]()  # type: ignore[operator]
