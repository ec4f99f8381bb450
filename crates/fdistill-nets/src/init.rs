//! Drawing a module's random initial weights now rather than at first use.
//!
//! burn initialises a parameter lazily: `Linear::init` records how to draw the weights, and
//! the draw from the backend's RNG happens when the parameter is first read (the first
//! forward pass). The backend RNG is one per process (`B::seed`), so two trainings that
//! build their networks one after another but start training together (the demo's students
//! on their threads, the replicas of a data-parallel run) would draw from each other's
//! stream, and the weights — and every result — would depend on the threads' timing.
//! [`init_now`] makes the draw happen where the caller seeded the RNG.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor};

/// Reads every parameter of a module once, which draws those still lazily initialised.
struct Materialise;

impl<B: Backend> ModuleVisitor<B> for Materialise {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let _ = param.val();
    }

    fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<B, D, Int>>) {
        let _ = param.val();
    }

    fn visit_bool<const D: usize>(&mut self, param: &Param<Tensor<B, D, Bool>>) {
        let _ = param.val();
    }
}

/// Draws every lazily initialised parameter of `module` now, from the backend RNG's current
/// state (see the module docs), and returns it.
///
/// ```
/// use burn::backend::Flex;
/// use burn::tensor::backend::Backend;
/// use fdistill_nets::{MlpDiscriminatorConfig, init_now};
///
/// let device = Default::default();
/// Flex::seed(&device, 7);
/// let head = init_now(MlpDiscriminatorConfig::new(vec![16]).init::<Flex>(&device));
/// Flex::seed(&device, 8); // a later seed no longer changes `head`'s weights
/// # let _ = head;
/// ```
pub fn init_now<B: Backend, M: Module<B>>(module: M) -> M {
    module.visit(&mut Materialise);
    module
}
