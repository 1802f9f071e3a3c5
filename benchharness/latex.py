r"""A booktabs LaTeX table writer: what a paper pastes in.

The table it writes has the shape of the published transfer table (Table 5.3 of Donahue's
thesis): a ``table`` float whose ``\caption`` holds the notes, a ``tabular`` with ``\toprule``,
a two-level header (``\multicolumn`` spans with ``\cmidrule`` under them), one block of rows per
group with the group label on its first row only, ``\midrule`` between blocks and
``\bottomrule``. It needs ``\usepackage{booktabs}`` in the document's preamble, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    # in the default OT1 font encoding these print as other glyphs (¡ ¿) unless spelled out
    "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
    "±": r"$\pm$", "†": r"\dag{}",
}


def escape(text: str) -> str:
    """``text`` with every LaTeX special character (``_ % & # $ { } ~ ^ \\ < > |``, ``±``,
    ``†``) written so that LaTeX prints it as is."""
    return "".join(_SPECIAL.get(ch, ch) for ch in str(text))


@dataclass
class Block:
    """One group of rows: its label (printed once, on its first row) and its rows, each a list
    of cells already in LaTeX (one per column after the group column)."""

    label: str
    rows: list[list[str]] = field(default_factory=list)


def _header(stub: list[str], columns: list[tuple[str, str]]) -> list[str]:
    """The header lines: a row of spans (with a ``\\cmidrule`` under each) when any column has
    a top label, then the row of column names."""
    lines = []
    if any(top for top, _ in columns):
        cells, rules = [""] * len(stub), []
        i = 0
        while i < len(columns):
            top = columns[i][0]
            j = i
            while j + 1 < len(columns) and columns[j + 1][0] == top:
                j += 1
            width = j - i + 1
            first = len(stub) + i + 1  # 1-based index of the span's first column
            if top:
                cells.append(rf"\multicolumn{{{width}}}{{c}}{{{escape(top)}}}" if width > 1 else escape(top))
                rules.append(rf"\cmidrule(lr){{{first}-{first + width - 1}}}")
            else:
                cells.extend([""] * width)
            i = j + 1
        lines.append(" & ".join(cells) + r" \\")
        lines.append(" ".join(rules))
    lines.append(" & ".join(escape(c) for c in [*stub, *(sub for _, sub in columns)]) + r" \\")
    return lines


def booktabs(stub: list[str], columns: list[tuple[str, str]], blocks: list[Block], caption: str = "",
             label: str = "", comments: list[str] | None = None) -> str:
    r"""A complete ``table`` float.

    ``stub``: the names of the left (text) columns, the first being the group column;
    ``columns``: ``(top, name)`` per data column, consecutive equal tops sharing one span
    (an empty top: no span); ``blocks``: the rows, group by group; ``caption``: LaTeX text
    (already escaped) for ``\caption``; ``label``: the ``\label``; ``comments``: lines written
    as ``%`` comments above the table. Every cell of ``blocks`` must already be LaTeX.
    """
    spec = "l" * len(stub) + "c" * len(columns)
    lines = [f"% {line}" for line in (comments or [])]
    lines += [r"\begin{table}", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{caption}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [rf"\begin{{tabular}}{{{spec}}}", r"\toprule", *_header(stub, columns), r"\midrule"]
    written = [b for b in blocks if b.rows]
    for number, block in enumerate(written):
        if number:
            lines.append(r"\midrule")
        for i, row in enumerate(block.rows):
            cells = [block.label if i == 0 else "", *row]
            cells += [""] * (len(stub) + len(columns) - len(cells))
            lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"
