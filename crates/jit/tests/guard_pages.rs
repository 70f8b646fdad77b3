//! Generated code never touches memory outside its buffers: every kernel runs on buffers placed
//! flush against an inaccessible (PROT_NONE) page, after the data and, separately, before it, for
//! sizes that are not multiples of the vector width. A stray access kills the test process.

use skipgrad_ir::{Axes, DType, Graph, NodeId, Op, Role, Shape, TensorType};
use skipgrad_jit::{CompileOptions, Kernel, Operand, Target, compile};

/// `len` f32s inside an mmap'd region, flush against a PROT_NONE page on one side.
struct Guarded {
    base: *mut libc::c_void,
    size: usize,
    data: *mut f32,
}

impl Guarded {
    fn new(len: usize, guard_after: bool) -> Guarded {
        let page = 4096;
        let bytes = len * 4;
        let pages = bytes.div_ceil(page).max(1);
        let size = (pages + 2) * page;
        // SAFETY: anonymous private mapping; the pointers stay inside it.
        unsafe {
            let base = libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(base, libc::MAP_FAILED);
            let base_u8 = base as *mut u8;
            assert_eq!(libc::mprotect(base, page, libc::PROT_NONE), 0);
            assert_eq!(libc::mprotect(base_u8.add(size - page) as *mut libc::c_void, page, libc::PROT_NONE), 0);
            let data = if guard_after { base_u8.add(size - page - bytes) } else { base_u8.add(page) } as *mut f32;
            for i in 0..len {
                *data.add(i) = ((i % 7) as f32) * 0.25 + 0.5; // positive: safe for variances
            }
            Guarded { base, size, data }
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // SAFETY: unmapping the region this value mapped.
        unsafe { libc::munmap(self.base, self.size) };
    }
}

/// Runs the kernel of `node` on guarded copies of its operands and output, both placements.
fn run_guarded(g: &Graph, node: NodeId) {
    let target = Target::host().unwrap();
    let compiled = compile(g, &[node], &CompileOptions { threads: 1, target: Some(target.clone()) }).unwrap();
    let info = compiled.kernel_for(node).expect("node has a kernel");
    let kernel = Kernel::compile(&info.spec, &target).unwrap();
    let n = g.node(node).unwrap();
    let mut sizes: Vec<usize> = Vec::new();
    // The operands in the order the lowering chose: the node's inputs, except custom ops (input 0).
    let inputs: Vec<NodeId> = if matches!(n.op, Op::Custom { .. }) { vec![n.inputs[0]] } else { n.inputs.to_vec() };
    assert_eq!(inputs.len(), info.spec.operands.len(), "{}", n.op);
    for (id, mode) in inputs.iter().zip(&info.spec.operands) {
        let len = g.node(*id).unwrap().ty.shape.numel();
        sizes.push(if *mode == Operand::Scalar { 1 } else { len });
    }
    sizes.push(n.ty.shape.numel());
    for guard_after in [true, false] {
        let buffers: Vec<Guarded> = sizes.iter().map(|&len| Guarded::new(len, guard_after)).collect();
        let args: Vec<*mut f32> = buffers.iter().map(|b| b.data).collect();
        // SAFETY: every buffer holds exactly the elements of its node; the test is that the kernel
        // stays inside them.
        unsafe { kernel.run(&args, 0, info.spec.nest.groups) };
    }
}

fn input(g: &mut Graph, name: &str, dims: &[usize]) -> NodeId {
    g.add_source(Op::Input { name: name.into() }, TensorType::new(DType::F32, dims), Role::Forward).unwrap()
}

#[test]
fn kernels_stay_inside_their_buffers() {
    // Sizes that are not multiples of 4, and one exactly a multiple, in ranks 1 to 4.
    for dims in [
        vec![1usize],
        vec![7],
        vec![1030],
        vec![3, 5],
        vec![2, 3, 5],
        vec![3, 5, 3, 3],
        vec![2, 4, 2, 2],
        vec![2, 3, 1, 1],
    ] {
        let mut g = Graph::new();
        let a = input(&mut g, "a", &dims);
        let b = input(&mut g, "b", &dims);
        let mut nodes = vec![];
        for op in [Op::Add, Op::Sub, Op::Mul, Op::ReluGrad, Op::Equal] {
            nodes.push(g.add_node(op, &[a, b], Role::Forward).unwrap());
        }
        for op in [Op::Relu, Op::Scale { c: 2.0 }, Op::AddScalar { c: 1.0 }, Op::StopGradient] {
            nodes.push(g.add_node(op, &[a], Role::Forward).unwrap());
        }
        let rank = dims.len();
        for prefix in 0..=rank {
            for suffix in 0..=(rank - prefix) {
                let axes: Axes = (0..prefix).chain(rank - suffix..rank).collect();
                let r = g.add_node(Op::ReduceSum { axes: axes.clone() }, &[a], Role::Forward).unwrap();
                nodes.push(r);
                nodes.push(g.add_node(Op::Broadcast { axes, shape: Shape::new(&dims) }, &[r], Role::Forward).unwrap());
            }
        }
        if rank >= 2 {
            let c = dims[1];
            let p: Vec<NodeId> = (0..4).map(|i| input(&mut g, &format!("p{i}"), &[c])).collect();
            nodes.push(g.add_node(Op::BiasAdd, &[a, p[0]], Role::Forward).unwrap());
            let mean = g.add_node(Op::BatchMean, &[a], Role::Forward).unwrap();
            let var = g.add_node(Op::BatchVar, &[a], Role::Forward).unwrap();
            nodes.extend([mean, var]);
            for training in [true, false] {
                let (m, v) = if training { (mean, var) } else { (p[0], p[1]) };
                nodes.push(
                    g.add_node(Op::BatchNorm { eps: 1e-5, training }, &[a, m, v, p[2], p[3]], Role::Forward).unwrap(),
                );
                nodes.push(
                    g.add_node(Op::BatchNormGradInput { eps: 1e-5, training }, &[a, m, v, p[2], b], Role::Forward)
                        .unwrap(),
                );
                nodes.push(g.add_node(Op::BatchNormGradGamma { eps: 1e-5 }, &[a, m, v, b], Role::Forward).unwrap());
            }
        }
        for node in nodes {
            run_guarded(&g, node);
        }
    }
}
