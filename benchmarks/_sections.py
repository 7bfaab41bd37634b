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
# the shared ModelNet10 test grids at 32³ (../shared/data, beside the repository)
VOXNET = BENCHMARKS.parents[1] / "shared" / "data" / "modelnet10_vox32" / "voxnet32_test.npz"
# the closing sentence of a per-machine section's intro (write_machine_part)
EACH_PART = (
    "Each part below is one machine kind, as its CPU names itself; a run replaces only its "
    "own part."
)


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


def write_machine_part(heading: str, intro: str, machine: str, body: str,
                       path: Path = BENCHMARKS) -> None:  # fmt: skip
    """Replace this machine's ``### machine`` part of section ``heading``, keeping the
    parts other machines wrote, so the section compares machine kinds.

    ``intro`` (text under the heading, before the first part) is replaced; a part for
    ``machine`` is replaced in place, or appended after the others."""
    old = path.read_text() if path.is_file() else ""
    found = re.search(rf"^{re.escape(heading)}\n(.*?)(?=^## |\Z)", old, re.S | re.M)
    parts = re.split(r"^(?=### )", found.group(1), flags=re.M)[1:] if found else []
    mine = f"### {machine}\n\n{body.strip()}\n\n"
    kept = [p if p.endswith("\n\n") else p.rstrip("\n") + "\n\n" for p in parts]
    at = [i for i, p in enumerate(kept) if p.splitlines()[0] == f"### {machine}"]
    if at:
        kept[at[0]] = mine
    else:
        kept.append(mine)
    write_section(f"{heading}\n\n{intro.strip()}\n\n" + "".join(kept), path)


def show_machine_part(heading: str, intro: str, body: str, write: bool, suffix: str = "") -> None:
    """Print this machine's part of section ``heading`` (named by its CPU, plus
    ``suffix``) and, with ``write``, put it in BENCHMARKS.md (:func:`write_machine_part`)."""
    from _machine import cpu_flags

    part = cpu_flags()[0] + suffix
    print(f"{heading}\n\n### {part}\n\n{body.strip()}\n")
    if write:
        write_machine_part(heading, intro, part, body)
