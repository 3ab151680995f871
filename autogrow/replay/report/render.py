"""The report as blocks, rendered to Markdown and to one self-contained HTML page.

One list of blocks feeds both renderers, so the two documents cannot drift apart."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs


@attrs.frozen
class Heading:
    level: int
    text: str


@attrs.frozen
class Para:
    text: str


@attrs.frozen
class Bullets:
    items: tuple[str, ...]


@attrs.frozen
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[bool, ...]  # right-aligned columns

    def __attrs_post_init__(self) -> None:
        widths = {len(self.headers), len(self.numeric), *(len(row) for row in self.rows)}
        if len(widths) != 1:
            raise AssertionError(f"table columns disagree: {sorted(widths)}")


@attrs.frozen
class Figure:
    file: str  # relative to the report
    caption: str


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: Sequence[Any]) -> str:
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append("#" * block.level + " " + block.text)
        elif isinstance(block, Para):
            out.append(block.text)
        elif isinstance(block, Bullets):
            out.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Table):
            lines = ["| " + " | ".join(_md_cell(h) for h in block.headers) + " |",
                     "|" + "|".join("---:" if n else "---" for n in block.numeric) + "|"]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            out.append("\n".join(lines))
        elif isinstance(block, Figure):
            out.append(f"![{block.caption}]({block.file})\n\n*{block.caption}*")
    return "\n\n".join(out) + "\n"


def _html_inline(text: str) -> str:
    """Escape, then `code` spans and *emphasis* as the Markdown shows them."""
    escaped = html.escape(text, quote=False)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*([^*\s][^*]*)\*", r"<em>\1</em>", escaped)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.45; }
h1, h2, h3, h4 { line-height: 1.2; }
code { background: #f3f3f3; padding: 0 0.2em; border-radius: 3px; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.88em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1.5em 0; }
figure svg { max-width: 100%; height: auto; }
figcaption { font-size: 0.9em; color: #555; }
""".strip()


def _inline_svg(svg: str, prefix: str) -> str:
    """An SVG file's text made fit to inline in HTML: no XML prolog or doctype, no namespace
    URIs (HTML's parser gives inline SVG its namespaces), and its ids prefixed so the figures
    of one page do not share ids. (The figures are written without metadata.)"""
    start = svg.find("<svg")
    svg = svg[start:] if start >= 0 else svg
    svg = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg)
    svg = re.sub(r'(\sid="|href="#|url\(#)', lambda m: m.group(1) + prefix, svg)
    return svg.strip()


def render_html(blocks: Sequence[Any], figures: Mapping[str, str], title: str) -> str:
    """The report as one HTML page; ``figures`` maps a figure's file to its SVG text."""
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>{html.escape(title)}</title>", f"<style>\n{_CSS}\n</style>", "</head>",
           "<body>"]
    n_figures = 0
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"<h{block.level}>{_html_inline(block.text)}</h{block.level}>")
        elif isinstance(block, Para):
            out.append(f"<p>{_html_inline(block.text)}</p>")
        elif isinstance(block, Bullets):
            out.append("<ul>\n" + "\n".join(f"<li>{_html_inline(i)}</li>" for i in block.items)
                       + "\n</ul>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{_html_inline(h)}</th>" for h in block.headers)
            rows = ["<tr>" + "".join(
                f'<td class="num">{_html_inline(c)}</td>' if n else f"<td>{_html_inline(c)}</td>"
                for c, n in zip(row, block.numeric)) + "</tr>" for row in block.rows]
            out.append("<table>\n<thead><tr>" + head + "</tr></thead>\n<tbody>\n"
                       + "\n".join(rows) + "\n</tbody>\n</table>")
        elif isinstance(block, Figure):
            n_figures += 1
            out.append("<figure>\n" + _inline_svg(figures[block.file], f"f{n_figures}-")
                       + "\n<figcaption>" + _html_inline(block.caption)
                       + "</figcaption>\n</figure>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"
