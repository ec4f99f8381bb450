//! A small CNN classifier for Fashion-MNIST: the project's **metric network** (SPEC §8).
//!
//! ```text
//! x [b, c·r·r] → [b, c, r, r]
//! stage s = 0..S−1:  (conv 3×3 → GroupNorm → SiLU) × 2, then 2×2 average pooling except
//!                    after the last stage                               [b, w_s, r/2^s, r/2^s]
//! features = spatial mean of the last stage                             [b, w_{S−1}]
//! logits   = Linear(features)                                           [b, n_classes]
//! ```
//!
//! [`Classifier::features`] is the penultimate embedding in which the image metrics
//! (Fréchet distance, KID, precision/recall, density/coverage) are computed; the predicted
//! classes give class coverage and the class-histogram KL. The Fréchet distance in this space
//! is **not** FID (FID means Inception features).
//!
//! [`train_classifier`] is the plain training loop: shuffled epochs, AdamW, cross-entropy.

use burn::module::{AutodiffModule, Module};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::module::avg_pool2d;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use fdistill_data::images::ImageSet;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::conv_disc::ConvNormAct;
use crate::edm_layers::group_count;

/// Classifier configuration and training errors.
#[derive(Debug, Error)]
pub enum ClassifierError {
    /// An invalid configuration.
    #[error("invalid classifier config: {0}")]
    Config(String),
    /// The data does not fit the network or has no labels.
    #[error("classifier data: {0}")]
    Data(String),
    /// The loss became NaN or infinite.
    #[error("non-finite classifier loss {loss} at step {step}; lower the learning rate")]
    NonFinite {
        /// 1-based step.
        step: usize,
        /// The loss value.
        loss: f64,
    },
    /// The observer stopped training.
    #[error(transparent)]
    Observer(Box<dyn std::error::Error + Send + Sync>),
}

/// Configuration of [`Classifier`], saved in the run directory's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    /// Side of the (square) input images.
    pub resolution: usize,
    /// Image channels.
    pub channels: usize,
    /// Channels of each stage; the last is the feature dimension.
    pub widths: Vec<usize>,
    /// Number of classes.
    pub n_classes: usize,
}

impl ClassifierConfig {
    /// Fashion-MNIST at side `resolution` (32 for the padded images): stages of 32, 64, 128
    /// channels, 128-dimensional features, 10 classes.
    pub fn fashion_mnist(resolution: usize) -> Self {
        ClassifierConfig {
            resolution,
            channels: 1,
            widths: vec![32, 64, 128],
            n_classes: 10,
        }
    }

    /// Flattened input dimension.
    pub fn dim(&self) -> usize {
        self.channels * self.resolution * self.resolution
    }

    /// Feature dimension (the last stage's width).
    pub fn feature_dim(&self) -> usize {
        *self.widths.last().unwrap_or(&0)
    }

    /// Validates the configuration.
    pub fn check(&self) -> Result<(), ClassifierError> {
        let err = |m: String| Err(ClassifierError::Config(m));
        if self.channels == 0 || self.n_classes < 2 || self.widths.is_empty() {
            return err(format!(
                "need channels ≥ 1, n_classes ≥ 2 and ≥ 1 stage; got {}, {}, {:?}",
                self.channels, self.n_classes, self.widths
            ));
        }
        let pools = self.widths.len() - 1;
        if self.resolution == 0 || !self.resolution.is_multiple_of(1 << pools) {
            return err(format!(
                "resolution {} cannot be halved {pools} times; use fewer stages",
                self.resolution
            ));
        }
        for &w in &self.widths {
            let g = group_count(w);
            if g == 0 || !w.is_multiple_of(g) {
                return err(format!(
                    "stage width {w} must be a multiple of 4 (and of 32 above 128)"
                ));
            }
        }
        Ok(())
    }

    /// Builds the network. Call [`check`](Self::check) first.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Classifier<B> {
        let mut cin = self.channels;
        let stages = self
            .widths
            .iter()
            .map(|&w| {
                let s = Stage {
                    a: ConvNormAct::new(cin, w, 3, 1, device),
                    b: ConvNormAct::new(w, w, 3, 1, device),
                };
                cin = w;
                s
            })
            .collect();
        Classifier {
            stages,
            head: LinearConfig::new(self.feature_dim(), self.n_classes).init(device),
            config: self.clone(),
        }
    }
}

/// Two conv → GroupNorm → SiLU blocks at one resolution.
#[derive(Module, Debug)]
pub struct Stage<B: Backend> {
    a: ConvNormAct<B>,
    b: ConvNormAct<B>,
}

/// The classifier; see the module docs.
#[derive(Module, Debug)]
pub struct Classifier<B: Backend> {
    stages: Vec<Stage<B>>,
    head: Linear<B>,
    /// The configuration (not a parameter).
    #[module(skip)]
    pub config: ClassifierConfig,
}

impl<B: Backend> Classifier<B> {
    /// The penultimate embedding: spatial mean of the last stage.
    ///
    /// # Shapes
    /// - `x`: `[b, c·r·r]` (pixels in [−1, 1]); returns `[b, widths.last]`
    pub fn features(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let c = &self.config;
        let [b, _] = x.dims();
        let mut h = x.reshape([b, c.channels, c.resolution, c.resolution]); // [b, c, r, r]
        let last = self.stages.len() - 1;
        for (i, s) in self.stages.iter().enumerate() {
            h = s.b.forward(s.a.forward(h)); // [b, w_i, r_i, r_i]
            if i < last {
                h = avg_pool2d(h, [2, 2], [2, 2], [0, 0], true, false); // [b, w_i, r_i/2, r_i/2]
            }
        }
        let [_, w, _, _] = h.dims();
        h.mean_dims(&[2, 3]).reshape([b, w]) // [b, w, 1, 1] → [b, w]
    }

    /// Class logits.
    ///
    /// # Shapes
    /// - `x`: `[b, c·r·r]`; returns `[b, n_classes]`
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.head.forward(self.features(x))
    }
}

/// Optimisation settings of [`train_classifier`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassifierTrainConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Images per batch.
    pub batch_size: usize,
    /// AdamW learning rate (cosine-decayed to 5 % over the run).
    pub lr: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Seed of the shuffling.
    pub seed: u64,
}

impl Default for ClassifierTrainConfig {
    fn default() -> Self {
        ClassifierTrainConfig {
            epochs: 3,
            batch_size: 128,
            lr: 2e-3,
            weight_decay: 1e-4,
            seed: 0,
        }
    }
}

/// Learning rate at `step` of `total`: cosine decay from `lr` to `0.05 lr`,
/// `lr · (0.05 + 0.95 · ½ (1 + cos(π step / total)))`.
pub fn cosine_lr(lr: f64, step: usize, total: usize) -> f64 {
    let t = step as f64 / total.max(1) as f64;
    lr * (0.05 + 0.95 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()))
}

/// What one step reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassifierStepMetrics {
    /// 1-based step.
    pub step: usize,
    /// 1-based epoch.
    pub epoch: usize,
    /// Cross-entropy of the batch.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
}

fn check_data(config: &ClassifierConfig, data: &ImageSet) -> Result<Vec<u32>, ClassifierError> {
    let bad = |m: String| Err(ClassifierError::Data(m));
    if (data.channels, data.height, data.width)
        != (config.channels, config.resolution, config.resolution)
    {
        return bad(format!(
            "images are {}×{}×{} but the classifier expects {}×{}×{}",
            data.channels,
            data.height,
            data.width,
            config.channels,
            config.resolution,
            config.resolution
        ));
    }
    let Some(labels) = &data.labels else {
        return bad(
            "the images have no labels; use a labelled source (IDX pair or PNG class folders)"
                .into(),
        );
    };
    if let Some(l) = labels.iter().find(|&&l| l as usize >= config.n_classes) {
        return bad(format!("label {l} ≥ n_classes {}", config.n_classes));
    }
    if data.n == 0 {
        return bad("no images".into());
    }
    Ok(labels.clone())
}

/// The rows `idx` of a flat `[n, dim]` buffer as a `[idx.len(), dim]` tensor.
fn rows<B: Backend>(pixels: &[f32], dim: usize, idx: &[usize], device: &B::Device) -> Tensor<B, 2> {
    let mut v = Vec::with_capacity(idx.len() * dim);
    for &i in idx {
        v.extend_from_slice(&pixels[i * dim..(i + 1) * dim]);
    }
    Tensor::from_data(TensorData::new(v, [idx.len(), dim]), device)
}

/// Trains `model` on labelled `data` (pixels in [−1, 1]) with cross-entropy and AdamW; calls
/// `observe` after every step (an error from it stops training).
pub fn train_classifier<B, F>(
    mut model: Classifier<B>,
    data: &ImageSet,
    config: &ClassifierTrainConfig,
    device: &B::Device,
    mut observe: F,
) -> Result<Classifier<B>, ClassifierError>
where
    B: AutodiffBackend,
    F: FnMut(&ClassifierStepMetrics) -> Result<(), Box<dyn std::error::Error + Send + Sync>>,
{
    if config.epochs == 0 || config.batch_size == 0 || !(config.lr > 0.0 && config.lr.is_finite()) {
        return Err(ClassifierError::Config(format!(
            "need epochs ≥ 1, batch_size ≥ 1 and lr > 0; got {}, {}, {}",
            config.epochs, config.batch_size, config.lr
        )));
    }
    let labels = check_data(&model.config, data)?;
    let dim = data.dim();
    let mut optim = AdamWConfig::new()
        .with_weight_decay(config.weight_decay as f32)
        .init::<B, Classifier<B>>();
    let ce = CrossEntropyLossConfig::new().init(device);
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let per_epoch = data.n.div_ceil(config.batch_size);
    let total = per_epoch * config.epochs;
    let mut step = 0;
    let mut order: Vec<usize> = (0..data.n).collect();
    for epoch in 1..=config.epochs {
        order.shuffle(&mut rng);
        for chunk in order.chunks(config.batch_size) {
            step += 1;
            // 1. a shuffled batch
            let x = rows::<B>(&data.pixels, dim, chunk, device); // [b, dim]
            let y: Vec<i64> = chunk.iter().map(|&i| labels[i] as i64).collect();
            let y = Tensor::<B, 1, Int>::from_data(TensorData::new(y, [chunk.len()]), device);
            // 2. cross-entropy, one AdamW step at the cosine-decayed rate
            let loss = ce.forward(model.forward(x), y);
            let value = loss.clone().into_scalar().elem::<f64>();
            if !value.is_finite() {
                return Err(ClassifierError::NonFinite { step, loss: value });
            }
            let lr = cosine_lr(config.lr, step - 1, total);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(lr, model, grads);
            // 3. report
            let m = ClassifierStepMetrics {
                step,
                epoch,
                loss: value,
                lr,
            };
            observe(&m).map_err(ClassifierError::Observer)?;
        }
    }
    Ok(model)
}

/// Runs `f` on consecutive batches of `pixels` (`[n, dim]`) and concatenates the rows it
/// returns (`[batch, k]` each) into a flat `n · k` buffer.
fn batched<B: Backend>(
    pixels: &[f32],
    dim: usize,
    batch: usize,
    device: &B::Device,
    f: impl Fn(Tensor<B, 2>) -> Tensor<B, 2>,
) -> Vec<f32> {
    let n = pixels.len() / dim;
    let mut out = Vec::new();
    let idx: Vec<usize> = (0..n).collect();
    for chunk in idx.chunks(batch.max(1)) {
        let x = rows::<B>(pixels, dim, chunk, device);
        out.extend(
            f(x).into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .expect("converted to f32"),
        );
    }
    out
}

/// Penultimate features of every image, flat row-major `n · feature_dim`, in f64 for the
/// metrics.
pub fn extract_features<B: Backend>(
    model: &Classifier<B>,
    pixels: &[f32],
    batch: usize,
    device: &B::Device,
) -> Vec<f64> {
    batched(pixels, model.config.dim(), batch, device, |x| {
        model.features(x)
    })
    .into_iter()
    .map(f64::from)
    .collect()
}

/// Predicted class of every image (argmax of the logits).
pub fn predict<B: Backend>(
    model: &Classifier<B>,
    pixels: &[f32],
    batch: usize,
    device: &B::Device,
) -> Vec<usize> {
    let k = model.config.n_classes;
    batched(pixels, model.config.dim(), batch, device, |x| {
        model.forward(x)
    })
    .chunks_exact(k)
    .map(|row| {
        row.iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 { (i, v) } else { best }
            })
            .0
    })
    .collect()
}

/// Share of `predicted` equal to `labels`.
pub fn accuracy(predicted: &[usize], labels: &[u32]) -> f64 {
    let hits = predicted
        .iter()
        .zip(labels)
        .filter(|(p, l)| **p == **l as usize)
        .count();
    hits as f64 / predicted.len().max(1) as f64
}

/// Accuracy of `model` on labelled `data`, evaluated without autodiff.
pub fn evaluate<B: AutodiffBackend>(
    model: &Classifier<B>,
    data: &ImageSet,
    device: &B::Device,
) -> Result<f64, ClassifierError> {
    let labels = check_data(&model.config, data)?;
    let inner = model.valid();
    Ok(accuracy(
        &predict(&inner, &data.pixels, 256, device),
        &labels,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use fdistill_data::load_image_source;
    use fdistill_train::checkpoint::{load_module, save_module};
    use std::path::Path;

    type B = Flex;
    type A = Autodiff<Flex>;

    /// The 1000-image fixture, padded to 32×32 and box-downsampled to 16×16 (fast tests).
    fn fixture16() -> ImageSet {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/fashion-mnist-t10k-first1000");
        load_image_source(&format!(
            "idx:{},{}@16",
            dir.join("t10k-images-idx3-ubyte-first1000.gz").display(),
            dir.join("t10k-labels-idx1-ubyte-first1000.gz").display()
        ))
        .unwrap()
    }

    fn split(set: &ImageSet, from: usize, to: usize) -> ImageSet {
        ImageSet {
            n: to - from,
            pixels: set.pixels[from * set.dim()..to * set.dim()].to_vec(),
            labels: set.labels.as_ref().map(|l| l[from..to].to_vec()),
            ..set.clone()
        }
    }

    #[test]
    fn cosine_lr_and_accuracy_closed_forms() {
        assert_eq!(cosine_lr(1.0, 0, 10), 1.0);
        assert!((cosine_lr(1.0, 10, 10) - 0.05).abs() < 1e-15);
        assert!((cosine_lr(1.0, 5, 10) - 0.525).abs() < 1e-15);
        assert_eq!(accuracy(&[0, 1, 2, 2], &[0, 1, 1, 2]), 0.75);
    }

    #[test]
    fn trains_above_chance_and_round_trips() {
        let _rng = crate::test_rng::seeded(7);
        // 800 training images for 4 epochs: the loss must fall and held-out accuracy must beat
        // chance (10 %) by a wide margin; a saved checkpoint must give the same features.
        // The init draws from flex's global RNG, held and seeded for this test by `_rng`:
        // seed 7 gives accuracy 0.475 and loss 2.32 → 1.27 on every run (unseeded runs gave
        // 0.36–0.51 and a loss ratio of 0.55–0.8; an untrained or broken net stays at ~0.1
        // and ratio ~1).
        let device = Default::default();
        let set = fixture16();
        let (train, held) = (split(&set, 0, 800), split(&set, 800, 1000));
        let cfg = ClassifierConfig {
            widths: vec![16, 32],
            ..ClassifierConfig::fashion_mnist(16)
        };
        cfg.check().unwrap();
        let tc = ClassifierTrainConfig {
            epochs: 4,
            batch_size: 40,
            lr: 1e-2,
            ..Default::default()
        };
        let mut losses = Vec::new();
        let model = train_classifier(cfg.init::<A>(&device), &train, &tc, &device, |m| {
            losses.push(m.loss);
            Ok(())
        })
        .unwrap();
        assert_eq!(losses.len(), 80);
        let first = losses[..5].iter().sum::<f64>() / 5.0;
        let last = losses[75..].iter().sum::<f64>() / 5.0;
        let acc = evaluate(&model, &held, &device).unwrap();
        eprintln!("loss {first} → {last}, held-out accuracy {acc}");
        assert!(last < 0.85 * first, "{first} → {last}");
        assert!(acc > 0.3, "held-out accuracy {acc}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("classifier.safetensors");
        let inner = model.valid();
        save_module::<B, _>(&inner, &path).unwrap();
        let loaded = load_module::<B, _>(cfg.init::<B>(&device), &path).unwrap();
        let a = extract_features(&inner, &held.pixels[..10 * 256], 4, &device);
        let b = extract_features(&loaded, &held.pixels[..10 * 256], 4, &device);
        assert_eq!(a.len(), 10 * 32);
        assert_eq!(a, b);
    }

    #[test]
    fn bad_data_and_configs_are_errors() {
        let _rng = crate::test_rng::seeded(101);
        let device = Default::default();
        let set = fixture16();
        let cfg = ClassifierConfig::fashion_mnist(32);
        let e = train_classifier(
            cfg.init::<A>(&device),
            &set,
            &ClassifierTrainConfig::default(),
            &device,
            |_| Ok(()),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("1×16×16") && e.contains("1×32×32"), "{e}");
        let unlabelled = ImageSet {
            labels: None,
            ..set
        };
        let e = evaluate(
            &ClassifierConfig::fashion_mnist(16).init::<A>(&device),
            &unlabelled,
            &device,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no labels"), "{e}");
        assert!(ClassifierConfig::fashion_mnist(30).check().is_err());
    }
}
