//! `fdistill classifier train --data SPEC --out DIR`: the metric network for images, and the
//! image branch of `fdistill eval --images SAMPLES.npy --classifier DIR`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use clap::{Args, Subcommand};
use fdistill::backends::{BackendTask, DeviceSpec, dispatch};
use fdistill::data::images::ImageSet;
use fdistill::data::{is_image_source, load_image_source, load_npy};
use fdistill::metrics::features::{
    class_coverage, class_kl_to_uniform, density_coverage, frechet_distance_of_sets, kid,
    precision_recall,
};
use fdistill::nets::classifier::{
    ClassifierTrainConfig, accuracy, extract_features, predict, train_classifier,
};
use fdistill::nets::{Classifier, ClassifierConfig};
use fdistill::train::checkpoint::{RunDir, load_module, save_module, write_json};
use fdistill::train::guard::WriteMode;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::CliError;

/// Arguments of `fdistill classifier`.
#[derive(Debug, Args)]
pub struct ClassifierArgs {
    #[command(subcommand)]
    pub action: ClassifierAction,
}

/// `fdistill classifier` subcommands.
#[derive(Debug, Subcommand)]
pub enum ClassifierAction {
    /// Train the image metric network (a small CNN) and report its test accuracy.
    Train(TrainArgs),
}

/// Arguments of `fdistill classifier train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Labelled training images: fashion-mnist[:DIR], idx:IMAGES,LABELS, png:DIR, each
    /// optionally @SIDE (e.g. fashion-mnist@16).
    #[arg(long)]
    pub data: String,
    /// Labelled test images; defaults to fashion-mnist-test (same DIR and @SIDE) when --data is
    /// Fashion-MNIST.
    #[arg(long)]
    pub test: Option<String>,
    /// Run directory to create (config.json, metrics.jsonl, checkpoint/, result.json). A
    /// directory that holds a run is refused unless --overwrite.
    #[arg(long)]
    pub out: PathBuf,
    /// Delete the run in --out (config.json, metrics, checkpoint, result.json) and start afresh.
    #[arg(long)]
    pub overwrite: bool,
    /// Passes over the training set.
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// AdamW learning rate (cosine-decayed).
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f64,
    /// Channels of the CNN stages, comma-separated (the last is the feature dimension).
    #[arg(long, default_value = "32,64,128", value_delimiter = ',')]
    pub widths: Vec<usize>,
    /// Use only the first N training images.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Seed of the initial weights and of the shuffling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Device: flex (CPU, default), candle, cuda[:N], wgpu.
    #[arg(long, default_value = "flex")]
    pub device: String,
}

/// `RUN/config.json` of a classifier run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassifierRunConfig {
    /// Always `"classifier"`.
    pub kind: String,
    /// The `--data` value.
    pub data: String,
    /// The test source, if any (also the default reference of `eval --images`).
    pub test: Option<String>,
    pub net: ClassifierConfig,
    pub train: ClassifierTrainConfig,
}

/// `RUN/result.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassifierResult {
    pub train_images: usize,
    pub test_images: usize,
    pub test_accuracy: Option<f64>,
    pub train_seconds: f64,
}

/// Runs `fdistill classifier`.
pub fn run(args: ClassifierArgs) -> Result<(), CliError> {
    match args.action {
        ClassifierAction::Train(a) => train(a),
    }
}

fn usage(e: impl std::fmt::Display) -> CliError {
    CliError::Usage(e.to_string())
}

/// The Fashion-MNIST test split matching a training source (`fashion-mnist:DIR@16` →
/// `fashion-mnist-test:DIR@16`).
fn default_test(data: &str) -> Option<String> {
    data.strip_prefix("fashion-mnist")
        .filter(|rest| !rest.starts_with("-test"))
        .map(|rest| format!("fashion-mnist-test{rest}"))
}

fn parse_device(s: &str) -> Result<DeviceSpec, CliError> {
    s.parse()
        .map_err(|e: fdistill::backends::DeviceError| usage(e))
}

fn train(args: TrainArgs) -> Result<(), CliError> {
    let device = parse_device(&args.device)?;
    if !is_image_source(&args.data) {
        return Err(usage(format!(
            "--data `{}` is not an image source; use fashion-mnist[:DIR], idx:IMAGES,LABELS or png:DIR",
            args.data
        )));
    }
    let mut data = load_image_source(&args.data).map_err(usage)?;
    if let Some(n) = args.limit {
        let n = n.min(data.n).max(1);
        data = ImageSet {
            n,
            pixels: data.pixels[..n * data.dim()].to_vec(),
            labels: data.labels.map(|l| l[..n].to_vec()),
            ..data
        };
    }
    if data.height != data.width {
        return Err(usage(format!(
            "images are {}×{}; the classifier needs square images",
            data.height, data.width
        )));
    }
    let test_spec = args.test.clone().or_else(|| default_test(&args.data));
    let test = test_spec
        .as_deref()
        .map(load_image_source)
        .transpose()
        .map_err(usage)?;
    let net = ClassifierConfig {
        resolution: data.height,
        channels: data.channels,
        widths: args.widths.clone(),
        n_classes: data.class_names.len().max(2),
    };
    net.check().map_err(usage)?;
    let train_cfg = ClassifierTrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        seed: args.seed,
        ..Default::default()
    };
    let config = ClassifierRunConfig {
        kind: "classifier".into(),
        data: args.data.clone(),
        test: test_spec,
        net,
        train: train_cfg,
    };
    let guard = super::run_guard::acquire(
        &args.out,
        WriteMode::from_flags(false, args.overwrite),
        &["result.json"],
        "",
    )?;
    let run = RunDir::create(guard.run().root()).map_err(usage)?;
    run.write_config(&config).map_err(anyhow::Error::from)?;
    let task = TrainTask {
        config,
        data,
        test,
        run,
    };
    let result = dispatch(&device, task).map_err(usage)?;
    drop(guard);
    result
}

struct TrainTask {
    config: ClassifierRunConfig,
    data: ImageSet,
    test: Option<ImageSet>,
    run: RunDir,
}

#[derive(Serialize)]
struct MetricsLine {
    step: usize,
    epoch: usize,
    loss: f64,
    lr: f64,
    elapsed_s: f64,
}

impl BackendTask for TrainTask {
    type Output = Result<(), CliError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<(), CliError> {
        let TrainTask {
            config,
            data,
            test,
            run,
        } = self;
        let start = Instant::now();
        // The initial weights come from the backend's RNG: seed it, so that --seed fixes the
        // whole run (shuffling and initialisation) as it does for `teacher train`.
        B::seed(&device, config.train.seed);
        let model = config.net.init::<B>(&device);
        let model = train_classifier(model, &data, &config.train, &device, |m| {
            if m.step % 20 == 0 {
                let elapsed_s = start.elapsed().as_secs_f64();
                run.append_metrics(&MetricsLine {
                    step: m.step,
                    epoch: m.epoch,
                    loss: m.loss,
                    lr: m.lr,
                    elapsed_s,
                })?;
                eprintln!(
                    "epoch {} step {} loss {:.4} ({elapsed_s:.0} s)",
                    m.epoch, m.step, m.loss
                );
            }
            Ok(())
        })
        .map_err(|e| CliError::Runtime(e.into()))?;
        let train_seconds = start.elapsed().as_secs_f64();
        let inner = model.valid();
        save_module::<B::InnerBackend, _>(&inner, &run.checkpoint_file("model.safetensors"))
            .map_err(anyhow::Error::from)?;
        let test_accuracy = match &test {
            Some(t) => {
                let labels = t.labels.as_ref().ok_or_else(|| {
                    usage("the test images have no labels; use a labelled --test source")
                })?;
                if t.dim() != data.dim() {
                    return Err(usage(format!(
                        "test images have dimension {} but training images {}; use the same @SIDE",
                        t.dim(),
                        data.dim()
                    )));
                }
                Some(accuracy(&predict(&inner, &t.pixels, 256, &device), labels))
            }
            None => None,
        };
        let result = ClassifierResult {
            train_images: data.n,
            test_images: test.as_ref().map_or(0, |t| t.n),
            test_accuracy,
            train_seconds,
        };
        write_json(&run.root().join("result.json"), &result).map_err(anyhow::Error::from)?;
        match test_accuracy {
            Some(a) => println!(
                "test accuracy {:.2} % on {} images ({} training images, {train_seconds:.0} s)",
                100.0 * a,
                result.test_images,
                data.n
            ),
            None => println!(
                "trained on {} images in {train_seconds:.0} s (no test set)",
                data.n
            ),
        }
        Ok(())
    }
}

/// Reads a classifier run directory.
fn read_classifier_run(dir: &Path) -> Result<(RunDir, ClassifierRunConfig), CliError> {
    let run = RunDir::open(dir).map_err(usage)?;
    let config: ClassifierRunConfig = run.read_config().map_err(usage)?;
    if config.kind != "classifier" {
        return Err(usage(format!(
            "`{}` is a `{}` run; pass the --out of `fdistill classifier train`",
            dir.display(),
            config.kind
        )));
    }
    config.net.check().map_err(usage)?;
    Ok((run, config))
}

/// One set of image metrics (SPEC §8).
#[derive(Debug, Clone, Serialize)]
pub struct ImageMetrics {
    /// Fréchet distance of Gaussian fits in classifier features (not FID).
    pub frechet_distance: f64,
    pub kid: f64,
    pub kid_std: f64,
    pub precision: f64,
    pub recall: f64,
    pub density: f64,
    pub coverage: f64,
    pub class_coverage: f64,
    pub class_kl_to_uniform: f64,
}

/// The report of `eval --images`: samples against real images, and the real-vs-real floor
/// (a second, disjoint set of real images of the same size against the same real set).
#[derive(Debug, Clone, Serialize)]
pub struct ImageReport {
    pub samples: usize,
    pub reference: String,
    pub reference_images: usize,
    pub feature_dim: usize,
    pub metrics: ImageMetrics,
    pub floor: ImageMetrics,
}

/// KID subset size and count.
/// KID subsets: 1000 images each (the usual size), but at most half of the smaller set, so
/// that the subsets differ and `kid_std` measures something (with subsets as large as the
/// sets every subset is the whole set and the spread is 0).
const KID_SUBSET: usize = 1000;
const KID_SUBSETS: usize = 50;

fn kid_subset_size(n: usize) -> usize {
    KID_SUBSET.min(n / 2).max(2)
}

fn metrics(
    real: &[f64],
    fake: &[f64],
    dim: usize,
    fake_classes: &[usize],
    n_classes: usize,
) -> ImageMetrics {
    let n = (fake.len() / dim).min(real.len() / dim);
    let (k_mean, k_std) = kid(real, fake, dim, kid_subset_size(n), KID_SUBSETS, 0);
    let (precision, recall) = precision_recall(real, fake, dim, 3);
    let (density, coverage) = density_coverage(real, fake, dim, 5);
    ImageMetrics {
        frechet_distance: frechet_distance_of_sets(real, fake, dim),
        kid: k_mean,
        kid_std: k_std,
        precision,
        recall,
        density,
        coverage,
        class_coverage: class_coverage(fake_classes, n_classes),
        class_kl_to_uniform: class_kl_to_uniform(fake_classes, n_classes),
    }
}

/// `fdistill eval --images SAMPLES.npy --classifier DIR [--reference SPEC] [--json]`.
pub fn eval_images(
    samples: &Path,
    classifier: &Path,
    reference: Option<&str>,
    seed: u64,
    json: bool,
) -> Result<(), CliError> {
    let (run, config) = read_classifier_run(classifier)?;
    let fake = load_npy(samples).map_err(usage)?;
    if fake.dim != config.net.dim() {
        return Err(usage(format!(
            "`{}` holds samples of dimension {} but the classifier takes {}×{}×{} = {} pixels; \
             sample at the classifier's resolution",
            samples.display(),
            fake.dim,
            config.net.channels,
            config.net.resolution,
            config.net.resolution,
            config.net.dim()
        )));
    }
    let reference = reference
        .map(str::to_string)
        .or(config.test.clone())
        .ok_or_else(|| usage("give --reference SPEC (the classifier run has no test set)"))?;
    let real = load_image_source(&reference).map_err(usage)?;
    if real.dim() != fake.dim {
        return Err(usage(format!(
            "reference `{reference}` has dimension {} but the samples {}",
            real.dim(),
            fake.dim
        )));
    }
    let n = fake.len();
    if real.n < 2 * n.min(real.n / 2) || real.n < 4 || n < 4 {
        return Err(usage(format!(
            "need ≥ 4 samples and ≥ 4 reference images; got {n} and {}",
            real.n
        )));
    }
    // Two disjoint random real sets: A (the reference every set is compared with) and B (the
    // floor's stand-in for the samples), each of min(n, |real|/2) images.
    let m = n.min(real.n / 2);
    let mut idx: Vec<usize> = (0..real.n).collect();
    idx.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    let dim = real.dim();
    let take = |ids: &[usize]| -> Vec<f32> {
        ids.iter()
            .flat_map(|&i| real.pixels[i * dim..(i + 1) * dim].iter().copied())
            .collect()
    };
    let (real_a, real_b) = (take(&idx[..m]), take(&idx[m..2 * m]));
    let fake_pixels: Vec<f32> = fake.values.iter().map(|&v| v as f32).collect();
    let task = FeatureTask {
        net: config.net.clone(),
        weights: run.checkpoint_file("model.safetensors"),
        sets: vec![real_a, real_b, fake_pixels],
    };
    let device = DeviceSpec::Flex;
    let mut out = dispatch(&device, task).map_err(usage)?.map_err(usage)?;
    let (fake_f, fake_c) = out.pop().expect("three sets");
    let (b_f, b_c) = out.pop().expect("three sets");
    let (a_f, _) = out.pop().expect("three sets");
    let fd = config.net.feature_dim();
    let k = config.net.n_classes;
    let report = ImageReport {
        samples: n,
        reference: reference.clone(),
        reference_images: m,
        feature_dim: fd,
        metrics: metrics(&a_f, &fake_f, fd, &fake_c, k),
        floor: metrics(&a_f, &b_f, fd, &b_c, k),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serialises")
        );
        return Ok(());
    }
    println!(
        "{n} samples against {m} images of {reference} ({fd}-dimensional classifier features); \
         floor = {m} other real images against the same {m}"
    );
    println!("{:<44} {:>12} {:>12}", "metric", "samples", "floor");
    let (s, f) = (&report.metrics, &report.floor);
    let rows = [
        (
            "Fréchet distance (classifier features)",
            s.frechet_distance,
            f.frechet_distance,
        ),
        ("KID (cubic kernel)", s.kid, f.kid),
        ("precision (k = 3)", s.precision, f.precision),
        ("recall (k = 3)", s.recall, f.recall),
        ("density (k = 5)", s.density, f.density),
        ("coverage (k = 5)", s.coverage, f.coverage),
        ("class coverage", s.class_coverage, f.class_coverage),
        (
            "class-histogram KL to uniform",
            s.class_kl_to_uniform,
            f.class_kl_to_uniform,
        ),
    ];
    for (name, a, b) in rows {
        println!("{name:<44} {a:>12.5} {b:>12.5}");
    }
    Ok(())
}

/// Features and predicted classes of several image sets.
struct FeatureTask {
    net: ClassifierConfig,
    weights: PathBuf,
    sets: Vec<Vec<f32>>,
}

type FeaturesAndClasses = Vec<(Vec<f64>, Vec<usize>)>;

impl BackendTask for FeatureTask {
    type Output = Result<FeaturesAndClasses, fdistill::train::checkpoint::CheckpointError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let model: Classifier<B::InnerBackend> =
            load_module(self.net.init(&device), &self.weights)?;
        Ok(self
            .sets
            .iter()
            .map(|p| {
                (
                    extract_features(&model, p, 256, &device),
                    predict(&model, p, 256, &device),
                )
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// With 1000 samples per set (what `eval --images` uses) the KID subsets must differ, so
    /// that the reported spread is a spread; full-size subsets would all equal the whole set.
    #[test]
    fn kid_subsets_of_a_small_evaluation_differ() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let (n, d) = (1000, 4);
        let a = fdistill::core::random::standard_normal(n * d, &mut rng);
        let b = fdistill::core::random::standard_normal(n * d, &mut rng);
        assert_eq!(kid_subset_size(n), 500);
        assert_eq!(kid_subset_size(50_000), KID_SUBSET);
        let (_, spread) = kid(&a, &b, d, kid_subset_size(n), KID_SUBSETS, 0);
        assert!(spread > 1e-6, "spread {spread}");
        let (_, full) = kid(&a, &b, d, n, KID_SUBSETS, 0);
        assert!(
            full < 1e-9,
            "full-size subsets are all the same set: {full}"
        );
    }
}
