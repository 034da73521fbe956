"""Gene Matrix Transposed (GMT) files as MSigDB distributes them.

One gene set per line, tab-separated: ``NAME <tab> DESCRIPTION-or-URL <tab> GENE <tab> GENE ...``.
Empty lines are skipped; trailing tabs and a last line without a newline are accepted; gene symbols
are kept as written (MSigDB symbols are upper-case HGNC), duplicates within a set collapsed in
order. A line with fewer than three fields, an empty name, no gene or a name seen before raises
``GeneSetError`` naming the file, line number and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dltr.core.exceptions import DltrError

__all__ = ["GeneSet", "GeneSetError", "read_gmt"]


class GeneSetError(DltrError, ValueError):
    """A gene-set (GMT) file breaks the format."""


@dataclass(frozen=True)
class GeneSet:
    name: str
    description: str
    genes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.genes)


def read_gmt(path: str | Path) -> dict[str, GeneSet]:
    """Gene sets by name, in file order."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise GeneSetError(f"{path}: cannot read the gene-set file ({e})") from e
    out: dict[str, GeneSet] = {}
    for no, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        fields = line.rstrip("\t").split("\t")
        if len(fields) < 3:
            raise GeneSetError(f"{path} line {no}: expected 'NAME<tab>DESCRIPTION<tab>GENE...' with at least "
                               f"one gene, got {len(fields)} tab-separated field(s): {line[:60]!r}")
        name = fields[0].strip()
        if not name:
            raise GeneSetError(f"{path} line {no}: empty gene-set name")
        if name in out:
            raise GeneSetError(f"{path} line {no}: gene set {name!r} appears twice")
        genes = [g.strip() for g in fields[2:]]
        if any(not g for g in genes):
            raise GeneSetError(f"{path} line {no}: gene set {name!r} has an empty gene field "
                               f"(two tabs in a row)")
        out[name] = GeneSet(name, fields[1].strip(), tuple(dict.fromkeys(genes)))
    if not out:
        raise GeneSetError(f"{path}: no gene set found (empty file)")
    return out
