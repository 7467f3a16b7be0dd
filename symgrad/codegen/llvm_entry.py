"""One native entry per compiled function: every stage, the thread splits and the commit.

A program is a list of kernels, one per stage (an even stage runs once, an odd stage is a
pass over the batch, ``Program.stages``). ``build_entry`` adds to the kernels' module

    void entry(ptr tables, ptr dims, ptr ctl)

which calls the kernels in order, splits each pass over the native pool, and commits: when
every gate value is zero it copies each new value into its parameter and says so in
``ctl[STATUS]``. So a call from Python is one ctypes call, and a commit is all or nothing
(no Python, hence no signal handler, runs inside it).

``tables`` holds one pointer table per thread (thread t's partials differ); ``dims`` the
sizes (the entry writes the thread count of each pass into ``dims[threads_slot]``, which
the kernel combining that pass's partials reads). ``ctl`` is an array of i64:

    ctl[POOL_RUN]  address of the pool's ``pool_run`` (0: run the slices one after another
                   here); ctl[POOL_CTX] its context
    ctl[STATUS]    out: 1 if the new values were committed, else 0
    ctl[COMMITS]   how many commits (0: none); ctl[COMMIT_LIST] the address of
                   (destination address, source buffer slot, bytes) triples
    ctl[GATES]     how many gates; ctl[GATE_LIST] the address of (buffer slot, kind) pairs:
                   the commit happens only if every gate's first element is zero
    ctl[AFTER_PASS] 0, or the address of ``void after_pass(ptr ctl, i64 p)``, called when
                   pass p is done and before the kernel that combines its partials (where a
                   data-parallel step reduces the partials across processes)
    ctl[PASSES + 2p], ctl[PASSES + 2p + 1]: pass p's thread count and the address of its
                   bounds (thread count + 1 i64: thread t runs samples bounds[t]..bounds[t+1])

A source buffer and a gate are named by their slot in the tables (their address may change
per call: the arena of outputs returned to the caller is fresh each call).
"""

from __future__ import annotations

from llvmlite import ir

POOL_RUN, POOL_CTX, STATUS, COMMITS, COMMIT_LIST, GATES, GATE_LIST, AFTER_PASS = range(8)
PASSES = 8
ENTRY = "symgrad_entry"
# a gate's kind: how its value is loaded (numpy dtype names)
GATE_KINDS = {"float32": 0, "float64": 1, "int32": 2, "int64": 3, "bool": 4, "int8": 4}

_I1, _I8, _I32, _I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
_PTR = ir.PointerType()
_KERNEL = ir.FunctionType(ir.VoidType(), [_PTR, _PTR, _I64, _I64])
_AFTER_PASS = ir.FunctionType(ir.VoidType(), [_PTR, _I64])
_POOL_RUN = ir.FunctionType(ir.VoidType(), [_PTR, _I64, _PTR, _PTR, _PTR, _I64])
_GATE_TYPES = [ir.FloatType(), ir.DoubleType(), _I32, _I64, _I8]


def _word(b: ir.IRBuilder, base: ir.Value, i: int | ir.Value) -> ir.Value:
    index = ir.Constant(_I64, i) if isinstance(i, int) else i
    return b.gep(base, [index], source_etype=_I64)


def _load(b: ir.IRBuilder, base: ir.Value, i: int | ir.Value) -> ir.Value:
    return b.load(_word(b, base, i), typ=_I64)


def counted_loop(fn: ir.Function, b: ir.IRBuilder, count: ir.Value, name: str
                 ) -> tuple[ir.PhiInstr, ir.Block]:
    """Open ``for i in 0..count`` at the builder: returns ``i`` (the builder is in the
    body, which ends with ``loop_next(b, i)``) and the block after the loop."""
    head, body, after = (fn.append_basic_block(f"{name}.{what}")
                         for what in ("loop", "body", "done"))
    before = b.block
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(_I64)
    i.add_incoming(ir.Constant(_I64, 0), before)
    b.cbranch(b.icmp_signed("<", i, count), body, after)
    b.position_at_end(body)
    i.head = head  # (where loop_next branches back to)
    return i, after


def loop_next(b: ir.IRBuilder, i: ir.PhiInstr) -> None:
    """Close a ``counted_loop``: the next ``i``, back to the loop's head."""
    i.add_incoming(b.add(i, ir.Constant(_I64, 1)), b.block)
    b.branch(i.head)


def build_entry(module: ir.Module, kernels: list[str], is_pass: list[bool],
                threads_slot: int) -> None:
    """Add ``symgrad_entry`` to ``module``, which already holds ``kernels`` (by name, in
    stage order; ``is_pass[k]``: kernel k is a pass over the batch)."""
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [_PTR, _PTR, _PTR]), ENTRY)
    tables, dims, ctl = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))

    def word(base: ir.Value, i: int | ir.Value) -> ir.Value:
        return _word(b, base, i)

    def load(base: ir.Value, i: int | ir.Value) -> ir.Value:
        return _load(b, base, i)

    table0 = b.load(tables, typ=_PTR)
    passes = 0
    for name, split in zip(kernels, is_pass):
        kernel = module.get_global(name)
        if not split:
            zero = ir.Constant(_I64, 0)
            b.call(kernel, [table0, dims, zero, zero])
            continue
        threads = load(ctl, PASSES + 2 * passes)
        bounds = b.inttoptr(load(ctl, PASSES + 2 * passes + 1), _PTR)
        passes += 1
        if threads_slot >= 0:
            b.store(threads, word(dims, threads_slot))
        # the slices one after another here when there is one, or no pool (ctl[POOL_RUN]
        # is 0: another call holds it): the same partials, so the same bits, as a split
        pool = load(ctl, POOL_RUN)
        split_here = b.and_(b.icmp_signed(">", threads, ir.Constant(_I64, 1)),
                            b.icmp_unsigned("!=", pool, ir.Constant(_I64, 0)))
        alone, shared, done = (fn.append_basic_block(f"{name}.{what}")
                               for what in ("alone", "shared", "done"))
        b.cbranch(split_here, shared, alone)
        b.position_at_end(alone)
        t, after = counted_loop(fn, b, threads, f"{name}.slice")
        table = b.load(b.gep(tables, [t], source_etype=_PTR), typ=_PTR)
        b.call(kernel, [table, dims, load(bounds, t), load(bounds, b.add(t, ir.Constant(
            _I64, 1)))])
        loop_next(b, t)
        b.position_at_end(after)
        b.branch(done)
        b.position_at_end(shared)
        run = b.inttoptr(pool, _POOL_RUN.as_pointer())
        b.call(run, [b.inttoptr(load(ctl, POOL_CTX), _PTR), b.ptrtoint(kernel, _I64), tables,
                     dims, bounds, threads])
        b.branch(done)
        b.position_at_end(done)
        hook = load(ctl, AFTER_PASS)
        call_hook, hooked = (fn.append_basic_block(f"{name}.{what}")
                             for what in ("hook", "hooked"))
        b.cbranch(b.icmp_unsigned("!=", hook, ir.Constant(_I64, 0)), call_hook, hooked)
        b.position_at_end(call_hook)
        b.call(b.inttoptr(hook, _AFTER_PASS.as_pointer()), [ctl, ir.Constant(_I64, passes - 1)])
        b.branch(hooked)
        b.position_at_end(hooked)
    _commit(fn, b, table0, ctl)
    b.ret_void()


def _commit(fn: ir.Function, b: ir.IRBuilder, table0: ir.Value, ctl: ir.Value) -> None:
    """The gates, then the copies: ``ctl[STATUS]`` = 1 when they were made."""
    def word(base: ir.Value, i: int | ir.Value) -> ir.Value:
        return _word(b, base, i)

    def load(base: ir.Value, i: int | ir.Value) -> ir.Value:
        return _load(b, base, i)

    def buffer(slot: ir.Value) -> ir.Value:
        return b.load(b.gep(table0, [slot], source_etype=_PTR), typ=_PTR)

    zero, one = ir.Constant(_I64, 0), ir.Constant(_I64, 1)
    b.store(zero, word(ctl, STATUS))
    commits = load(ctl, COMMITS)
    gates_top = fn.append_basic_block("gates")
    finish = fn.append_basic_block("finish")
    b.cbranch(b.icmp_signed(">", commits, zero), gates_top, finish)

    # for g in gates: if value(g) != 0: no commit
    b.position_at_end(gates_top)
    gate_list = b.inttoptr(load(ctl, GATE_LIST), _PTR)
    count = load(ctl, GATES)
    g, copies = counted_loop(fn, b, count, "gate")
    address = buffer(load(gate_list, b.mul(g, ir.Constant(_I64, 2))))
    kind = load(gate_list, b.add(b.mul(g, ir.Constant(_I64, 2)), one))
    kind_blocks = [fn.append_basic_block(f"gate.kind{k}") for k in range(len(_GATE_TYPES))]
    next_gate = fn.append_basic_block("gate.next")
    switch = b.switch(kind, finish)  # an unknown kind: no commit
    for k, block in enumerate(kind_blocks):
        switch.add_case(ir.Constant(_I64, k), block)
    for block, ty in zip(kind_blocks, _GATE_TYPES):
        b.position_at_end(block)
        value = b.load(address, typ=ty)
        nonzero = (b.fcmp_unordered("!=", value, ir.Constant(ty, 0.0))  # NaN: nonzero
                   if isinstance(ty, (ir.FloatType, ir.DoubleType)) else
                   b.icmp_unsigned("!=", value, ir.Constant(ty, 0)))
        b.cbranch(nonzero, finish, next_gate)
    b.position_at_end(next_gate)
    loop_next(b, g)

    # every gate passed: copy each new value into its parameter
    b.position_at_end(copies)
    commit_list = b.inttoptr(load(ctl, COMMIT_LIST), _PTR)
    c, c_done = counted_loop(fn, b, commits, "copy")
    at = b.mul(c, ir.Constant(_I64, 3))
    dst = b.inttoptr(load(commit_list, at), _PTR)
    src = buffer(load(commit_list, b.add(at, one)))
    nbytes = load(commit_list, b.add(at, ir.Constant(_I64, 2)))
    memcpy = b.module.declare_intrinsic("llvm.memcpy", [_PTR, _PTR, _I64])
    b.call(memcpy, [dst, src, nbytes, ir.Constant(_I1, 0)])
    loop_next(b, c)
    b.position_at_end(c_done)
    b.store(one, word(ctl, STATUS))
    b.branch(finish)
    b.position_at_end(finish)
