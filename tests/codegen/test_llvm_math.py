"""symgrad.codegen.llvm_math: vectorizable exp/log/sin/... emitted as llvmlite IR.

Each emitter is JIT-compiled inside a loop over an array (scalar float32/float64, and explicit
<8 x float>/<4 x double> vectors), optimized at O3 for the host CPU, and checked against NumPy
(in long double), SciPy and mpmath on random points and on edge cases (signed zeros,
subnormals, huge values, infinities, NaN, overflow thresholds); special values must match NumPy
exactly.  The optimized code must contain no libm call, and the scalar float32 loop must have
been vectorized.
"""

from __future__ import annotations

import ctypes
import functools
import re
import zlib

import numpy as np
import pytest

llvm = pytest.importorskip("llvmlite.binding")
ir = pytest.importorskip("llvmlite.ir")
special = pytest.importorskip("scipy.special")
mpmath = pytest.importorskip("mpmath")

from symgrad.codegen import llvm_math as lm  # noqa: E402

UNARY = ["exp", "expm1", "log", "log1p", "tanh", "sigmoid", "softplus", "sin", "cos", "tan",
         "erf", "gelu"]
TYPES = ["f32", "f64", "v8f32", "v4f64"]  # scalar loops and explicit-vector loops

# --------------------------------------------------------------------------- JIT helper


@functools.cache
def _target_machine():
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    target = llvm.Target.from_default_triple()
    return target.create_target_machine(cpu=llvm.get_host_cpu_name(),
                                        features=llvm.get_host_cpu_features().flatten(), opt=3)


def _ir_type(tyname):
    elem = ir.FloatType() if "f32" in tyname else ir.DoubleType()
    lanes = {"v8f32": 8, "v4f64": 4}.get(tyname)
    return elem, (ir.VectorType(elem, lanes) if lanes else elem), lanes or 1


class _Module:
    """One JIT module per value type holding a loop kernel for every emitter:
    ``void k_<name>(T* x, [T* y,] T* out, i64 n)`` with ``out[i] = f(x[i] [, y[i]])``."""

    def __init__(self, tyname):
        elem, vty, self.lanes = _ir_type(tyname)
        self.dtype = np.float32 if "f32" in tyname else np.float64
        module = ir.Module(name=f"llvm_math_{tyname}")
        tm = _target_machine()
        module.triple = tm.triple
        module.data_layout = str(tm.target_data)
        for name, emit in lm.MATH_EMITTERS.items():
            nin = 2 if name in ("pow", "power") else 1
            ptr = vty.as_pointer()
            fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ptr] * (nin + 1)
                                                     + [ir.IntType(64)]), f"k_{name}")
            *ins, out, n = fn.args
            for a in (*ins, out):
                a.add_attribute("noalias")
            entry, loop, done = (fn.append_basic_block(s) for s in ("entry", "loop", "done"))
            b = ir.IRBuilder(entry)
            zero = ir.Constant(ir.IntType(64), 0)
            b.cbranch(b.icmp_signed(">", n, zero), loop, done)
            b.position_at_end(loop)
            i = b.phi(ir.IntType(64))
            i.add_incoming(zero, entry)
            align = elem.get_abi_size(tm.target_data)
            vals = [b.load(b.gep(p, [i]), align=align) for p in ins]
            b.store(emit(b, *vals), b.gep(out, [i]), align=align)
            nxt = b.add(i, ir.Constant(ir.IntType(64), 1))
            i.add_incoming(nxt, loop)
            b.cbranch(b.icmp_signed("<", nxt, n), loop, done)
            b.position_at_end(done)
            b.ret_void()
        mod = llvm.parse_assembly(str(module))
        mod.verify()
        pto = llvm.create_pipeline_tuning_options(speed_level=3)
        pb = llvm.create_pass_builder(tm, pto)
        pb.getModulePassManager().run(mod, pb)
        self.mod = mod
        self.optimized_ir = {f.name: str(f) for f in mod.functions}
        self.declarations = [f.name for f in mod.functions if f.is_declaration]
        self.asm = tm.emit_assembly(mod)
        self.engine = llvm.create_mcjit_compiler(mod, tm)
        self.engine.finalize_object()
        ctype = ctypes.POINTER(ctypes.c_float if self.dtype == np.float32 else ctypes.c_double)
        self.funcs = {}
        for name in lm.MATH_EMITTERS:
            nin = 2 if name in ("pow", "power") else 1
            proto = ctypes.CFUNCTYPE(None, *([ctype] * (nin + 1)), ctypes.c_int64)
            self.funcs[name] = (proto(self.engine.get_function_address(f"k_{name}")), ctype)

    def __call__(self, name, *args):
        fn, ctype = self.funcs[name]
        args = [np.ascontiguousarray(a, dtype=self.dtype) for a in args]
        size = args[0].size
        pad = (-size) % self.lanes
        args = [np.concatenate([a.ravel(), np.ones(pad, self.dtype)]) for a in args]
        out = np.empty_like(args[0])
        fn(*(a.ctypes.data_as(ctype) for a in (*args, out)), args[0].size // self.lanes)
        return out[:size]


@functools.cache
def _jit(tyname) -> _Module:
    return _Module(tyname)


# --------------------------------------------------------------------------- references
# NumPy's long double (x87 80-bit on x86-64) gives references with 11 more bits than float64;
# erf comes from SciPy (float64, < 1 ulp), gelu from mpmath (SciPy's ndtr loses ~500 ulp in the
# far negative tail).
LD = np.longdouble


def _sigmoid_ref(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _softplus_ref(x):
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def _erf_ref(x):
    return special.erf(x.astype(np.float64)).astype(LD)


def _gelu_ref(x):
    def one(v):
        if not np.isfinite(v):
            return LD(v) if v > 0 else LD(np.nan)  # the formula's NaN at -inf
        if abs(v) > 40:  # Phi(v) rounds to 1, or v*Phi(v) underflows
            return LD(v) if v > 0 else LD(-0.0)
        r = mpmath.mpf(float(v)) * mpmath.ncdf(float(v))
        return LD(mpmath.nstr(r, 25)) if r != 0 else LD(0.0) * LD(float(v))
    with mpmath.workdps(30):
        return np.array([one(v) for v in x], dtype=LD)


REF = {
    "exp": np.exp, "expm1": np.expm1, "log": np.log, "log1p": np.log1p, "tanh": np.tanh,
    "sigmoid": _sigmoid_ref, "softplus": _softplus_ref, "sin": np.sin, "cos": np.cos,
    "tan": np.tan, "erf": _erf_ref, "gelu": _gelu_ref,
}

# largest error allowed, in units in the last place of the result's own precision (measured
# maxima are ~1 ulp for exp/log/log1p/sin/cos/pow, ~2 for tanh/sigmoid/erf, < 3 for tan, gelu);
# one more for float64 where long double is no wider than double (the reference's own error)
ULP_BOUND = {"f32": 3.0, "f64": 4.0 if np.finfo(LD).nmant > 52 else 5.0}
ULP_BOUND_FN = {("gelu", "f32"): 4.0}  # the erfc tail: ~6 roundings of float32 products


def _bound(name, prec):
    return ULP_BOUND_FN.get((name, prec), ULP_BOUND[prec])


def _ref(name, x, y=None):
    """The reference in long double for float inputs x (and y for pow)."""
    with np.errstate(all="ignore"):
        if y is not None:
            return np.power(x.astype(LD), y.astype(LD))
        return REF[name](x.astype(LD))


def _ulp_error(got, ref, dtype):
    """|got - ref| in ulps of the reference rounded to ``dtype``; 0 where both are NaN or both
    are the same infinity, inf where only one is NaN."""
    with np.errstate(all="ignore"):
        ref_t = ref.astype(dtype)
        spacing = np.spacing(np.abs(ref_t)).astype(LD)
        # beyond the largest finite value, measure against the largest spacing
        spacing = np.where(np.isfinite(spacing), spacing, LD(np.spacing(np.finfo(dtype).max)))
        err = np.abs(got.astype(LD) - ref) / spacing
    same_special = (np.isnan(got) & np.isnan(ref)) | ((got == ref_t) & np.isinf(ref_t))
    err = np.where(same_special, 0.0, err)
    return np.where(np.isnan(err), np.inf, err).astype(np.float64)


def _random_points(name, dtype, rng, n=20000):
    """Uniform points on the interesting range plus log-uniform magnitudes of both signs."""
    finfo = np.finfo(dtype)
    is32 = dtype == np.float32
    uniform_range = {
        "exp": (-104.0, 89.0) if is32 else (-746.0, 710.0),
        "expm1": (-20.0, 89.0) if is32 else (-40.0, 710.0),
        "log": (0.0, 4.0), "log1p": (-1.0, 4.0), "tanh": (-12.0, 12.0),
        "sigmoid": (-110.0, 110.0) if is32 else (-750.0, 750.0), "softplus": (-110.0, 110.0),
        "sin": (-50.0, 50.0), "cos": (-50.0, 50.0), "tan": (-50.0, 50.0), "erf": (-7.0, 7.0),
        "gelu": (-16.0, 6.0) if is32 else (-40.0, 6.0),
    }[name]
    lo_exp = np.log2(finfo.smallest_subnormal)
    hi_exp = np.log2(finfo.max) * 0.999
    if name in ("sin", "cos", "tan"):
        hi_exp = 20.0
    mags = np.exp2(rng.uniform(lo_exp, hi_exp, n))
    signs = rng.choice([-1.0, 1.0], n)
    x = np.concatenate([rng.uniform(*uniform_range, n), mags * signs,
                        rng.uniform(-1.0, 1.0, n) * 2.0 ** rng.uniform(-30, 3, n)])
    return x.astype(dtype)


def _edge_points(dtype):
    finfo = np.finfo(dtype)
    vals = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, np.pi, -np.pi, np.pi / 2, np.pi / 4,
            float(finfo.tiny), -float(finfo.tiny), float(finfo.smallest_subnormal),
            -float(finfo.smallest_subnormal), float(finfo.eps), float(finfo.max),
            -float(finfo.max), 1e30, -1e30, 1e-30, -1e-30, np.inf, -np.inf, np.nan,
            88.72, 88.73, -87.3, -103.9, -104.0, 709.78, 709.79, -708.4, -745.1, -745.2,
            0.34657359, 0.6931, -0.6931, 20.0, -20.0, 9.0, -9.0, 5.9, 6.0, 26.0, -26.0,
            -1.0 + 2.0**-20, 1e5, -1e5, 12345.678, 1e10, -1e10]
    with np.errstate(over="ignore"):
        return np.array(vals, dtype=np.float64).astype(dtype)


@functools.cache
def _cases(name, prec):
    """Points and long-double reference, shared by the scalar and the vector kernels."""
    dtype = np.float32 if prec == "f32" else np.float64
    rng = np.random.default_rng(zlib.crc32(f"{name}-{prec}".encode()))
    n = 1500 if name == "gelu" else 20000  # the mpmath reference is slow
    x = np.concatenate([_random_points(name, dtype, rng, n), _edge_points(dtype)])
    return x, _ref(name, x)


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("tyname", TYPES)
@pytest.mark.parametrize("name", UNARY)
def test_accuracy_against_numpy(name, tyname):
    jit = _jit(tyname)
    prec = tyname[-3:]
    x, ref = _cases(name, prec)
    got = jit(name, x)
    err = _ulp_error(got, ref, jit.dtype)
    worst = int(np.argmax(err))
    assert err[worst] <= _bound(name, prec), (
        f"{name}[{tyname}]: {err[worst]:.2f} ulp at x={x[worst]!r}: got {got[worst]!r}, "
        f"want {ref[worst]!r}")


@pytest.mark.parametrize("tyname", ["f32", "f64"])
@pytest.mark.parametrize("name", UNARY)
def test_special_values_match_numpy_exactly(name, tyname):
    """inf, NaN, signed zeros and saturation: the same value (and sign of zero) as NumPy."""
    jit = _jit(tyname)
    dtype = jit.dtype
    big = float(np.finfo(dtype).max)
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, big, -big, 1e30, -1e30,
                  float(np.finfo(dtype).smallest_subnormal),
                  -float(np.finfo(dtype).smallest_subnormal)], dtype=dtype)
    got = jit(name, x)
    with np.errstate(all="ignore"):
        ref = (_ref(name, x) if name != "gelu" else 0.5 * x * (1 + special.erf(x / np.sqrt(2)))
               ).astype(dtype)
    if name == "gelu":  # NumPy's formula 0.5*x*(1 + erf(x/sqrt2)) gives NaN at -inf
        ref[np.isneginf(x)] = np.nan
    trig_of_big = np.isfinite(x) & (np.abs(x) > 1) & (name in ("sin", "cos", "tan"))
    err = _ulp_error(got, _ref(name, x), dtype)
    for xi, g, r, big, e in zip(x, got, ref, trig_of_big, err):
        if np.isnan(r):
            assert np.isnan(g), (name, xi, g)
        elif big:  # an ordinary value, within the accuracy bound
            assert e <= _bound(name, tyname), (name, xi, g, r)
        else:
            assert g == r and np.signbit(g) == np.signbit(r), (name, xi, g, r)


def test_saturation_and_overflow_thresholds():
    for tyname in ("f32", "f64"):
        jit = _jit(tyname)
        dt = jit.dtype
        fin = np.finfo(dt)
        # exp overflows to inf right above log(max), underflows to 0 below log(min subnormal)
        lmax, lmin = np.log(float(fin.max)), np.log(float(fin.smallest_subnormal))
        x = np.array([lmax * (1 - 1e-6), lmax * (1 + 1e-6), lmin * (1 + 1e-2)], dt)
        e = jit("exp", x)
        assert np.isfinite(e[0]) and e[1] == np.inf and e[2] == 0.0
        assert jit("expm1", np.array([lmax * (1 + 1e-6), -1e30], dt)).tolist() == [np.inf, -1.0]
        t = jit("tanh", np.array([30.0, -30.0, 1e30, -1e30], dt))
        assert t.tolist() == [1.0, -1.0, 1.0, -1.0]
        s = jit("sigmoid", np.array([1e30, -1e30, 50.0, -50.0], dt))
        assert s[0] == 1.0 and s[1] == 0.0 and s[2] == 1.0 and 0 < s[3] < 1e-20
        sp = jit("softplus", np.array([1e30, -1e30, -50.0], dt))
        assert sp[0] == dt(1e30) and sp[1] == 0.0
        assert abs(sp[2] / np.exp(-50.0) - 1) < 1e-6
        er = jit("erf", np.array([10.0, -10.0, 1e30, -1e30], dt))
        assert er.tolist() == [1.0, -1.0, 1.0, -1.0]
        assert jit("log", np.array([0.0, -0.0, -1.0, -np.inf], dt))[:2].tolist() == [-np.inf] * 2
        assert np.isnan(jit("log", np.array([-1.0, -np.inf], dt))).all()


def test_expm1_log1p_accurate_near_zero():
    for tyname in ("f32", "f64"):
        jit = _jit(tyname)
        dt = jit.dtype
        x = (np.geomspace(1e-300 if dt == np.float64 else 1e-38, 1e-3, 500) *
             np.resize([1.0, -1.0], 500)).astype(dt)
        for name in ("expm1", "log1p"):
            got = jit(name, x)
            assert _ulp_error(got, _ref(name, x), dt).max() <= 2.0, name


@pytest.mark.parametrize("tyname", ["f64", "f32", "v4f64", "v8f32"])
def test_trig_accuracy_for_large_arguments(tyname):
    """Every finite argument: the 3-part fma reduction up to TRIG_MAX_ARG (also next to
    multiples of pi/2, where the reduced argument cancels), the Payne-Hanek one beyond, up to
    the largest finite value, both sides of the switch, and the double closest to a multiple
    of pi/2 (6381956970095103*2^797, 2^-61 away)."""
    jit = _jit(tyname)
    dt = jit.dtype
    rng = np.random.default_rng(7)
    top = 1024.0 if dt == np.float64 else 128.0
    switch = lm.TRIG_MAX_ARG
    x = np.concatenate([
        np.exp2(rng.uniform(5, 40, 4000)) * rng.choice([-1, 1], 4000),
        np.exp2(rng.uniform(40, top, 8000)) * rng.choice([-1, 1], 8000),
        np.arange(1, 2000) * (np.pi / 2),
        [switch, -switch, np.nextafter(switch, np.inf), 2 * switch, 1e22, 1e30, -1e30],
        [6381956970095103 * 2.0**797, 5.319372648326541e+255, 1e300, np.finfo(dt).max]
        if dt == np.float64 else [16367173 * 2.0**72, 1e38, np.finfo(dt).max]])
    x = x[np.abs(x) <= np.finfo(dt).max].astype(dt)
    for name in ("sin", "cos", "tan"):
        err = _ulp_error(jit(name, x), _ref(name, x), dt)
        assert err.max() <= ULP_BOUND[tyname[-3:]], (name, x[np.argmax(err)], err.max())


def test_float32_trig_of_huge_arguments_sampled_over_every_exponent():
    """Every 4096th float32 from 2^40 to the largest (180000 points, each exponent and
    mantissas all over), against float64 NumPy: the reduction needs no exponent of its own."""
    jit = _jit("f32")
    lo = np.array(2.0**40, np.float32).view(np.int32)
    bits = np.arange(lo, np.array(np.finfo(np.float32).max).view(np.int32), 4096, np.int32)
    x = np.concatenate([bits.view(np.float32), -bits.view(np.float32)])
    for name in ("sin", "cos", "tan"):
        err = _ulp_error(jit(name, x), _ref(name, x), np.float32)
        assert err.max() <= 1.0, (name, x[np.argmax(err)], err.max())


def test_two_over_pi_table_is_exact():
    """The Payne-Hanek table's bits of 2/pi (integer Machin formula) against mpmath."""
    from symgrad.codegen import llvm_trig

    bits = 32 * llvm_trig.LIMBS - 32
    with mpmath.workprec(bits + 64):
        want = int(mpmath.floor(2 / mpmath.pi * mpmath.mpf(2) ** bits))
    assert llvm_trig.two_over_pi(bits) == want
    pairs = llvm_trig.table_pairs()
    assert pairs[0] >> 32 == 0 and (pairs[0] & 0xFFFFFFFF) == want >> (bits - 32)
    assert all((p >> 32) == (q & 0xFFFFFFFF) for q, p in zip(pairs, pairs[1:]))


def test_trig_of_huge_arguments_vectorizes_without_libm():
    """The float64 loop of sin vectorizes with the Payne-Hanek reduction in it (gathers
    from the table), and the float32 one needs no table load at all."""
    text64, text32 = _jit("f64").optimized_ir["k_sin"], _jit("f32").optimized_ir["k_sin"]
    assert re.search(r"<(2|4|8) x double>", text64) and re.search(r"<(4|8|16) x i64>", text64)
    assert "gather" in text64 or "two_over_pi" in text64
    assert "two_over_pi" not in text32


def test_gelu_tail_relative_accuracy():
    for tyname in ("f32", "f64"):
        jit = _jit(tyname)
        dt = jit.dtype
        x = np.linspace(-14.0 if dt == np.float32 else -37.5, -1.0, 1000).astype(dt)
        got = jit("gelu", x)
        err = _ulp_error(got, _gelu_ref(x), dt)
        assert err.max() <= _bound("gelu", tyname), (x[np.argmax(err)], err.max())
        assert (got < 0).all()


# --------------------------------------------------------------------------- power


def _pow_cases(dtype, rng, n=20000):
    """Mostly positive bases; negative bases with integer exponents; results that span the
    range up to overflow and down into underflow."""
    x1 = np.exp2(rng.uniform(-60, 60, n))
    y1 = rng.uniform(-20, 20, n)
    x2 = -np.exp2(rng.uniform(-10, 10, n))
    y2 = rng.integers(-40, 40, n).astype(np.float64)
    big = 700.0 if dtype == np.float64 else 88.0
    # |y*log x| close to the overflow threshold: the demanding case for exp(y*log(x))
    x3 = np.exp2(rng.uniform(0.1, 30, n))
    y3 = rng.uniform(0.9, 1.0, n) * big / np.log(x3) * rng.choice([-1, 1], n)
    x4 = rng.uniform(0.0, 3.0, n)
    y4 = rng.choice([2.0, 3.0, 0.5, -1.0, -2.0, 1.0, 0.0], n)
    x = np.concatenate([x1, x2, x3, x4])
    y = np.concatenate([y1, y2, y3, y4])
    return x.astype(dtype), y.astype(dtype)


@pytest.mark.parametrize("tyname", TYPES)
def test_pow_accuracy(tyname):
    jit = _jit(tyname)
    dt = jit.dtype
    x, y = _pow_cases(dt, np.random.default_rng(3))
    got = jit("pow", x, y)
    ref = _ref("pow", x, y)
    err = _ulp_error(got, ref, dt)
    worst = int(np.argmax(err))
    assert err[worst] <= ULP_BOUND["f32" if dt == np.float32 else "f64"], (
        f"pow: {err[worst]:.2f} ulp at x={x[worst]!r}, y={y[worst]!r}: got {got[worst]!r}, "
        f"want {ref[worst]!r}")


@pytest.mark.parametrize("tyname", ["f32", "f64"])
def test_pow_special_cases_match_numpy(tyname):
    jit = _jit(tyname)
    dt = jit.dtype
    vals = [0.0, -0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 3.0, -3.0, 2.5, -2.5, np.inf, -np.inf,
            np.nan, 1e30, -1e30, 1e-30, float(np.finfo(dt).smallest_subnormal)]
    xs, ys = (np.array(g, dt).ravel() for g in np.meshgrid(vals, vals))
    got = jit("pow", xs, ys)
    with np.errstate(all="ignore"):
        ref = np.power(xs, ys)
    for xi, yi, g, r in zip(xs, ys, got, ref):
        if np.isnan(r) or np.isnan(g):
            assert np.isnan(r) and np.isnan(g), (xi, yi, g, r)
        elif np.isinf(r) or r == 0:
            assert g == r and np.signbit(g) == np.signbit(r), (xi, yi, g, r)
        else:
            assert abs(g - r) <= 2 * np.spacing(abs(r)), (xi, yi, g, r)


def test_pow_small_integer_exponents_are_exact():
    jit = _jit("f64")
    x = np.random.default_rng(5).uniform(-10, 10, 1000)
    for yv, ref in ((2.0, x * x), (1.0, x), (-1.0, 1.0 / x)):
        assert (jit("pow", x, np.full_like(x, yv)) == ref).all()


# --------------------------------------------------------------------------- generated code


def test_no_libm_calls_in_optimized_code():
    for tyname in TYPES:
        jit = _jit(tyname)
        assert all(d.startswith("llvm.") for d in jit.declarations), jit.declarations
        banned = re.compile(r"@llvm\.(exp|exp2|exp10|log|log2|log10|sin|cos|tan|pow|powi)\.")
        for name, text in jit.optimized_ir.items():
            assert not banned.search(text), name
        calls = [ln for ln in jit.asm.splitlines()
                 if re.match(r"\s*(call|jmp)\w*\s+[A-Za-z_]", ln) and ".LBB" not in ln]
        assert not calls, calls[:5]


@pytest.mark.parametrize("name", [*UNARY, "pow"])
def test_float32_loop_vectorizes(name):
    jit = _jit("f32")
    text = jit.optimized_ir[f"k_{name}"]
    assert re.search(r"<(4|8|16) x float>", text), f"{name}: scalar loop was not vectorized"


def test_table_and_types():
    assert set(UNARY) | {"pow", "power"} == set(lm.MATH_EMITTERS)
    module = ir.Module()
    fn = ir.Function(module, ir.FunctionType(ir.IntType(32), [ir.IntType(32)]), "f")
    b = ir.IRBuilder(fn.append_basic_block())
    with pytest.raises(TypeError):
        lm.exp(b, fn.args[0])
    fn2 = ir.Function(module, ir.FunctionType(ir.FloatType(), [ir.FloatType(), ir.DoubleType()]),
                      "g")
    b2 = ir.IRBuilder(fn2.append_basic_block())
    with pytest.raises(TypeError):
        lm.power(b2, *fn2.args)
