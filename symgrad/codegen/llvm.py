"""The LLVM backend: a builder from loop IR to LLVM IR text (via ``llvmlite.ir``).

Each kernel becomes ``void name(ptr bufs, ptr dims, i64 start, i64 stop)``: ``bufs`` holds
one pointer per buffer of the program, ``dims`` the runtime sizes. Loops are counted loops
on ``alloca``'d indices (promoted to registers by LLVM), accumulators of reduction loops add
with the ``reassoc`` flag so LLVM vectorizes them (the order is fixed per compiled
function, so results repeat run to run). How each operator is spelled lives in
``LLVM_OPS`` below, keyed by the operator; transcendental functions come from
``llvm_math`` (inline, vectorizable code: no libm call per element).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Callable

import numpy as np
from llvmlite import ir

from symgrad.codegen import blas
from symgrad.codegen import loopir as L
from symgrad.codegen.composite import Spellings
from symgrad.codegen.llvm_entry import build_entry
from symgrad.codegen.llvm_math import MATH_EMITTERS, call_intrinsic
from symgrad.codegen.llvm_region import outline
from symgrad.codegen.llvm_trig import atan
from symgrad.codegen.regions import buffers_in
from symgrad.expr import ops_elementwise as E
from symgrad.expr import ops_math as M
from symgrad.expr.decompose import expand

I1, I8, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
F32, F64 = ir.FloatType(), ir.DoubleType()
PTR = ir.PointerType()
REASSOC = ("reassoc", "contract")

_TYPES = {np.dtype("float32"): F32, np.dtype("float64"): F64, np.dtype("int32"): I32,
          np.dtype("int64"): I64, np.dtype("bool"): I1}
_STORAGE = {**_TYPES, np.dtype("bool"): I8}  # bools are bytes in memory


def ltype(dt: np.dtype) -> ir.Type:
    return _TYPES[np.dtype(dt)]


def is_float(t: ir.Type) -> bool:
    return isinstance(t, (ir.FloatType, ir.DoubleType))


def _const(t: ir.Type, v) -> ir.Constant:
    if is_float(t):
        return ir.Constant(t, float(v))
    return ir.Constant(t, int(bool(v)) if t == I1 else int(v))


def _isnan(b, x):
    return b.fcmp_unordered("uno", x, x)


def _cast(b: ir.IRBuilder, x: ir.Value, to: ir.Type) -> ir.Value:
    t = x.type
    if t == to:
        return x
    if is_float(t) and is_float(to):
        return b.fpext(x, to) if isinstance(to, ir.DoubleType) else b.fptrunc(x, to)
    if is_float(t):
        if to == I1:
            return b.fcmp_unordered("!=", x, _const(t, 0))  # NaN is truthy, as in NumPy
        # fptosi of NaN, inf or a value out of range is poison; NumPy (x86) gives the
        # "integer indefinite" INT_MIN there: say so explicitly
        top = 2.0 ** (to.width - 1)
        fits = b.and_(b.fcmp_ordered(">=", x, _const(t, -top)),
                      b.fcmp_ordered("<", x, _const(t, top)))
        return b.select(fits, b.fptosi(x, to), _const(to, -(1 << (to.width - 1))))
    if is_float(to):
        return b.uitofp(x, to) if t == I1 else b.sitofp(x, to)
    if to == I1:
        return b.icmp_signed("!=", x, _const(t, 0))
    if to.width > t.width:
        return b.zext(x, to) if t == I1 else b.sext(x, to)
    return b.trunc(x, to)


def _icmp(b: ir.IRBuilder, op: str, x: ir.Value, y: ir.Value) -> ir.Value:
    """An integer comparison as NumPy orders the values: False < True for bools (an
    ``i1`` compared as signed would make True, -1, the smaller)."""
    return (b.icmp_unsigned if x.type == I1 else b.icmp_signed)(op, x, y)


def _arith(fop: str, iop: str) -> Callable:
    # "contract" lets LLVM fuse a*b + c into one FMA instruction (one rounding instead of two)
    def emit(b, args, t, arg):
        x, y = args
        if is_float(t):
            return getattr(b, fop)(x, y, flags=("contract",))
        if t == I1 and iop == "add":  # NumPy's bool + bool is a logical or, not a sum mod 2
            return b.or_(x, y)
        return getattr(b, iop)(x, y)
    return emit


def _compare(fcmp: str, icmp: str, unordered: bool = False) -> Callable:
    def emit(b, args, t, arg):
        x, y = args
        if is_float(x.type):
            return (b.fcmp_unordered if unordered else b.fcmp_ordered)(fcmp, x, y)
        return _icmp(b, icmp, x, y)
    return emit


def _extreme(greater: bool) -> Callable:
    """NumPy's maximum/minimum: NaN wins."""
    def emit(b, args, t, arg):
        x, y = args
        if is_float(t):
            pick = b.fcmp_ordered(">" if greater else "<", x, y)
            pick = b.or_(pick, _isnan(b, x))
        else:
            pick = _icmp(b, ">" if greater else "<", x, y)
        return b.select(pick, x, y)
    return emit


def _power(b, args, t, arg):
    x, y = args
    if is_float(t):
        k = _small_integer(y)
        if k in (1, 2, -1):  # x*x and 1/x: exact, and what NumPy computes for them too
            out = b.fmul(x, x) if k == 2 else x
            return b.fdiv(_const(t, 1), out) if k < 0 else out
        if k is not None and t == F32:  # in double, rounded once: x**-2 of 1e20 is 1e-40,
            wide = b.fpext(x, F64)      # not 1/inf
            out = wide
            for _ in range(abs(k) - 1):
                out = b.fmul(out, wide)
            return b.fptrunc(b.fdiv(_const(F64, 1), out) if k < 0 else out, t)
        if k is not None and k > 0:  # x*x*x (a product overflows only when x**k does)
            out = x
            for _ in range(k - 1):
                out = b.fmul(out, x)
            return out
        if _is_constant(y, 0.5):  # what NumPy computes for a scalar 0.5: sqrt(-inf) is nan
            return call_intrinsic(b, "llvm.sqrt", x)
        _round_as_numpy(y)
        return MATH_EMITTERS["pow"](b, x, y)
    if t == I1:  # NumPy: True**y and x**False are True, False**True is False
        return b.or_(x, b.not_(y))
    # integers: square-and-multiply over the 32 bits of the exponent, branch-free (a
    # constant negative exponent is refused when the graph is built, as NumPy refuses it)
    result, base, e = _const(t, 1), x, y
    for _ in range(32):
        odd = b.icmp_signed("!=", b.and_(e, _const(t, 1)), _const(t, 0))
        result = b.select(odd, b.mul(result, base), result)
        base = b.mul(base, base)
        e = b.ashr(e, _const(t, 1))
    return result


def _round_as_numpy(v: ir.Value) -> None:
    """Take the ``contract`` flag off the arithmetic that computes ``v`` (in this block of
    instructions), so that ``a*b + c`` there is rounded twice, as NumPy rounds it, not once
    by an FMA. For a computed exponent: a negative base's power is nan unless the exponent is
    an integer, and in float32 near 3e5 one rounding or two decides that (m = -576.889:
    m + m*m is 332224.03 in NumPy, 332224 by an FMA, so m**(m + m*m) is nan or inf)."""
    stack, seen = [v], set()
    while stack:
        v = stack.pop()
        if not isinstance(v, ir.Instruction) or id(v) in seen or isinstance(
                v, (ir.PhiInstr, ir.LoadInstr)):  # (loop-carried values and memory: stop)
            continue
        seen.add(id(v))
        if "contract" in getattr(v, "flags", ()):
            v.flags.remove("contract")
        stack.extend(v.operands)


def _is_constant(y: ir.Value, v: float) -> bool:
    return isinstance(y, ir.Constant) and isinstance(y.constant, float) and y.constant == v


def _small_integer(y: ir.Value) -> int | None:
    """The exponent when it is a constant integer from -4 to 4 (but not 0); float64 x**-2 and
    below go through pow (1/(x*x) would overflow where x**-2 is a subnormal)."""
    if isinstance(y, ir.Constant) and isinstance(y.constant, float) and \
            y.constant.is_integer() and 0 < abs(y.constant) <= 4:
        return int(y.constant)
    return None


def _math(name: str) -> Callable:
    return lambda b, args, t, arg: MATH_EMITTERS[name](b, args[0])


def _abs(b, args, t, arg):
    (x,) = args
    if is_float(t):
        return call_intrinsic(b, "llvm.fabs", x)
    if t == I1:
        return x
    return b.select(b.icmp_signed("<", x, _const(t, 0)), b.neg(x), x)


def _sign(b, args, t, arg):
    (x,) = args
    zero = _const(t, 0)
    if is_float(t):
        pos, neg = b.fcmp_ordered(">", x, zero), b.fcmp_ordered("<", x, zero)
    else:
        pos, neg = b.icmp_signed(">", x, zero), b.icmp_signed("<", x, zero)
    return b.select(pos, _const(t, 1), b.select(neg, _const(t, -1), x))  # 0 and NaN stay


def _relu(b, args, t, arg):
    return _extreme(True)(b, [args[0], _const(t, 0)], t, arg)


def _leaky_relu(b, args, t, arg):
    (x,) = args
    return b.select(b.fcmp_ordered(">", x, _const(t, 0)), x, b.fmul(x, _const(t, arg)))


def _elu(b, args, t, arg):
    (x,) = args
    neg = b.fmul(_const(t, arg), MATH_EMITTERS["expm1"](b, x))
    return b.select(b.fcmp_ordered(">", x, _const(t, 0)), x, neg)


def _negative(b, args, t, arg):
    return b.fneg(args[0]) if is_float(t) else b.neg(args[0])


def _where(b, args, t, arg):
    c, x, y = args
    return b.select(c, x, y)


def _cast_op(b, args, t, arg):
    return _cast(b, args[0], t)


def _fmod(b, args, t, arg):
    """C's remainder: ``frem`` for floats; integers by ``srem`` with the divisors it leaves
    undefined (0, and -1 for INT_MIN) taken out first: both give 0, as NumPy has it."""
    x, y = args
    if is_float(t):
        return b.frem(x, y)
    odd = b.or_(b.icmp_signed("==", y, _const(t, 0)), b.icmp_signed("==", y, _const(t, -1)))
    safe = b.select(odd, _const(t, 1), y)
    return b.select(odd, _const(t, 0), b.srem(x, safe))


# How each elementwise operator is spelled in LLVM IR: one entry per operator it spells
# natively; any other has a decomposition (``_composite`` below compiles it).
LLVM_OPS: dict = {
    E.ADD: _arith("fadd", "add"), E.SUB: _arith("fsub", "sub"),
    E.MUL: _arith("fmul", "mul"), E.DIV: _arith("fdiv", "sdiv"),
    E.POW: _power, E.NEG: _negative,
    E.MAXIMUM: _extreme(True), E.MINIMUM: _extreme(False),
    E.LT: _compare("<", "<"), E.LE: _compare("<=", "<="), E.GT: _compare(">", ">"),
    E.GE: _compare(">=", ">="), E.EQ: _compare("==", "=="),
    E.NE: _compare("!=", "!=", unordered=True),
    E.WHERE: _where, E.EXP: _math("exp"), E.LOG: _math("log"), E.LOG1P: _math("log1p"),
    E.EXPM1: _math("expm1"),
    E.SQRT: lambda b, args, t, arg: call_intrinsic(b, "llvm.sqrt", args[0]),
    E.SIN: _math("sin"), E.COS: _math("cos"), E.TAN: _math("tan"), E.TANH: _math("tanh"),
    E.ERF: _math("erf"), E.ABS: _abs, E.SIGN: _sign, E.SIGMOID: _math("sigmoid"),
    E.RELU: _relu, E.SOFTPLUS: _math("softplus"), E.GELU: _math("gelu"),
    E.LEAKY_RELU: _leaky_relu, E.ELU: _elu, E.CAST: _cast_op,
    M.ARCTAN: lambda b, args, t, arg: atan(b, args[0]),
    M.FLOOR: lambda b, args, t, arg: call_intrinsic(b, "llvm.floor", args[0]),
    M.RINT: lambda b, args, t, arg: call_intrinsic(b, "llvm.rint", args[0]),
    M.FMOD: _fmod,
}
_DTYPE_OF = {str(t): dt for dt, t in _TYPES.items()}


def _composite(op) -> Callable:
    """An operator LLVM does not spell: its decomposition, each node spelled in turn."""
    def emit(b, args, t, arg):
        dtypes = tuple(_DTYPE_OF[str(a.type)] for a in args)
        return expand(op, arg, dtypes, args,
                      lambda o, vals, dt, a: _BY_NAME.of(o.name)(b, vals, ltype(dt), a),
                      lambda v, dt: _const(ltype(dt), v))
    return emit


_BY_NAME = Spellings("llvm", LLVM_OPS, _composite)
MAX_BUFFER_ARGS = 256  # a kernel body's buffer arguments at most (then the table)


class KernelBuilder:
    """Builds one kernel's LLVM function into a module."""

    def __init__(self, module: ir.Module, kernel: L.Kernel, buffer_index: dict[str, int],
                 dim_index: dict[str, int]):
        self.kernel = kernel
        self.buffer_index, self.dim_index = buffer_index, dim_index
        self.buffer_types = {b.name: b.dtype for b in kernel.buffers}
        self.module = module
        # The body takes each buffer it uses as its own noalias argument (distinct arrays:
        # what lets LLVM vectorize loads and stores without runtime checks); the entry point
        # unpacks the pointer table and calls it (inlined by the optimizer). A kernel using
        # more than MAX_BUFFER_ARGS buffers (a model of thousands of parameters) takes the
        # table itself and loads a pointer where it is used: thousands of arguments cost
        # LLVM's interprocedural passes quadratic time, and its code is in regions, whose
        # own arguments are noalias again.
        used = buffers_in(kernel.body)
        names = [name for name in buffer_index if name in used]
        self.table_mode = len(names) > MAX_BUFFER_ARGS
        if self.table_mode:
            names = ["bufs"]
        body_ty = ir.FunctionType(ir.VoidType(), [PTR] * len(names) + [PTR, I64, I64])
        self.fn = ir.Function(module, body_ty, kernel.name + ".body")
        self.fn.linkage = "internal"
        self.fn.attributes.add("alwaysinline")
        for arg in self.fn.args[:len(names) + 1]:
            arg.add_attribute("noalias")
        self.entry = self.fn.append_basic_block("entry")
        self.b = ir.IRBuilder(self.entry)
        self.arg_buffers = names
        self.table = self.fn.args[0] if self.table_mode else None
        self.ptrs: dict[str, ir.Value] = {} if self.table_mode else dict(
            zip(names, self.fn.args))
        self.dims: dict[str, ir.Value] = {}
        nb = len(names)
        # named after the buffers (%X, %W1, %labels), so the IR reads against the plan
        for arg, name in zip(self.fn.args, names + ["dims", "start", "stop"]):
            arg.name = name
        self.scope: dict[str, ir.Value] = {"start": self.fn.args[nb + 1],
                                           "stop": self.fn.args[nb + 2]}
        self.accs: dict[str, tuple] = {}
        self.dims_table = self.fn.args[nb]
        self._gemms = 0  # (tags the loop indices of each GEMM run as loops)
        self.regions = 0  # (numbers the functions regions become)

    def pointer(self, buf: str) -> ir.Value:
        """Buffer ``buf``'s pointer: an argument, a scratch buffer, or (a kernel taking the
        pointer table) loaded from the table here."""
        found = self.ptrs.get(buf)
        if found is not None:
            return found
        if self.table is None or buf not in self.buffer_index:
            raise KeyError(f"kernel {self.kernel.name}: no buffer {buf!r} here")
        slot = self.b.gep(self.table, [_const(I64, self.buffer_index[buf])],
                          source_etype=PTR)
        return self.b.load(slot, typ=PTR, name=buf)

    def build(self) -> None:
        self._entry_point()
        self.load_dims(self.dims_table, set(self.dim_index))
        self.block(self.kernel.body, reduction=False)
        self.b.ret_void()

    def load_dims(self, table: ir.Value, names: set[str]) -> None:
        """The runtime sizes ``names`` loaded from the sizes table at the function's start."""
        self.dims_table = table
        for name, k in self.dim_index.items():
            if name in names:
                slot = self.b.gep(table, [_const(I64, k)], source_etype=I64)
                self.dims[name] = self.b.load(slot, typ=I64, name=name)  # %N

    # -- functions of their own (``llvm_region``) --------------------------------------
    def enter(self, fn: ir.Function) -> SimpleNamespace:
        """Build into ``fn`` from now on; returns what ``leave`` restores."""
        saved = SimpleNamespace(fn=self.fn, entry=self.entry, b=self.b, ptrs=self.ptrs,
                                dims=self.dims, scope=self.scope, accs=self.accs,
                                dims_table=self.dims_table, table=self.table)
        self.fn, self.entry = fn, fn.append_basic_block("entry")
        self.b = ir.IRBuilder(self.entry)
        self.ptrs, self.dims, self.accs = {}, {}, {}
        self.table = None  # a region has every buffer it uses as an argument
        self.scope = {}
        return saved

    def leave(self, saved: SimpleNamespace) -> None:
        for name, value in vars(saved).items():
            setattr(self, name, value)

    def entry_alloca(self, t: ir.Type, name: str) -> ir.Value:
        with self.b.goto_block(self.entry):
            self.b.position_at_start(self.entry)
            return self.b.alloca(t, name=name)

    def new_acc_slot(self, s: L.AccInit) -> None:
        """The slot (and an argmax's index slot) of accumulator ``s``, not yet set."""
        t = ltype(s.dtype)
        index_slot = self.entry_alloca(I64, s.name + "_i") if s.kind == "argmax" else None
        self.accs[s.name] = (self.entry_alloca(t, s.name), t, index_slot)

    def _region(self, s: L.Region, reduction: bool) -> None:
        outline(self, s, reduction)

    def _entry_point(self) -> None:
        """``void name(ptr bufs, ptr dims, i64 start, i64 stop)``: the C-callable wrapper."""
        fn = ir.Function(self.module, ir.FunctionType(ir.VoidType(), [PTR, PTR, I64, I64]),
                         self.kernel.name)
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        bufs, dims, start, stop = fn.args
        ptrs = [bufs] if self.table_mode else [
            b.load(b.gep(bufs, [_const(I64, self.buffer_index[name])], source_etype=PTR),
                   typ=PTR) for name in self.arg_buffers]
        b.call(self.fn, ptrs + [dims, start, stop])
        b.ret_void()

    # -- statements --------------------------------------------------------------------
    def block(self, body: list, reduction: bool) -> None:
        for s in body:
            getattr(self, "_" + type(s).__name__.lower())(s, reduction)

    def _loop(self, s: L.Loop, reduction: bool) -> None:
        b = self.b
        start, stop = self.value(s.start), self.value(s.stop)
        with b.goto_block(self.entry):
            b.position_at_start(self.entry)
            slot = b.alloca(I64, name=s.index)
        b.store(start, slot)
        cond = self.fn.append_basic_block(s.index + ".cond")
        body = self.fn.append_basic_block(s.index + ".body")
        done = self.fn.append_basic_block(s.index + ".end")
        b.branch(cond)
        b.position_at_end(cond)
        i = b.load(slot, typ=I64)
        b.cbranch(b.icmp_signed("<", i, stop), body, done)
        b.position_at_end(body)
        saved = self.scope.get(s.index)
        self.scope[s.index] = b.load(slot, typ=I64)
        self.block(s.body, reduction or s.reduction)
        b.store(b.add(b.load(slot, typ=I64), _const(I64, 1)), slot)
        b.branch(cond)
        b.position_at_end(done)
        if saved is None:
            self.scope.pop(s.index, None)
        else:
            self.scope[s.index] = saved

    def _let(self, s: L.Let, reduction: bool) -> None:
        self.scope[s.name] = self.value(s.value)

    def _store(self, s: L.Store, reduction: bool) -> None:
        dt = self.buffer_types[s.buf]
        v = self.value(s.value)
        v = _cast(self.b, v, ltype(dt))
        if dt == np.dtype("bool"):
            v = self.b.zext(v, I8)
        self.b.store(v, self._address(s.buf, s.offset, dt))

    def _alloc(self, s: L.Alloc, reduction: bool) -> None:
        size = self.value(s.size)  # a kernel's scratch buffers are allocated once, on entry
        self.ptrs[s.buf] = self.b.alloca(_STORAGE[np.dtype(s.dtype)], size=size, name=s.buf)
        self.buffer_types[s.buf] = np.dtype(s.dtype)

    def _accinit(self, s: L.AccInit, reduction: bool) -> None:
        if s.name not in self.accs:  # a region's accumulator has its slot already
            self.new_acc_slot(s)
        slot, t, index_slot = self.accs[s.name]
        self.b.store(_cast(self.b, self.value(s.init), t), slot)
        if index_slot is not None:
            self.b.store(_const(I64, 0), index_slot)

    def _acc(self, s: L.Acc, reduction: bool) -> None:
        b = self.b
        slot, t, index_slot = self.accs[s.name]
        old = b.load(slot, typ=t)
        x = _cast(b, self.value(s.value), t)
        flags = REASSOC if reduction else ()
        if s.kind == "sum":
            new = b.fadd(old, x, flags=flags) if is_float(t) else b.add(old, x)
        elif s.kind == "prod":
            new = b.fmul(old, x, flags=flags) if is_float(t) else b.mul(old, x)
        elif s.kind in ("max", "min") and is_float(t):
            # NaN wins, as in NumPy, through the intrinsic LLVM vectorizes as a reduction
            # (it does not vectorize the compare-and-select with a NaN test: the max of 32M
            # floats ran scalar, at 2.8 GB/s). It orders -0 below +0 (NumPy's max of the
            # two depends on their order; so does the combine of threads' partials, a
            # select, so a max of zeros may differ in sign between thread counts).
            new = call_intrinsic(b, f"llvm.{s.kind}imum", old, x)
        elif s.kind in ("max", "min"):
            new = _extreme(s.kind == "max")(b, [x, old], t, None)
        else:  # argmax: the first largest; the first NaN wins, as in NumPy
            if is_float(t):
                better = b.or_(b.fcmp_ordered(">", x, old),
                               b.and_(_isnan(b, x), b.not_(_isnan(b, old))))
            else:
                better = _icmp(b, ">", x, old)
            new = b.select(better, x, old)
            pos = b.select(better, self.value(s.index), b.load(index_slot, typ=I64))
            b.store(pos, index_slot)
        b.store(new, slot)

    def _gemm(self, s: L.Gemm, reduction: bool) -> None:
        """A BLAS call, or loops where the contraction is over fewer than
        ``blas.LOOPS_BELOW_K`` terms (a weight gradient over a tile of a few samples)."""
        b = self.b
        small, large, done = (self.fn.append_basic_block(f"gemm.{what}")
                              for what in ("loops", "blas", "done"))
        few = b.icmp_signed("<", self.value(s.k), _const(I64, blas.LOOPS_BELOW_K))
        b.cbranch(few, small, large)
        b.position_at_end(small)
        self._gemms += 1
        self.block(L.gemm_as_loops(s, str(self._gemms)), reduction)
        b.branch(done)
        b.position_at_end(large)
        self._blas_gemm(s)
        b.branch(done)
        b.position_at_end(done)

    def _blas_gemm(self, s: L.Gemm) -> None:
        """A BLAS call (``blas.SYMBOLS``): row-major ``C = op(A) @ op(B)`` is column-major
        ``C.T = op(B).T @ op(A).T``, so B goes first and the transposes swap places."""
        b, t = self.b, ltype(s.dtype)
        symbol = blas.SYMBOLS[np.dtype(s.dtype)][1]
        fn = self.module.globals.get(symbol)
        if fn is None:
            fn = ir.Function(self.module, ir.FunctionType(ir.VoidType(), [PTR] * 13), symbol)
        with b.goto_block(self.entry):
            b.position_at_start(self.entry)
            slots = [b.alloca(ty) for ty in [I8, I8] + [I32] * 3 + [t, I32, I32, t, I32]]
        tb, ta, m, n, k, alpha, lda, ldb, beta, ldc = slots
        values = [(tb, _const(I8, ord("T" if s.trans_b else "N"))),
                  (ta, _const(I8, ord("T" if s.trans_a else "N"))),
                  (m, b.trunc(self.value(s.n), I32)), (n, b.trunc(self.value(s.m), I32)),
                  (k, b.trunc(self.value(s.k), I32)), (alpha, _const(t, 1.0)),
                  (lda, _const(I32, s.ldb)), (ldb, _const(I32, s.lda)),
                  (beta, _const(t, 1.0 if s.accumulate else 0.0)), (ldc, _const(I32, s.ldc))]
        for slot, v in values:
            b.store(v, slot)
        dt = np.dtype(s.dtype)
        b.call(fn, [tb, ta, m, n, k, alpha, self._address(s.b, s.b_offset, dt), lda,
                    self._address(s.a, s.a_offset, dt), ldb, beta,
                    self._address(s.c, s.c_offset, dt), ldc])

    # -- expressions -------------------------------------------------------------------
    def _address(self, buf: str, offset: L.Expr, dt: np.dtype) -> ir.Value:
        return self.b.gep(self.pointer(buf), [self.value(offset)], inbounds=True,
                          source_etype=_STORAGE[np.dtype(dt)])

    def value(self, e: L.Expr) -> ir.Value:
        b = self.b
        if isinstance(e, L.Const):
            return _const(ltype(e.dtype), e.value)
        if isinstance(e, L.Dim):
            return self.dims[e.name]
        if isinstance(e, L.Index):
            return self.scope[e.name]
        if isinstance(e, L.Local):
            if e.name in self.scope:
                return self.scope[e.name]
            if e.name.endswith("_i") and e.name[:-2] in self.accs:
                return b.load(self.accs[e.name[:-2]][2], typ=I64)
            slot, t, _ = self.accs[e.name]
            return b.load(slot, typ=t)
        if isinstance(e, L.Load):
            dt = self.buffer_types[e.buf]
            v = b.load(self._address(e.buf, e.offset, dt), typ=_STORAGE[np.dtype(dt)])
            return b.trunc(v, I1) if dt == np.dtype("bool") else v
        if isinstance(e, L.IOp):
            return self._iop(e)
        if isinstance(e, L.Select):
            return b.select(self.value(e.cond), _cast(b, self.value(e.a), ltype(e.dtype)),
                            _cast(b, self.value(e.b), ltype(e.dtype)))
        if isinstance(e, L.Op):
            args = [self.value(a) for a in e.args]
            emit = _BY_NAME.get(e.op)
            if emit is None:
                raise NotImplementedError(f"the llvm backend has no spelling for {e.op!r}")
            return emit(b, args, ltype(e.dtype), e.arg)
        raise TypeError(f"not a loop IR expression: {e!r}")

    def _iop(self, e: L.IOp) -> ir.Value:
        b = self.b
        x, y = self.value(e.a), self.value(e.b)
        if e.op == "and":
            return b.and_(x, y)
        x, y = _cast(b, x, I64), _cast(b, y, I64)
        ops = {"+": b.add, "-": b.sub, "*": b.mul, "//": b.sdiv, "%": b.srem}
        if e.op in ops:
            return ops[e.op](x, y)
        if e.op == "min":
            return b.select(b.icmp_signed("<", x, y), x, y)
        if e.op == "clamp":  # min(max(x, 0), y - 1): a safe index for a value not chosen
            x = b.select(b.icmp_signed("<", x, _const(I64, 0)), _const(I64, 0), x)
            top = b.sub(y, _const(I64, 1))
            return b.select(b.icmp_signed(">", x, top), top, x)
        return b.icmp_signed(e.op, x, y)


def render_llvm(kernels: list[L.Kernel], buffer_index: dict[str, int],
                dim_index: dict[str, int], name: str = "symgrad",
                is_pass: list[bool] | None = None, threads_slot: int = -1,
                notes: list[list[str]] | None = None) -> str:
    """LLVM IR text of a module holding every kernel and, given ``is_pass`` (kernel k is a
    pass over the batch), the entry that runs them all (``llvm_entry``). ``notes`` (by
    kernel: the plan's line for each value it computes) become a comment above each
    kernel's body, as in the CUDA source."""
    module = ir.Module(name=name)
    for k in kernels:
        KernelBuilder(module, k, buffer_index, dim_index).build()
    if is_pass is not None:
        build_entry(module, [k.name for k in kernels], is_pass, threads_slot)
    text = str(module)
    for i, (k, lines) in enumerate(zip(kernels, notes or [])):
        what = ("a pass over the batch" if is_pass[i] else "between passes") \
            if is_pass is not None else "a kernel"
        head = f'define internal void @"{k.name}.body"('
        comment = "".join(f"\n;   {line}" for line in lines)
        text = text.replace(head, f"; {k.name}: {what}, computing:{comment}\n{head}", 1)
    return text
