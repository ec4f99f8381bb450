//! The AdamW state file: a round trip continues exactly like the optimiser that never left
//! memory, the bytes are deterministic, and a state that does not fit the network (another
//! network, a truncated or foreign file) is an error before any tensor is built.

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleMapper, Param};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::{Tensor, TensorData};
use fdistill_train::checkpoint::CheckpointError;
use fdistill_train::distill::driver::{adamw, load_adamw, save_adamw};

type B = Autodiff<Flex>;

/// Constant initial weights (no draw from the backend's shared RNG).
struct Fill(f32);
impl ModuleMapper<B> for Fill {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, t, mapper) = p.consume();
        let t = t.zeros_like().add_scalar(self.0).detach().require_grad();
        Param::from_mapped_value(id, t, mapper)
    }
}

fn layer(d_in: usize) -> Linear<B> {
    LinearConfig::new(d_in, 2)
        .init::<B>(&Default::default())
        .map(&mut Fill(0.2))
}

/// One AdamW step on `Σ (W x + b)²` at a fixed x.
fn step<O: Optimizer<Linear<B>, B>>(optim: &mut O, lin: Linear<B>) -> Linear<B> {
    let d_in = lin.weight.val().dims()[0];
    let x = Tensor::<B, 2>::from_data(
        TensorData::new((0..d_in).map(|i| 1.0 + i as f32).collect(), [1, d_in]),
        &Default::default(),
    );
    let loss = lin.forward(x).powi_scalar(2).sum();
    let g = GradientsParams::from_grads(loss.backward(), &lin);
    optim.step(1e-2, lin, g)
}

/// The error of a load that must fail (the optimiser has no `Debug` for `unwrap_err`).
#[track_caller]
fn error<T>(r: Result<T, CheckpointError>) -> CheckpointError {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

fn weights(lin: &Linear<B>) -> Vec<f32> {
    lin.weight.val().into_data().to_vec().unwrap()
}

#[test]
fn a_saved_state_continues_exactly_and_misfits_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("optim.safetensors");
    let device = Default::default();
    // Two steps in memory, then save; a fresh optimiser loaded from the file takes the third
    // step exactly as the one that never left memory.
    let mut a = adamw::<B, Linear<B>>(0.01);
    let mut lin = layer(3);
    for _ in 0..2 {
        lin = step(&mut a, lin);
    }
    save_adamw(&a, &lin, &path).unwrap();
    let first = std::fs::read(&path).unwrap();
    save_adamw(&a, &lin, &path).unwrap();
    assert_eq!(first, std::fs::read(&path).unwrap(), "deterministic bytes");
    let mut b = load_adamw(adamw::<B, Linear<B>>(0.01), &lin, &path, &device).unwrap();
    let from_memory = step(&mut a, lin.clone());
    let from_file = step(&mut b, lin.clone());
    assert_eq!(weights(&from_memory), weights(&from_file));
    // Without the state the third step differs (so the comparison can fail).
    let mut c = adamw::<B, Linear<B>>(0.01);
    assert_ne!(weights(&step(&mut c, lin.clone())), weights(&from_file));

    // A state for another network (3 → 2 vs 4 → 2): the tensor and both shapes are named.
    let e = error(load_adamw(
        adamw::<B, Linear<B>>(0.01),
        &layer(4),
        &path,
        &device,
    ));
    assert!(
        matches!(&e, CheckpointError::ShapeMismatch { name, found, expected, .. }
            if name == "param0.moment_1" && found == &vec![3, 2] && expected == &vec![4, 2]),
        "{e}"
    );
    // Truncated, foreign (burn's own record format) and missing files.
    std::fs::write(&path, &first[..first.len() / 2]).unwrap();
    let e = error(load_adamw(
        adamw::<B, Linear<B>>(0.01),
        &lin,
        &path,
        &device,
    ));
    assert!(e.to_string().contains("--overwrite"), "{e}");
    std::fs::write(&path, b"\x82\xa8metadata\x80\xa4item\x90").unwrap();
    assert!(load_adamw(adamw::<B, Linear<B>>(0.01), &lin, &path, &device).is_err());
    let e = error(load_adamw(
        adamw::<B, Linear<B>>(0.01),
        &lin,
        &dir.path().join("none"),
        &device,
    ));
    assert!(matches!(e, CheckpointError::Missing { .. }), "{e}");
}
