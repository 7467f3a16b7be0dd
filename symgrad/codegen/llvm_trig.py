"""Payne-Hanek reduction of huge arguments of sin/cos/tan, emitted as branch-free llvmlite IR.

``llvm_math`` reduces ``|x| <= 2^40`` by ``pi/2`` in three fused multiply-add steps; beyond
that ``n*pi/2`` cannot be formed exactly. Here ``x = M*2^E`` (``M`` the integer mantissa) is
multiplied by a 192-bit window of the bits of ``2/pi`` that starts where the bits of lower
weight stop being multiples of 4 (``M*2^E*b_i*2^-i`` with ``E - i >= 2``): the low 192 bits of
``M*window`` (32-bit limbs, exact integer products and carries) hold ``x*2/pi mod 4``, the
quadrant in the top two bits. The fraction becomes a double-double, then ``r`` in one double.
The window's truncation costs ``2^-137`` of a quadrant and the dropped low columns ``2^-126``,
well below the ``2^-118`` that the double closest to a multiple of ``pi/2``
(6381956970095103*2^797, 2^-61 away) needs for a 53-bit ``r``. float32 inputs (a 24-bit
mantissa) need four limbs only.

Everything is integer and floating arithmetic on lanes, plus (float64) loads from one
constant table (the limbs of ``2/pi``) at a computed index, which the loop vectorizer turns
into gathers: a loop of ``sin`` still vectorizes. A float32 window starts in one of four table
words, picked by selects instead. The emitters work on an ``_Em`` (llvm_math's typed
builder) for float64 lanes, scalar or vector.
"""

from __future__ import annotations

import functools

from llvmlite import ir

I32, I64 = ir.IntType(32), ir.IntType(64)
LIMBS = 40  # 32-bit limbs of the table: 32 zero bits, then 2/pi to 1248 bits
_MASK32 = 0xFFFFFFFF
_PIO2_HI, _PIO2_LO = 1.5707963267948966, 6.123233995736766e-17  # pi/2 = hi + lo
_TABLE = "symgrad.two_over_pi_pairs"


def _atan_inv(k: int, one: int) -> int:
    """atan(1/k) * one, by its Taylor series in integers (k > 1)."""
    term = one // k
    total, n, sign, k2 = term, 1, -1, k * k
    while term:
        term //= k2
        n += 2
        total += sign * (term // n)
        sign = -sign
    return total


def two_over_pi(bits: int) -> int:
    """floor(2/pi * 2**bits), from Machin's formula in integers with 64 guard bits."""
    prec = bits + 64
    one = 1 << prec
    pi = 4 * (4 * _atan_inv(5, one) - _atan_inv(239, one))  # pi * 2**prec, within a few units
    return (1 << (bits + prec + 1)) // pi


@functools.cache
def table_pairs() -> tuple[int, ...]:
    """Overlapping 64-bit words of the padded bit string: ``pair[k] = limb[k]*2^32 +
    limb[k+1]``; the string's bit ``j`` (0 the first) has weight ``2^(31 - j)`` in 2/pi."""
    v = two_over_pi(32 * LIMBS - 32)
    limbs = [(v >> (32 * (LIMBS - 1 - k))) & _MASK32 for k in range(LIMBS)]
    return tuple((limbs[k] << 32) | limbs[k + 1] for k in range(LIMBS - 1))


def _table(module: ir.Module) -> ir.GlobalVariable:
    gv = module.globals.get(_TABLE)
    if gv is None:
        pairs = table_pairs()
        ty = ir.ArrayType(I64, len(pairs))
        gv = ir.GlobalVariable(module, ty, _TABLE)
        gv.initializer = ir.Constant(ty, [_signed(p) for p in pairs])
        gv.global_constant = True
        gv.linkage = "private"
        gv.unnamed_addr = True
    return gv


def _load(d, index) -> ir.Value:
    """``pairs[index]`` lane by lane (a scalar loop's load becomes a gather when vectorized)."""
    b = d.b
    gv = _table(b.module)
    zero = ir.Constant(I32, 0)

    def one(i):
        ptr = b.gep(gv, [zero, i], inbounds=True, source_etype=gv.value_type)
        return b.load(ptr, typ=I64)
    if not d.lanes:
        return one(index)
    out = ir.Constant(d.ity, ir.Undefined)
    for lane in range(d.lanes):
        k = ir.Constant(I32, lane)
        out = b.insert_element(out, one(b.extract_element(index, k)), k)
    return out


def _select_words(d, first, starts: range, n: int) -> list[ir.Value]:
    """``pairs[first + t]`` for ``t < n`` by selects over the few values ``first`` takes."""
    b = d.b
    pairs = table_pairs()
    hits = {k: b.icmp_signed("==", first, d.ic(k)) for k in starts[1:]}
    out = []
    for t in range(n):
        v = d.ic(_signed(pairs[starts[0] + t]))
        for k, hit in hits.items():
            v = b.select(hit, d.ic(_signed(pairs[k + t])), v)
        out.append(v)
    return out


def _signed(word: int) -> int:
    return word - (1 << 64) if word >> 63 else word


def reduce_huge(d, ax, mant: int) -> tuple[ir.Value, ir.Value]:
    """``(r, q)`` with ``ax = q*pi/2 + r``, ``|r| <= pi/4`` (to a double's rounding) and ``q``
    an integer (only ``q mod 4`` is meaningful), for float64 lanes ``ax`` that are finite and
    ``>= 2^30`` (callers substitute such a value in lanes they do not use). ``mant`` is 52 for
    float64 inputs, 23 for float32 inputs carried in double (then ``M`` fits one limb)."""
    b = d.b
    mask = d.ic(_MASK32)
    bits = b.bitcast(ax, d.ity)
    biased = b.lshr(bits, d.ic(52))  # the sign bit is clear
    m = b.or_(b.and_(bits, d.ic((1 << 52) - 1)), d.ic(1 << 52))
    m = b.lshr(m, d.ic(52 - mant))  # exact: a float32's low 29 bits are zero
    # ax = m * 2^e with e = biased - 1023 - mant; the window starts at bit j0 = e + 30
    j0 = b.sub(biased, d.ic(1023 + mant - 30))
    first, shift = b.lshr(j0, d.ic(5)), b.sub(d.ic(32), b.and_(j0, d.ic(31)))
    n = 6 if mant > 31 else 4  # window limbs: 192 bits for a 53-bit M, 128 for 24 bits
    if mant > 31:
        words = [_load(d, b.add(first, d.ic(t))) for t in range(n)]
    else:  # a float32 window starts in one of 4 words (2^40 <= ax < 2^128): selects are
        words = _select_words(d, first, range(1, 5), n)  # cheaper than gathers
    window = [b.and_(b.lshr(w, shift), mask) for w in words]
    c = window[::-1]  # c[0] the least significant limb
    ms = [b.and_(m, mask), b.lshr(m, d.ic(32))] if mant > 31 else [m]
    cols: list[list[ir.Value]] = [[] for _ in range(n)]
    for i, mi in enumerate(ms):
        for j, cj in enumerate(c):
            k = i + j
            if k > n - 1 or k < n - 5:  # above the window (a multiple of 4) or too low
                continue
            p = b.mul(mi, cj)  # < 2^64: exact as an unsigned product
            if k >= n - 4:
                cols[k].append(b.and_(p, mask))
            if k + 1 <= n - 1:
                cols[k + 1].append(b.lshr(p, d.ic(32)))
    top = cols[n - 4:]  # four columns: 128 bits, the quadrant in the top two
    sums = []
    carry = None
    for col in top:
        s = col[0]
        for v in col[1:]:
            s = b.add(s, v)
        if carry is not None:
            s = b.add(s, carry)
        carry = b.lshr(s, d.ic(32))
        sums.append(b.and_(s, mask))
    hi = b.or_(b.shl(sums[3], d.ic(32)), sums[2])
    lo = b.or_(b.shl(sums[1], d.ic(32)), sums[0])
    # the fraction rounded to the nearest quadrant: a signed 128-bit number u_hi:u_lo
    u_hi = b.or_(b.shl(hi, d.ic(2)), b.lshr(lo, d.ic(62)))
    u_lo = b.shl(lo, d.ic(2))
    q = b.add(b.lshr(hi, d.ic(62)), b.lshr(u_hi, d.ic(63)))
    parts = [(b.ashr(u_hi, d.ic(32)), -32), (b.and_(u_hi, mask), -64),
             (b.lshr(u_lo, d.ic(32)), -96), (b.and_(u_lo, mask), -128)]
    fa, fb, fc, fd = (d.mul(d.to_float(v), d.c(2.0**e)) for v, e in parts)  # all exact
    s = d.add(fa, fb)
    e1 = d.sub(fb, d.sub(s, fa))  # Fast2Sum: |fa| >= |fb| unless fa is 0
    lo_sum = d.add(e1, d.add(fc, fd))
    f_hi = d.add(s, lo_sum)
    f_lo = d.sub(lo_sum, d.sub(f_hi, s))
    r_hi = d.mul(f_hi, d.c(_PIO2_HI))
    r_lo = d.add(d.fma(f_hi, d.c(_PIO2_HI), d.neg(r_hi)),
                 d.mad(f_hi, d.c(_PIO2_LO), d.mul(f_lo, d.c(_PIO2_HI))))
    return d.add(r_hi, r_lo), q


# --------------------------------------------------------------------------- arctan
# Cephes' atan: |x| reduced to [0, 0.66] (t = |x|), (0.66, tan(3pi/8)] (t = (|x|-1)/(|x|+1),
# plus pi/4) or beyond (t = -1/|x|, plus pi/2), then t + t*z*P(z)/Q(z) with z = t*t; the
# constants added carry pi/2's low part (MOREBITS). ~1 ulp in double; float32 computes in
# double and rounds once. Branch-free: every lane computes the three t and selects.
_ATAN_P = (-8.750608600031904122785e-1, -1.615753718733365076637e1,
           -7.500855792314704667340e1, -1.228866684490136173410e2,
           -6.485021904942025371773e1)
_ATAN_Q = (2.485846490142306297962e1, 1.650270098316988542046e2, 4.328810604912902668951e2,
           4.853903996359136964868e2, 1.945506571482613964425e2)
_T3P8, _MOREBITS = 2.41421356237309504880, 6.123233995736765886130e-17


def atan_double(d, x) -> ir.Value:
    """arctan(x) for a double (scalar or vector) x, on llvm_math's emitter ``d``: odd (-0
    stays -0), +-pi/2 at +-inf, NaN for NaN."""
    a = d.fabs(x)
    far, near = d.cmp(">", a, d.c(_T3P8)), d.cmp("<=", a, d.c(0.66))
    t = d.sel(far, d.neg(d.div(d.c(1.0), a)),
              d.sel(near, a, d.div(d.sub(a, d.c(1.0)), d.add(a, d.c(1.0)))))
    base = d.sel(far, d.c(_PIO2_HI), d.sel(near, d.c(0.0), d.c(_PIO2_HI / 2)))
    extra = d.sel(far, d.c(_MOREBITS), d.sel(near, d.c(0.0), d.c(0.5 * _MOREBITS)))
    z = d.mul(t, t)
    p = d.horner(z, _ATAN_P[::-1])
    q = d.horner(z, (*_ATAN_Q[::-1], 1.0))
    y = d.add(base, d.add(d.mad(t, d.div(d.mul(z, p), q), t), extra))
    return d.copysign(y, x)


def atan(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """arctan of a float or double (scalar or vector) ``x``."""
    from symgrad.codegen.llvm_math import _Em  # llvm_math imports this module

    em = _Em.of(b, x)
    if em.p.bits == 64:
        return atan_double(em, x)
    d = em.double()
    return b.fptrunc(atan_double(d, b.fpext(x, d.ty)), em.ty)
