"""``python -m siheyi.configdoc module:Schema=FILE …``: rewrite the generated configuration
tables (``make config-docs``). It lives in the CLI layer because it imports the kiosk's and
the server's schemas by name and writes files; :mod:`core.configdoc` renders, purely."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from core.configdoc import config_table, splice


def main(argv: Sequence[str]) -> int:
    """Rewrite each ``module:Schema=FILE``'s table; print the files that changed."""
    for spec in argv:
        target, _, file = spec.partition("=")
        module, _, name = target.partition(":")
        schema = getattr(importlib.import_module(module), name)
        path = Path(file)
        text = path.read_text(encoding="utf-8")
        new = splice(text, config_table(schema))
        if new != text:
            path.write_text(new, encoding="utf-8")
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
