"""A table as the report shows it and writes it: typed columns with units, cells with sources.

One Table feeds the HTML (formatted text and the exact value), the CSV (rounded numbers) and
the LaTeX file, so the three never disagree.
"""

import csv
import io
from dataclasses import dataclass, field

from ftcompare.report.numbers import format_number, is_number, rounded

MISSING = "—"


@dataclass(frozen=True)
class Column:
    key: str  # CSV header; names the unit too (…_s, …_mb)
    label: str
    unit: str = ""  # shown under the label; "" for text columns
    decimals: int | None = None  # numbers: fixed decimals …
    significant: int | None = None  # … or significant digits; neither: text
    with_source: bool = False  # the CSV gets a `<key>_source` column
    group: str | None = None  # neighbours with one group share a spanning header
    short: str | None = None  # the label in a wide table's header (the full one elsewhere)

    @property
    def is_numeric(self) -> bool:
        return self.decimals is not None or self.significant is not None


@dataclass(frozen=True)
class HeaderGroup:
    """Neighbouring columns under one spanning header (or a column on its own: label None)."""

    label: str | None
    columns: list[Column]

    @property
    def unit(self) -> str | None:
        """The unit every column of the group shares, which the spanning header then shows."""
        units = {column.unit for column in self.columns}
        return units.pop() if self.label and len(units) == 1 else None


def header_groups(columns: list[Column]) -> list[HeaderGroup]:
    groups: list[HeaderGroup] = []
    for column in columns:
        if column.group and groups and groups[-1].label == column.group:
            groups[-1].columns.append(column)
        else:
            groups.append(HeaderGroup(column.group, [column]))
    return groups


@dataclass(frozen=True)
class Cell:
    value: object = None
    source: str | None = None
    decimals: int | None = None  # overrides the column's, for tables with a figure per row
    significant: int | None = None

    def digits(self, column: Column) -> tuple[int | None, int | None]:
        if self.decimals is not None or self.significant is not None:
            return self.decimals, self.significant
        return column.decimals, column.significant


@dataclass(frozen=True)
class Table:
    columns: list[Column]
    rows: list[list[Cell]]
    notes: list[str] = field(default_factory=list)

    def column(self, key: str) -> Column:
        return next(c for c in self.columns if c.key == key)

    def value(self, row: int, key: str):
        return self.rows[row][self.columns.index(self.column(key))].value


def cell_text(column: Column, cell: Cell, thousands: str = ",") -> str | None:
    """The cell as printed, or None when it holds nothing."""
    if cell.value is None:
        return None
    if is_number(cell.value):
        return format_number(cell.value, *cell.digits(column), thousands=thousands)
    return str(cell.value)


def cell_csv_value(column: Column, cell: Cell):
    if cell.value is None:
        return ""
    if is_number(cell.value):
        return rounded(cell.value, *cell.digits(column))
    return str(cell.value)


def table_to_csv(table: Table) -> str:
    header = []
    for column in table.columns:
        header.append(column.key)
        if column.with_source:
            header.append(f"{column.key}_source")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in table.rows:
        values = []
        for column, cell in zip(table.columns, row):
            values.append(cell_csv_value(column, cell))
            if column.with_source:
                values.append(cell.source or "")
        writer.writerow(values)
    return buffer.getvalue()


def transpose(table: Table, label_key: str) -> Table:
    """A figure per row and a column per original row (named by its `label_key` cell): the
    narrow form of a table with few rows and many columns, for a one-column paper layout."""
    label_index = table.columns.index(table.column(label_key))
    names = [str(row[label_index].value) for row in table.rows]
    columns = [Column("figure", "Figure"), Column("unit", "Unit")]
    columns += [Column(name, name, decimals=3) for name in names]
    rows = []
    for index, column in enumerate(table.columns):
        if index == label_index:
            continue
        decimals, significant = column.decimals, column.significant
        cells = [Cell(row[index].value, row[index].source, decimals, significant) for row in table.rows]
        rows.append([Cell(column.label), Cell(column.unit or None)] + cells)
    return Table(columns=columns, rows=rows, notes=table.notes)
