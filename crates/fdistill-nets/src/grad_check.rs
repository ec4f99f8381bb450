//! Test helper: which float parameters of a module received a nonzero gradient.

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
