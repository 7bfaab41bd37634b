"""Write one benchmark's section of BENCHMARKS.md, keeping every other section.

Each script under ``benchmarks/`` owns one ``## Heading`` section: the first line
of the text it passes. The section runs up to the next ``## `` heading; a missing
one is appended. The file is replaced atomically, so a killed run never leaves it
half-written.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def write_section(text: str, path: Path = BENCHMARKS) -> None:
    """Replace (or append) the section whose heading is ``text``'s first line."""
    heading = text.lstrip().splitlines()[0]
    if not heading.startswith("## "):
        raise ValueError(f"a section starts with a '## ' heading, got {heading!r}")
    old = path.read_text() if path.is_file() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    body = text.strip() + "\n\n"
    if pattern.search(old):
        new = pattern.sub(lambda _: body, old, count=1)
    else:
        new = old.rstrip("\n") + "\n\n" + body
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(new.rstrip("\n") + "\n")
    os.replace(tmp, path)
