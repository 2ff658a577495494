"""The HTML report: one Jinja template, autoescaped, with styles and images inline so the file
stands alone and loads nothing."""

import base64
from dataclasses import dataclass
from pathlib import Path

import jinja2
from markupsafe import Markup

from ftcompare.errors import FtcompareError
from ftcompare.report.numbers import format_number, is_number
from ftcompare.report.table import MISSING, Table, cell_text, header_groups

# No network, no scripts: images come as data: URIs and styles inline. A stray <script> in
# model output is escaped anyway; this makes the browser refuse one too.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
)


@dataclass(frozen=True)
class HtmlCell:
    text: str
    value: str | None  # the exact number, for readers and tests that want more digits
    source: str | None
    source_mark: str | None  # a letter that points to the source in the table's key
    numeric: bool
    missing: bool


@dataclass(frozen=True)
class HtmlHeader:
    key: str
    label: str
    unit: str  # the column's unit
    unit_shown: bool  # False where the group's spanning header shows it
    numeric: bool


@dataclass(frozen=True)
class HtmlHeaderGroup:
    label: str | None  # None: a column on its own, its header spanning both header rows
    unit: str | None
    headers: list[HtmlHeader]


@dataclass(frozen=True)
class HtmlTable:
    groups: list[HtmlHeaderGroup]
    header_rows: int
    headers: list[HtmlHeader]
    rows: list[list[HtmlCell]]
    notes: list[str]
    sources: list[tuple[str, str]]  # (mark, source): the key to the marks in the cells


@dataclass(frozen=True)
class HtmlFigure:
    name: str
    title: str
    caption: str
    image_uri: str
    files: list[str]


def html_table(table: Table) -> HtmlTable:
    """The table as the template prints it. Sources become letters with a key under the table:
    the same few sources repeat down a column, and spelled out in every cell they would make
    the table too wide to read."""
    groups = []
    for group in header_groups(table.columns):
        groups.append(
            HtmlHeaderGroup(
                group.label,
                group.unit,
                [
                    HtmlHeader(c.key, c.short or c.label, c.unit, bool(c.unit) and group.unit is None, c.is_numeric)
                    for c in group.columns
                ],
            )
        )
    headers = [header for group in groups for header in group.headers]
    marks: dict[str, str] = {}
    rows = []
    for row in table.rows:
        cells = []
        for column, cell in zip(table.columns, row):
            text = cell_text(column, cell)
            numeric = is_number(cell.value) or (cell.value is None and column.is_numeric)
            mark = marks.setdefault(cell.source, _mark(len(marks))) if cell.source else None
            cells.append(
                HtmlCell(
                    text=MISSING if text is None else text,
                    value=repr(cell.value) if is_number(cell.value) else None,
                    source=cell.source,
                    source_mark=mark,
                    numeric=numeric,
                    missing=text is None,
                )
            )
        rows.append(cells)
    header_rows = 2 if any(group.label for group in groups) else 1
    return HtmlTable(
        groups, header_rows, headers, rows, table.notes, [(mark, source) for source, mark in marks.items()]
    )


def _mark(index: int) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return letters[index] if index < len(letters) else letters[index // 26 - 1] + letters[index % 26]


def png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def inline_style(style_path: Path) -> Markup:
    css = Path(style_path).read_text(encoding="utf-8")
    if "</" in css:
        raise FtcompareError(f"{style_path}: a stylesheet must not contain '</' (it is inlined into <style>)")
    return Markup(css)


def load_template(template_path: Path) -> jinja2.Template:
    """The report template, compiled: a broken template fails before any figure is drawn."""
    template_path = Path(template_path)
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_path.parent)),
        autoescape=True,  # model output is untrusted text
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters["number"] = lambda value, decimals=2: format_number(value, decimals) or MISSING
    try:
        return environment.get_template(template_path.name)
    except jinja2.TemplateNotFound as error:
        raise FtcompareError(f"{template_path}: report template not found") from error
    except jinja2.TemplateSyntaxError as error:
        raise FtcompareError(f"{template_path}, line {error.lineno}: {error.message}") from error


def render_html(template: jinja2.Template, context: dict) -> str:
    try:
        return template.render(content_security_policy=CONTENT_SECURITY_POLICY, **context)
    except jinja2.UndefinedError as error:
        raise FtcompareError(f"{template.filename}: {error.message}") from error
