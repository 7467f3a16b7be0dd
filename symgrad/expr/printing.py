"""Readable text and LaTeX for graphs.

Infix math with the fewest parentheses Python's precedences allow. A large subexpression
used more than once is printed once, under a name, in a ``where`` block after the formula,
so the printed size grows with the DAG, not with the tree it unfolds to.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

import numpy as np

from symgrad.expr import ops_elementwise as E
from symgrad.expr import ops_tensor as T
from symgrad.expr.leaves import CONST, INPUT, PARAM, SIZE
from symgrad.expr.node import Expr, toposort
from symgrad.expr.printing_structure import readable_structure

SHARE_MIN_OPS = 4  # a repeated subexpression with at least this many nodes gets a name
_NEG_PREC = 25  # unary minus: ``-2**x`` is ``-(2**x)``, so ``(-2)**x`` needs parentheses
_CMP_PREC = 5  # comparisons chain in Python: ``(x < y) < z`` keeps its parentheses


def _const_text(node: Expr) -> str:
    arr = node.arg.array
    if arr.ndim == 0:
        v = arr.item()
        if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
            return str(int(v))  # 2, not 2.0: the dtype is the node's, not the literal's
        if isinstance(v, float):
            text = f"{v:.8g}" if arr.dtype == np.float32 else repr(v)
            if arr.dtype == np.float32 and np.float32(text) != arr:
                text = f"{v:.9g}"  # 8 digits do not always pin a float32 down; 9 do
            return text if ("e" in text or "." in text or "n" in text) else text
        return str(v)
    if arr.size <= 6:
        return np.array2string(arr, separator=", ", precision=6)
    s = node.arg.scalar()
    return f"full({node.shape}, {s})" if s is not None else f"const{node.shape}"


def _leaf_names(nodes: list[Expr]) -> dict[Expr, str]:
    """Names for inputs and parameters; distinct leaves with one name get suffixes."""
    names: dict[Expr, str] = {}
    used: Counter = Counter()
    for n in nodes:
        if n.op is INPUT or n.op is PARAM:
            used[n.name] += 1
            names[n] = n.name if used[n.name] == 1 else f"{n.name}#{used[n.name]}"
    return names


def _shared(nodes: list[Expr], min_ops: int) -> list[Expr]:
    """Nodes worth naming: used more than once and big enough."""
    uses: Counter = Counter()
    for n in nodes:
        for s in n.srcs:  # d + d uses d twice: inlining both would double the text
            uses[s] += 1
    size: dict[Expr, int] = {}
    for n in nodes:  # tree size, capped so it stays cheap
        size[n] = min(1 + sum(size[s] for s in n.srcs), 10**6)
    return [n for n in nodes if uses[n] > 1 and n.srcs and size[n] >= min_ops]


class _Printer:
    """One printer for text and LaTeX: ``spell(node, parts) -> (text, precedence)``."""

    def __init__(self, spell: Callable, leaf: Callable, let_name: str = "t{}",
                 structure: Callable | None = None):
        self.spell, self.leaf, self.let_name = spell, leaf, let_name
        self.structure = structure  # (node, texts so far) -> text, or None: a node's own

    def render(self, root: Expr, min_ops: int = SHARE_MIN_OPS) -> tuple[str, list]:
        nodes = toposort([root])
        names = _leaf_names(nodes)
        shared = _shared(nodes, min_ops)
        let = {n: self.let_name.format(i) for i, n in enumerate(shared)}
        text: dict[Expr, tuple[str, int]] = {}
        lets = []
        for n in nodes:
            if n.op is INPUT or n.op is PARAM or n.op is CONST:
                leaf = self.leaf(n, names)  # a negative number binds like unary minus
                text[n] = (leaf, _NEG_PREC if leaf.startswith("-") else 100)
            elif n.op is SIZE:  # N, or N*M
                dims = [str(d) for d in n.arg[0]]
                text[n] = ("*".join(dims), 100 if len(dims) == 1 else 20)
            else:
                text[n] = (self.structure and self.structure(n, text)) or self.spell(
                    n, [text[s] for s in n.srcs])
            if n in let and n is not root:
                lets.append((let[n], text[n][0]))
                text[n] = (let[n], 100)
        return text[root][0], lets


def _paren(part: tuple[str, int], prec: int, right: bool = False) -> str:
    s, p = part
    return f"({s})" if p < prec or (right and p == prec) else s


def _index_text(n: Expr) -> str:
    """The key of an index node as a user writes it: ``1:`` rather than ``1:5``."""
    key = []
    for e, dim in zip((e for e in n.arg if e[0] != "new"), n.srcs[0].shape):
        if e[0] == "slice":  # drop bounds that are the defaults for the step's direction
            start, stop, step = e[1:]
            if step < 0 and start == dim - 1:
                start = None
            if step > 0 and stop == dim:
                stop = None
            e = ("slice", start, stop, step)
        key.append(e)
    it = iter(key)
    return n.op.fmt_arg(tuple(e if e[0] == "new" else next(it) for e in n.arg))


def _spell_text(n: Expr, parts: list) -> tuple[str, int]:
    op = n.op
    if op.extra.get("transparent"):  # an identity that only carries a mark (``sg.watch``)
        return parts[0]
    if op.infix == "[]":
        return f"{_paren(parts[0], 100)}[{_index_text(n)}]", 100
    if op.infix and len(parts) == 1:  # unary minus
        return f"-{_paren(parts[0], op.prec)}", op.prec
    if op.infix:
        a, b = parts
        if op.infix == "**":  # right-associative, binds tighter than unary minus on its
            # left; its exponent may itself be a unary minus (``x**-y`` is ``x**(-y)``)
            return f"{_paren(a, op.prec + 1)}**{_paren(b, _NEG_PREC)}", op.prec
        sep = f" {op.infix} " if op.prec <= 10 else op.infix
        if op.prec == _CMP_PREC:
            sep = f" {op.infix} "
        return (f"{_paren(a, op.prec, right=op.prec == _CMP_PREC)}{sep}"
                f"{_paren(b, op.prec, right=True)}", op.prec)
    if op is E.CAST:
        return f"{n.dtype}({parts[0][0]})", 100
    if op is T.TRANSPOSE and n.arg == (1, 0):
        return f"{_paren(parts[0], 100)}.T", 100
    args = [p[0] for p in parts]
    if op is T.CONCAT:
        args = [f"[{', '.join(args)}]"]
    if op.fmt_arg is not None and n.arg is not None:
        extra = op.fmt_arg(n.arg)
        if extra:
            args.append(extra)
    return f"{op.fn}({', '.join(args)})", 100


def _leaf_text(n: Expr, names: dict) -> str:
    return _const_text(n) if n.op is CONST else names[n]


def to_str(e: Expr, share_min_ops: int = SHARE_MIN_OPS) -> str:
    """The text of ``str(e)``: ``w1*x1 + w2*x2 + b - y``; shared parts after ``where``."""
    body, lets = _Printer(_spell_text, _leaf_text, structure=readable_structure).render(
        e, share_min_ops)
    if not lets:
        return body
    return body + "\nwhere\n" + "\n".join(f"  {name} = {text}" for name, text in lets)


# -- LaTeX ------------------------------------------------------------------------------
_LATEX_INFIX = {"+": "+", "-": "-", "*": r" \cdot ", "@": " ", "<": "<", "<=": r" \le ",
                ">": ">", ">=": r" \ge "}


def _latex_name(name: str) -> str:
    """``w1`` -> ``w_{1}``, ``x_train`` -> ``x_{train}``, ``W#2`` -> ``W_{2}``."""
    base, sep, sub = name.replace("#", "_").partition("_")
    if not sep:
        stripped = base.rstrip("0123456789")
        base, sub = (stripped, base[len(stripped):]) if stripped else (base, "")
    return f"{base}_{{{sub}}}" if sub else base


def _spell_latex(n: Expr, parts: list) -> tuple[str, int]:
    op = n.op

    def paren(part, prec, right=False):
        s, p = part
        return rf"\left({s}\right)" if p < prec or (right and p == prec) else s

    if op.extra.get("transparent"):
        return parts[0]
    if op is E.DIV:
        return rf"\frac{{{parts[0][0]}}}{{{parts[1][0]}}}", 100
    if op is E.POW:
        return f"{paren(parts[0], op.prec + 1)}^{{{parts[1][0]}}}", op.prec
    if op is E.SQRT:
        return rf"\sqrt{{{parts[0][0]}}}", 100
    if op is E.ABS:
        return rf"\left|{parts[0][0]}\right|", 100
    if op is E.NEG:
        return f"-{paren(parts[0], op.prec)}", op.prec
    if op is T.TRANSPOSE and n.arg == (1, 0):
        return f"{paren(parts[0], 100)}^{{T}}", 100
    if op is E.CAST:
        return parts[0]
    if op.infix == "[]":
        return f"{paren(parts[0], 100)}_{{[{_index_text(n)}]}}", 100
    if op.infix in _LATEX_INFIX:
        a, b = parts
        return (f"{paren(a, op.prec, right=op.prec == _CMP_PREC)}{_LATEX_INFIX[op.infix]}"
                f"{paren(b, op.prec, right=True)}", op.prec)
    fn = op.fn.replace("_", r"\_")  # ``log_softmax``: a bare _ would be a subscript
    name = op.latex if isinstance(op.latex, str) else rf"\operatorname{{{fn}}}"
    args = [p[0] for p in parts]
    if op.fmt_arg is not None and n.arg is not None:
        extra = op.fmt_arg(n.arg)
        if extra:
            args.append(rf"\text{{{extra}}}".replace("_", r"\_"))
    return rf"{name}\left({', '.join(args)}\right)", 100


def _leaf_latex(n: Expr, names: dict) -> str:
    if n.op is CONST:
        return _const_text(n).replace("inf", r"\infty")
    return _latex_name(names[n])


def latex(e: Expr, share_min_ops: int = SHARE_MIN_OPS) -> str:
    """LaTeX for ``e``; shared parts follow as ``\\text{where } t_0 = ...``.

    >>> sg.latex(sg.sigmoid(w1 * x1) / 2)
    '\\\\frac{\\\\sigma\\\\left(w_{1} \\\\cdot x_{1}\\\\right)}{2}'
    """
    body, lets = _Printer(_spell_latex, _leaf_latex, "t_{{{}}}").render(e, share_min_ops)
    for name, text in lets:
        body += rf",\quad \text{{where }} {name} = {text}"
    return body
