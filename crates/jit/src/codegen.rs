//! Small Cranelift emission helpers shared by every kernel generator: the counted loop, entry
//! block, argument loads, element addressing, the target's multiply-add, lane shuffles and fills.

use crate::MulAdd;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{BlockArg, ConstantData, Endianness, InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::FunctionBuilder;

/// The body of a counted loop: (builder, index, carried values) -> new carried values.
pub(crate) type LoopBody<'a> = dyn FnMut(&mut FunctionBuilder, Value, &[Value]) -> Vec<Value> + 'a;

/// A counted loop `for i in (lo..).step_by(step) while i + step <= hi`, test at the top, carrying
/// `carried` through `body`. Returns the first `i` not run and the final carried values. The body
/// block takes the carried values as parameters of its own, so that inside it each is used only
/// where the body uses it: a multiply-add can then add into an accumulator's register
/// (vendor/cranelift-codegen/PATCH.md).
pub(crate) fn for_loop(
    b: &mut FunctionBuilder,
    lo: Value,
    hi: Value,
    step: i64,
    carried: &[Value],
    body: &mut LoopBody,
) -> (Value, Vec<Value>) {
    let types: Vec<Type> = carried.iter().map(|&v| b.func.dfg.value_type(v)).collect();
    let (head, body_block, exit) = (b.create_block(), b.create_block(), b.create_block());
    for blk in [head, body_block, exit] {
        b.append_block_param(blk, types::I64);
        for &t in &types {
            b.append_block_param(blk, t);
        }
    }
    let args = |first: Value, rest: &[Value]| -> Vec<BlockArg> {
        std::iter::once(first).chain(rest.iter().copied()).map(BlockArg::Value).collect()
    };
    b.ins().jump(head, &args(lo, carried));
    b.switch_to_block(head);
    let params = b.block_params(head).to_vec();
    let next = b.ins().iadd_imm_s(params[0], step);
    let fits = b.ins().icmp(IntCC::UnsignedLessThanOrEqual, next, hi);
    let passed = args(params[0], &params[1..]);
    b.ins().brif(fits, body_block, &passed, exit, &passed);
    b.switch_to_block(body_block);
    let inside = b.block_params(body_block).to_vec();
    let new = body(b, inside[0], &inside[1..]);
    b.ins().jump(head, &args(next, &new));
    b.switch_to_block(exit);
    let out = b.block_params(exit).to_vec();
    (out[0], out[1..].to_vec())
}

/// The kernel's entry block: returns (args pointer, first group, end group).
pub(crate) fn entry(b: &mut FunctionBuilder) -> (Value, Value, Value) {
    let (args, begin, end, _) = entry_with_thread(b);
    (args, begin, end)
}

/// The kernel's entry block: returns (args pointer, first group, end group, thread index). The
/// thread index (below the pool's thread count) selects a kernel's share of per-thread scratch.
pub(crate) fn entry_with_thread(b: &mut FunctionBuilder) -> (Value, Value, Value, Value) {
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let p = b.block_params(entry);
    (p[0], p[1], p[2], p[3])
}

/// The intersection of the group range `begin..end` with a part's groups `first..first + groups`
/// (kernels that run several parts over one range), relative to `first`; empty when they miss.
pub(crate) fn part_range(
    b: &mut FunctionBuilder,
    begin: Value,
    end: Value,
    first: usize,
    groups: usize,
) -> (Value, Value) {
    let (lo, hi) = (iconst(b, first as i64), iconst(b, (first + groups) as i64));
    let from = b.ins().umax(begin, lo);
    let to = b.ins().umin(end, hi);
    let to = b.ins().umax(to, lo);
    (b.ins().isub(from, lo), b.ins().isub(to, lo))
}

/// Runs `body` only when `cond` (an i8 truth value) is true.
pub(crate) fn if_then(b: &mut FunctionBuilder, cond: Value, body: &mut dyn FnMut(&mut FunctionBuilder)) {
    let (then, done) = (b.create_block(), b.create_block());
    b.ins().brif(cond, then, &[], done, &[]);
    b.switch_to_block(then);
    body(b);
    b.ins().jump(done, &[]);
    b.switch_to_block(done);
}

/// The address of this thread's share of a per-thread scratch buffer of `len` f32 per thread.
pub(crate) fn thread_share(b: &mut FunctionBuilder, base: Value, thread: Value, len: usize) -> Value {
    let offset = b.ins().imul_imm_s(thread, (4 * len) as i64);
    b.ins().iadd(base, offset)
}

/// Pointer `k` of the kernel's argument array.
pub(crate) fn load_arg(b: &mut FunctionBuilder, ptr: Type, args: Value, k: usize) -> Value {
    b.ins().load(ptr, MemFlagsData::new().with_notrap().with_readonly(), args, (k * 8) as i32)
}

/// An i64 constant.
pub(crate) fn iconst(b: &mut FunctionBuilder, v: i64) -> Value {
    b.ins().iconst(types::I64, v)
}

/// The address of f32 element `element` of the buffer at `base`.
pub(crate) fn elem_addr(b: &mut FunctionBuilder, base: Value, element: Value) -> Value {
    let bytes = b.ins().ishl_imm_u(element, 2);
    b.ins().iadd(base, bytes)
}

/// `a * b + c` in the target's preferred form.
pub(crate) fn mul_add_emit(b: &mut FunctionBuilder, mul_add: MulAdd, x: Value, y: Value, acc: Value) -> Value {
    match mul_add {
        MulAdd::Fused => b.ins().fma(x, y, acc),
        MulAdd::Separate => {
            let p = b.ins().fmul(x, y);
            b.ins().fadd(acc, p)
        }
    }
}

/// `v * c` for an integer `v` (an index or an offset) and a constant `c`.
pub(crate) fn mul(b: &mut FunctionBuilder, v: Value, c: usize) -> Value {
    b.ins().imul_imm_s(v, c as i64)
}

/// Lanes `lanes` of the concatenation `[x, y]` (indices 0..8), as one f32x4. These masks are the
/// unpack instructions of SSE2, which Cranelift's x64 backend matches.
pub(crate) fn shuffle32(b: &mut FunctionBuilder, x: Value, y: Value, lanes: [u8; 4]) -> Value {
    let little = MemFlagsData::new().with_endianness(Endianness::Little);
    let bytes: Vec<u8> = lanes.iter().flat_map(|&l| (0..4).map(move |k| 4 * l + k)).collect();
    let mask = b.func.dfg.immediates.push(ConstantData::from(bytes));
    let (x, y) = (b.ins().bitcast(types::I8X16, little, x), b.ins().bitcast(types::I8X16, little, y));
    let v = b.ins().shuffle(x, y, mask);
    b.ins().bitcast(types::F32X4, little, v)
}

/// Stores `value` (an f32) into `len` elements from `at`: vectors of 4, then a tail.
pub(crate) fn fill(b: &mut FunctionBuilder, at: Value, len: usize, value: Value) {
    let flags = MemFlagsData::new().with_notrap();
    let vector = b.ins().splat(types::F32X4, value);
    let (lo, hi) = (iconst(b, 0), iconst(b, len as i64));
    let (tail, _) = for_loop(b, lo, hi, 4, &[], &mut |b, i, _| {
        let a = elem_addr(b, at, i);
        b.ins().store(flags, vector, a, 0);
        vec![]
    });
    for_loop(b, tail, hi, 1, &[], &mut |b, i, _| {
        let a = elem_addr(b, at, i);
        b.ins().store(flags, value, a, 0);
        vec![]
    });
}

/// The f32 vector type of `lanes` lanes: f32x4, f32x8 (in a 256-bit register) or f32x16 (in a
/// 512-bit register).
pub(crate) fn f32_vector(lanes: usize) -> Type {
    match lanes {
        16 => types::F32X16,
        8 => types::F32X8,
        _ => types::F32X4,
    }
}
