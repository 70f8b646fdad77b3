//! The machine kernels are generated for: Cranelift's host ISA with the CPU features detected at
//! start-up, the choice between fused multiply-add and separate multiply and add, and the f32
//! lanes of a vector register (4, 8 in 256-bit registers, or 16 in 512-bit ones).

use crate::{Error, Result};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use std::fmt;

/// How `a * b + c` is emitted.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum MulAdd {
    /// One `fma` (needs the `has_fma` ISA flag; without it Cranelift would call `fmaf` per lane).
    Fused,
    /// `fmul` then `fadd`. On AMD Zen cores before Zen 4 these issue on separate pipes and reach
    /// the same peak as FMA, while the x64 FMA lowering costs register copies (see
    /// CRANELIFT-NOTES.md).
    Separate,
}

/// A code-generation target: the host ISA with its detected features, a [`MulAdd`] choice and
/// the f32 lanes of the kernels' widest vectors.
#[derive(Clone)]
pub struct Target {
    pub(crate) isa: OwnedTargetIsa,
    mul_add: MulAdd,
    lanes: usize,
}

impl Target {
    /// The host, with the multiply-add form this CPU prefers: fused when it has FMA, except on
    /// AMD cores without AVX-512 (before Zen 4), where separate multiplies and adds reach the same
    /// peak. (On a Zen 4, with AVX-512, the fused form's ceiling is 25% higher and a training
    /// step 6-11% faster: BENCHMARKS.md.) Its vectors have 16 lanes where the CPU has AVX-512F,
    /// else 8 where it has AVX2.
    pub fn host() -> Result<Self> {
        let isa = host_isa()?;
        let separate_pipes = is_amd() && !has_avx512();
        let fused = if has_flag(&isa, "has_fma") && !separate_pipes { MulAdd::Fused } else { MulAdd::Separate };
        let lanes = widest_lanes(&isa);
        Ok(Target { isa, mul_add: fused, lanes })
    }

    /// The host with an explicit multiply-add form (`Fused` needs FMA), and its vectors.
    pub fn host_with(mul_add: MulAdd) -> Result<Self> {
        let isa = host_isa()?;
        if mul_add == MulAdd::Fused && !has_flag(&isa, "has_fma") {
            return Err(Error::Target("this CPU has no FMA; use MulAdd::Separate".into()));
        }
        let lanes = widest_lanes(&isa);
        Ok(Target { isa, mul_add, lanes })
    }

    /// The same target with vectors of `lanes` f32: 4 (128-bit registers), 8 (256-bit, which
    /// needs AVX2) or 16 (512-bit, which needs AVX-512F).
    pub fn with_lanes(self, lanes: usize) -> Result<Self> {
        match lanes {
            4 => Ok(Target { lanes, ..self }),
            8 if has_flag(&self.isa, "has_avx2") => Ok(Target { lanes, ..self }),
            8 => Err(Error::Target("this CPU has no AVX2: 8 lanes need 256-bit registers; use 4".into())),
            16 if has_flag(&self.isa, "has_avx512f") && has_flag(&self.isa, "has_avx2") => Ok(Target { lanes, ..self }),
            16 => Err(Error::Target("this CPU has no AVX-512F: 16 lanes need 512-bit registers; use 4 or 8".into())),
            _ => Err(Error::Target(format!("{lanes} lanes: a vector holds 4, 8 or 16 f32"))),
        }
    }

    /// f32 lanes of the widest vectors the kernels use: by default 16 where the CPU has
    /// AVX-512F, 8 where it has AVX2, else 4.
    pub fn lanes(&self) -> usize {
        self.lanes
    }

    /// The multiply-add form.
    pub fn mul_add(&self) -> MulAdd {
        self.mul_add
    }

    /// The enabled ISA flags, e.g. `has_avx has_fma ...`: part of every kernel cache key.
    pub fn isa_flags(&self) -> Vec<String> {
        self.isa.isa_flags().iter().filter(|f| f.as_bool().unwrap_or(false)).map(|f| f.name.to_string()).collect()
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (triple, flags) = (self.isa.triple(), self.isa_flags().join(" "));
        write!(f, "{triple} [{flags}] {:?} multiply-add, {} lanes", self.mul_add, self.lanes)
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn host_isa() -> Result<OwnedTargetIsa> {
    let mut flags = settings::builder();
    // The generators schedule instructions themselves; the optimiser's code motion causes spills
    // in hot loops (CRANELIFT-NOTES.md).
    flags.set("opt_level", "none").map_err(|e| Error::Target(e.to_string()))?;
    let verify = if cfg!(debug_assertions) { "true" } else { "false" };
    flags.set("enable_verifier", verify).map_err(|e| Error::Target(e.to_string()))?;
    let builder = cranelift_native::builder().map_err(|e| Error::Target(e.to_string()))?;
    let isa = builder.finish(settings::Flags::new(flags)).map_err(|e| Error::Target(e.to_string()))?;
    // The vendored Cranelift's 256-bit vectors (and its moves, spills and reloads of them) are
    // VEX-encoded (vendor/cranelift-codegen/PATCH.md).
    if isa.name() == "x64" && !has_flag(&isa, "has_avx") {
        return Err(Error::Target("skipgrad's kernels need AVX (x86-64 CPUs since 2011): this CPU has none".into()));
    }
    Ok(isa)
}

/// f32 lanes of the widest vectors the kernels take on `isa`: 16 with AVX-512F (on an Intel
/// CPU with two 512-bit multiply-add units the ceiling is 1.8x the 256-bit one's; a Zen 4 splits
/// 512-bit operations in two and has the same ceiling either way, yet its training steps ran
/// 1.5-2% (CIFAR) and 5% (ResNet-50) faster with 16 lanes: fewer instructions; BENCHMARKS.md),
/// 8 with AVX2, else 4.
fn widest_lanes(isa: &OwnedTargetIsa) -> usize {
    if has_flag(isa, "has_avx512f") && has_flag(isa, "has_avx2") {
        16
    } else if has_flag(isa, "has_avx2") {
        8
    } else {
        4
    }
}

fn has_flag(isa: &OwnedTargetIsa, name: &str) -> bool {
    isa.isa_flags().iter().any(|f| f.name == name && f.as_bool() == Some(true))
}

#[cfg(target_arch = "x86_64")]
fn is_amd() -> bool {
    let r = std::arch::x86_64::__cpuid(0);
    let vendor: Vec<u8> = [r.ebx, r.edx, r.ecx].iter().flat_map(|v| v.to_le_bytes()).collect();
    vendor == b"AuthenticAMD"
}

#[cfg(not(target_arch = "x86_64"))]
fn is_amd() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx512() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::Target;

    /// 4 lanes are always available, 8 where the CPU has AVX2, 16 where it has AVX-512F, and
    /// nothing else; the host's default is the widest it has.
    #[test]
    fn lanes_are_four_eight_or_sixteen() {
        let host = Target::host().unwrap();
        assert!([4, 8, 16].contains(&host.lanes()));
        assert_eq!(host.clone().with_lanes(4).unwrap().lanes(), 4);
        let avx2 = super::has_flag(&host.isa, "has_avx2");
        let avx512 = avx2 && super::has_flag(&host.isa, "has_avx512f");
        assert_eq!(host.clone().with_lanes(8).is_ok(), avx2);
        assert_eq!(host.clone().with_lanes(16).is_ok(), avx512);
        let widest = [16, 8, 4].into_iter().find(|&l| host.clone().with_lanes(l).is_ok());
        assert_eq!(Some(host.lanes()), widest);
        let error = host.with_lanes(12).unwrap_err().to_string();
        assert!(error.contains("12 lanes"), "{error}");
    }
}
