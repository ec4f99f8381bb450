//! `init_now` draws a module's lazily initialised weights where it is called. Its own test
//! binary: the backend RNG is one per process, and the library's unit tests, run in parallel
//! threads, draw from it too.

use burn::backend::Flex;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use fdistill_nets::{MlpDiscriminator, MlpDiscriminatorConfig, init_now};

/// Every float parameter's values, in visiting order (reading them initialises them).
struct Collect(Vec<f32>);

impl ModuleVisitor<Flex> for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Flex, D>>) {
        self.0
            .extend(param.val().into_data().to_vec::<f32>().expect("f32"));
    }
}

fn weights(m: &MlpDiscriminator<Flex>) -> Vec<f32> {
    let mut c = Collect(Vec::new());
    m.visit(&mut c);
    c.0
}

#[test]
fn the_draw_happens_at_init_now_not_at_first_use() {
    let device = Default::default();
    let config = MlpDiscriminatorConfig::new(vec![8]);
    // Reference: seed, build, read at once.
    Flex::seed(&device, 3);
    let reference = weights(&config.init::<Flex>(&device));
    // Lazy: built after seeding, but the RNG is reseeded before the first read, so the
    // weights come from the other stream (this is the hazard init_now removes).
    Flex::seed(&device, 3);
    let lazy = config.init::<Flex>(&device);
    Flex::seed(&device, 4);
    assert_ne!(
        weights(&lazy),
        reference,
        "burn no longer initialises lazily?"
    );
    // init_now: the draw happens before the reseed.
    Flex::seed(&device, 3);
    let eager = init_now(config.init::<Flex>(&device));
    Flex::seed(&device, 4);
    assert_eq!(weights(&eager), reference);
}
