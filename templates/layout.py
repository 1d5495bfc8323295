"""Render any faceaudit document from the shared base layout: title, running header, contents, sections.

The audit report and the data-inspection report both go through :func:`render_document`; each section is a
Jinja partial rendered with autoescaping, so labels, model names and file names always show as text.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import jinja2
from markupsafe import Markup

from faceaudit.files import atomic_write
from faceaudit.version import __version__


@dataclass
class Cell:
    """One table cell: display text, an optional CSS class (``fail``, ``pass``, ``small``) and a tooltip."""

    text: str
    css: str = ""
    title: str = ""


@dataclass
class Row:
    """One table row of cells."""

    cells: list[Cell]
    css: str = ""


@dataclass
class Table:
    """A table ready for the ``table`` macro; ``numeric`` lists right-aligned column indices."""

    columns: list[str]
    rows: list[Row] = field(default_factory=list)
    caption: str = ""
    numeric: set[int] = field(default_factory=set)
    #: A table of groups a reader may sort (click a column head) and filter (a search box), by tables.js.
    sortable: bool = False

    def add(self, *cells: "Cell | str | int | float", css: str = "") -> None:
        """Append a row; plain values become cells."""
        self.rows.append(Row([c if isinstance(c, Cell) else Cell(str(c)) for c in cells], css))


@dataclass
class Section:
    """One numbered section: a partial template (under ``templates/``) and its context."""

    id: str
    title: str
    template: str
    context: dict = field(default_factory=dict)
    page_break: bool = False


def template_dir() -> Path:
    """The folder of the packaged Jinja templates and stylesheets."""
    return Path(str(resources.files("faceaudit.templates")))


def environment(extra_dirs: Sequence[Path] = ()) -> jinja2.Environment:
    """A Jinja environment over ``extra_dirs`` then the packaged templates, autoescaping everything."""
    loader = jinja2.FileSystemLoader([str(p) for p in extra_dirs] + [str(template_dir())])
    env = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=False, lstrip_blocks=False)
    env.filters["pct"] = lambda v, digits=1: "–" if v is None else f"{100 * float(v):.{digits}f}%"
    env.filters["num"] = lambda v, digits=3: "–" if v is None else f"{float(v):.{digits}f}"
    return env


def render_document(title: str, sections: Iterable[Section], *, running_header: str = "",
                    subtitle: str = "", meta: Sequence[tuple[str, str]] = (), extra_css: str = "",
                    template_dirs: Sequence[Path] = (), generated: str | None = None, banner: str = "") -> str:
    """The complete self-contained HTML of a document built from ``sections`` in order; ``banner`` is a warning
    shown under the title on screen and on page 1 (e.g. that the data is synthetic). Sortable tables bring their
    few lines of inline script (templates/tables.js); the document reads the same with scripts off."""
    env = environment(template_dirs)
    css = (template_dir() / "base.css").read_text(encoding="utf-8") + "\n" + extra_css
    rendered = []
    for section in sections:
        html = env.get_template(section.template).render(section=section, **section.context)
        rendered.append({"id": section.id, "title": section.title, "html": Markup(html),
                         "page_break": section.page_break})
    generated = generated or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sortable = any('class="sortable' in str(part["html"]) for part in rendered)
    script = Markup((template_dir() / "tables.js").read_text(encoding="utf-8")) if sortable else ""
    return env.get_template("base.html").render(
        title=title, subtitle=subtitle, running_header=running_header or title, meta=list(meta),
        sections=rendered, css=Markup(css), version=__version__, generated=generated, banner=banner, script=script)


def write_pdf(html: str, path: Path) -> Path:
    """Typeset ``html`` to a tagged A4 PDF (PDF/UA-1) with WeasyPrint (print CSS: page numbers, running header)."""
    import logging

    import weasyprint

    # WeasyPrint logs every unsupported screen-only CSS property; those are expected here.
    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    document = weasyprint.HTML(string=html, base_url=None, url_fetcher=_inline_only_fetcher())
    # PDF/UA-1: a tagged PDF (headings, tables with header cells, figures with alt text) in the document's language.
    return atomic_write(path, document.write_pdf(pdf_variant="pdf/ua-1"))


def _inline_only_fetcher():
    """A WeasyPrint URL fetcher that serves ``data:`` URIs and refuses everything else (never a download)."""
    try:
        from weasyprint.urls import URLFetcher  # WeasyPrint >= 68
    except ImportError:  # older WeasyPrint takes a plain function
        from weasyprint.urls import default_url_fetcher

        def fetch(url: str, *args, **kwargs):
            if not url.startswith("data:"):
                raise ValueError(f"faceaudit documents are self-contained; refusing to fetch {url[:80]}")
            return default_url_fetcher(url, *args, **kwargs)

        return fetch
    return URLFetcher(allowed_protocols={"data"})


def write_document(html: str, out_dir: Path, stem: str, *, pdf: bool = True) -> list[Path]:
    """Write ``stem.html`` (and ``stem.pdf``) into ``out_dir``; returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [atomic_write(out_dir / f"{stem}.html", html)]
    if pdf:
        written.append(write_pdf(html, out_dir / f"{stem}.pdf"))
    return written


def file_name(path, base=None) -> str:
    """A file or folder as a report names it, without the directories of the machine that made it: relative to
    ``base`` (the audit or run folder) when it lies inside it, else by name (``/work/data/UTKFace.tar.gz`` ->
    ``UTKFace.tar.gz``). Several comma-separated paths are each shortened; a missing one reads ``not recorded``."""
    from pathlib import PurePath

    if path is None or str(path) in ("", "None", "null"):
        return "not recorded"
    names = []
    for part in str(path).split(", "):
        pure = PurePath(part)
        if base is not None:
            try:
                names.append(pure.relative_to(PurePath(str(base))).as_posix() or ".")
                continue
            except ValueError:
                pass
        names.append(pure.name or part)
    return ", ".join(names)
