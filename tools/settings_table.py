"""Table of every build setting: ``python tools/settings_table.py [--update-docs]``.

Owns: the Markdown table of config keys (key, type, default, allowed values, gru-build flag, meaning),
generated from the declarations in pipeline/settings.py (``SETTINGS``). Prints it, or with
--update-docs writes it into the ``settings`` region of docs/own-data.md (tools/regions.py);
tests/training/test_settings.py checks that region is current.
Imports: pipeline.settings (standard library only), regions. Reads: docs/own-data.md with --update-docs.
Writes: with --update-docs, only the ``settings`` region of docs/own-data.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from regions import update_doc

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "own-data.md"
REGION = "settings"


def settings_table() -> str:
    """A Markdown table of every config key: key, type, default, allowed values, flag, meaning."""
    from pipeline.settings import SETTINGS

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    def toml(value: Any) -> str:
        return ("true" if value else "false") if isinstance(value, bool) else f'"{value}"' if isinstance(value, str) else repr(value)

    rows = ["| key | type | default | allowed | flag | meaning |", "|---|---|---|---|---|---|"]
    for s in SETTINGS:
        default = "unset" if s.default is None else f"`{toml(s.default)}`"
        meaning = s.help + (f"; unset = {s.unset}" if s.unset else "")
        rows.append(f"| `{s.key}` | {s.type.__name__} | {default} | {cell(s.allowed())} | "
                    f"{f'`{s.flag}`' if s.flag else ''} | {cell(meaning)} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--update-docs", action="store_true",
                   help="write the table into the settings region of docs/own-data.md instead of printing it")
    args = p.parse_args(argv)
    table = settings_table()
    if not args.update_docs:
        print(table)
        return 0
    return update_doc(DOC, REGION, table)


if __name__ == "__main__":
    sys.exit(main())
