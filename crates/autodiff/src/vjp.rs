//! Gradient rules: for each op, the vector-Jacobian product written with the research API, so
//! the gradient is itself a graph that can be differentiated again.
//!
//! One exhaustive `match` over [`Op`]: adding an op without deciding its gradient does not compile.
//! A rule receives the node's inputs, its output and the output's cotangent `g`, and returns one
//! gradient per input (`None` where none flows). `want[i]` says whether input `i`'s gradient is
//! needed; rules skip the work for the others.

use crate::{Error, Result, Var};
use skipgrad_ir::{Node, Op};
use smallvec::{SmallVec, smallvec};

/// Per-input gradients of one node.
pub(crate) type Grads = SmallVec<[Option<Var>; 4]>;

/// The gradients of `node` (whose inputs are `x` and output `y`) given cotangent `g`.
pub(crate) fn vjp(node: &Node, x: &[Var], y: &Var, g: &Var, want: &[bool]) -> Result<Grads> {
    let id = y.id.index();
    let not_differentiable = |input: usize, reason: &str| Error::NotDifferentiable {
        op: node.op.to_string(),
        node: id,
        input,
        reason: reason.into(),
    };
    // The gradient of input `i`, computed only when wanted.
    let when = |i: usize, f: &dyn Fn() -> Result<Var>| -> Result<Option<Var>> {
        if want.get(i).copied().unwrap_or(false) { f().map(Some) } else { Ok(None) }
    };
    let dims = |v: &Var| v.shape().dims().to_vec();
    let all_but_channels = |v: &Var| (0..v.shape().rank()).filter(|&a| a != 1).collect::<Vec<_>>();
    let hw = |v: &Var| {
        let d = dims(v);
        [d[2], d[3]]
    };

    Ok(match &node.op {
        Op::Input { .. } | Op::Parameter { .. } | Op::Constant { .. } | Op::Fill { .. } => smallvec![],
        Op::Conv2d(a) => smallvec![
            when(0, &|| g.conv2d_grad_input(&x[1], *a, hw(&x[0])))?,
            when(1, &|| x[0].conv2d_grad_weight(g, *a, hw(&x[1])))?,
        ],
        // Conv2d, its input gradient and its weight gradient are the three partial derivatives of
        // one trilinear form T(x, w, dy), so each one's gradient is one of the other two.
        Op::Conv2dGradInput { conv, .. } => smallvec![
            when(0, &|| g.conv2d_with(&x[1], *conv))?,
            when(1, &|| g.conv2d_grad_weight(&x[0], *conv, hw(&x[1])))?,
        ],
        Op::Conv2dGradWeight { conv, .. } => smallvec![
            when(0, &|| x[1].conv2d_grad_input(g, *conv, hw(&x[0])))?,
            when(1, &|| x[0].conv2d_with(g, *conv))?,
        ],
        Op::BiasAdd => smallvec![Some(g.clone()), when(1, &|| g.sum_axes(&all_but_channels(g)))?],
        Op::BatchMean => {
            let m = (x[0].shape().numel() / dims(&x[0])[1]) as f64;
            smallvec![when(0, &|| Ok(g.broadcast(&all_but_channels(&x[0]), &dims(&x[0]))?.scale(1.0 / m)))?]
        }
        Op::BatchVar => {
            let m = (x[0].shape().numel() / dims(&x[0])[1]) as f64;
            smallvec![when(0, &|| {
                let axes = all_but_channels(&x[0]);
                let centred = x[0].sub(&x[0].batch_mean()?.broadcast(&axes, &dims(&x[0]))?)?;
                Ok(centred.mul(&g.broadcast(&axes, &dims(&x[0]))?)?.scale(2.0 / m))
            })?]
        }
        Op::BatchNorm { eps, training } => {
            let (eps, training) = (*eps, *training);
            let grad_x = || Var::apply(Op::BatchNormGradInput { eps, training }, &[&x[0], &x[1], &x[2], &x[3], g]);
            if !training && (want[1] || want[2]) {
                return Err(not_differentiable(
                    if want[1] { 1 } else { 2 },
                    "eval-mode batch norm is not differentiable with respect to its running statistics",
                ));
            }
            // In training mode inputs 1 and 2 are the batch statistics of input 0; the input rule
            // already accounts for them, so no gradient flows to them separately.
            smallvec![
                when(0, &grad_x)?,
                None,
                None,
                when(3, &|| Var::apply(Op::BatchNormGradGamma { eps }, &[&x[0], &x[1], &x[2], g]))?,
                when(4, &|| g.sum_axes(&all_but_channels(g)))?,
            ]
        }
        Op::BatchNormGradInput { .. } | Op::BatchNormGradGamma { .. } => {
            if let Some(i) = want.iter().position(|&w| w) {
                return Err(not_differentiable(i, "batch-norm backward ops have no second-order rule"));
            }
            smallvec![]
        }
        // The mask comes from the output (y > 0 exactly when x > 0), so the pre-activation need
        // not stay alive for the backward pass, and batch-norm apply, the residual add and the
        // ReLU fuse into one kernel.
        Op::Relu => smallvec![when(0, &|| y.relu_grad(g))?],
        // relu_grad is linear in dy and piecewise constant in x.
        Op::ReluGrad => smallvec![None, when(1, &|| x[0].relu_grad(g))?],
        Op::Add => smallvec![Some(g.clone()), Some(g.clone())],
        Op::Sub => smallvec![Some(g.clone()), when(1, &|| Ok(g.neg()))?],
        Op::Mul => smallvec![when(0, &|| g.mul(&x[1]))?, when(1, &|| g.mul(&x[0]))?],
        // d(a/b) = da / b - (a/b) db / b.
        Op::Div => smallvec![when(0, &|| g.div(&x[1]))?, when(1, &|| Ok(g.mul(y)?.div(&x[1])?.neg()))?],
        // d sqrt(x) = dx / (2 sqrt(x)).
        Op::Sqrt => smallvec![when(0, &|| g.div(&y.scale(2.0)))?],
        Op::Scale { c } => smallvec![Some(g.scale(*c))],
        Op::MulScalar => smallvec![when(0, &|| g.mul_scalar(&x[1]))?, when(1, &|| g.mul(&x[0])?.sum())?],
        Op::AddScalar { .. } => smallvec![Some(g.clone())],
        Op::StopGradient | Op::ArgMax => smallvec![None],
        Op::Equal => smallvec![None, None],
        Op::ShortcutA(a) => {
            smallvec![when(0, &|| { Var::apply(Op::ShortcutAGrad { shortcut: *a, input_hw: hw(&x[0]) }, &[g]) })?]
        }
        Op::ShortcutAGrad { shortcut, .. } => smallvec![when(0, &|| g.shortcut_a_with(*shortcut))?],
        Op::MaxPool(p) => smallvec![when(0, &|| Var::apply(Op::MaxPoolGrad(*p), &[&x[0], g]))?],
        Op::MaxPoolGrad(_) => {
            if want[1] {
                return Err(not_differentiable(1, "max_pool_grad has no rule for its output gradient"));
            }
            smallvec![None, None]
        }
        Op::MatMul { transpose_a: ta, transpose_b: tb } => {
            let (ta, tb) = (*ta, *tb);
            // C = A'B' with A' = op(A), B' = op(B): dA' = g B'^T and dB' = A'^T g.
            let da = || if ta { x[1].matmul_t(g, tb, true) } else { g.matmul_t(&x[1], false, !tb) };
            let db = || if tb { g.matmul_t(&x[0], true, ta) } else { x[0].matmul_t(g, !ta, false) };
            smallvec![when(0, &da)?, when(1, &db)?]
        }
        Op::Reshape { .. } => smallvec![when(0, &|| g.reshape(&dims(&x[0])))?],
        Op::ReduceSum { axes } => smallvec![when(0, &|| g.broadcast(axes, &dims(&x[0])))?],
        Op::Broadcast { axes, .. } => smallvec![when(0, &|| g.sum_axes(axes))?],
        Op::Softmax => smallvec![when(0, &|| softmax_vjp(y, g))?],
        Op::SoftmaxCrossEntropy => smallvec![
            when(0, &|| Var::apply(Op::SoftmaxCrossEntropyGrad, &[&x[0], &x[1], g]))?,
            labels_have_no_gradient(want, &not_differentiable)?,
        ],
        Op::SoftmaxCrossEntropyGrad => {
            // dlogits = (softmax(z) - onehot) * dloss / N: its Jacobian in z is the softmax
            // Jacobian times dloss / N, and it is linear in dloss.
            let n = dims(&x[0])[0] as f64;
            let d_logits = || {
                let scale = x[2].broadcast(&[0, 1], &dims(&x[0]))?.scale(1.0 / n);
                softmax_vjp(&x[0].softmax()?, g)?.mul(&scale)
            };
            let d_loss = || {
                let unit = y.tape.fill_typed(1.0, x[2].ty())?;
                Var::apply(Op::SoftmaxCrossEntropyGrad, &[&x[0], &x[1], &unit])?.mul(g)?.sum()
            };
            smallvec![when(0, &d_logits)?, labels_have_no_gradient(want, &not_differentiable)?, when(2, &d_loss)?]
        }
        Op::Fused(_) | Op::Output { .. } => {
            return Err(not_differentiable(
                0,
                "fusion runs after gradients are taken: differentiate the unfused graph",
            ));
        }
        Op::Custom { rule, .. } => {
            let op = y.tape.0.borrow().rules.get(*rule).cloned().ok_or_else(|| {
                not_differentiable(0, "no gradient rule is registered for this custom op on this tape")
            })?;
            let grads = op.vjp(&x[1..], y, g)?;
            if grads.len() != x.len() - 1 {
                return Err(Error::Argument {
                    op: node.op.to_string(),
                    message: format!("custom vjp returned {} gradients for {} arguments", grads.len(), x.len() - 1),
                });
            }
            for (i, (grad, arg)) in grads.iter().zip(&x[1..]).enumerate() {
                if let Some(grad) = grad
                    && grad.ty() != arg.ty()
                {
                    return Err(Error::Argument {
                        op: node.op.to_string(),
                        message: format!(
                            "custom vjp returned a {} gradient for argument {i} of type {}",
                            grad.ty(),
                            arg.ty()
                        ),
                    });
                }
            }
            std::iter::once(None).chain(grads).collect()
        }
    })
}

/// `softmax`'s VJP from its output `p`: `p * (g - rowsum(p * g))`.
fn softmax_vjp(p: &Var, g: &Var) -> Result<Var> {
    let pg = p.mul(g)?;
    let row = pg.sum_axes(&[1])?.broadcast(&[1], p.shape().dims())?;
    pg.sub(&p.mul(&row)?)
}

fn labels_have_no_gradient(want: &[bool], fail: &dyn Fn(usize, &str) -> Error) -> Result<Option<Var>> {
    if want[1] { Err(fail(1, "labels are class indices; they have no gradient")) } else { Ok(None) }
}
