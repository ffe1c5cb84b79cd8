"""report.md as one self-contained HTML page: the markdown subset the reports use, images embedded as data
URIs, nothing fetched.

    html = markdown_to_html(report_md_text, base_dir)
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path


def _inline(text: str) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def markdown_to_html(md: str, base: Path, title: str = "mixprune report") -> str:
    """The markdown subset report.md uses (headings, paragraphs, bullets, pipe tables, images) as one
    self-contained HTML page: images are embedded, nothing is fetched."""
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
           "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
           "table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px}"
           "img{max-width:100%}</style></head><body>"]
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append([c.strip() for c in lines[i].strip("|").split("|")])
                i += 1
            head, body = block[0], block[2:]  # block[1] is the |---| rule
            out.append("<table><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body]
            out.append("</table>")
            continue
        img = re.match(r"!\[(.*?)\]\((.+?)\)", line)
        if img:
            data = base64.b64encode((base / img.group(2)).read_bytes()).decode()
            out.append(f"<p><img alt='{html.escape(img.group(1))}' src='data:image/png;base64,{data}'></p>")
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif line.startswith("- "):
            out.append(f"<ul><li>{_inline(line[2:])}</li></ul>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
        i += 1
    return "\n".join(out + ["</body></html>"])
