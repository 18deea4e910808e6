"""Table of every build setting: ``python tools/settings_table.py [--update-readme]``.

Prints the Markdown table of config keys (key, type, default, allowed values, gru-build flag,
meaning) generated from the declarations in pipeline/settings.py.
Imports: pipeline.settings (standard library only). Reads: README.md with --update-readme.
Writes: with --update-readme, only the region between the settings markers of README.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def replace_region(readme_text: str, body: str, markers: tuple[str, str] | None = None) -> str:
    """``readme_text`` with everything between the markers (default: the settings markers) replaced by ``body``."""
    from pipeline.settings import README_MARKERS

    begin, end = markers or README_MARKERS
    start = readme_text.index(begin) + len(begin)
    stop = readme_text.index(end, start)
    return readme_text[:start] + "\n" + body.strip() + "\n" + readme_text[stop:]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--update-readme", action="store_true",
                   help="write the table into README.md between the settings markers instead of printing it")
    args = p.parse_args(argv)
    from pipeline.settings import settings_table

    table = settings_table()
    if not args.update_readme:
        print(table)
        return 0
    readme = ROOT / "README.md"
    readme.write_text(replace_region(readme.read_text(encoding="utf-8"), table), encoding="utf-8")
    print(f"updated {readme}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
