"""The report's LaTeX tables (ftcompare.report.latex): every special character escaped, and the
tables the fixture report writes ready to compile (braces and environments balanced, one cell per
column); with pdflatex installed, compiled too."""

import re
import shutil
import subprocess
from pathlib import Path

from helpers.report import built_blog_report

from ftcompare.report.latex import escape_latex, table_to_latex
from ftcompare.report.table import Cell, Column, Table


def test_latex_tables_are_compile_ready():
    outputs = built_blog_report()
    tables = outputs.tables[0].parent
    for name in ("headline.tex", "headline_transposed.tex", "reference.tex"):
        assert_compile_ready((tables / name).read_text(encoding="utf-8"))
    headline = (tables / "headline.tex").read_text(encoding="utf-8")
    assert "\\toprule" in headline and "\\midrule" in headline and "\\bottomrule" in headline
    assert "4\\,194\\,304" in headline and "[\\% of all]" in headline and "Ratio to full [$\\times$]" in headline
    compile_if_possible(tables / "headline.tex")


def test_latex_escapes_every_special_character():
    text = "a&b%c$d#e_f{g}h~i^j\\k"
    assert escape_latex(text) == (
        "a\\&b\\%c\\$d\\#e\\_f\\{g\\}h\\textasciitilde{}i\\textasciicircum{}j\\textbackslash{}k"
    )
    table = Table(
        [Column("model", "Model"), Column("value_s", "Time_total", "s", decimals=1)],
        [[Cell("run_1 & {x}"), Cell(1234.56)], [Cell("100%~#$^\\"), Cell(None)]],
        notes=["50% of runs_used $"],
    )
    latex = table_to_latex(table, "Caption with _ and &", "tab:x y")
    assert "run\\_1 \\& \\{x\\} & 1\\,234.6 \\\\" in latex
    assert "100\\%\\textasciitilde{}\\#\\$\\textasciicircum{}\\textbackslash{} & --- \\\\" in latex
    assert "\\label{tab:x-y}" in latex
    assert_compile_ready(latex)


def assert_compile_ready(latex: str) -> None:
    body = "\n".join(line for line in latex.splitlines() if not line.lstrip().startswith("%"))
    unescaped = re.sub(r"\\[\\{}&%$#_]", "", body)
    depth = 0
    for char in unescaped:
        depth += {"{": 1, "}": -1}.get(char, 0)
        assert depth >= 0, "a } closes nothing"
    assert depth == 0, "unbalanced braces"
    stack = []
    for kind, name in re.findall(r"\\(begin|end)\{([^}]*)\}", body):
        if kind == "begin":
            stack.append(name)
        else:
            assert stack and stack.pop() == name, f"\\end{{{name}}} does not close the open environment"
    assert not stack, f"unclosed environments {stack}"
    spec = re.search(r"\\begin\{tabular\}\{([lrc]+)\}", body).group(1)
    rows = body.split("\\toprule")[1].split("\\bottomrule")[0]
    for line in rows.splitlines():
        if line.endswith("\\\\"):
            cells = re.split(r"(?<!\\)&", line)
            spans = [re.match(r"\s*\\multicolumn\{(\d+)\}", cell) for cell in cells]
            assert sum(int(span.group(1)) if span else 1 for span in spans) == len(spec), line
    for char in "%$#_":  # unescaped specials outside the comments
        assert not re.search(rf"(?<!\\){re.escape(char)}", body.replace("$\\times$", "")), char


def compile_if_possible(table_file: Path) -> None:
    """With pdflatex installed, compile the table in a minimal document; otherwise the structural
    checks above stand alone."""
    pdflatex = shutil.which("pdflatex")
    if pdflatex is None:
        return
    work = table_file.parent / "latex-check"
    work.mkdir(exist_ok=True)
    (work / "doc.tex").write_text(
        "\\documentclass{article}\\usepackage{booktabs}\\usepackage[margin=1cm,"
        "landscape]{geometry}\\begin{document}\\input{" + str(table_file) + "}\\end{document}\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [pdflatex, "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
    )
    shutil.rmtree(work, ignore_errors=True)
    assert done.returncode == 0, done.stdout[-3000:]
