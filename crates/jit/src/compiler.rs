//! Turns kernel specs into machine code in one Cranelift JIT module, compiling each distinct spec
//! once, and keeps each kernel's IR text and register-allocated code for dumps.

use crate::rows::{Imports, skipgrad_expf, skipgrad_logf};
use crate::{Error, KernelSpec, MulAdd, Result, Target};
use cranelift_codegen::ir::{AbiParam, Signature, types};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module, default_libcall_names};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A generated kernel's entry point: operand and output pointers, the group range, and the index
/// of the thread running it (for per-thread scratch).
pub(crate) type KernelFn = unsafe extern "C" fn(args: *const *mut f32, begin: u64, end: u64, thread: u64);

/// What a kernel looks like at each stage, for debugging.
#[derive(Clone, Debug)]
pub struct KernelCode {
    /// The kernel's name (`k3_batch_norm`): index and the op it was first made for.
    pub name: String,
    /// The spec it was generated from.
    pub spec: KernelSpec,
    /// Cranelift IR text.
    pub ir: String,
    /// Register-allocated machine instructions (Cranelift's vcode), with spills visible.
    pub vcode: String,
    /// Machine-code disassembly (with the `disas` feature).
    pub disassembly: Option<String>,
    /// Time to generate and compile it.
    pub compile_time: Duration,
}

/// Compile-time report of a graph.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CompileStats {
    /// Distinct kernels generated.
    pub kernels_compiled: usize,
    /// Nodes that reused an already generated kernel (identical op, shapes and attributes).
    pub kernels_reused: usize,
    /// Total time spent generating and compiling kernels.
    pub compile_time: Duration,
}

/// Compiles kernels into one module; the module's code lives until the [`Code`] is dropped.
pub(crate) struct Compiler {
    module: JITModule,
    target: Target,
    builder_context: FunctionBuilderContext,
    cache: HashMap<(KernelSpec, MulAdd), usize>,
    ids: Vec<FuncId>,
    codes: Vec<KernelCode>,
    stats: CompileStats,
}

impl Compiler {
    pub(crate) fn new(target: Target) -> Self {
        let mut builder = JITBuilder::with_isa(target.isa.clone(), default_libcall_names());
        builder.symbol("skipgrad_expf", skipgrad_expf as *const u8);
        builder.symbol("skipgrad_logf", skipgrad_logf as *const u8);
        let module = JITModule::new(builder);
        Compiler {
            module,
            target,
            builder_context: FunctionBuilderContext::new(),
            cache: HashMap::new(),
            ids: Vec::new(),
            codes: Vec::new(),
            stats: CompileStats::default(),
        }
    }

    /// The target kernels are compiled for.
    pub(crate) fn target(&self) -> &Target {
        &self.target
    }

    /// The index of the kernel for `spec`, compiling it unless an identical one exists.
    pub(crate) fn kernel(&mut self, label: &str, spec: &KernelSpec) -> Result<usize> {
        let key = (spec.clone(), self.target.mul_add());
        if let Some(&k) = self.cache.get(&key) {
            self.stats.kernels_reused += 1;
            return Ok(k);
        }
        let start = Instant::now();
        let index = self.ids.len();
        let name = format!("k{index}_{label}");
        let ptr = self.module.target_config().pointer_type();
        let mut ctx = self.module.make_context();
        ctx.func.signature.params.extend([
            AbiParam::new(ptr),
            AbiParam::new(types::I64),
            AbiParam::new(types::I64),
            AbiParam::new(types::I64),
        ]);
        ctx.set_disasm(true);
        let codegen = |message: String| Error::Codegen { kernel: name.clone(), message };
        let mut unary = Signature::new(self.module.isa().default_call_conv());
        unary.params.push(AbiParam::new(types::F32));
        unary.returns.push(AbiParam::new(types::F32));
        let mut import = |symbol: &str| -> Result<_> {
            let id =
                self.module.declare_function(symbol, Linkage::Import, &unary).map_err(|e| codegen(e.to_string()))?;
            Ok(self.module.declare_func_in_func(id, &mut ctx.func))
        };
        let imports = Imports { exp: import("skipgrad_expf")?, ln: import("skipgrad_logf")? };
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut self.builder_context);
            spec.build(&mut b, ptr, self.target.mul_add(), &imports);
            b.finalize(self.module.target_config());
        }
        let ir = ctx.func.display().to_string();
        let id = self
            .module
            .declare_function(&name, Linkage::Local, &ctx.func.signature)
            .map_err(|e| codegen(e.to_string()))?;
        self.module.define_function(id, &mut ctx).map_err(|e| codegen(format!("{e:?}")))?;
        let compiled = ctx.compiled_code().ok_or_else(|| codegen("no code".into()))?;
        let vcode = compiled.vcode.clone().unwrap_or_default();
        let disassembly = disassemble(&self.target, compiled);
        self.module.clear_context(&mut ctx);
        let compile_time = start.elapsed();
        self.stats.kernels_compiled += 1;
        self.stats.compile_time += compile_time;
        self.ids.push(id);
        self.codes.push(KernelCode { name, spec: spec.clone(), ir, vcode, disassembly, compile_time });
        self.cache.insert(key, index);
        Ok(index)
    }

    /// Finalises the module: the kernels become callable.
    pub(crate) fn finish(mut self) -> Result<(Code, Vec<KernelCode>, CompileStats)> {
        let start = Instant::now();
        self.module
            .finalize_definitions()
            .map_err(|e| Error::Codegen { kernel: "module".into(), message: e.to_string() })?;
        self.stats.compile_time += start.elapsed();
        let fns = self
            .ids
            .iter()
            // SAFETY: each id was defined with the KernelFn signature and the module is finalised.
            .map(|&id| unsafe { std::mem::transmute::<*const u8, KernelFn>(self.module.get_finalized_function(id)) })
            .collect();
        Ok((Code { module: Some(self.module), fns }, self.codes, self.stats))
    }
}

#[cfg(feature = "disas")]
fn disassemble(target: &Target, code: &cranelift_codegen::CompiledCode) -> Option<String> {
    let cs = target.isa.to_capstone().ok()?;
    code.disassemble(None, &cs).ok()
}

#[cfg(not(feature = "disas"))]
fn disassemble(_: &Target, _: &cranelift_codegen::CompiledCode) -> Option<String> {
    None
}

/// Executable kernels; their memory is freed on drop.
pub(crate) struct Code {
    module: Option<JITModule>,
    pub(crate) fns: Vec<KernelFn>,
}

impl Drop for Code {
    fn drop(&mut self) {
        if let Some(module) = self.module.take() {
            // SAFETY: the function pointers in `fns` die with `self`; the owner (CompiledGraph)
            // never calls a kernel after dropping its Code, and no pool job outlives a run.
            unsafe { module.free_memory() };
        }
    }
}

/// One kernel compiled on its own, to run on caller-provided buffers (benchmarks, guard-page tests).
pub struct Kernel {
    code: Code,
    info: KernelCode,
}

impl Kernel {
    /// Compiles `spec` for `target`.
    pub fn compile(spec: &KernelSpec, target: &Target) -> Result<Kernel> {
        let mut compiler = Compiler::new(target.clone());
        compiler.kernel("kernel", spec)?;
        let (code, mut codes, _) = compiler.finish()?;
        Ok(Kernel { code, info: codes.remove(0) })
    }

    /// Its IR and generated code.
    pub fn code(&self) -> &KernelCode {
        &self.info
    }

    /// Runs groups `begin..end` on one thread.
    ///
    /// # Safety
    /// `args` must hold one pointer per operand then per output, each valid for every element the
    /// spec's nest and operand modes address in those groups.
    pub unsafe fn run(&self, args: &[*mut f32], begin: usize, end: usize) {
        assert_eq!(args.len(), self.info.spec.arity(), "one pointer per input and output");
        // SAFETY: upheld by the caller.
        unsafe { (self.code.fns[0])(args.as_ptr(), begin as u64, end as u64, 0) }
    }
}
