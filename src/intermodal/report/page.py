"""The report page: plain HTML from string templates, every value escaped, figures embedded,
a Content-Security-Policy that lets the page load nothing but its own inline images."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from intermodal import storage
from intermodal.charts.html import Section
from intermodal.charts.run import RunData
from intermodal.measures import MEASURES
from intermodal.report.sections import global_tables, model_selection, overview

REPORT_DIR = "report"
INDEX = "index.html"

STYLE = """
body { font-family: system-ui, sans-serif; margin: 0; background: #f6f6f4; color: #222; }
main { max-width: 900px; margin: 0 auto; padding: 1.5rem 2rem 4rem; background: white; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { border-bottom: 2px solid #4C72B0; padding-bottom: 0.2rem; margin-top: 2.5rem; }
h3 { margin-top: 1.8rem; color: #333; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0 1rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.2rem 0.6rem; text-align: left; }
th { background: #f0f0f0; }
img { display: block; max-width: 100%; margin: 0.8rem 0; }
nav ul { columns: 2; }
.meta { color: #666; font-size: 0.85rem; }
details { margin-bottom: 1rem; }
"""

# nothing but the page's own inline style and data: images may load
POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{policy}">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<main>
<h1>{title}</h1>
<p class="meta">written {written} by intermodal report</p>
{contents}
{body}
</main>
</body>
</html>
"""


def run_sections(run: RunData) -> list[Section]:
    """The run's facts and global tables, then a section per measure it scored, in registry
    order (a measure the run did not score, or that has nothing to show, has none)."""
    sections = [overview(run), global_tables(run)]
    sections += [m.report(run) for name, m in MEASURES.items() if name in run.measures]
    sections.append(model_selection(run))
    return [section for section in sections if section is not None]


@dataclass(frozen=True)
class Chapter:
    """One run's part of a page: its name and its sections, drawn."""

    name: str
    sections: list[Section]


def chapter(run_dir: str) -> Chapter:
    """The run at ``run_dir`` drawn (its figures take most of a page's time)."""
    run = RunData(run_dir)
    return Chapter(run.name, run_sections(run))


def _anchor(*parts: str) -> str:
    return "-".join("".join(c if c.isalnum() else "-" for c in p.lower()) for p in parts)


def render(chapters: Sequence[Chapter], title: str) -> str:
    """The page of one run (its sections) or of several (one chapter per run)."""
    several = len(chapters) > 1
    links, parts_of_page = [], []
    for drawn in chapters:
        parts = []
        if several:
            anchor = _anchor(drawn.name)
            links.append(f'<li><a href="#{anchor}">{html.escape(drawn.name)}</a></li>')
            parts.append(f'<h2 id="{anchor}">{html.escape(drawn.name)}</h2>')
        for section in drawn.sections:
            anchor = _anchor(drawn.name, section.title)
            level = "h3" if several else "h2"
            if not several:
                links.append(f'<li><a href="#{anchor}">{html.escape(section.title)}</a></li>')
            parts.append(
                f'<{level} id="{anchor}">{html.escape(section.title)}</{level}>{section.body}'
            )
        parts_of_page.append(f"<section>{''.join(parts)}</section>")
    return PAGE.format(
        title=html.escape(title),
        policy=POLICY,
        style=STYLE,
        written=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        contents=f"<nav><ul>{''.join(links)}</ul></nav>",
        body="\n".join(parts_of_page),
    )


def _write(page: str, directory: str) -> str:
    uri = storage.join(directory, REPORT_DIR, INDEX)
    fs, path = storage.filesystem(uri)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "w") as handle:
        handle.write(page)
    return uri


def write_report(run_dir: str) -> str:
    """``RUN_DIR/report/index.html``; returns its URI."""
    drawn = chapter(run_dir)
    return _write(render([drawn], f"intermodal report: {drawn.name}"), run_dir)


def write_combined_report(chapters: Sequence[Chapter], out: str, title: str) -> str:
    """One page of several runs' chapters (the demo's), at ``OUT/report/index.html``."""
    return _write(render(chapters, title), out)
