"""How each elementwise operator is spelled in CUDA C, and the device helpers they call.

``CUDA_OPS`` has one entry per operator of the graph's table (``LOWERED_OPS`` aside):
``spell(args, dtype, arg, fast)`` returns a C expression from its arguments' C text. float32
calls the ``f`` functions of CUDA's math library (``expf``); ``fast`` (an explicit option)
swaps in the hardware approximations (``__expf``). ``PRELUDE`` holds the few helpers that
need more than one expression: NumPy's NaN rules, stable sigmoid and softplus, and the block
reduction (warp shuffles, then one value per warp in shared memory).
"""

from __future__ import annotations

import hashlib
import re
from typing import Callable

import numpy as np

from symgrad.codegen import loopir as L
from symgrad.codegen.loopir import value_dtype
from symgrad.expr import ops_elementwise as E
from symgrad.expr import ops_math as M
from symgrad.expr.decompose import expand
from symgrad.expr.table import OPS_BY_NAME

C_TYPES = {np.dtype("float32"): "float", np.dtype("float64"): "double",
           np.dtype("int32"): "int", np.dtype("int64"): "long long", np.dtype("bool"): "bool"}


def ctype(dt: np.dtype) -> str:
    return C_TYPES[np.dtype(dt)]


def literal(value: float | int | bool, dt: np.dtype) -> str:
    """A C literal of ``value`` as ``dt`` (exact: floats print with every digit)."""
    dt = np.dtype(dt)
    if dt.kind == "b":
        return "true" if value else "false"
    if dt.kind in "iu":
        v = int(value)
        if dt.itemsize == 8:
            return f"{v}LL" if v != -2**63 else "(-9223372036854775807LL - 1)"
        return str(v) if v != -2**31 else "(-2147483647 - 1)"
    v = float(np.float32(value)) if dt == np.float32 else float(value)
    suffix = "f" if dt == np.float32 else ""
    if np.isnan(v):
        return "SG_NAN_F" if suffix else "SG_NAN"
    if np.isinf(v):
        inf = "SG_INF_F" if suffix else "SG_INF"
        return inf if v > 0 else f"(-{inf})"
    text = repr(v)
    if "e" not in text and "." not in text:
        text += ".0"
    return f"{text}{suffix}" if v >= 0 else f"({text}{suffix})"


def _infix(sym: str) -> Callable:
    return lambda a, dt, arg, fast: f"({a[0]} {sym} {a[1]})"


def _math(name: str, fast_name: str | None = None) -> Callable:
    """A CUDA math library function: ``expf`` for float32, ``exp`` for float64."""
    def spell(a, dt, arg, fast):
        if np.dtype(dt) == np.float32:
            return f"{fast_name if fast and fast_name else name + 'f'}({a[0]})"
        return f"{name}({a[0]})"
    return spell


def _helper(name: str) -> Callable:
    return lambda a, dt, arg, fast: f"{name}({', '.join(a)})"


def _add(a, dt, arg, fast):
    # NumPy's bool + bool is a logical or (C's would be the int 2, cast to 2.0 later)
    return f"({a[0]} || {a[1]})" if np.dtype(dt).kind == "b" else f"({a[0]} + {a[1]})"


def _power(a, dt, arg, fast):
    """``arg``: the exponent when it is a constant (the printer passes it)."""
    x, y = a
    if np.dtype(dt).kind == "b":  # NumPy: True**y and x**False are True
        return f"({x} || !{y})"
    if np.dtype(dt).kind in "iu":
        return f"sg_ipow({x}, {y})"
    k = arg
    if k is not None and float(k) == 0.5:  # what NumPy computes for a scalar 0.5
        return f"{'sqrtf' if np.dtype(dt) == np.float32 else 'sqrt'}({x})"
    if k is not None and (float(k) == -1 or (float(k).is_integer() and 0 < k <= 4)):
        # x**2 is x*x and x**-1 is 1/x: exact, and what NumPy computes too (x**-2 is pow's:
        # 1/(x*x) would overflow where x**-2 is a subnormal)
        prod = " * ".join([x] * int(abs(k)))
        one = literal(1, dt)
        return f"({one} / ({prod}))" if k < 0 else f"({prod})"
    return f"{'powf' if np.dtype(dt) == np.float32 else 'pow'}({x}, {y})"


def _negative(a, dt, arg, fast):
    return f"(-{a[0]})"


def _relu(a, dt, arg, fast):
    return f"sg_maximum({a[0]}, {literal(0, dt)})"


def _leaky_relu(a, dt, arg, fast):
    return f"sg_leaky_relu({a[0]}, {literal(arg, dt)})"


def _elu(a, dt, arg, fast):
    return f"sg_elu({a[0]}, {literal(arg, dt)})"


def _where(a, dt, arg, fast):
    return f"({a[0]} ? {a[1]} : {a[2]})"


def _cast(a, dt, arg, fast):
    if np.dtype(dt) == np.int32:  # a float out of int's range: NumPy's INT_MIN, not C's UB
        return f"sg_to_int({a[0]})"
    return f"(({ctype(dt)})({a[0]}))"


# How each elementwise operator is spelled in CUDA C: one entry per operator it spells
# natively; any other has a decomposition (``composite_call`` below compiles it).
CUDA_OPS: dict = {
    E.ADD: _add, E.SUB: _infix("-"), E.MUL: _infix("*"), E.DIV: _infix("/"),
    E.POW: _power, E.NEG: _negative,
    E.MAXIMUM: _helper("sg_maximum"), E.MINIMUM: _helper("sg_minimum"),
    E.LT: _infix("<"), E.LE: _infix("<="), E.GT: _infix(">"), E.GE: _infix(">="),
    E.EQ: _infix("=="), E.NE: _infix("!="),  # C's != is true for NaN, as NumPy's
    E.WHERE: _where, E.EXP: _math("exp", "__expf"), E.LOG: _math("log", "__logf"),
    E.LOG1P: _math("log1p"), E.EXPM1: _math("expm1"), E.SQRT: _math("sqrt"),
    E.SIN: _math("sin", "__sinf"), E.COS: _math("cos", "__cosf"), E.TAN: _math("tan", "__tanf"),
    E.TANH: _math("tanh"), E.ERF: _math("erf"), E.ABS: _helper("sg_abs"),
    E.SIGN: _helper("sg_sign"), E.SIGMOID: _helper("sg_sigmoid"), E.RELU: _relu,
    E.SOFTPLUS: _helper("sg_softplus"), E.GELU: _helper("sg_gelu"),
    E.LEAKY_RELU: _leaky_relu, E.ELU: _elu, E.CAST: _cast,
    M.ARCTAN: _math("atan"), M.FLOOR: _math("floor"), M.RINT: _math("rint"),
    M.FMOD: _helper("sg_fmod"),
}
BY_NAME = {op.name: spell for op, spell in CUDA_OPS.items()}
# The C math functions the spellings call: a model's buffer never takes one of these names.
MATH_FUNCTIONS = frozenset(f"{name}{suffix}" for name in """exp log log1p expm1 sqrt sin cos
    tan tanh erf erfc pow fabs fmax fmin abs atan floor rint fmod""".split()
    for suffix in ("", "f"))

# Operators CUDA does not spell become device functions made from their decomposition,
# one per operator, operand dtypes, argument and fast flag; created callees first.
_COMPOSITES: dict[str, str] = {}
_CODES = {"float32": "f32", "float64": "f64", "int32": "i32", "int64": "i64", "bool": "b"}


def composite_call(e: L.Op, fast: bool, text: Callable[[L.Expr, np.dtype], str]) -> str | None:
    """The call of the device function that computes ``e`` by its operator's decomposition
    (made on first use; ``text(expr, dtype)`` prints loop IR as C of that dtype), or
    ``None`` when the operator has none."""
    op = OPS_BY_NAME.get(e.op)
    if op is None or op.decompose is None:
        return None
    dtypes = tuple(value_dtype(a) for a in e.args)
    name = f"sg_c_{op.name}_{'_'.join(_CODES[dt.name] for dt in dtypes)}"
    if e.arg is not None:  # a stable tag of the argument (the same in every process)
        name += "_" + hashlib.sha1(repr(e.arg).encode()).hexdigest()[:8]
    name += "_fast" if fast else ""
    if name not in _COMPOSITES:
        params = [L.Local(f"a{i}", dt) for i, dt in enumerate(dtypes)]
        body = expand(op, e.arg, dtypes, params,
                      lambda o, vals, dt, a: L.Op(o.name, tuple(vals), dt, a), L.Const)
        args = ", ".join(f"{ctype(dt)} a{i}" for i, dt in enumerate(dtypes))
        _COMPOSITES[name] = (f"__device__ __forceinline__ {ctype(e.dtype)} {name}({args}) "
                             f"{{ return {text(body, e.dtype)}; }}")
    return f"{name}({', '.join(text(a, dt) for a, dt in zip(e.args, dtypes))})"


def composites_used(texts: list[str]) -> list[str]:
    """The definitions of the composite device functions ``texts`` call, callees first."""
    seen = "\n".join(texts)
    used: set[str] = set()
    for name in reversed(list(_COMPOSITES)):  # a caller was made after its callees
        if re.search(rf"\b{name}\(", seen):
            used.add(name)
            seen += _COMPOSITES[name]
    return [_COMPOSITES[name] for name in _COMPOSITES if name in used]

PRELUDE = r"""
// -- symgrad device helpers: NumPy's rules where C's differ ------------------------
// (NVRTC has no math.h: infinities and NaN from their bits)
#define SG_INF_F (__int_as_float(0x7f800000))
#define SG_NAN_F (__int_as_float(0x7fc00000))
#define SG_INF (__longlong_as_double(0x7ff0000000000000LL))
#define SG_NAN (__longlong_as_double(0x7ff8000000000000LL))
__device__ __forceinline__ float sg_fabs(float x) { return fabsf(x); }
__device__ __forceinline__ double sg_fabs(double x) { return fabs(x); }
__device__ __forceinline__ float sg_exp(float x) { return expf(x); }
__device__ __forceinline__ double sg_exp(double x) { return exp(x); }
__device__ __forceinline__ float sg_log1p(float x) { return log1pf(x); }
__device__ __forceinline__ double sg_log1p(double x) { return log1p(x); }
__device__ __forceinline__ float sg_expm1(float x) { return expm1f(x); }
__device__ __forceinline__ double sg_expm1(double x) { return expm1(x); }
__device__ __forceinline__ float sg_erfc(float x) { return erfcf(x); }
__device__ __forceinline__ double sg_erfc(double x) { return erfc(x); }
template <typename T> __device__ __forceinline__ bool sg_isnan(T x) { return x != x; }

// maximum/minimum: a NaN on either side wins
template <typename T> __device__ __forceinline__ T sg_maximum(T a, T b) {
  return (a > b || sg_isnan(a)) ? a : b;
}
template <typename T> __device__ __forceinline__ T sg_minimum(T a, T b) {
  return (a < b || sg_isnan(a)) ? a : b;
}
template <typename T> __device__ __forceinline__ T sg_abs(T x) { return x < T(0) ? -x : x; }
__device__ __forceinline__ float sg_abs(float x) { return fabsf(x); }
__device__ __forceinline__ double sg_abs(double x) { return fabs(x); }
// sign: 0 and NaN stay as they are
template <typename T> __device__ __forceinline__ T sg_sign(T x) {
  return x > T(0) ? T(1) : (x < T(0) ? T(-1) : x);
}
// 1/(1 + e) or e/(1 + e) with e = exp(-|x|) <= 1: never overflows
template <typename T> __device__ __forceinline__ T sg_sigmoid(T x) {
  T e = sg_exp(-sg_fabs(x));
  return x >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
}
// log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|))
template <typename T> __device__ __forceinline__ T sg_softplus(T x) {
  return sg_maximum(x, T(0)) + sg_log1p(sg_exp(-sg_fabs(x)));
}
// x*Phi(x) = x/2*erfc(-x/sqrt2): no cancellation for x << 0
template <typename T> __device__ __forceinline__ T sg_gelu(T x) {
  return T(0.5) * x * sg_erfc(-x * T(0.70710678118654752440));
}
template <typename T> __device__ __forceinline__ T sg_leaky_relu(T x, T slope) {
  return x > T(0) ? x : x * slope;
}
template <typename T> __device__ __forceinline__ T sg_elu(T x, T alpha) {
  return x > T(0) ? x : alpha * sg_expm1(x);  // (NaN stays NaN: no clamp through 0)
}
// C's remainder; for integers 0 where C leaves it undefined (b = 0, INT_MIN % -1), as NumPy
template <typename T> __device__ __forceinline__ T sg_fmod(T a, T b) {
  return (b == T(0) || b == T(-1)) ? T(0) : a % b;
}
__device__ __forceinline__ float sg_fmod(float a, float b) { return fmodf(a, b); }
__device__ __forceinline__ double sg_fmod(double a, double b) { return fmod(a, b); }
// integer power by squaring (NumPy refuses negative exponents: a constant one is refused
// when the graph is built; a computed one is read as its 32 bits, unsigned: not an error)
template <typename T> __device__ __forceinline__ T sg_ipow(T x, T e) {
  T out = 1;
  for (int bit = 0; bit < 32; ++bit) {
    if (e & 1) out *= x;
    x *= x;
    e >>= 1;
  }
  return out;
}
// float -> int as NumPy has it on x86: NaN, inf and values out of range give INT_MIN (a GPU
// would saturate, and C leaves it undefined)
template <typename T> __device__ __forceinline__ int sg_to_int(T x) { return (int)x; }
template <typename T> __device__ __forceinline__ int sg_float_to_int(T x) {
  return (x >= T(-2147483648.0) && x < T(2147483648.0)) ? (int)x : (-2147483647 - 1);
}
__device__ __forceinline__ int sg_to_int(float x) { return sg_float_to_int(x); }
__device__ __forceinline__ int sg_to_int(double x) { return sg_float_to_int(x); }
__device__ __forceinline__ long long sg_imin(long long a, long long b) { return a < b ? a : b; }
// a safe index in [0, n) for a value a select will discard
__device__ __forceinline__ long long sg_clamp(long long i, long long n) {
  return i < 0 ? 0 : (i > n - 1 ? n - 1 : i);
}
// argmax: the first largest; the first NaN wins
template <typename T> __device__ __forceinline__ bool sg_better(T x, T best) {
  return x > best || (sg_isnan(x) && !sg_isnan(best));
}

struct sg_add {
  template <typename T> __device__ T operator()(T a, T b) const { return a + b; }
};
struct sg_max {
  template <typename T> __device__ T operator()(T a, T b) const { return sg_maximum(a, b); }
};
struct sg_min {
  template <typename T> __device__ T operator()(T a, T b) const { return sg_minimum(a, b); }
};

// One value per thread in, the block's total out (in thread 0): a fixed tree of warp
// shuffles, then warp 0 combines the warps' totals from shared memory. The order depends
// only on blockDim (a multiple of 32), so results repeat run to run. (A bool shuffles as
// an int: cast back.)
template <typename T, typename Op>
__device__ T sg_block_reduce(T v, T identity, Op op) {
  __shared__ T warp_totals[32];
  const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int d = 16; d > 0; d /= 2) v = op(v, (T)__shfl_down_sync(0xffffffffu, v, d));
  if (lane == 0) warp_totals[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < blockDim.x / 32 ? warp_totals[lane] : identity;
    for (int d = 16; d > 0; d /= 2) v = op(v, (T)__shfl_down_sync(0xffffffffu, v, d));
  }
  __syncthreads();  // warp_totals is reused by the next call
  return v;
}
"""
