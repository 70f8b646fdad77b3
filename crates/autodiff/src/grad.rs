//! Reverse mode: walks the tape backwards from an output and appends gradient ops to the graph.

use crate::vjp::vjp as rule;
use crate::{Error, Result, Var};
use skipgrad_ir::Role;
use skipgrad_ir::debug;

/// Gradients of the scalar `loss` with respect to each of `wrt`, as new nodes of the same graph.
///
/// A Var that `loss` does not depend on gets zeros. The gradient nodes are themselves
/// differentiable (unless recorded inside `no_grad`), so `grad` can be applied to them again.
pub fn grad(loss: &Var, wrt: &[&Var]) -> Result<Vec<Var>> {
    if loss.shape().rank() != 0 {
        return Err(Error::NotScalar { ty: loss.ty() });
    }
    let seed = loss.tape.fill_typed(1.0, loss.ty())?;
    vjp(loss, &seed, wrt)
}

/// The vector-Jacobian product: gradients of `<cotangent, output>` with respect to each of `wrt`.
pub fn vjp(output: &Var, cotangent: &Var, wrt: &[&Var]) -> Result<Vec<Var>> {
    let tape = output.tape.clone();
    tape.check_same(&[output, cotangent], "vjp")?;
    tape.check_same(wrt, "vjp")?;
    if cotangent.ty() != output.ty() {
        return Err(Error::Argument {
            op: "vjp".into(),
            message: format!("cotangent {} must have the output's type {}", cotangent.ty(), output.ty()),
        });
    }
    if debug::dump_dir().is_some() {
        debug::dump_graph("traced", &tape.graph());
    }
    let end = output.id.index();
    let (nodes, ids, tracked) = {
        let s = tape.0.borrow();
        (s.graph.nodes()[..=end].to_vec(), s.graph.ids().take(end + 1).collect::<Vec<_>>(), s.tracked[..=end].to_vec())
    };
    // reaches[i]: node i is one of `wrt`, or gradients flow through it to one of them.
    let mut reaches = vec![false; end + 1];
    for v in wrt {
        if v.id.index() <= end {
            reaches[v.id.index()] = true;
        }
    }
    for (i, node) in nodes.iter().enumerate() {
        reaches[i] |= tracked[i] && node.inputs.iter().any(|j| reaches[j.index()]);
    }

    let grads = tape.with_role(Role::Backward, || {
        let mut cotangents: Vec<Option<Var>> = vec![None; end + 1];
        cotangents[end] = Some(cotangent.clone());
        for i in (0..=end).rev() {
            let Some(g) = cotangents[i].clone() else { continue };
            let node = &nodes[i];
            let want: Vec<bool> = node.inputs.iter().map(|j| reaches[j.index()]).collect();
            if !tracked[i] || !want.iter().any(|&w| w) {
                continue;
            }
            let inputs: Vec<Var> = node.inputs.iter().map(|&j| tape.var(j)).collect();
            let grads = rule(node, &inputs, &tape.var(ids[i]), &g, &want)?;
            for ((j, grad), wanted) in node.inputs.iter().zip(grads).zip(&want) {
                let (Some(grad), true) = (grad, *wanted) else { continue };
                let slot = &mut cotangents[j.index()];
                *slot = Some(match slot.take() {
                    Some(acc) => acc.add(&grad)?,
                    None => grad,
                });
            }
        }
        wrt.iter()
            .map(|v| match cotangents.get(v.id.index()).cloned().flatten() {
                Some(g) => Ok(g),
                None => tape.fill_typed(0.0, v.ty()),
            })
            .collect::<Result<Vec<Var>>>()
    })?;
    if debug::dump_dir().is_some() {
        debug::dump_graph("gradients", &tape.graph());
    }
    Ok(grads)
}
