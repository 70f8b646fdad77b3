//! The machine kernels are generated for: Cranelift's host ISA with the CPU features detected at
//! start-up, and the choice between fused multiply-add and separate multiply and add.

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

/// A code-generation target: the host ISA with its detected features and a [`MulAdd`] choice.
#[derive(Clone)]
pub struct Target {
    pub(crate) isa: OwnedTargetIsa,
    mul_add: MulAdd,
}

impl Target {
    /// The host, with the multiply-add form this CPU prefers: fused when it has FMA, except on
    /// AMD cores without AVX-512 (before Zen 4), where separate multiplies and adds reach the same
    /// peak. (On a Zen 4, with AVX-512, the fused form's ceiling is 25% higher and a training
    /// step 6-11% faster: BENCHMARKS.md.)
    pub fn host() -> Result<Self> {
        let isa = host_isa()?;
        let separate_pipes = is_amd() && !has_avx512();
        let fused = if has_flag(&isa, "has_fma") && !separate_pipes { MulAdd::Fused } else { MulAdd::Separate };
        Ok(Target { isa, mul_add: fused })
    }

    /// The host with an explicit multiply-add form; `Fused` needs FMA.
    pub fn host_with(mul_add: MulAdd) -> Result<Self> {
        let isa = host_isa()?;
        if mul_add == MulAdd::Fused && !has_flag(&isa, "has_fma") {
            return Err(Error::Target("this CPU has no FMA; use MulAdd::Separate".into()));
        }
        Ok(Target { isa, mul_add })
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
        write!(f, "{} [{}] {:?} multiply-add", self.isa.triple(), self.isa_flags().join(" "), self.mul_add)
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
    builder.finish(settings::Flags::new(flags)).map_err(|e| Error::Target(e.to_string()))
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
