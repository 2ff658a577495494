"""A small DOM on top of the standard library's html.parser, and the report's tables read from it.

dom = parse_html(path)                      # asserts every element is closed
dom.find("table", id="headline")            # the first match, asserted to exist
rows = table_rows(dom, "headline")          # {row name: {column key: <td>}}
shown(rows["lora"]["eval_loss"])            # the text a reader sees in a cell
"""

import math
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

VOID_ELEMENTS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Element:
    tag: str
    attrs: dict
    children: list = field(default_factory=list)

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self):
        for child in self.children:
            if isinstance(child, Element):
                yield child
                yield from child.iter()

    def find_all(self, tag=None, cls=None, **attrs):
        return [
            e
            for e in self.iter()
            if (tag is None or e.tag == tag)
            and (cls is None or cls in e.attrs.get("class", "").split())
            and all(e.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]

    def find(self, tag=None, cls=None, **attrs):
        found = self.find_all(tag, cls, **attrs)
        assert found, f"no <{tag} class={cls} {attrs}>"
        return found[0]


class DomBuilder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        element = Element(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(element)
        if tag not in VOID_ELEMENTS:
            self.stack.append(element)

    def handle_endtag(self, tag):
        if tag in VOID_ELEMENTS:
            return
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def parse_html(path: Path) -> Element:
    builder = DomBuilder()
    builder.feed(Path(path).read_text(encoding="utf-8"))
    builder.close()
    assert builder.stack == [builder.root], "unclosed elements: " + ", ".join(e.tag for e in builder.stack[1:])
    return builder.root


def table_rows(dom: Element, table_id: str) -> dict[str, dict[str, Element]]:
    """{row name: {column key: <td>}} of one of the report's data tables."""
    table = dom.find("table", id=table_id)
    rows = {}
    for tr in table.find("tbody").find_all("tr"):
        name = tr.find("th").text().strip()
        rows[name] = {td.attrs["data-key"]: td for td in tr.find_all("td")}
    return rows


def shown(td: Element) -> str:
    return td.find("span", cls="v").text().strip()


def assert_shows(td: Element, expected: float, key: str = "") -> None:
    """The cell holds exactly `expected` and prints it correctly rounded."""
    assert "data-value" in td.attrs, f"{key}: no number in the cell ({shown(td)!r})"
    assert math.isclose(float(td.attrs["data-value"]), expected, rel_tol=1e-9, abs_tol=1e-12), key
    text = shown(td).replace(",", "")
    decimals = len(text.split(".")[1]) if "." in text else 0
    assert abs(float(text) - expected) <= 0.5 * 10**-decimals + 1e-9, f"{key}: {text} for {expected}"


def source_of(td: Element, dom: Element, table_id: str) -> str:
    """The cell's source: its mark, looked up in the key under its table (and its tooltip)."""
    mark = td.find("sup", cls="source")
    key = dom.find("div", cls="table-block", data_table=table_id).find("dl", cls="sources")
    sources = {dt.text(): dd.text() for dt, dd in zip(key.find_all("dt"), key.find_all("dd"))}
    assert sources[mark.text()] == mark.attrs["title"]
    return sources[mark.text()]
