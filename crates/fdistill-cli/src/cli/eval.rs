//! `fdistill eval --samples FILE (--target NAME | --reference FILE) [--json]`, and for images
//! `fdistill eval --images SAMPLES.npy --classifier DIR [--reference SPEC] [--json]`
//! (implemented in `classifier.rs`).

use std::path::PathBuf;

use clap::Args;
use fdistill::data::{DataSource, TrainingData, load_file};
use fdistill::metrics::samples::{
    energy_distance, mean_log_density, mmd2, mode_report, sliced_wasserstein,
};
use rand::SeedableRng;
use serde::Serialize;

use super::CliError;

/// Arguments of `fdistill eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Samples to evaluate (.csv or .npy, one sample per row).
    #[arg(long, required_unless_present = "images", conflicts_with = "images")]
    pub samples: Option<PathBuf>,
    /// Image samples to evaluate (.npy, one flattened image per row, pixels in [−1, 1]) in the
    /// feature space of --classifier.
    #[arg(long, requires = "classifier")]
    pub images: Option<PathBuf>,
    /// Run directory of `fdistill classifier train` (the metric network) for --images.
    #[arg(long, requires = "images")]
    pub classifier: Option<PathBuf>,
    /// A built-in target: mode metrics for Gaussian mixtures, distances against fresh exact
    /// samples. --samples needs --target or --reference.
    #[arg(long, conflicts_with_all = ["reference", "images"])]
    pub target: Option<String>,
    /// A reference sample file for the distances; with --images, real images as an image
    /// source (default: the classifier's test set, e.g. fashion-mnist-test).
    #[arg(long)]
    pub reference: Option<String>,
    /// Seed of the fresh exact reference samples drawn for --target.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// With --target: also report the real-vs-real floor (a second fresh exact sample set of
    /// the same size against the same reference) under the key `floor`.
    #[arg(long, requires = "target")]
    pub floor: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// The real-vs-real floor of the distances (SPEC §8).
#[derive(Debug, Serialize)]
pub struct Floor {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_log_density: Option<f64>,
    pub mmd2: f64,
    pub energy_distance: f64,
    pub sliced_wasserstein: f64,
}

/// How a mode counts as covered ([`mode_report`]), printed with the mode metrics.
pub const COVERAGE_RULE: &str = "a mode counts as covered when at least 50 % of its expected \
    mass (its weight × the share of a Gaussian within 3 std) lies within 3 std of its mean";

/// The report: the keys that apply.
#[derive(Debug, Serialize, Default)]
pub struct EvalReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modes_covered: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modes_total: Option<usize>,
    /// [`COVERAGE_RULE`], with the mode metrics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage_rule: Option<&'static str>,
    /// The target's mixture weight of each mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_mode_weight: Option<Vec<f64>>,
    /// The share of samples within 3 std of each mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_mode_mass: Option<Vec<f64>>,
    /// The share each mode should hold: weight × P(within 3 std).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_mode_expected: Option<Vec<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_log_density: Option<f64>,
    pub mmd2: f64,
    pub energy_distance: f64,
    pub sliced_wasserstein: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floor: Option<Floor>,
}

/// Runs `fdistill eval`.
pub fn run(args: EvalArgs) -> Result<(), CliError> {
    let usage = |e: &dyn std::fmt::Display| CliError::Usage(e.to_string());
    if let (Some(images), Some(classifier)) = (&args.images, &args.classifier) {
        return super::classifier::eval_images(
            images,
            classifier,
            args.reference.as_deref(),
            args.seed,
            args.json,
        );
    }
    let samples_path = args
        .samples
        .clone()
        .ok_or_else(|| CliError::Usage("give --samples FILE or --images FILE".into()))?;
    if args.target.is_none() && args.reference.is_none() {
        return Err(CliError::Usage(
            "--samples needs something to compare against: --target NAME (a built-in target: \
             mode coverage and distances against fresh exact samples) or --reference FILE (a \
             .csv/.npy sample set: distances)"
                .into(),
        ));
    }
    let samples = load_file(&samples_path).map_err(|e| usage(&e))?;
    let dim = samples.dim;
    let mut report = EvalReport::default();
    let (reference, what) = match (&args.target, &args.reference) {
        (Some(name), _) => {
            let target = match DataSource::parse(name) {
                DataSource::Target(_) => {
                    DataSource::parse(name).resolve().map_err(|e| usage(&e))?
                }
                DataSource::File(_) | DataSource::Images(_) => {
                    return Err(CliError::Usage(format!(
                        "unknown target `{name}` (for images use --images with --classifier); built-in targets: {} (use --reference for a file)",
                        fdistill::data::BUILTIN_TARGETS.join(", ")
                    )));
                }
            };
            if target.dim() != dim {
                return Err(CliError::Usage(format!(
                    "`{}` has samples of dimension {dim} but target `{name}` has dimension {}",
                    samples_path.display(),
                    target.dim()
                )));
            }
            if let TrainingData::Mixture(g) = &target {
                let modes = mode_report(g, &samples.values);
                report.modes_covered = Some(modes.modes_covered);
                report.modes_total = Some(modes.modes_total);
                report.coverage_rule = Some(COVERAGE_RULE);
                report.per_mode_weight = Some(g.weights().to_vec());
                report.per_mode_mass = Some(modes.per_mode_mass);
                report.per_mode_expected = Some(modes.expected_mass);
                report.mean_log_density = Some(mean_log_density(g, &samples.values));
            }
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
            let reference = target.sample(samples.len(), &mut rng);
            if args.floor {
                let exact = target.sample(samples.len(), &mut rng);
                report.floor = Some(Floor {
                    mean_log_density: target.mixture().map(|g| mean_log_density(g, &exact)),
                    mmd2: mmd2(&exact, &reference, dim),
                    energy_distance: energy_distance(&exact, &reference, dim),
                    sliced_wasserstein: sliced_wasserstein(&exact, &reference, dim),
                });
            }
            (
                reference,
                format!("{} fresh exact samples of {name}", samples.len()),
            )
        }
        (None, Some(path)) => {
            let path = PathBuf::from(path);
            let r = load_file(&path).map_err(|e| usage(&e))?;
            if r.dim != dim {
                return Err(CliError::Usage(format!(
                    "`{}` has dimension {dim} but reference `{}` has dimension {}",
                    samples_path.display(),
                    path.display(),
                    r.dim
                )));
            }
            (r.values, format!("reference {}", path.display()))
        }
        (None, None) => {
            return Err(CliError::Usage(
                "give --target NAME or --reference FILE".into(),
            ));
        }
    };
    report.mmd2 = mmd2(&samples.values, &reference, dim);
    report.energy_distance = energy_distance(&samples.values, &reference, dim);
    report.sliced_wasserstein = sliced_wasserstein(&samples.values, &reference, dim);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serialises")
        );
    } else {
        println!(
            "{} samples of dimension {dim} against {what}",
            samples.len()
        );
        if let (Some(c), Some(t)) = (report.modes_covered, report.modes_total) {
            println!("modes covered       {c}/{t}  ({COVERAGE_RULE})");
        }
        let row = |name: &str, v: &Option<Vec<f64>>| {
            if let Some(m) = v {
                let cells: Vec<String> = m.iter().map(|v| format!("{v:.3}")).collect();
                println!("{name:<20}[{}]", cells.join(", "));
            }
        };
        row("per-mode weight", &report.per_mode_weight);
        row("per-mode expected", &report.per_mode_expected);
        row("per-mode mass", &report.per_mode_mass);
        if let Some(l) = report.mean_log_density {
            println!("mean log-density    {l:.4}");
        }
        println!("MMD² (RBF 0.25–4)   {:.6}", report.mmd2);
        println!("energy distance     {:.6}", report.energy_distance);
        println!("sliced W₂           {:.6}", report.sliced_wasserstein);
        if let Some(f) = &report.floor {
            println!("floor (exact vs exact):");
            if let Some(l) = f.mean_log_density {
                println!("  mean log-density  {l:.4}");
            }
            println!("  MMD²              {:.6}", f.mmd2);
            println!("  energy distance   {:.6}", f.energy_distance);
            println!("  sliced W₂         {:.6}", f.sliced_wasserstein);
        }
    }
    Ok(())
}
