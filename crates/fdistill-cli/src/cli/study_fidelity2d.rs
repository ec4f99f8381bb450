//! `fdistill study fidelity2d --out DIR`: the 2-D fidelity of one-step students (issue 15).
//!
//! For each target, teacher seed, candidate configuration, divergence and seed: train an MLP
//! teacher per (target, seed), distil it into a one-step student (`toy` preset plus the
//! candidate's overrides), evaluate teacher (Heun, 35 NFE) and students against fresh exact
//! samples of the target, and write `runs.csv`, `summary.csv`, `summary.md` and one scatter
//! per student of the first seed. Finished runs are reused, interrupted ones resumed, so a
//! second invocation with the same `--out` only evaluates.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Context;
use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use fdistill::backends::{BackendTask, DeviceSpec, dispatch};
use fdistill::core::gmm::GaussianMixture;
use fdistill::core::sampler::{SamplerKind, sample};
use fdistill::core::schedule::{RHO, SIGMA_MAX, SIGMA_MIN, karras_sigmas};
use fdistill::data::{BUILTIN_TARGETS, DataSource, TrainingData};
use fdistill::metrics::samples::{energy_distance, mean_log_density, mmd2, mode_report};
use fdistill::train::checkpoint::load_module;
use fdistill::train::distill::DistillConfig;
use fdistill::train::guard::WriteMode;
use fdistill::train::teacher::{TEACHER_EMA_FILE, teacher_checkpoint};
use fdistill_plot::{Scatter, scatter_over_data_png, scatter_png};
use rand::SeedableRng;

use super::CliError;
use super::demo::{Stage, stage_of};
use super::distill::{
    DistillArgs, merge, read_overrides_for, read_student_config, run_distill, student_samples,
    student_weights,
};
use super::teacher::{TrainArgs, read_run_config};

/// Heun NFE of the teachers' samples.
const TEACHER_NFE: usize = 35;
/// Seed of the latents of every model's evaluation samples.
const LATENT_SEED: u64 = 7;
/// The candidate that is the plain `toy` preset (no file).
const TOY: &str = "toy";
/// The `candidate` column of the teachers' rows.
const TEACHER: &str = "teacher";
/// What `--overwrite` deletes in the study directory besides the runs it retrains.
const STUDY_FILES: [&str; 4] = ["runs.csv", "summary.csv", "summary.md", "figures"];

/// Arguments of `fdistill study fidelity2d`.
#[derive(Debug, Args)]
pub struct Fidelity2dArgs {
    /// Output directory: teachers/TARGET-sSEED, runs/CANDIDATE/TARGET/DIVERGENCE-sSEED,
    /// runs.csv, summary.csv, summary.md, figures/. Finished runs in it are reused and
    /// interrupted ones resumed, so a second invocation only evaluates.
    #[arg(long)]
    pub out: PathBuf,
    /// Comma-separated built-in targets (as `fdistill teacher train --data`).
    #[arg(long, default_value = "ring8-unbalanced,grid25,two-moons")]
    pub targets: String,
    /// Comma-separated candidates: JSON (or TOML) files of `DistillConfig` overrides on the
    /// `toy` preset (as `fdistill distill --config`), named by their file stem; `toy` is the
    /// plain preset.
    #[arg(long, default_value = "toy")]
    pub candidates: String,
    /// Comma-separated divergences (registry names, `fdistill divergences`).
    #[arg(long, default_value = "reverse-kl,jensen-shannon,forward-kl")]
    pub divergences: String,
    /// Number of seeds: FIRST..FIRST+N (FIRST from --first-seed), for teachers and students.
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    pub first_seed: u64,
    /// Student iterations (default: the candidate's, else the `toy` preset's).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Teacher steps (default: the teacher's default).
    #[arg(long)]
    pub teacher_steps: Option<usize>,
    /// JSON file of teacher overrides for every teacher of the study (as `fdistill teacher
    /// train --config`: `{"net": {"hidden": 128, "depth": 3}}` for the library's smaller MLP);
    /// the seed is set per teacher. The students copy the teacher's network, so this sets
    /// their capacity too.
    #[arg(long)]
    pub teacher_config: Option<PathBuf>,
    /// Samples per model for the metrics, against as many fresh exact samples of the target.
    #[arg(long, default_value_t = 5000)]
    pub eval_samples: usize,
    /// Independent evaluation draws per model (≥ 1): draw k is a fresh set of --eval-samples
    /// samples (latent seed 7 + k) against its own fresh exact reference; MMD² and energy
    /// distance are the means over the draws, the mode metrics and the figures those of the
    /// first draw. Near the target one draw is mostly noise: on two-moons one teacher's
    /// MMD² ranged 1.0e-3 … 3.8e-3 over 8 draws of 5000 samples (docs/results.md).
    #[arg(long, default_value_t = 1)]
    pub eval_draws: usize,
    /// Retrain every teacher and student in --out (and delete the study's tables and
    /// figures first). Without it, finished runs are reused and interrupted ones resumed.
    #[arg(long)]
    pub overwrite: bool,
    /// Device: flex (CPU, default), candle, cuda[:N], wgpu.
    #[arg(long, default_value = "flex")]
    pub device: String,
}

/// A candidate configuration: its name and its overrides of the `toy` preset.
#[derive(Debug, Clone)]
struct Candidate {
    name: String,
    overrides: serde_json::Value,
}

/// What the study runs.
#[derive(Debug)]
struct Plan {
    targets: Vec<(String, TrainingData)>,
    candidates: Vec<Candidate>,
    divergences: Vec<String>,
    seeds: Vec<u64>,
}

fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// The `--teacher-config` object (an empty one without it), with a `teacher` object to hold
/// the seed.
fn teacher_overrides(path: Option<&Path>) -> Result<serde_json::Value, CliError> {
    let mut v = match path {
        None => serde_json::json!({}),
        Some(p) => read_overrides_for("--teacher-config", p)?,
    };
    let t = v
        .as_object_mut()
        .expect("read_overrides_for returns objects")
        .entry("teacher")
        .or_insert_with(|| serde_json::json!({}));
    if !t.is_object() {
        return Err(CliError::Usage(
            "--teacher-config: `teacher` must be an object of teacher settings".into(),
        ));
    }
    Ok(v)
}

fn teacher_dir(out: &Path, target: &str, seed: u64) -> PathBuf {
    out.join("teachers").join(format!("{target}-s{seed}"))
}

fn student_dir(out: &Path, candidate: &str, target: &str, div: &str, seed: u64) -> PathBuf {
    out.join("runs")
        .join(candidate)
        .join(target)
        .join(format!("{div}-s{seed}"))
}

/// `DIR.config.json` next to a run directory `DIR`.
fn config_beside(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().expect("run dirs have names").to_os_string();
    name.push(".config.json");
    dir.with_file_name(name)
}

/// The candidate's overrides with the student's seed: what its run's `--config` holds.
fn student_overrides(candidate: &Candidate, seed: u64) -> serde_json::Value {
    let mut v = candidate.overrides.clone();
    merge(&mut v, serde_json::json!({ "driver": { "seed": seed } }));
    v
}

impl Plan {
    /// Parses and checks everything before anything is trained.
    fn new(args: &Fidelity2dArgs) -> Result<Plan, CliError> {
        let mut targets = Vec::new();
        for name in split_list(&args.targets) {
            let data = match DataSource::parse(&name) {
                DataSource::Target(_) => DataSource::parse(&name)
                    .resolve()
                    .map_err(|e| CliError::Usage(e.to_string()))?,
                _ => {
                    return Err(CliError::Usage(format!(
                        "--targets: unknown target `{name}`; built-in targets: {}",
                        BUILTIN_TARGETS.join(", ")
                    )));
                }
            };
            if targets.iter().any(|(n, _)| *n == name) {
                return Err(CliError::Usage(format!(
                    "--targets: `{name}` is listed twice"
                )));
            }
            targets.push((name, data));
        }
        let mut candidates: Vec<Candidate> = Vec::new();
        for spec in split_list(&args.candidates) {
            let candidate = if spec == TOY {
                Candidate {
                    name: TOY.into(),
                    overrides: serde_json::json!({}),
                }
            } else {
                let path = PathBuf::from(&spec);
                let name = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| {
                        CliError::Usage(format!("--candidates: `{spec}` names no file"))
                    })?
                    .to_string();
                Candidate {
                    overrides: read_overrides_for("--candidates", &path)?,
                    name,
                }
            };
            if candidate.name == TEACHER {
                return Err(CliError::Usage(format!(
                    "--candidates: `{spec}`: the name `{TEACHER}` is taken by the teachers' rows; \
                     rename the file"
                )));
            }
            if candidates.iter().any(|c| c.name == candidate.name) {
                return Err(CliError::Usage(format!(
                    "--candidates: two candidates are named `{}` (names are file stems; `{TOY}` \
                     is the plain preset)",
                    candidate.name
                )));
            }
            candidates.push(candidate);
        }
        let divergences = split_list(&args.divergences);
        let seeds: Vec<u64> = (args.first_seed..args.first_seed + args.seeds).collect();
        if targets.is_empty() || candidates.is_empty() || divergences.is_empty() || seeds.is_empty()
        {
            return Err(CliError::Usage(
                "nothing to run: --targets, --candidates, --divergences and --seeds must each \
                 name at least one"
                    .into(),
            ));
        }
        if args.eval_samples < 2 {
            return Err(CliError::Usage("--eval-samples must be ≥ 2".into()));
        }
        if args.eval_draws == 0 {
            return Err(CliError::Usage(
                "--eval-draws must be ≥ 1 (1: one sample set per model, as before)".into(),
            ));
        }
        // Every student configuration resolves (as `fdistill distill` will resolve it).
        let preset = DistillConfig::preset(TOY).map_err(|e| CliError::Usage(e.to_string()))?;
        let preset = serde_json::to_value(&preset).expect("config serialises");
        for c in &candidates {
            for div in &divergences {
                let mut v = preset.clone();
                merge(&mut v, student_overrides(c, seeds[0]));
                let mut d: DistillConfig = serde_json::from_value(v).map_err(|e| {
                    CliError::Usage(format!(
                        "--candidates: candidate `{}`: {e} (keys are DistillConfig fields)",
                        c.name
                    ))
                })?;
                d.divergence = div.clone();
                if let Some(steps) = args.steps {
                    d.driver.steps = steps;
                }
                d.check().map_err(|e| {
                    CliError::Usage(format!(
                        "candidate `{}` with divergence `{div}`: {e}",
                        c.name
                    ))
                })?;
            }
        }
        Ok(Plan {
            targets,
            candidates,
            divergences,
            seeds,
        })
    }
}

/// Runs `fdistill study fidelity2d`.
pub fn run(args: Fidelity2dArgs) -> Result<(), CliError> {
    let start = Instant::now();
    let device: DeviceSpec = args
        .device
        .parse()
        .map_err(|e: fdistill::backends::DeviceError| CliError::Usage(e.to_string()))?;
    let plan = Plan::new(&args)?;
    let _guard = super::run_guard::acquire(
        &args.out,
        WriteMode::from_flags(false, args.overwrite),
        &STUDY_FILES,
        "",
    )?;
    let write = |path: &Path, text: &str| -> Result<(), CliError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating {}", dir.display()))
                .map_err(CliError::Runtime)?;
        }
        std::fs::write(path, text)
            .with_context(|| format!("writing {}", path.display()))
            .map_err(CliError::Runtime)
    };

    // 1. teachers, one per (target, seed)
    let base_teacher = teacher_overrides(args.teacher_config.as_deref())?;
    let n_teachers = plan.targets.len() * plan.seeds.len();
    let mut retrained = HashSet::new();
    let mut k = 0;
    for (target, _) in &plan.targets {
        for &seed in &plan.seeds {
            k += 1;
            let dir = teacher_dir(&args.out, target, seed);
            let stage = stage_of(&dir, args.overwrite, &["teacher", "steps"]);
            if stage == Stage::Finished {
                eprintln!("[study] reusing the teacher in {}", dir.display());
                continue;
            }
            let resume = stage == Stage::Unfinished;
            eprintln!(
                "[study] {} the teacher on {target}, seed {seed} ({k}/{n_teachers})",
                if resume { "resuming" } else { "training" }
            );
            let config = config_beside(&dir);
            if !resume {
                let mut json = base_teacher.clone();
                json["teacher"]["seed"] = serde_json::json!(seed);
                write(&config, &format!("{json:#}\n"))?;
            }
            super::teacher::train(TrainArgs {
                data: (!resume).then(|| target.clone()),
                net: "mlp".into(),
                out: dir,
                steps: args.teacher_steps,
                config: (!resume).then_some(config),
                dry_run: false,
                device: args.device.clone(),
                resume,
                overwrite: stage == Stage::Overwrite,
                parallel: Default::default(),
            })?;
            retrained.insert((target.clone(), seed));
        }
    }

    // 2. students
    let n_students = plan.candidates.len() * n_teachers * plan.divergences.len();
    let mut k = 0;
    for c in &plan.candidates {
        for (target, _) in &plan.targets {
            for div in &plan.divergences {
                for &seed in &plan.seeds {
                    k += 1;
                    let dir = student_dir(&args.out, &c.name, target, div, seed);
                    // A student of a teacher trained in this invocation starts afresh.
                    let overwrite = args.overwrite || retrained.contains(&(target.clone(), seed));
                    let stage = stage_of(&dir, overwrite, &["distill", "driver", "steps"]);
                    if stage == Stage::Finished {
                        eprintln!("[study] reusing the student in {}", dir.display());
                        continue;
                    }
                    let resume = stage == Stage::Unfinished;
                    eprintln!(
                        "[study] {} {} / {target} / {div} / seed {seed} ({k}/{n_students})",
                        if resume { "resuming" } else { "distilling" },
                        c.name
                    );
                    let config = config_beside(&dir);
                    if !resume {
                        let json = student_overrides(c, seed);
                        write(&config, &format!("{json:#}\n"))?;
                    }
                    run_distill(DistillArgs {
                        teacher: (!resume).then(|| teacher_dir(&args.out, target, seed)),
                        divergence: (!resume).then(|| div.clone()),
                        out: dir,
                        preset: Some(TOY.into()),
                        config: (!resume).then_some(config),
                        steps: args.steps,
                        resume,
                        overwrite: stage == Stage::Overwrite,
                        dry_run: false,
                        device: args.device.clone(),
                        quiet: false,
                        preset_overrides: None,
                        method: Default::default(),
                        vardiu: Default::default(),
                        parallel: Default::default(),
                    })?;
                }
            }
        }
    }

    // 3. samples of every model (on the device), then the metrics (on the CPU cores)
    eprintln!("[study] sampling every model");
    let task = SampleTask {
        out: args.out.clone(),
        plan: &plan,
        n: args.eval_samples,
        draws: args.eval_draws,
    };
    let samples = dispatch(&device, task).map_err(|e| CliError::Usage(e.to_string()))??;
    eprintln!(
        "[study] evaluating {} models on {} draw(s) of {} samples each",
        samples.len(),
        args.eval_draws,
        args.eval_samples
    );
    // references[target · seeds + seed][draw]
    let references: Vec<Vec<Vec<f64>>> = plan
        .targets
        .iter()
        .flat_map(|(name, data)| {
            plan.seeds.iter().map(move |&seed| {
                (0..args.eval_draws)
                    .map(|draw| {
                        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
                            reference_seed(name, seed).wrapping_add(draw as u64),
                        );
                        data.sample(args.eval_samples, &mut rng)
                    })
                    .collect()
            })
        })
        .collect();
    let reference_of = |target: usize, seed: usize| &references[target * plan.seeds.len() + seed];
    let metrics = parallel_map(&samples, |s| {
        let data = &plan.targets[s.target].1;
        evaluate_draws(data, &s.draws, reference_of(s.target, s.seed))
    });
    let rows = rows(&plan, &samples, metrics);

    // 4. tables and figures
    write(&args.out.join("runs.csv"), &runs_csv(&rows))?;
    let summary = summarise(&plan, &rows);
    write(&args.out.join("summary.csv"), &summary_csv(&summary))?;
    let nets = teacher_nets(&args.out, &plan)?;
    let md = summary_md(&plan, &summary, args.eval_samples, &nets);
    write(&args.out.join("summary.md"), &md)?;
    write_figures(&args.out, &plan, &samples, &references).map_err(CliError::Runtime)?;
    println!("{md}");
    eprintln!(
        "[study] done in {:.0} s; see {}/summary.md",
        start.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}

/// The seed of the exact reference samples of `(target, seed)`: FNV-1a of the name, mixed
/// with the seed, so it does not depend on the order of --targets.
fn reference_seed(target: &str, seed: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in target.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// `f` over `items` on every available core, results in order.
fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len())
        .max(1);
    let next = AtomicUsize::new(0);
    let mut out: Vec<(usize, R)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= items.len() {
                            break done;
                        }
                        done.push((i, f(&items[i])));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("metric worker panicked"))
            .collect()
    });
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

/// One model's samples: the teacher (`student: None`) or a student of (target, seed).
struct ModelSamples {
    /// Index into the plan's targets.
    target: usize,
    /// Index into the plan's seeds.
    seed: usize,
    /// `(candidate, divergence)` indices of a student.
    student: Option<(usize, usize)>,
    /// Row-major samples, one set per evaluation draw.
    draws: Vec<Vec<f64>>,
}

/// Draws the samples of every model of the plan on one device.
struct SampleTask<'a> {
    out: PathBuf,
    plan: &'a Plan,
    n: usize,
    draws: usize,
}

impl BackendTask for SampleTask<'_> {
    type Output = Result<Vec<ModelSamples>, CliError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        type I<B> = <B as AutodiffBackend>::InnerBackend;
        let usage = |e: &dyn std::fmt::Display| CliError::Usage(e.to_string());
        let steps = SamplerKind::Heun
            .steps_for_nfe(TEACHER_NFE)
            .expect("odd NFE");
        let sigmas = karras_sigmas(steps, SIGMA_MIN, SIGMA_MAX, RHO).map_err(|e| usage(&e))?;
        let mut all = Vec::new();
        for (ti, (target, _)) in self.plan.targets.iter().enumerate() {
            for (si, &seed) in self.plan.seeds.iter().enumerate() {
                // Teacher: Heun, 35 NFE.
                let (run, tc) = read_run_config(&teacher_dir(&self.out, target, seed))?;
                let mlp = tc.net.as_mlp()?;
                let net = load_module::<I<B>, _>(
                    mlp.init(&device),
                    &teacher_checkpoint(&run).join(TEACHER_EMA_FILE),
                )
                .map_err(|e| usage(&e))?;
                let draws = (0..self.draws as u64)
                    .map(|draw| {
                        let (latents, labels) =
                            tc.net
                                .sampling_inputs::<I<B>>(self.n, LATENT_SEED + draw, &device);
                        let x = sample(SamplerKind::Heun, &net, latents, &sigmas, labels);
                        x.into_data().convert::<f64>().to_vec().expect("f64")
                    })
                    .collect();
                all.push(ModelSamples {
                    target: ti,
                    seed: si,
                    student: None,
                    draws,
                });
                for (ci, c) in self.plan.candidates.iter().enumerate() {
                    for (di, div) in self.plan.divergences.iter().enumerate() {
                        let dir = student_dir(&self.out, &c.name, target, div, seed);
                        let (run, sc) = read_student_config(&dir)?;
                        let weights = student_weights(&run)?;
                        let draws = (0..self.draws as u64)
                            .map(|draw| {
                                student_samples::<I<B>>(
                                    &sc.net,
                                    &weights,
                                    sc.distill.sigma_init,
                                    self.n,
                                    LATENT_SEED + draw,
                                    &device,
                                )
                                .map(|(values, _)| values)
                            })
                            .collect::<Result<_, _>>()?;
                        all.push(ModelSamples {
                            target: ti,
                            seed: si,
                            student: Some((ci, di)),
                            draws,
                        });
                    }
                }
            }
        }
        Ok(all)
    }
}

/// The metrics of one model's samples.
#[derive(Debug, Clone, PartialEq)]
struct Metrics {
    mmd2: f64,
    energy: f64,
    /// Gaussian-mixture targets only: covered modes, of `modes_total`.
    modes_covered: Option<usize>,
    modes_total: Option<usize>,
    /// Σ_k |mass_k − expected_k| (mixtures only).
    mass_error: Option<f64>,
    /// min_k mass_k / expected_k (mixtures only; every mode is covered when ≥ ½).
    worst_mode_ratio: Option<f64>,
    /// Share of samples more than 3 std from every mode (mixtures only).
    off_mode_mass: Option<f64>,
    /// Mean log-density under the exact mixture (mixtures only).
    mean_log_density: Option<f64>,
}

fn evaluate(data: &TrainingData, samples: &[f64], reference: &[f64]) -> Metrics {
    let dim = data.dim();
    let mixture = data.mixture();
    let modes = mixture.map(|g| mode_report(g, samples));
    Metrics {
        mmd2: mmd2(samples, reference, dim),
        energy: energy_distance(samples, reference, dim),
        modes_covered: modes.as_ref().map(|m| m.modes_covered),
        modes_total: modes.as_ref().map(|m| m.modes_total),
        mass_error: modes.as_ref().map(|m| m.mass_error()),
        worst_mode_ratio: modes.as_ref().map(|m| m.worst_mode_ratio()),
        off_mode_mass: modes.as_ref().map(|m| m.off_mode_mass()),
        mean_log_density: mixture.map(|g| mean_log_density(g, samples)),
    }
}

/// The metrics of one model over its evaluation draws (each against its own reference, the
/// same number of each): MMD² and energy distance are the means over the draws, the mode
/// metrics and mean log-density those of the first draw.
fn evaluate_draws(data: &TrainingData, draws: &[Vec<f64>], references: &[Vec<f64>]) -> Metrics {
    assert!(!draws.is_empty() && draws.len() == references.len());
    let first = evaluate(data, &draws[0], &references[0]);
    let dim = data.dim();
    let n = draws.len() as f64;
    let (mut mmd, mut energy) = (first.mmd2, first.energy);
    for (s, r) in draws.iter().zip(references).skip(1) {
        mmd += mmd2(s, r, dim);
        energy += energy_distance(s, r, dim);
    }
    Metrics {
        mmd2: mmd / n,
        energy: energy / n,
        ..first
    }
}

/// One row of runs.csv.
#[derive(Debug, Clone)]
struct Row {
    target: String,
    /// `teacher` for the teachers.
    candidate: String,
    /// Empty for the teachers.
    divergence: String,
    seed: u64,
    nfe: usize,
    metrics: Metrics,
    /// MMD² over the teacher's (same target and seed).
    mmd2_ratio: f64,
    /// The teacher's mean log-density minus this model's (same target and seed).
    log_density_gap: Option<f64>,
}

fn rows(plan: &Plan, samples: &[ModelSamples], metrics: Vec<Metrics>) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    let mut teacher: Option<Metrics> = None;
    for (s, m) in samples.iter().zip(metrics) {
        let (candidate, divergence, nfe) = match s.student {
            None => {
                teacher = Some(m.clone());
                (TEACHER.to_string(), String::new(), TEACHER_NFE)
            }
            Some((c, d)) => (
                plan.candidates[c].name.clone(),
                plan.divergences[d].clone(),
                1,
            ),
        };
        // Samples come teacher first for each (target, seed).
        let t = teacher.as_ref().expect("the teacher comes first");
        rows.push(Row {
            target: plan.targets[s.target].0.clone(),
            candidate,
            divergence,
            seed: plan.seeds[s.seed],
            nfe,
            mmd2_ratio: m.mmd2 / t.mmd2,
            log_density_gap: t
                .mean_log_density
                .zip(m.mean_log_density)
                .map(|(a, b)| a - b),
            metrics: m,
        });
    }
    rows
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// The header of runs.csv.
const RUNS_HEADER: &str = "target,candidate,divergence,seed,nfe,mmd2,energy,modes_covered,\
modes_total,mass_error,worst_mode_ratio,off_mode_mass,mean_log_density,mmd2_ratio_to_teacher,\
log_density_gap_to_teacher";

fn runs_csv(rows: &[Row]) -> String {
    let mut csv = format!("{RUNS_HEADER}\n");
    for r in rows {
        let m = &r.metrics;
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            r.target,
            r.candidate,
            r.divergence,
            r.seed,
            r.nfe,
            m.mmd2,
            m.energy,
            opt(m.modes_covered),
            opt(m.modes_total),
            opt(m.mass_error),
            opt(m.worst_mode_ratio),
            opt(m.off_mode_mass),
            opt(m.mean_log_density),
            r.mmd2_ratio,
            opt(r.log_density_gap)
        ));
    }
    csv
}

/// Mean and sample standard deviation (0 for one value).
#[derive(Debug, Clone, Copy)]
struct Stat {
    mean: f64,
    std: f64,
}

impl Stat {
    fn of(v: &[f64]) -> Stat {
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let std = if v.len() > 1 {
            (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        Stat { mean, std }
    }

    /// Over the values when every row has one.
    fn of_all(v: impl Iterator<Item = Option<f64>>) -> Option<Stat> {
        let v: Option<Vec<f64>> = v.collect();
        v.filter(|v| !v.is_empty()).map(|v| Stat::of(&v))
    }
}

/// One row of the summary: a target's teacher, or a (target, candidate, divergence).
#[derive(Debug, Clone)]
struct SummaryRow {
    target: String,
    candidate: String,
    divergence: String,
    nfe: usize,
    seeds: usize,
    mmd2: Stat,
    energy: Stat,
    mmd2_ratio: Stat,
    modes_covered: Option<Stat>,
    modes_total: Option<usize>,
    /// Seeds whose samples cover every mode.
    all_modes: Option<usize>,
    mass_error: Option<Stat>,
    worst_mode_ratio: Option<Stat>,
    off_mode_mass: Option<Stat>,
    mean_log_density: Option<Stat>,
    log_density_gap: Option<Stat>,
}

fn summarise(plan: &Plan, rows: &[Row]) -> Vec<SummaryRow> {
    let mut groups: Vec<(String, String, String)> = Vec::new();
    for (t, _) in &plan.targets {
        groups.push((t.clone(), TEACHER.into(), String::new()));
        for c in &plan.candidates {
            for d in &plan.divergences {
                groups.push((t.clone(), c.name.clone(), d.clone()));
            }
        }
    }
    groups
        .into_iter()
        .map(|(target, candidate, divergence)| {
            let g: Vec<&Row> = rows
                .iter()
                .filter(|r| {
                    r.target == target && r.candidate == candidate && r.divergence == divergence
                })
                .collect();
            let stat = |f: fn(&Row) -> f64| Stat::of(&g.iter().map(|r| f(r)).collect::<Vec<_>>());
            let modes_total = g[0].metrics.modes_total;
            SummaryRow {
                nfe: g[0].nfe,
                seeds: g.len(),
                mmd2: stat(|r| r.metrics.mmd2),
                energy: stat(|r| r.metrics.energy),
                mmd2_ratio: stat(|r| r.mmd2_ratio),
                modes_covered: Stat::of_all(
                    g.iter().map(|r| r.metrics.modes_covered.map(|m| m as f64)),
                ),
                modes_total,
                all_modes: modes_total.map(|t| {
                    g.iter()
                        .filter(|r| r.metrics.modes_covered == Some(t))
                        .count()
                }),
                mass_error: Stat::of_all(g.iter().map(|r| r.metrics.mass_error)),
                worst_mode_ratio: Stat::of_all(g.iter().map(|r| r.metrics.worst_mode_ratio)),
                off_mode_mass: Stat::of_all(g.iter().map(|r| r.metrics.off_mode_mass)),
                mean_log_density: Stat::of_all(g.iter().map(|r| r.metrics.mean_log_density)),
                log_density_gap: Stat::of_all(g.iter().map(|r| r.log_density_gap)),
                target,
                candidate,
                divergence,
            }
        })
        .collect()
}

fn summary_csv(rows: &[SummaryRow]) -> String {
    let mut csv = String::from(
        "target,candidate,divergence,nfe,seeds,mmd2_mean,mmd2_std,energy_mean,energy_std,\
         mmd2_ratio_to_teacher_mean,mmd2_ratio_to_teacher_std,modes_covered_mean,\
         modes_covered_std,modes_total,seeds_all_modes,mass_error_mean,mass_error_std,\
         worst_mode_ratio_mean,worst_mode_ratio_std,off_mode_mass_mean,off_mode_mass_std,\
         mean_log_density_mean,mean_log_density_std,log_density_gap_mean,log_density_gap_std\n",
    );
    let pair = |s: Option<Stat>| match s {
        Some(s) => format!("{},{}", s.mean, s.std),
        None => ",".into(),
    };
    for r in rows {
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            r.target,
            r.candidate,
            r.divergence,
            r.nfe,
            r.seeds,
            pair(Some(r.mmd2)),
            pair(Some(r.energy)),
            pair(Some(r.mmd2_ratio)),
            pair(r.modes_covered),
            opt(r.modes_total),
            opt(r.all_modes),
            pair(r.mass_error),
            pair(r.worst_mode_ratio),
            pair(r.off_mode_mass),
            pair(r.mean_log_density),
            pair(r.log_density_gap),
        ));
    }
    csv
}

/// The teachers' MLP shapes, `hidden × depth`, as read from their config.json (one entry when
/// all agree).
fn teacher_nets(out: &Path, plan: &Plan) -> Result<String, CliError> {
    let mut shapes = Vec::new();
    for (target, _) in &plan.targets {
        for &seed in &plan.seeds {
            let (_, tc) = read_run_config(&teacher_dir(out, target, seed))?;
            let m = tc.net.as_mlp()?;
            let shape = format!("width {} × depth {}", m.hidden, m.depth);
            if !shapes.contains(&shape) {
                shapes.push(shape);
            }
        }
    }
    Ok(shapes.join("; "))
}

fn summary_md(plan: &Plan, rows: &[SummaryRow], n: usize, nets: &str) -> String {
    let seeds = &plan.seeds;
    let mut md = format!(
        "# fdistill study fidelity2d\n\n\
         Teachers: EDM MLP ({}), one per target and seed, sampled with Heun at \
         {TEACHER_NFE} NFE. Students: one step, distilled with f-distill from the `toy` preset \
         at the teacher's data scale (`DistillConfig::at_data_scale`) plus each candidate's \
         overrides. Candidates: {}.\n\n\
         Metrics on {n} samples per model against {n} fresh exact samples of the target (a \
         fixed seed per target and seed); mean ± std over seeds {}..{} ({} seed{}). MMD²: RBF \
         bandwidths 0.25–4. MMD²/teacher: the ratio to the teacher of the same target and \
         seed, averaged over seeds. Modes: covered when holding at least half their expected \
         mass; \"all modes\" counts the seeds that cover every mode. Mass error: Σ_k \
         |mass_k − expected_k|. Worst mode: min_k mass_k / expected_k (every mode is covered \
         when ≥ 0.5). Off-mode: the share of samples more than 3 std from every mode (exact \
         samples of a 2-D mixture whose 3-std balls do not overlap: 0.011). Log-density gap: \
         the teacher's mean log-density minus the model's (same target and seed; positive is \
         worse). Mode metrics and log-densities are for Gaussian-mixture targets only.\n",
        nets,
        plan.candidates
            .iter()
            .map(|c| format!("`{}`", c.name))
            .collect::<Vec<_>>()
            .join(", "),
        seeds[0],
        seeds[seeds.len() - 1],
        seeds.len(),
        if seeds.len() == 1 { "" } else { "s" },
    );
    let pm = |s: Option<Stat>, prec: usize| match s {
        Some(s) => format!("{:.prec$} ± {:.prec$}", s.mean, s.std),
        None => "–".into(),
    };
    let sci = |s: Stat| format!("{:.3e} ± {:.1e}", s.mean, s.std);
    for (target, _) in &plan.targets {
        md.push_str(&format!(
            "\n## {target}\n\n\
             | model | candidate | divergence | NFE | MMD² | MMD²/teacher | energy | modes | all modes | mass error | worst mode | off-mode | mean log-density | log-density gap |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        ));
        for r in rows.iter().filter(|r| &r.target == target) {
            let teacher = r.candidate == TEACHER;
            let modes = match (r.modes_covered, r.modes_total) {
                (Some(c), Some(t)) => format!("{:.1} ± {:.1} of {t}", c.mean, c.std),
                _ => "–".into(),
            };
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                if teacher { "teacher (Heun)" } else { "student" },
                if teacher { "–" } else { &r.candidate },
                if teacher { "–" } else { &r.divergence },
                r.nfe,
                sci(r.mmd2),
                pm(Some(r.mmd2_ratio), 2),
                sci(r.energy),
                modes,
                r.all_modes
                    .map_or("–".into(), |a| format!("{a}/{}", r.seeds)),
                pm(r.mass_error, 3),
                pm(r.worst_mode_ratio, 2),
                pm(r.off_mode_mass, 3),
                pm(r.mean_log_density, 3),
                pm(r.log_density_gap, 3),
            ));
        }
    }
    md
}

/// The square plot range of a target: the mixture's means ± 4 std, else the reference
/// samples' extent with a margin.
fn plot_range(data: &TrainingData, reference: &[f64]) -> (f64, f64) {
    let extent = match data.mixture() {
        Some(g) => {
            g.means()
                .iter()
                .flatten()
                .fold(0.0f64, |m, v| m.max(v.abs()))
                + 4.0 * g.stds().iter().flatten().fold(0.0f64, |m, v| m.max(*v))
        }
        None => 1.1 * reference.iter().fold(0.0f64, |m, v| m.max(v.abs())),
    };
    (-extent, extent)
}

/// One scatter per model of the first seed (2-D targets only) over the target's density (or,
/// for two-moons, its exact samples): figures/TARGET-teacher.png and
/// figures/TARGET-CANDIDATE-DIVERGENCE.png.
fn write_figures(
    out: &Path,
    plan: &Plan,
    samples: &[ModelSamples],
    references: &[Vec<Vec<f64>>],
) -> anyhow::Result<()> {
    let dir = out.join("figures");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (ti, (target, data)) in plan.targets.iter().enumerate() {
        if data.dim() != 2 {
            eprintln!(
                "[study] no scatter plots for {target} (dimension {})",
                data.dim()
            );
            continue;
        }
        let reference = &references[ti * plan.seeds.len()][0];
        let range = plot_range(data, reference);
        let reference: Vec<[f64; 2]> = reference.chunks_exact(2).map(|r| [r[0], r[1]]).collect();
        let g: Option<&GaussianMixture> = data.mixture();
        let density = |x: f64, y: f64| g.expect("a mixture").log_density(&[x, y], 0.0);
        for s in samples.iter().filter(|s| s.target == ti && s.seed == 0) {
            let (file, title) = match s.student {
                None => (
                    format!("{target}-teacher.png"),
                    format!(
                        "{target}: teacher, Heun {TEACHER_NFE} NFE, seed {}",
                        plan.seeds[0]
                    ),
                ),
                Some((c, d)) => {
                    let (c, d) = (&plan.candidates[c].name, &plan.divergences[d]);
                    (
                        format!("{target}-{c}-{d}.png"),
                        format!("{target}: student {c}, {d}, 1 NFE, seed {}", plan.seeds[0]),
                    )
                }
            };
            let points: Vec<[f64; 2]> = s.draws[0].chunks_exact(2).map(|r| [r[0], r[1]]).collect();
            let plot = Scatter {
                title: &title,
                points: &points,
                log_density: g.is_some().then_some(&density as &dyn Fn(f64, f64) -> f64),
                x_range: range,
                y_range: range,
            };
            // Without a density to draw, the exact samples show the target.
            match g {
                Some(_) => scatter_png(&dir.join(file), &plot)?,
                None => scatter_over_data_png(&dir.join(file), &plot, &reference)?,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_and_seeds() {
        let s = Stat::of(&[1.0, 3.0]);
        assert_eq!(s.mean, 2.0);
        assert!((s.std - 2f64.sqrt()).abs() < 1e-12);
        assert_eq!(Stat::of(&[5.0]).std, 0.0);
        assert!(Stat::of_all([Some(1.0), None].into_iter()).is_none());
        assert_ne!(reference_seed("grid25", 0), reference_seed("grid25", 1));
        assert_ne!(reference_seed("grid25", 0), reference_seed("two-moons", 0));
    }

    /// Distances are the means over the draws, each against its own reference (checked
    /// against `mmd2`/`energy_distance` of each draw); the mode metrics are the first draw's;
    /// one draw is `evaluate` itself.
    #[test]
    fn evaluate_draws_averages_the_distances_over_the_draws() {
        let data = TrainingData::TwoMoons;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut set = |shift: f64| -> Vec<f64> {
            data.sample(400, &mut rng)
                .iter()
                .map(|x| x + shift)
                .collect()
        };
        let draws = vec![set(0.0), set(0.3), set(0.0)];
        let references = vec![set(0.0), set(0.0), set(0.0)];
        let m = evaluate_draws(&data, &draws, &references);
        let each: Vec<(f64, f64)> = draws
            .iter()
            .zip(&references)
            .map(|(s, r)| (mmd2(s, r, 2), energy_distance(s, r, 2)))
            .collect();
        let mean_mmd = each.iter().map(|e| e.0).sum::<f64>() / 3.0;
        let mean_energy = each.iter().map(|e| e.1).sum::<f64>() / 3.0;
        assert!(
            (m.mmd2 - mean_mmd).abs() <= 1e-15 * mean_mmd.abs().max(1.0),
            "{m:?}"
        );
        assert!((m.energy - mean_energy).abs() <= 1e-15 * mean_energy.abs().max(1.0));
        // the shifted draw dominates: the mean is well above the unshifted draws'
        assert!(m.mmd2 > 2.0 * each[0].0.max(each[2].0), "{each:?}");
        let one = evaluate_draws(&data, &draws[..1], &references[..1]);
        assert_eq!(one, evaluate(&data, &draws[0], &references[0]));
        let ring = DataSource::parse("ring8-unbalanced").resolve().unwrap();
        let (a, b) = (ring.sample(300, &mut rng), ring.sample(300, &mut rng));
        let shifted: Vec<f64> = a.iter().map(|x| x + 5.0).collect();
        let m = evaluate_draws(&ring, &[a.clone(), shifted], &[b.clone(), b.clone()]);
        let first = evaluate(&ring, &a, &b);
        assert_eq!(
            (m.modes_covered, m.mass_error, m.mean_log_density),
            (
                first.modes_covered,
                first.mass_error,
                first.mean_log_density
            )
        );
    }

    #[test]
    fn student_overrides_merge_the_seed_into_driver() {
        let c = Candidate {
            name: "c".into(),
            overrides: serde_json::json!({ "lambda_gan": 0.0, "driver": { "steps": 7 } }),
        };
        let v = student_overrides(&c, 3);
        assert_eq!(v["driver"]["steps"], 7);
        assert_eq!(v["driver"]["seed"], 3);
        assert_eq!(v["lambda_gan"], 0.0);
    }
}
