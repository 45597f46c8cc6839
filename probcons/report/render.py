"""Report documents: a list of blocks rendered to Markdown (PNG links) and self-contained HTML.

Blocks: Heading(level, text), Paragraph(text), Table(header, rows), Bullets(items),
Image(key, title, figure). The HTML embeds every PNG as base64 and needs no other file.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from probcons.io import atomic_write, write_text

DPI = 100


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Image:
    key: str  # file stem of the PNG
    title: str
    figure: Figure


Block = Heading | Paragraph | Table | Bullets | Image


def png_bytes(figure: Figure) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block], figure_folder: str) -> str:
    """Markdown with images linked as `figure_folder/<key>.png`."""
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Bullets):
            lines += [f"- {item}" for item in block.items] + [""]
        elif isinstance(block, Table):
            lines.append("| " + " | ".join(map(_markdown_cell, block.header)) + " |")
            lines.append("|" + "|".join("---" for _ in block.header) + "|")
            lines += ["| " + " | ".join(map(_markdown_cell, row)) + " |" for row in block.rows]
            lines.append("")
        else:
            lines += [f"![{block.title}]({figure_folder}/{block.key}.png)", ""]
    return "\n".join(lines)


STYLE = """
body { font-family: sans-serif; max-width: 1400px; margin: 2em auto; padding: 0 1em;
       color: #222; }
table { border-collapse: collapse; font-size: 0.9em; margin: 1em 0; }
th, td { border: 1px solid #bbb; padding: 0.3em 0.6em; text-align: right; }
th { background: #eee; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; } img { max-width: 100%; }
figcaption { font-size: 0.9em; color: #555; }
"""


def to_html(blocks: list[Block], title: str, images: dict[str, bytes]) -> str:
    """One HTML file; images embedded as data:image/png;base64 URIs."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style>",
        "</head>",
        "<body>",
    ]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, Bullets):
            items = "".join(f"<li>{html.escape(item)}</li>" for item in block.items)
            parts.append(f"<ul>{items}</ul>")
        elif isinstance(block, Table):
            header = "".join(f"<th>{html.escape(cell)}</th>" for cell in block.header)
            rows = "".join(
                "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
                for row in block.rows
            )
            parts.append(f"<table><thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table>")
        else:
            encoded = base64.b64encode(images[block.key]).decode("ascii")
            parts.append(
                f'<figure><img src="data:image/png;base64,{encoded}" '
                f'alt="{html.escape(block.title)}"><figcaption>{html.escape(block.title)}'
                "</figcaption></figure>"
            )
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def write_documents(
    blocks: list[Block], title: str, html_path: Path, markdown_path: Path, figure_dir: Path
) -> dict[str, Path]:
    """Write the PNGs, report.md and report.html (each atomically); return their paths."""
    images = {block.key: png_bytes(block.figure) for block in blocks if isinstance(block, Image)}
    written: dict[str, Path] = {}
    if images:
        figure_dir.mkdir(parents=True, exist_ok=True)
    for key, data in images.items():
        path = figure_dir / f"{key}.png"
        with atomic_write(path) as temporary:
            temporary.write_bytes(data)
        written[key] = path
    folder = Path(figure_dir).relative_to(markdown_path.parent).as_posix()
    write_text(markdown_path, to_markdown(blocks, folder))
    write_text(html_path, to_html(blocks, title, images))
    written["markdown"] = markdown_path
    written["html"] = html_path
    return written
