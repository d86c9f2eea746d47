"""Plain-text tables for a terminal: aligned columns, numbers to the right."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["format_cell", "render_table"]

NULL_TEXT = "NULL"


def format_cell(value: Any, *, max_width: int = 40) -> str:
    """One value as table text.

    Args:
        value: a JSON-like value (None, bool, int, float, str, list, dict).
        max_width: longer text is cut and ends with an ellipsis.

    Returns:
        The text: None as ``NULL``, floats with 6 significant digits, line
        breaks and tabs escaped.

    Example:
        >>> format_cell(0.123456789), format_cell(None), format_cell("a\\nb")
        ('0.123457', 'NULL', 'a\\\\nb')
    """
    if value is None:
        text = NULL_TEXT
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = f"{value:.6g}" if math.isfinite(value) else str(value)
    else:
        text = str(value)
    text = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    if max_width >= 2 and len(text) > max_width:
        text = text[: max_width - 1] + "…"
    return text


def render_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    max_width: int = 40,
    footer: str | None = None,
) -> str:
    """Rows as an aligned text table with a header and a rule under it.

    Args:
        columns: the column names.
        rows: the rows, each as long as ``columns``.
        max_width: the widest a cell may be (longer ones are cut).
        footer: a line after the table; None gives ``(N rows)``.

    Returns:
        The table as one string ending with a newline.

    Example:
        >>> print(render_table(["epoch", "p50"], [[0, 1.5], [1, 0.25]]), end="")
        epoch   p50
        -----  ----
            0   1.5
            1  0.25
        (2 rows)
    """
    numeric = [_is_numeric_column(rows, i) for i in range(len(columns))]
    header = [format_cell(name, max_width=max_width) for name in columns]
    body = [[format_cell(v, max_width=max_width) for v in row] for row in rows]
    widths = [max([len(header[i])] + [len(r[i]) for r in body]) for i in range(len(columns))]

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)]
        return "  ".join(parts).rstrip()

    out = [line(header), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in body)
    out.append(footer if footer is not None else f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out) + "\n"


def _is_numeric_column(rows: Sequence[Sequence[Any]], index: int) -> bool:
    seen = False
    for row in rows:
        value = row[index]
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        seen = True
    return seen
