"""A report as a list of sections, rendered twice: self-contained HTML and Markdown."""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass
class Section:
    title: str
    text: str = ""
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    figures: list[tuple[str, Path]] = field(default_factory=list)


def _fmt_cell(v) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "NA"
        return f"{v:.3g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


def _md_table(df: pd.DataFrame) -> str:
    cols = [str(c) for c in df.columns]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        out.append("| " + " | ".join(_fmt_cell(v).replace("|", "/") for v in row) + " |")
    return "\n".join(out)


def _html_table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt_cell(v))}</td>" for v in row) + "</tr>"
        for row in df.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _paragraphs_html(text: str) -> str:
    return "".join(f"<p>{html.escape(p.strip())}</p>" for p in text.split("\n\n") if p.strip())


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #345;padding-bottom:.2em}h2{margin-top:1.8em;color:#234}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.9em}
th,td{border:1px solid #bbb;padding:.25em .6em;text-align:right}th{background:#eef2f6}
td:first-child,th:first-child{text-align:left}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}
figure img{max-width:520px;border:1px solid #ddd}figcaption{font-size:.85em;color:#555}
.caption{font-size:.9em;color:#444;margin-bottom:.2em}
"""


def render_html(title: str, sections: list[Section]) -> str:
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    for s in sections:
        anchor = s.title.lower().replace(" ", "-")
        parts.append(f"<section id='{html.escape(anchor)}'><h2>{html.escape(s.title)}</h2>")
        parts.append(_paragraphs_html(s.text))
        for caption, df in s.tables:
            if caption:
                parts.append(f"<div class='caption'>{html.escape(caption)}</div>")
            parts.append(_html_table(df))
        for caption, path in s.figures:
            b64 = base64.b64encode(Path(path).read_bytes()).decode()
            parts.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{b64}'>"
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "".join(parts)


def render_markdown(title: str, sections: list[Section], figure_dir: Path | None = None) -> str:
    out = [f"# {title}", ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        if s.text:
            out += [s.text.strip(), ""]
        for caption, df in s.tables:
            if caption:
                out += [f"*{caption}*", ""]
            out += [_md_table(df), ""]
        for caption, path in s.figures:
            rel = Path(path).name if figure_dir is None else Path(path).relative_to(figure_dir).as_posix()
            out += [f"![{caption}]({rel})", ""]
    return "\n".join(out)
