//! Test helpers: which float parameters of a module received a nonzero gradient, central
//! differences, and the closeness check of a kernel against its reference.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};

struct GradVisitor<'a, B: AutodiffBackend> {
    grads: &'a B::Gradients,
    path: Vec<String>,
    /// `(name, |grad|_1)` per parameter; 0 where there is no gradient.
    out: Vec<(String, f64)>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradVisitor<'_, B> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let g = param
            .val()
            .grad(self.grads)
            .map_or(0.0, |g| g.abs().sum().into_scalar().elem::<f64>());
        self.out.push((self.path.join("."), g));
    }
}

/// `(parameter name, L1 norm of its gradient)` for every float parameter, in visiting order;
/// 0 where the parameter got no gradient.
pub fn gradient_norms<B: AutodiffBackend, M: Module<B>>(
    module: &M,
    grads: &B::Gradients,
) -> Vec<(String, f64)> {
    let mut v = GradVisitor::<B> {
        grads,
        path: Vec::new(),
        out: Vec::new(),
    };
    module.visit(&mut v);
    v.out
}

/// Central differences `(f(x + h eᵢ) − f(x − h eᵢ)) / 2h` for every coordinate `i` of `x`: the
/// independent check of a hand-written backward (truncation error `O(h²)`).
pub fn central_differences(f: impl Fn(&[f32]) -> f64, x: &[f32], h: f32) -> Vec<f64> {
    (0..x.len())
        .map(|i| {
            let (mut p, mut m) = (x.to_vec(), x.to_vec());
            p[i] += h;
            m[i] -= h;
            (f(&p) - f(&m)) / (2.0 * h as f64)
        })
        .collect()
}

/// Panics unless `got` and `want` have the same length and agree to `tol` times the largest
/// `|want|` (at least 10⁻³): the comparison of a fused kernel with its tensor-op reference.
pub fn assert_close(name: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{name}: lengths");
    let scale = want.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * scale,
            "{name}[{i}]: {g} vs {w} (scale {scale})"
        );
    }
}
