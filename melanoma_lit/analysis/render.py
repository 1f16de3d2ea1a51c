"""One report, two formats: a list of blocks rendered as Markdown and as a self-contained HTML page; its tables are
DataFrames of the cells as shown, written by pandas (``to_markdown`` through tabulate, ``to_html``)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Image:
    path: str  # relative to the report
    alt: str


@dataclass
class Code:
    """Preformatted text (a traceback), collapsed in HTML."""

    summary: str
    text: str


Block = Heading | Paragraph | pd.DataFrame | Image | Code

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 70rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; font-size: 0.9rem; }
th { background: #f3f3f3; }
img { max-width: 100%; margin: 0.5rem 0; }
pre { background: #f7f7f7; padding: 0.5rem; overflow-x: auto; font-size: 0.8rem; }
"""


def to_markdown(blocks: Sequence[Block]) -> str:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, pd.DataFrame):
            # One line per row: tabulate neither escapes "|" nor keeps a line break inside a pipe-table cell.
            cells = block.astype(str).replace({r"\|": r"\\|", r"\n": " "}, regex=True)
            lines += [cells.to_markdown(index=False, disable_numparse=True), ""]  # cells as given: "0.5000" stays
        elif isinstance(block, Image):
            lines += [f"![{block.alt}]({block.path})", ""]
        elif isinstance(block, Code):
            lines += [f"{block.summary}:", "", "```", block.text.rstrip(), "```", ""]
    return "\n".join(lines)


def to_html(blocks: Sequence[Block], title: str) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
    ]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, pd.DataFrame):
            parts.append(block.to_html(index=False, border=0, justify="left"))  # cells escaped
        elif isinstance(block, Image):
            parts.append(f'<img src="{html.escape(block.path)}" alt="{html.escape(block.alt)}">')
        elif isinstance(block, Code):
            parts.append(
                f"<details><summary>{html.escape(block.summary)}</summary><pre>{html.escape(block.text)}</pre></details>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)
