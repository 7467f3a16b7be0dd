"""Vectorizable transcendental functions, emitted inline as llvmlite IR.

The LLVM backend must never call a scalar libm routine once per element in a hot loop:
``llvm.exp``/``llvm.log``/``llvm.sin`` and friends lower to such calls, and a call stops the loop
vectorizer.  Every function here instead emits straight-line code made only of arithmetic,
comparisons, ``select``, bitcasts and integer operations, and intrinsics that lower to single
instructions (``llvm.fabs``, ``llvm.rint``, ``llvm.floor``, ``llvm.fma``, ``llvm.fmuladd``,
``llvm.copysign``).  The code is branch-free, so it works unchanged on scalars and on
``ir.VectorType`` values, and a scalar loop that uses it vectorizes.

Interface: every emitter takes an :class:`llvmlite.ir.IRBuilder` and an ``ir.Value`` whose type is
``float``, ``double`` or a vector of either, and returns a value of the same type (``power`` takes
two such values of one type).  :data:`MATH_EMITTERS` maps operator names to emitters.

Methods, shared by float32 and float64 (coefficients differ per precision; each polynomial is a
minimax fit for relative error, computed offline with a Remez exchange in 50-digit mpmath, with
degrees chosen so that its error is well below half an ulp of the result):

- ``exp``/``expm1``: Cody-Waite reduction ``x = n*ln2 + r``, ``|r| <= ln2/2`` (``ln2`` split in a
  short high part, so ``n*ln2_hi`` is exact, and a low part), ``expm1(r) = r + r^2/2 + r^3*Q(r)``,
  scaling by ``2^n`` built from exponent bits.  Measured: ~1 ulp in both precisions.
- ``log``/``log1p``: ``x = 2^k*m`` with ``m`` in ``[sqrt(1/2), sqrt(2))`` by integer arithmetic on
  the bits (subnormals pre-scaled), then fdlibm's ``log(1+f) = f - f^2/2 + s*(f^2/2 + R(s^2))``,
  ``s = f/(2+f)``.  ``log1p`` feeds the rounding error of ``1+x`` (an exact TwoSum) in as a
  first-order correction.  ~1 ulp.
- ``tanh = e/(e+2)`` with ``e = expm1(2|x|)`` (accurate for all ``x``, tiny ones included),
  ``sigmoid`` and ``softplus`` through ``exp(-|x|)`` (never overflows).
- ``sin``/``cos``/``tan``: reduction by ``pi/2`` in three parts with fused multiply-adds (exact
  first step, ~1 ulp of the reduced argument even next to a multiple of ``pi/2``) up to
  ``TRIG_MAX_ARG`` (2^40), a branch-free Payne-Hanek reduction beyond (``llvm_trig``: exact
  integer products with a window of the bits of ``2/pi``; every lane computes both and selects,
  so ordinary arguments pay for it: a loop of sin takes ~3x as long, ~3.6 vs 1.3 ns a float32
  element and 7.4 vs 2.5 a float64 one on an AMD EPYC with AVX-512), then odd/even
  polynomials on ``[-pi/4, pi/4]``; float32 inputs are computed in double precision (as glibc's
  ``sinf`` does) and rounded once at the end.
- ``erf``: ``x + x*(P(x^2) - 1)`` for ``|x| < 1``; beyond, ``erfc(a) = exp(-a^2)*(1-y)*W(y)``
  with ``y = (a-K)/(a+K)`` (a Shepherd-Laframboise style variable that maps ``[1/2, inf)`` to a
  bounded interval where ``W`` is smooth), ``a^2`` carried as an exact hi/lo pair into ``exp``.
- ``gelu = x*Phi(x)``: the erf polynomial rescaled to take ``x`` itself near 0, the erfc tail
  for ``x < -1/sqrt2`` (so it keeps full relative accuracy where ``1 + erf(x/sqrt2)`` cancels)
  and for ``x > sqrt2``.
- ``power``: ``exp(y*log|x|)``, with ``log`` carried in double-double for float64 (so the result
  keeps ~1 ulp even when ``y*log|x|`` is near the overflow threshold), and in double precision
  for float32; the C99/NumPy special cases are applied with selects.

Measured maximum error in ulps (random and edge points against long double / mpmath references,
tests/codegen/test_llvm_math.py), float32 / float64: exp 0.93/0.93, expm1 1.4/1.8, log 0.74/0.76,
log1p 0.76/0.75, tanh 2.1/2.2, sigmoid 1.9/1.7, softplus 1.4/1.5, sin 0.5/1.3, cos 0.5/1.4,
tan 0.5/2.5, erf 1.7/2.0, gelu 2.9/2.7, power 0.5/1.1; sin/cos/tan beyond 2^40 0.5/1.5 (every
float32 from 2^40 up checked once: 0.5003), tan 2.8 in float64.

Integer/float conversions use the ``x + 1.5*2^mant`` bit trick instead of ``fptosi``/``sitofp``,
which are scalarized for 64-bit lanes without AVX-512DQ.

Results depend on IEEE semantics: the emitted instructions carry no fast-math flags, and none
(``nnan``, ``ninf``, ``reassoc``, ``fast``) may be added to them or to the function holding them,
or the NaN/inf handling and the error-free transformations (TwoSum, Cody-Waite) may be optimized
away.  ``llvm.fma`` is used only where exactness needs a fused operation (the trigonometric
reduction, exact squares, power's double-double log; a target without FMA would turn those into
calls); polynomials use ``llvm.fmuladd``, which fuses only where the target can.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass

from llvmlite import ir

from symgrad.codegen.llvm_trig import reduce_huge

__all__ = [
    "MATH_EMITTERS", "TRIG_MAX_ARG", "cos", "erf", "exp", "expm1", "gelu", "log", "log1p",
    "power", "sigmoid", "sin", "softplus", "tan", "tanh",
]

TRIG_MAX_ARG = 2.0**40
"""Largest ``|x|`` that ``sin``/``cos``/``tan`` reduce by the 3-part ``pi/2``; beyond it, the
Payne-Hanek reduction of ``llvm_trig``."""

_LOG2E = 1.4426950408889634
_TWO_OVER_PI = 0.6366197723675814
_PIO2 = (1.5707963267948966, 6.123233995736766e-17, -1.4973849048591698e-33)  # pi/2 in 3 parts
_INV_SQRT2 = 0.7071067811865476


# --------------------------------------------------------------------------- coefficients
# Minimax polynomials (coefficients from degree 0 up), fitted for relative error with a Remez
# exchange in 50-digit mpmath; the comment gives the fit's error before rounding the coefficients.

# expm1(r) = r + r^2/2 + r^3*Q(r) on |r| <= ln2/2
_EXPM1_Q32 = (  # 4.7e-8 (contributes < 1e-9 to expm1)
    0.16666667, 0.041666556, 0.008333346, 0.0013926192, 0.0001986197,
)
_EXPM1_Q64 = (  # 4.7e-17
    0.16666666666666669, 0.04166666666666666, 0.00833333333333006, 0.00138888888889006,
    0.0001984126986307389, 2.4801587275075323e-05, 2.755726842138926e-06,
    2.755732962317801e-07, 2.5100406393461594e-08, 2.089399233933393e-09,
)
# log((1+s)/(1-s)) = 2s + s*z*T(z), z = s^2 <= (3-2*sqrt2)^2
_LOG_T32 = (0.66666687, 0.3998874, 0.2958155)  # 2.8e-7 (contributes < 3e-9)
_LOG_T64 = (  # 4.6e-16 (contributes < 5e-18)
    0.666666666666667, 0.3999999999989856, 0.28571428626385353, 0.22222211070310696,
    0.18182893681906515, 0.15331574001160964, 0.1461823416560131,
)
_LOG_T64_PRECISE = (  # 2.1e-20; power's double-double log uses exact 2/3 and T[1:]
    0.6666666666666666, 0.3999999999999999, 0.28571428571435425, 0.22222222219838744,
    0.18181818596501437, 0.15384574913388677, 0.133356479721569, 0.11687918481360834,
    0.11883830284069623,
)
# sin(r) = r + r^3*S(r^2), cos(r) = 1 - r^2/2 + r^4*C(r^2) on |r| <= 1.001*pi/4 (evaluated in
# double; the "32" sets are the shorter ones that suffice for a float32 result)
_SIN_S32 = (-0.16666666663794355, 0.00833333185481988, -0.00019840077216581528,
            2.724879737485062e-06)  # 1.7e-10
_SIN_S64 = (  # 1.3e-16
    -0.16666666666666666, 0.008333333333330901, -0.00019841269836691337, 2.755731606975397e-06,
    -2.505112534631751e-08, 1.5917680537753647e-10,
)
_COS_C32 = (0.041666666664282016, -0.0013888887658792275, 2.480059388467606e-05,
            -2.7300173717419267e-07)  # 5.7e-11
_COS_C64 = (  # 3.1e-17
    0.041666666666666664, -0.0013888888888887372, 2.4801587298730486e-05,
    -2.7557317254313716e-07, 2.087614277563766e-09, -1.1382388708221026e-11,
)
# erf(x) = x*P(x^2) on |x| <= 1
_ERF_P32 = (1.1283791, -0.37612626, 0.112835854, -0.026853813, 0.0051883277, -0.00080101937,
            7.8538615e-05)  # 1.2e-9
_ERF_P64 = (  # 7.3e-18
    1.1283791670955126, -0.3761263890318352, 0.11283791670944185, -0.02686617064311148,
    0.005223977606118547, -0.0008548325929317402, 0.00012055293576971665,
    -1.492471230311617e-05, 1.6447131582266812e-06, -1.6206313825552598e-07,
    1.371098062574706e-08, -7.779468815181768e-10,
)
# erfc(a) = exp(-a^2) * (1-y) * W(y), y = (a-K)/(a+K), a in [1/2, AMAX]; K*sqrt2 is exact, so
# gelu can form y from x/sqrt2 without rounding x/sqrt2
_ERFC_W32 = (  # K = 3.5/sqrt2, a <= 10.5: 1.8e-9
    0.21269031, -0.16158909, 0.09012147, -0.033157367, 0.004972702, 0.001850002,
    -0.00090437394, -0.00012560081, 0.00011636525, 1.5030604e-05,
)
_ERFC_W64 = (  # K = 2*sqrt2, a <= 27.5: 1.8e-17
    0.18882128260393788, -0.1519741604929731, 0.09678435018555434, -0.04663046448990406,
    0.015099143722684592, -0.001885047242060525, -0.0008699230904882737,
    0.00040770462072397385, 3.3336059106975445e-05, -5.777379085798922e-05,
    -4.769115836261126e-07, 8.786473931217969e-06, 1.7840997864348404e-07,
    -1.4810175968462295e-06, -1.5507536128764761e-07, 2.5728945386143126e-07,
    6.342010489409868e-08, -4.0896309349953654e-08, -1.6199655812866638e-08,
    4.643527726538331e-09, 1.881012754124071e-09,
)


@dataclass(frozen=True)
class _Prec:
    """Per-precision constants: bit layout, thresholds, coefficient sets."""

    bits: int
    mant: int  # explicit mantissa bits
    bias: int
    sqrt_half_bits: int  # bit pattern of sqrt(1/2)
    exp_lo: float  # exp(x) rounds to 0 below, overflows above exp_hi
    exp_hi: float
    expm1_lo: float  # expm1(x) rounds to -1 below
    tiny: float  # below this |x|, expm1(x) and log1p(x) round to x
    ln2_hi: float  # short: n*ln2_hi is exact for every n that occurs
    ln2_lo: float
    tanh_max: float  # tanh(x) rounds to 1 above
    erfc_k_sqrt2: float  # the K of the erfc variable, times sqrt2 (exact)
    erfc_amax: float  # erfc(a)*exp(...) underflows beyond; also gelu's tail limit
    expm1_q: tuple
    log_t: tuple
    sin_s: tuple  # evaluated in double for both precisions
    cos_c: tuple
    erf_p: tuple
    erfc_w: tuple


_P32 = _Prec(32, 23, 127, 0x3F3504F3, -104.0, 89.0, -18.0, 2.0**-25, 0.693359375,
             -2.1219444005469057e-04, 10.0, 3.5, 10.5,
             _EXPM1_Q32, _LOG_T32, _SIN_S32, _COS_C32, _ERF_P32, _ERFC_W32)
_P64 = _Prec(64, 52, 1023, 0x3FE6A09E667F3BCD, -746.0, 710.0, -40.0, 2.0**-54,
             0.6931471803691238, 1.9082149292705877e-10, 20.0, 4.0, 27.5,
             _EXPM1_Q64, _LOG_T64, _SIN_S64, _COS_C64, _ERF_P64, _ERFC_W64)


def _float_bits(v: float, bits: int) -> int:
    if bits == 64:
        return struct.unpack("<q", struct.pack("<d", v))[0]
    return struct.unpack("<i", struct.pack("<f", v))[0]


def _type_suffix(ty: ir.Type) -> str:
    """The overloaded-intrinsic suffix of a float type: f32, f64, v8f32, ..."""
    if isinstance(ty, ir.VectorType):
        return f"v{ty.count}{_type_suffix(ty.element)}"
    return "f64" if isinstance(ty, ir.DoubleType) else "f32"


def call_intrinsic(b: ir.IRBuilder, name: str, *args: ir.Value) -> ir.Value:
    """Call the overloaded float intrinsic ``name`` (``llvm.fabs``, ``llvm.maximum``) on
    arguments of one type, declared by its full name (``llvm.fabs.v8f32``): llvmlite's
    ``declare_intrinsic`` knows only some intrinsics' signatures."""
    ty = args[0].type
    full = f"{name}.{_type_suffix(ty)}"
    fn = b.module.globals.get(full)
    if fn is None:
        fn = ir.Function(b.module, ir.FunctionType(ty, [ty] * len(args)), full)
    return b.call(fn, args)


# --------------------------------------------------------------------------- emitter helper
class _Em:
    """A builder bound to one floating type (scalar or vector): typed constants and operations."""

    def __init__(self, b: ir.IRBuilder, ty: ir.Type):
        elem, lanes = (ty.element, ty.count) if isinstance(ty, ir.VectorType) else (ty, None)
        if isinstance(elem, ir.DoubleType):
            self.p = _P64
        elif isinstance(elem, ir.FloatType):
            self.p = _P32
        else:
            raise TypeError(f"llvm_math: expected float, double or a vector of them, got {ty}")
        self.b, self.ty, self.lanes = b, ty, lanes
        ielem = ir.IntType(self.p.bits)
        self.ity = ir.VectorType(ielem, lanes) if lanes else ielem

    @classmethod
    def of(cls, b: ir.IRBuilder, x: ir.Value) -> _Em:
        return cls(b, x.type)

    def double(self) -> _Em:
        """The float64 emitter with the same lane count (float32 code that computes in double)."""
        d = ir.DoubleType()
        return _Em(self.b, ir.VectorType(d, self.lanes) if self.lanes else d)

    # constants
    def c(self, v: float) -> ir.Constant:
        return ir.Constant(self.ty, [v] * self.lanes) if self.lanes else ir.Constant(self.ty, v)

    def ic(self, v: int) -> ir.Constant:
        return ir.Constant(self.ity, [v] * self.lanes) if self.lanes else ir.Constant(self.ity, v)

    # intrinsics
    def intr(self, name: str, *args: ir.Value) -> ir.Value:
        """Call the overloaded intrinsic ``name`` (e.g. ``llvm.fabs.v8f32``) on args of one type."""
        return call_intrinsic(self.b, name, *args)

    def fabs(self, x):
        return self.intr("llvm.fabs", x)

    def rint(self, x):
        return self.intr("llvm.rint", x)

    def floor(self, x):
        return self.intr("llvm.floor", x)

    def copysign(self, mag, sign):
        return self.intr("llvm.copysign", mag, sign)

    def fma(self, a, b, c):
        """Exactly rounded a*b + c (used where an error-free transformation needs it)."""
        return self.intr("llvm.fma", a, b, c)

    def mad(self, a, b, c):
        """a*b + c, fused where the target can (polynomial evaluation)."""
        return self.intr("llvm.fmuladd", a, b, c)

    # arithmetic and comparisons (ordered: false when an operand is NaN)
    def add(self, a, b):
        return self.b.fadd(a, b)

    def sub(self, a, b):
        return self.b.fsub(a, b)

    def mul(self, a, b):
        return self.b.fmul(a, b)

    def div(self, a, b):
        return self.b.fdiv(a, b)

    def neg(self, a):
        return self.b.fneg(a)

    def cmp(self, op: str, a, b):
        return self.b.fcmp_ordered(op, a, b)

    def isnan(self, x):
        return self.b.fcmp_unordered("uno", x, x)

    def sel(self, cond, a, b):
        return self.b.select(cond, a, b)

    def horner(self, x, coeffs) -> ir.Value:
        """sum(coeffs[i] * x**i) by Horner's rule with fused multiply-adds."""
        acc = self.c(coeffs[-1])
        for k in reversed(coeffs[:-1]):
            acc = self.mad(acc, x, self.c(k))
        return acc

    def clamp(self, x, lo: float, hi: float) -> ir.Value:
        """min(max(x, lo), hi), mapping NaN to ``hi`` (callers restore NaN at the end)."""
        x = self.sel(self.cmp("<", x, self.c(hi)), x, self.c(hi))
        return self.sel(self.cmp(">", x, self.c(lo)), x, self.c(lo))

    def two_sum(self, a, b) -> tuple[ir.Value, ir.Value]:
        """Knuth's TwoSum: s + e == a + b exactly, s = fl(a + b)."""
        s = self.add(a, b)
        bb = self.sub(s, a)
        e = self.add(self.sub(a, self.sub(s, bb)), self.sub(b, bb))
        return s, e

    # Conversions between integral-valued floats and integers of the same width go through the
    # bits of x + 1.5*2^mant (exact for |x| < 2^(mant-1)): fptosi/sitofp on 64-bit lanes need
    # AVX-512DQ and are scalarized on AVX2, these are one vector add and one integer subtract.
    def to_int(self, x) -> ir.Value:
        """The integer value of an integral-valued x, |x| < 2^(mant-1)."""
        magic = 1.5 * 2.0**self.p.mant
        t = self.b.bitcast(self.add(x, self.c(magic)), self.ity)
        return self.b.sub(t, self.ic(_float_bits(magic, self.p.bits)))

    def to_float(self, n) -> ir.Value:
        """The float value of an integer n, |n| < 2^(mant-1)."""
        magic = 1.5 * 2.0**self.p.mant
        t = self.b.add(n, self.ic(_float_bits(magic, self.p.bits)))
        return self.sub(self.b.bitcast(t, self.ty), self.c(magic))

    def pow2i(self, n) -> ir.Value:
        """2.0**n for an integer vector n within the normal exponent range."""
        e = self.b.add(n, self.ic(self.p.bias))
        return self.b.bitcast(self.b.shl(e, self.ic(self.p.mant)), self.ty)

    def sign_bit_set(self, x) -> ir.Value:
        bits = self.b.bitcast(x, self.ity)
        return self.b.icmp_signed("<", bits, self.ic(0))


# --------------------------------------------------------------------------- exp family
def _expm1_poly(em: _Em, r) -> ir.Value:
    """expm1(r) for |r| <= ln2/2: r + r^2*(1/2 + r*Q(r)), Q minimax."""
    q = em.horner(r, em.p.expm1_q)
    return em.mad(em.mul(r, r), em.mad(r, q, em.c(0.5)), r)


def _exp_reduce(em: _Em, x, lo=None) -> tuple[ir.Value, ir.Value]:
    """Cody-Waite: n = rint(x/ln2), r = x - n*ln2 (+ lo), |r| <= ln2/2 (+ tiny)."""
    p = em.p
    n = em.rint(em.mul(x, em.c(_LOG2E)))
    r = em.mad(n, em.c(-p.ln2_hi), x)  # exact: n*ln2_hi is exact, and the difference too
    r = em.mad(n, em.c(-p.ln2_lo), r)
    if lo is not None:
        r = em.add(r, lo)
    return n, r


def _exp_finite(em: _Em, x, lo=None, scale=None) -> ir.Value:
    """exp(x + lo) * scale for finite x in [exp_lo, exp_hi], |lo| << 1 and a normal ``scale``
    (overflow gives inf).

    2^n is applied in two halves, last, so that results in the subnormal range (n down to -1076)
    and up to the overflow threshold (n = 1024) come out with one final rounding; ``scale`` is
    folded in before that, so a tiny product such as exp(-a^2)*w is not rounded twice.
    """
    n, r = _exp_reduce(em, x, lo)
    p = _expm1_poly(em, r)
    ni = em.to_int(n)
    n1 = em.b.ashr(ni, em.ic(1))
    s1 = em.pow2i(n1)
    if scale is not None:
        s1 = em.mul(s1, scale)
    s2 = em.pow2i(em.b.sub(ni, n1))
    return em.mul(em.mad(s1, p, s1), s2)


def exp(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """e**x: Cody-Waite reduction and a minimax polynomial; inf/0 beyond the thresholds."""
    em = _Em.of(b, x)
    y = _exp_finite(em, em.clamp(x, em.p.exp_lo, em.p.exp_hi))
    return em.sel(em.isnan(x), x, y)


def _expm1_finite(em: _Em, x) -> ir.Value:
    """expm1(x) for finite x in [expm1_lo, exp_hi]: 2^n*(1 + p) - 1 = 2*(t*p + (t - 1/2)) with
    t = 2^(n-1); t - 1/2 is exact for the n that occur and n = 0 gives p itself, so small
    arguments keep full relative accuracy."""
    n, r = _exp_reduce(em, x)
    p = _expm1_poly(em, r)
    t = em.pow2i(em.b.sub(em.to_int(n), em.ic(1)))
    return em.mul(em.c(2.0), em.mad(t, p, em.sub(t, em.c(0.5))))


def expm1(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """e**x - 1, accurate near 0 (tiny x returned as is, -0 kept)."""
    em = _Em.of(b, x)
    y = _expm1_finite(em, em.clamp(x, em.p.expm1_lo, em.p.exp_hi))
    y = em.sel(em.cmp("<", em.fabs(x), em.c(em.p.tiny)), x, y)
    return em.sel(em.isnan(x), x, y)


# --------------------------------------------------------------------------- log family
def _log_reduce(em: _Em, x) -> tuple[ir.Value, ir.Value]:
    """x = 2^k * (1 + f) with 1 + f in [sqrt(1/2), sqrt(2)), for positive finite x.

    Integer arithmetic on the bits (musl's trick): adding ``bits(1) - bits(sqrt(1/2))`` carries
    into the exponent exactly when the mantissa is >= sqrt(2).  Subnormals are scaled first.
    Returns (k as a float, f); f = m - 1 is exact.
    """
    p, b = em.p, em.b
    sub = em.cmp("<", x, em.c(2.0 ** (1 - p.bias)))
    shift = p.mant + 2
    x = em.sel(sub, em.mul(x, em.c(2.0**shift)), x)
    one_bits = _float_bits(1.0, p.bits)
    ix = b.add(b.bitcast(x, em.ity), em.ic(one_bits - p.sqrt_half_bits))
    k = b.sub(b.ashr(ix, em.ic(p.mant)), em.ic(p.bias))
    k = b.sub(k, b.select(sub, em.ic(shift), em.ic(0)))
    ix = b.add(b.and_(ix, em.ic((1 << p.mant) - 1)), em.ic(p.sqrt_half_bits))
    f = em.sub(b.bitcast(ix, em.ty), em.c(1.0))
    return em.to_float(k), f


def _log_finite(em: _Em, x, corr=None) -> ir.Value:
    """log(x) + corr for positive finite x (|corr| << ulp): fdlibm's formula
    ``k*ln2_hi - ((hfsq - (s*(hfsq + R) + (k*ln2_lo + corr))) - f)``, where f is exact and the
    minimax R(s^2) only contributes a small correction."""
    p = em.p
    dk, f = _log_reduce(em, x)
    hfsq = em.mul(em.c(0.5), em.mul(f, f))
    s = em.div(f, em.add(em.c(2.0), f))
    z = em.mul(s, s)
    big_r = em.mul(z, em.horner(z, p.log_t))
    low = em.mul(dk, em.c(p.ln2_lo))
    if corr is not None:
        low = em.add(low, corr)
    t = em.sub(hfsq, em.mad(s, em.add(hfsq, big_r), low))
    return em.mad(dk, em.c(p.ln2_hi), em.neg(em.sub(t, f)))


def log(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """Natural log: log(0) = -inf, log(x<0) = NaN, log(inf) = inf; subnormals handled."""
    em = _Em.of(b, x)
    y = _log_finite(em, x)
    inf = em.c(math.inf)
    ok = b.and_(em.cmp(">", x, em.c(0.0)), em.cmp("<", x, inf))
    special = em.sel(em.cmp("==", x, em.c(0.0)), em.c(-math.inf),
                     em.sel(em.cmp("<", x, em.c(0.0)), em.c(math.nan), x))
    return em.sel(ok, y, special)


def _log1p_finite(em: _Em, x) -> ir.Value:
    """log1p(x) for finite x > -1: log(u) + c/u where u + c == 1 + x exactly (TwoSum)."""
    u, c = em.two_sum(em.c(1.0), x)
    y = _log_finite(em, u, em.div(c, u))
    return em.sel(em.cmp("<", em.fabs(x), em.c(em.p.tiny)), x, y)


def log1p(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """log(1 + x), accurate near 0; -inf at -1, NaN below."""
    em = _Em.of(b, x)
    y = _log1p_finite(em, x)
    ok = b.and_(em.cmp(">", x, em.c(-1.0)), em.cmp("<", x, em.c(math.inf)))
    special = em.sel(em.cmp("==", x, em.c(-1.0)), em.c(-math.inf),
                     em.sel(em.cmp("<", x, em.c(-1.0)), em.c(math.nan), x))
    return em.sel(ok, y, special)


# --------------------------------------------------------------------------- logistic family
def tanh(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """tanh(x) = sign(x) * e/(e + 2), e = expm1(2|x|): one formula, accurate for tiny and large
    |x| alike (expm1 keeps the relative accuracy that 1 - 2/(exp(2x) + 1) would lose);
    saturates to +-1."""
    em = _Em.of(b, x)
    a = em.clamp(em.fabs(x), 0.0, em.p.tanh_max)
    e = _expm1_finite(em, em.add(a, a))
    y = em.copysign(em.div(e, em.add(e, em.c(2.0))), x)
    return em.sel(em.isnan(x), x, y)


def sigmoid(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """1/(1 + exp(-x)) as 1/(1+e) or e/(1+e) (one division) with e = exp(-|x|) <= 1: never
    overflows."""
    em = _Em.of(b, x)
    e = _exp_finite(em, em.clamp(em.neg(em.fabs(x)), em.p.exp_lo, 0.0))
    num = em.sel(em.cmp(">=", x, em.c(0.0)), em.c(1.0), e)
    y = em.div(num, em.add(em.c(1.0), e))
    return em.sel(em.isnan(x), x, y)


def softplus(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)): never overflows, exact tail for x << 0."""
    em = _Em.of(b, x)
    e = _exp_finite(em, em.clamp(em.neg(em.fabs(x)), em.p.exp_lo, 0.0))
    m = em.sel(em.cmp(">", x, em.c(0.0)), x, em.c(0.0))
    y = em.add(m, _log1p_finite(em, e))
    return em.sel(em.isnan(x), x, y)


# --------------------------------------------------------------------------- trigonometry
def _trig_double(d: _Em, x, kind: str, sin_s, cos_c, mant: int) -> ir.Value:
    """sin/cos/tan of a double x: n = rint(2x/pi), r = x - n*pi/2 with pi/2 in three parts and
    fused multiply-adds (the first step is exact, so r is good to ~1 ulp even when x is next to
    a multiple of pi/2), then sin(r) or cos(r) picked and signed by n mod 4. Beyond
    TRIG_MAX_ARG, (r, n) come from the Payne-Hanek reduction (``llvm_trig``), computed in
    every lane and selected where |x| is that large (``mant``: the input's mantissa bits)."""
    b = d.b
    ax = d.fabs(x)
    fast = d.cmp("<=", ax, d.c(TRIG_MAX_ARG))  # false for inf and NaN
    finite = d.cmp("<", ax, d.c(math.inf))
    xs = d.sel(fast, x, d.c(0.0))
    n = d.rint(d.mul(xs, d.c(_TWO_OVER_PI)))
    r = xs
    for part in _PIO2:
        r = d.fma(n, d.c(-part), r)
    q = d.to_int(n)
    huge = b.and_(finite, b.not_(fast))
    r_huge, q_huge = reduce_huge(d, d.sel(huge, ax, d.c(2.0 * TRIG_MAX_ARG)), mant)
    neg = d.cmp("<", x, d.c(0.0))  # x = -(q*pi/2 + r) = (-q)*pi/2 - r
    r = d.sel(huge, d.sel(neg, d.neg(r_huge), r_huge), r)
    q = b.select(huge, b.select(neg, b.neg(q_huge), q_huge), q)
    z = d.mul(r, r)
    s = d.mad(d.mul(r, z), d.horner(z, sin_s), r)
    hz = d.mul(d.c(0.5), z)
    w = d.sub(d.c(1.0), hz)  # cos(r) = w + ((1 - w) - hz) + z^2*C(z), fdlibm's precise form
    c = d.add(w, d.mad(d.mul(z, z), d.horner(z, cos_c), d.sub(d.sub(d.c(1.0), w), hz)))
    if kind == "cos":
        q = b.add(q, d.ic(1))
    odd = b.icmp_signed("!=", b.and_(q, d.ic(1)), d.ic(0))
    if kind == "tan":
        v = d.div(d.sel(odd, c, s), d.sel(odd, d.neg(s), c))
    else:
        v = d.sel(odd, c, s)
        flip = b.icmp_signed("!=", b.and_(q, d.ic(2)), d.ic(0))
        v = d.sel(flip, d.neg(v), v)
    if kind != "cos":
        v = d.sel(d.cmp("<", ax, d.c(2.0**-26)), x, v)  # x itself, -0 included
    return d.sel(finite, v, d.c(math.nan))


def _trig(b: ir.IRBuilder, x: ir.Value, kind: str) -> ir.Value:
    em = _Em.of(b, x)
    if em.p.bits == 64:
        return _trig_double(em, x, kind, em.p.sin_s, em.p.cos_c, em.p.mant)
    d = em.double()
    y = _trig_double(d, b.fpext(x, d.ty), kind, em.p.sin_s, em.p.cos_c, em.p.mant)
    return b.fptrunc(y, em.ty)


def sin(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """sin(x) for every finite x; NaN for inf and NaN (float32: computed in double)."""
    return _trig(b, x, "sin")


def cos(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """cos(x) for every finite x; NaN for inf and NaN (float32: computed in double)."""
    return _trig(b, x, "cos")


def tan(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """tan(x) = sin(r)/cos(r) or -cos(r)/sin(r) after the pi/2 reduction shared with sin."""
    return _trig(b, x, "tan")


# --------------------------------------------------------------------------- erf and gelu
def _erf_small(em: _Em, x) -> ir.Value:
    """erf(x) = x + x*(P(x^2) - 1) for |x| <= 1: odd, keeps -0, and the last fused step adds a
    correction of at most 0.16*x, so the polynomial's rounding errors shrink accordingly."""
    p = em.p.erf_p
    q = em.horner(em.mul(x, x), (p[0] - 1.0, *p[1:]))
    return em.mad(x, q, x)


def _phi_small(em: _Em, x) -> ir.Value:
    """x*Phi(x) = x*(1/2 + x*G(x^2)) for |x| <= sqrt2, where erf(x/sqrt2)/2 = x*G(x^2),
    G(v) = P(v/2)/(2*sqrt2): the erf polynomial with rescaled coefficients, so x/sqrt2 is never
    rounded (and gelu(-0) = -0)."""
    g = tuple(c * 0.5**k * (0.5 * _INV_SQRT2) for k, c in enumerate(em.p.erf_p))
    return em.mul(x, em.mad(x, em.horner(em.mul(x, x), g), em.c(0.5)))


def _erfc_tail(em: _Em, u, sqrt2_scaled: bool, a2_hi, a2_lo, scale=None) -> ir.Value:
    """erfc(a) * scale for a in [1/2, erfc_amax], given a^2 = a2_hi + a2_lo exactly, and u = a
    (erf) or u = a*sqrt2 (``sqrt2_scaled``: gelu, whose u = |x| is never divided by sqrt2).

    erfc(a) = exp(-a^2) * (1 - y) * W(y), y = (a-K)/(a+K) = (u-Ks)/(u+Ks) (s = 1 or sqrt2):
    y maps [1/2, inf) into (-1, 1) and W = erfcx(a)*(a+K)/(2K) is smooth and bounded there.
    1 - y = 2Ks/(u+Ks) comes from the same reciprocal, so one division serves both.  The hi/lo
    square makes exp(-a^2) accurate to an ulp even where a^2 is in the hundreds, and the other
    factors are applied before exp's final scaling.
    """
    ks = em.p.erfc_k_sqrt2 if sqrt2_scaled else em.p.erfc_k_sqrt2 * _INV_SQRT2
    dinv = em.div(em.c(1.0), em.add(u, em.c(ks)))
    y = em.mul(em.sub(u, em.c(ks)), dinv)
    w = em.mul(dinv, em.horner(y, tuple(2.0 * ks * c for c in em.p.erfc_w)))  # 2Ks folded in
    if scale is not None:
        w = em.mul(w, scale)
    # a^2 <= erfc_amax^2 keeps exp's 2^n scaling within range (the result underflows to 0)
    return _exp_finite(em, em.neg(a2_hi), em.neg(a2_lo), w)


def _square_hi_lo(em: _Em, a) -> tuple[ir.Value, ir.Value]:
    hi = em.mul(a, a)
    return hi, em.fma(a, a, em.neg(hi))


def erf(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """erf(x): odd minimax polynomial below 1, 1 - erfc(|x|) above; saturates to +-1."""
    em = _Em.of(b, x)
    a = em.clamp(em.fabs(x), 1.0, em.p.erfc_amax)
    hi, lo = _square_hi_lo(em, a)
    large = em.copysign(em.sub(em.c(1.0), _erfc_tail(em, a, False, hi, lo)), x)
    y = em.sel(em.cmp("<", em.fabs(x), em.c(1.0)), _erf_small(em, x), large)
    return em.sel(em.isnan(x), x, y)


def gelu(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """Exact GELU x*Phi(x) = x/2*(1 + erf(x/sqrt2)).

    For -1/sqrt2 < x < sqrt2, Phi = 1/2 + x*G(x^2) (no cancellation there); otherwise
    Phi = 1 - erfc(|x|/sqrt2)/2 for x > 0 and x/2*erfc(|x|/sqrt2) for x < 0, with a^2 = x^2/2
    taken from x exactly and x/2 folded in before exp's final scaling, so the negative tail keeps
    full relative accuracy down to underflow (like x*scipy.special.ndtr(x), unlike the formula).
    As with the formula, gelu(-inf) is NaN and gelu(x) = -0 for very negative finite x.
    """
    em = _Em.of(b, x)
    half = em.c(0.5)
    xmax = em.p.erfc_amax / _INV_SQRT2
    xa = em.clamp(em.fabs(x), 0.5, xmax)
    h, hl = _square_hi_lo(em, xa)
    neg = em.cmp("<", x, em.c(0.0))
    # x < 0: the result x/2*erfc(a) itself; x > 0: erfc(a)/2, and x*(1 - erfc(a)/2)
    t = _erfc_tail(em, xa, True, em.mul(half, h), em.mul(half, hl),
                   em.sel(neg, em.mul(half, x), half))
    low = em.sel(em.cmp(">", x, em.c(-xmax)), t, em.mul(x, em.c(0.0)))  # -0, or NaN at -inf
    large = em.sel(neg, low, em.mul(x, em.sub(em.c(1.0), t)))
    small = _phi_small(em, x)
    in_small = b.and_(em.cmp(">", x, em.c(-_INV_SQRT2)), em.cmp("<", x, em.c(1.0 / _INV_SQRT2)))
    return em.sel(in_small, small, large)


# --------------------------------------------------------------------------- power
_TWO_THIRDS = (0.6666666666666666, 3.700743415417188e-17)  # 2/3 = hi + lo


def _log_dd(em: _Em, x) -> tuple[ir.Value, ir.Value]:
    """log(x) as an unevaluated sum hi + lo good to ~2^-62 relative, for positive finite x.

    log(1+f) = 2s + (2/3)s^3 + s^5*T2(s^2) with s = f/(2+f).  The two leading terms are
    carried in double-double (s = s_hi + s_lo from the exact residual of the division, s^3 from
    exact products), summed with k*ln2 by TwoSum; only s^5*T2 (< 4e-5) is plain double.
    """
    p = em.p
    dk, f = _log_reduce(em, x)
    two = em.c(2.0)
    d_hi = em.add(two, f)
    d_lo = em.add(em.sub(two, d_hi), f)  # Fast2Sum: |2| >= |f|
    s_hi = em.div(f, d_hi)
    s_lo = em.div(em.sub(em.fma(em.neg(s_hi), d_hi, f), em.mul(s_hi, d_lo)), d_hi)
    z_hi = em.mul(s_hi, s_hi)
    z_lo = em.fma(s_hi, s_hi, em.neg(z_hi))
    c_hi = em.mul(s_hi, z_hi)  # s^3 = c_hi + c_lo
    c_lo = em.add(em.fma(s_hi, z_hi, em.neg(c_hi)),
                  em.mad(s_hi, z_lo, em.mul(em.mul(em.c(3.0), z_hi), s_lo)))
    t3, t3_lo = (em.c(v) for v in _TWO_THIRDS)
    u = em.mul(c_hi, t3)  # (2/3)s^3 = u + u_lo
    u_lo = em.add(em.fma(c_hi, t3, em.neg(u)), em.mad(c_lo, t3, em.mul(c_hi, t3_lo)))
    rest = em.mul(em.mul(c_hi, z_hi), em.horner(z_hi, _LOG_T64_PRECISE[1:]))
    hi, e1 = em.two_sum(em.mul(dk, em.c(p.ln2_hi)), em.mul(two, s_hi))
    hi, e2 = em.two_sum(hi, u)
    lo = em.add(em.add(e1, e2),
                em.add(em.mad(dk, em.c(p.ln2_lo), em.mul(two, s_lo)), em.add(u_lo, rest)))
    h = em.add(hi, lo)
    return h, em.sub(lo, em.sub(h, hi))


def _pow_magnitude(em: _Em, ax, y, precise: bool) -> ir.Value:
    """|x|**y = exp(y*log|x|) for ax = |x| >= 0 (any value) and any y; special values fall out
    of log(0) = -inf, log(inf) = inf and exp(+-inf), except those power() fixes up itself."""
    b = em.b
    inf = em.c(math.inf)
    ok = b.and_(em.cmp(">", ax, em.c(0.0)), em.cmp("<", ax, inf))
    special = em.sel(em.cmp("==", ax, em.c(0.0)), em.c(-math.inf), ax)
    if precise:
        l_hi, l_lo = _log_dd(em, ax)
        l_hi = em.sel(ok, l_hi, special)
        t = em.mul(y, l_hi)
        t_lo = em.add(em.fma(y, l_hi, em.neg(t)), em.mul(y, l_lo))
        in_range = b.and_(em.cmp(">", t, em.c(em.p.exp_lo)), em.cmp("<", t, em.c(em.p.exp_hi)))
        t_lo = em.sel(b.and_(ok, in_range), t_lo, em.c(0.0))  # else exp saturates anyway
    else:
        t = em.mul(y, em.sel(ok, _log_finite(em, ax), special))
        t_lo = None
    r = _exp_finite(em, em.clamp(t, em.p.exp_lo, em.p.exp_hi), t_lo)
    return em.sel(em.isnan(t), t, r)


def _power_same(em: _Em, x, y, precise: bool) -> ir.Value:
    b = em.b
    one = em.c(1.0)
    ax = em.fabs(x)
    ay = em.fabs(y)
    y_int = em.cmp("==", em.floor(y), y)  # true for +-inf too
    half_y = em.mul(y, em.c(0.5))
    y_odd = b.and_(y_int, em.cmp("!=", em.floor(half_y), half_y))
    r = _pow_magnitude(em, ax, y, precise)
    r = em.sel(b.and_(y_odd, em.sign_bit_set(x)), em.neg(r), r)
    finite_neg = b.and_(em.cmp("<", x, em.c(0.0)), em.cmp(">", x, em.c(-math.inf)))
    y_frac = b.fcmp_unordered("!=", em.floor(y), y)  # NaN counts as non-integer
    r = em.sel(b.and_(finite_neg, y_frac), em.c(math.nan), r)
    r = em.sel(b.and_(em.cmp("==", ax, one), em.cmp("==", ay, em.c(math.inf))), one, r)
    r = em.sel(em.cmp("==", x, one), one, r)
    r = em.sel(em.cmp("==", y, em.c(0.0)), one, r)
    # common integer exponents, exactly rounded (constant y folds these selects away)
    r = em.sel(em.cmp("==", y, em.c(-1.0)), em.div(one, x), r)
    r = em.sel(em.cmp("==", y, em.c(2.0)), em.mul(x, x), r)
    return em.sel(em.cmp("==", y, one), x, r)


def power(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    """x**y with C99/NumPy semantics: negative x needs an integer y (else NaN), the sign follows
    odd integer y, pow(x, 0) = pow(1, y) = 1 (NaN included), pow(-1, +-inf) = 1, zeros and
    infinities as in C.  float64 carries log|x| in double-double (a few ulp up to the overflow
    threshold); float32 computes in double and rounds once.  x and y must have one type."""
    if x.type != y.type:
        raise TypeError(f"llvm_math.power: operand types differ: {x.type} and {y.type}")
    em = _Em.of(b, x)
    if em.p.bits == 64:
        return _power_same(em, x, y, precise=True)
    d = em.double()
    r = _power_same(d, b.fpext(x, d.ty), b.fpext(y, d.ty), precise=False)
    return b.fptrunc(r, em.ty)


MATH_EMITTERS: dict[str, Callable[..., ir.Value]] = {
    "exp": exp,
    "expm1": expm1,
    "log": log,
    "log1p": log1p,
    "tanh": tanh,
    "sigmoid": sigmoid,
    "softplus": softplus,
    "sin": sin,
    "cos": cos,
    "tan": tan,
    "erf": erf,
    "gelu": gelu,
    "pow": power,
    "power": power,  # the operator table's name for ``**``
}
"""Operator name -> emitter ``f(builder, x) -> value`` (``f(builder, x, y)`` for pow/power)."""
