"""A tiny document model: the report is built once as blocks and rendered to Markdown and HTML.

Rendering one list of blocks twice keeps report.md and report.html saying the same thing. The
HTML is self-contained: figures are embedded as base64 PNG.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


def _inline_html(text: str) -> str:
    """The Markdown subset the report uses inline: `code` and **bold**."""
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def _md_cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of `df` (values printed as they are)."""
    if len(df.columns) == 0:
        return ""
    lines = ["| " + " | ".join(_md_cell(c) for c in df.columns) + " |",
             "|" + "|".join("---" for _ in df.columns) + "|"]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


@dataclass
class Doc:
    """Blocks of a report: (kind, payload). Rendered to Markdown and to HTML."""

    title: str
    blocks: list[tuple[str, object]] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", (level, text)))

    def para(self, text: str) -> None:
        self.blocks.append(("para", text))

    def bullets(self, items: list[str]) -> None:
        if items:
            self.blocks.append(("bullets", list(items)))

    def table(self, df: pd.DataFrame) -> None:
        self.blocks.append(("table", df))

    def code(self, text: str, lang: str = "") -> None:
        self.blocks.append(("code", (lang, text.rstrip("\n"))))

    def figure(self, png: Path, caption: str) -> None:
        self.blocks.append(("figure", (png, caption)))

    def to_markdown(self, base: Path) -> str:
        out = [f"# {self.title}", ""]
        for kind, payload in self.blocks:
            if kind == "heading":
                level, text = payload
                out += ["#" * level + " " + text, ""]
            elif kind == "para":
                out += [payload, ""]
            elif kind == "bullets":
                out += [f"- {item}" for item in payload] + [""]
            elif kind == "table":
                out += [markdown_table(payload), ""]
            elif kind == "code":
                lang, text = payload
                out += [f"```{lang}", text, "```", ""]
            elif kind == "figure":
                png, caption = payload
                rel = png.relative_to(base).as_posix()
                svg = png.with_suffix(".svg").relative_to(base).as_posix()
                out += [f"![{caption}]({rel})", "", f"*{caption}* ([SVG]({svg}))", ""]
        return "\n".join(out).rstrip() + "\n"

    def to_html(self) -> str:
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        for kind, payload in self.blocks:
            if kind == "heading":
                level, text = payload
                anchor = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
                body.append(f'<h{level} id="{anchor}">{_inline_html(text)}</h{level}>')
            elif kind == "para":
                body.append(f"<p>{_inline_html(payload)}</p>")
            elif kind == "bullets":
                body.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in payload) + "</ul>")
            elif kind == "table":
                body.append(payload.to_html(index=False, border=0, classes="table", na_rep=""))
            elif kind == "code":
                body.append(f"<pre><code>{html.escape(payload[1])}</code></pre>")
            elif kind == "figure":
                png, caption = payload
                data = base64.b64encode(png.read_bytes()).decode("ascii")
                body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
                            f"<figcaption>{_inline_html(caption)}</figcaption></figure>")
        return HTML_PAGE.format(title=html.escape(self.title), body="\n".join(body))


HTML_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }}
table {{ border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.9em; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 0.25em 0.7em; text-align: left; }}
th {{ background: #f3f3f3; }}
code {{ background: #f3f3f3; padding: 0 0.2em; }}
pre {{ background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }}
pre code {{ background: none; padding: 0; }}
figure {{ margin: 1em 0 2em; }} figure img {{ max-width: 100%; }}
figcaption {{ font-style: italic; color: #555; }}
</style></head>
<body>
{body}
</body></html>
"""
