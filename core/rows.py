"""Row numbers in one line of a bulk-input report: ``rows 3, 4, 7-9, 12``.

Both bulk inputs (``kiosk provision add --csv``, ``kiosk server import``) group refused rows
by reason, so 2,000 rows naming one misspelled site are one line, not 2,000.
"""

from __future__ import annotations

from collections.abc import Sequence


def rows_text(numbers: Sequence[int]) -> str:
    """``row 3`` or ``rows 3, 4, 7-9, 12``: three or more consecutive rows as a range."""
    spans: list[list[int]] = []
    for n in sorted(set(numbers)):
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    parts: list[str] = []
    for a, b in spans:
        parts.extend([f"{a}-{b}"] if b - a >= 2 else [str(n) for n in range(a, b + 1)])
    return f"{'row' if len(numbers) == 1 else 'rows'} {', '.join(parts)}"
