//! skipgrad patch: 256-bit (VEX.L = 1) forms of the AVX instructions a floating-point kernel
//! needs, for `f32x8` values, and their 512-bit (EVEX.L'L = 2) forms, for `f32x16` values. The
//! operands name `xmm` registers: the encoding of `ymm` or `zmm` register `n` is that of `xmm`
//! register `n`, and the memory operands read or write 32 or 64 bytes.

use crate::dsl::{Feature::*, Inst, Length::*, Location::*, TupleType::*};
use crate::dsl::{align, evex, fmt, inst, r, rw, vex, w};

#[rustfmt::skip] // Keeps instructions on a single line.
pub fn list() -> Vec<Inst> {
    let binary = [w(xmm1), r(xmm2), r(xmm_m128)];
    let fused = [rw(xmm1), r(xmm2), r(xmm_m128)];
    let enc_fma = || vex(L256)._66()._0f38().w0();
    vec![
        inst("vmovaps", fmt("Y", [w(xmm1), r(align(xmm_m128))]), vex(L256)._0f().op(0x28).r(), (_64b | compat) & avx),
        inst("vmovups", fmt("Y_LOAD", [w(xmm1), r(xmm_m128)]), vex(L256)._0f().op(0x10).r(), (_64b | compat) & avx),
        inst("vmovups", fmt("Y_STORE", [w(xmm_m128), r(xmm1)]), vex(L256)._0f().op(0x11).r(), (_64b | compat) & avx),
        inst("vaddps", fmt("Y", binary), vex(L256)._0f().op(0x58).r(), (_64b | compat) & avx),
        inst("vsubps", fmt("Y", binary), vex(L256)._0f().op(0x5C).r(), (_64b | compat) & avx),
        inst("vmulps", fmt("Y", binary), vex(L256)._0f().op(0x59).r(), (_64b | compat) & avx),
        inst("vmaxps", fmt("Y", binary), vex(L256)._0f().op(0x5F).r(), (_64b | compat) & avx),
        inst("vminps", fmt("Y", binary), vex(L256)._0f().op(0x5D).r(), (_64b | compat) & avx),
        inst("vxorps", fmt("Y", binary), vex(L256)._0f().op(0x57).r(), (_64b | compat) & avx),
        inst("vfmadd132ps", fmt("Y", fused), enc_fma().op(0x98).r(), (_64b | compat) & fma),
        inst("vfmadd213ps", fmt("Y", fused), enc_fma().op(0xA8).r(), (_64b | compat) & fma),
        inst("vfmadd231ps", fmt("Y", fused), enc_fma().op(0xB8).r(), (_64b | compat) & fma),
        inst("vbroadcastss", fmt("Y_M", [w(xmm1), r(m32)]), vex(L256)._66()._0f38().w0().op(0x18).r(), (_64b | compat) & avx),
        inst("vbroadcastss", fmt("Y_R", [w(xmm1), r(xmm2)]), vex(L256)._66()._0f38().w0().op(0x18).r(), (_64b | compat) & avx2),
        // The low half of a 256-bit register is its xmm register; these move the high half.
        inst("vextractf128", fmt("Y", [w(xmm_m128), r(xmm1), r(imm8)]), vex(L256)._66()._0f3a().w0().op(0x19).r().ib(), (_64b | compat) & avx),
        // Clears the upper halves, so that code after a kernel's return that uses SSE
        // encodings does not pay for the dirty upper state (Intel cores).
        inst("vzeroupper", fmt("ZO", []), vex(L128)._0f().op(0x77), (_64b | compat) & avx),
        inst("vinsertf128", fmt("Y", [w(xmm1), r(xmm2), r(xmm_m128), r(imm8)]), vex(L256)._66()._0f3a().w0().op(0x18).r().ib(), (_64b | compat) & avx),
        // 512-bit forms (AVX-512F), format names starting `Z`. The zeroing idiom is `vpxord`
        // (`vxorps` of zmm needs AVX-512DQ).
        inst("vmovaps", fmt("Z", [w(xmm1), r(align(xmm_m128))]), evex(L512, FullMem)._0f().w0().op(0x28).r(), (_64b | compat) & avx512f),
        inst("vmovups", fmt("Z_LOAD", [w(xmm1), r(xmm_m128)]), evex(L512, FullMem)._0f().w0().op(0x10).r(), (_64b | compat) & avx512f),
        inst("vmovups", fmt("Z_STORE", [w(xmm_m128), r(xmm1)]), evex(L512, FullMem)._0f().w0().op(0x11).r(), (_64b | compat) & avx512f),
        inst("vaddps", fmt("Z", binary), evex(L512, Full)._0f().w0().op(0x58).r(), (_64b | compat) & avx512f),
        inst("vsubps", fmt("Z", binary), evex(L512, Full)._0f().w0().op(0x5C).r(), (_64b | compat) & avx512f),
        inst("vmulps", fmt("Z", binary), evex(L512, Full)._0f().w0().op(0x59).r(), (_64b | compat) & avx512f),
        inst("vmaxps", fmt("Z", binary), evex(L512, Full)._0f().w0().op(0x5F).r(), (_64b | compat) & avx512f),
        inst("vminps", fmt("Z", binary), evex(L512, Full)._0f().w0().op(0x5D).r(), (_64b | compat) & avx512f),
        inst("vpxord", fmt("Z", binary), evex(L512, Full)._66()._0f().w0().op(0xEF).r(), (_64b | compat) & avx512f),
        inst("vfmadd132ps", fmt("Z", fused), evex(L512, Full)._66()._0f38().w0().op(0x98).r(), (_64b | compat) & avx512f),
        inst("vfmadd213ps", fmt("Z", fused), evex(L512, Full)._66()._0f38().w0().op(0xA8).r(), (_64b | compat) & avx512f),
        inst("vfmadd231ps", fmt("Z", fused), evex(L512, Full)._66()._0f38().w0().op(0xB8).r(), (_64b | compat) & avx512f),
        // A scalar broadcast's memory operand is one element (tuple "1 scalar": 8-bit
        // displacements count 4-byte units).
        inst("vbroadcastss", fmt("Z_M", [w(xmm1), r(m32)]), evex(L512, Tuple1Scalar)._66()._0f38().w0().op(0x18).r(), (_64b | compat) & avx512f),
        inst("vbroadcastss", fmt("Z_R", [w(xmm1), r(xmm2)]), evex(L512, Tuple1Scalar)._66()._0f38().w0().op(0x18).r(), (_64b | compat) & avx512f),
    ]
}
