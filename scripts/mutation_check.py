"""Mutation check for the gradient properties: breaks one gradient rule at a time and asserts that
the property suite (tests/gradients.rs) fails for each. Run from the repository root:
    python3 scripts/mutation_check.py
Takes a few minutes (one rebuild per mutation); not part of CI. Add a line when you add an op."""
import os, subprocess, sys
muts = [
 ("crates/reference/src/ops.rs", "gamma[c] * istd[c] / m * (m * dy[i] - sum_dy[c] - xhat(i) * sum_dy_xhat[c])", "gamma[c] * istd[c] / m * (m * dy[i] - sum_dy[c])", "batch_norm_training"),
 ("crates/reference/src/ops.rs", "return Ok((0..n_out).map(|i| dy[i] * gamma[ch.channel(i)] * istd[ch.channel(i)]).collect());", "return Ok((0..n_out).map(|i| dy[i] * gamma[ch.channel(i)]).collect());", "batch_norm_eval"),
 ("crates/reference/src/ops.rs", "g[c] += x[3][i] * (x[0][i] - x[1][c]) * istd[c];", "g[c] += x[3][i] * (x[0][i] - x[1][c]);", "batch_norm_training"),
 ("crates/autodiff/src/vjp.rs", "when(4, &|| g.sum_axes(&all_but_channels(g)))?,", "when(4, &|| Ok(g.sum_axes(&all_but_channels(g))?.scale(2.0)))?,", "batch_norm_eval"),
 ("crates/autodiff/src/vjp.rs", "Ok(centred.mul(&g.broadcast(&axes, &dims(&x[0]))?)?.scale(2.0 / m))", "Ok(centred.mul(&g.broadcast(&axes, &dims(&x[0]))?)?.scale(1.0 / m))", "batch_statistics"),
 ("crates/autodiff/src/vjp.rs", "Op::BiasAdd => smallvec![Some(g.clone()), when(1, &|| g.sum_axes(&all_but_channels(g)))?],", "Op::BiasAdd => smallvec![Some(g.clone()), when(1, &|| Ok(g.sum_axes(&all_but_channels(g))?.scale(0.5)))?],", "bias_add"),
 ("crates/reference/src/ops.rs", "Op::ReluGrad => zip(&|v, g| if v > 0.0 { g } else { 0.0 }),", "Op::ReluGrad => zip(&|v, g| if v > 0.0 { g } else { g * 0.01 }),", "relu_and_its_gradient"),
 ("crates/reference/src/ops.rs", "shortcut_pairs(out.dims(), d(0), shortcut, |xi, yi| dx[xi] = x[0][yi]);", "shortcut_pairs(out.dims(), d(0), shortcut, |xi, yi| dx[xi] = x[0][yi] * 0.9);", "shortcut_a"),
 ("crates/reference/src/ops.rs", "dx[a] += x[1][yi];", "dx[a] = x[1][yi];", "max_pool"),
 ("crates/reference/src/ops.rs", "let scale = x[2][0] / n as f64;", "let scale = x[2][0];", "softmax_and_cross_entropy"),
 ("crates/autodiff/src/vjp.rs", "pg.sub(&p.mul(&row)?)", "pg.sub(&row)", "softmax_and_cross_entropy"),
 ("crates/autodiff/src/vjp.rs", "let db = || if tb { g.matmul_t(&x[0], true, ta) } else { x[0].matmul_t(g, !ta, false) };", "let db = || if tb { g.matmul_t(&x[0], true, !ta) } else { x[0].matmul_t(g, !ta, false) };", "matmul"),
 ("crates/autodiff/src/vjp.rs", "Op::Sub => smallvec![Some(g.clone()), when(1, &|| Ok(g.neg()))?],", "Op::Sub => smallvec![Some(g.clone()), Some(g.clone())],", "elementwise"),
 ("crates/autodiff/src/vjp.rs", "Op::Scale { c } => smallvec![Some(g.scale(*c))],", "Op::Scale { c } => smallvec![Some(g.scale(c.abs()))],", "elementwise"),
 ("crates/autodiff/src/vjp.rs", "when(1, &|| g.mul(&x[0])?.sum())?", "when(1, &|| Ok(g.mul(&x[0])?.sum()?.scale(0.5)))?", "elementwise"),
 ("crates/autodiff/src/vjp.rs", "when(1, &|| Ok(g.mul(y)?.div(&x[1])?.neg()))?", "when(1, &|| Ok(g.mul(y)?.div(&x[1])?))?", "elementwise"),
 ("crates/autodiff/src/vjp.rs", "Op::Sqrt => smallvec![when(0, &|| g.div(&y.scale(2.0)))?],", "Op::Sqrt => smallvec![when(0, &|| g.div(y))?],", "elementwise"),
 ("crates/autodiff/src/vjp.rs", "when(0, &|| g.conv2d_with(&x[1], *conv))?,", "when(0, &|| Ok(g.conv2d_with(&x[1], *conv)?.scale(1.1)))?,", "conv2d_grad_input_is_differentiable"),
 ("crates/autodiff/src/vjp.rs", "when(1, &|| x[0].conv2d_with(g, *conv))?,", "when(1, &|| Ok(x[0].conv2d_with(g, *conv)?.scale(1.1)))?,", "conv2d_grad_weight_is_differentiable"),
 ("crates/reference/src/ops.rs", "conv_taps(out.dims(), d(1), conv, |xi, wi, yi| dx[xi] += x[0][yi] * x[1][wi]);", "conv_taps(out.dims(), d(1), conv, |xi, wi, yi| if wi > 0 { dx[xi] += x[0][yi] * x[1][wi] });", "conv2d"),
 ("crates/autodiff/src/vjp.rs", "Op::ReduceSum { axes } => smallvec![when(0, &|| g.broadcast(axes, &dims(&x[0])))?],", "Op::ReduceSum { axes } => smallvec![when(0, &|| Ok(g.broadcast(axes, &dims(&x[0]))?.scale(0.5)))?],", "pooling_and_reductions"),
 ("crates/autodiff/src/vjp.rs", "Op::Broadcast { axes, .. } => smallvec![when(0, &|| g.sum_axes(axes))?],", "Op::Broadcast { axes, .. } => smallvec![when(0, &|| Ok(g.sum_axes(axes)?.scale(0.5)))?],", "pooling_and_reductions"),
 ("crates/autodiff/src/vjp.rs", "Op::Reshape { .. } => smallvec![when(0, &|| g.reshape(&dims(&x[0])))?],", "Op::Reshape { .. } => smallvec![when(0, &|| Ok(g.reshape(&dims(&x[0]))?.scale(0.5)))?],", "reshape_and_flatten"),
]
ok = True
for f, a, b, test in muts:
    src = open(f).read()
    assert a in src, a
    open(f, 'w').write(src.replace(a, b, 1))
    try:
        r = subprocess.run(["cargo", "test", "-q", "--test", "gradients", test], capture_output=True, text=True, env={**os.environ, "PROPTEST_CASES": "32"})
        caught = "FAILED" in r.stdout or r.returncode != 0
        print(("CAUGHT " if caught else "MISSED ") + test + " : " + b[:70])
        ok &= caught
    finally:
        open(f, 'w').write(src)
print("all caught" if ok else "SOME MISSED")
sys.exit(0 if ok else 1)
