//! `fdistill demo --out DIR`: the whole pipeline on `ring8-unbalanced` in a few minutes on a
//! CPU — train a teacher, distil it with reverse KL, Jensen–Shannon and forward KL, evaluate
//! everything against the exact mixture and write `summary.json`, `summary.md`, scatter plots
//! and loss curves.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use clap::Args;
use fdistill::backends::{
    BackendTask, DeviceSpec, cpu_threads, dispatch, on_cpu_pool, with_cpu_threads,
};
use fdistill::core::gmm::GaussianMixture;
use fdistill::core::random::standard_normal;
use fdistill::core::sampler::{SamplerKind, sample};
use fdistill::core::schedule::{RHO, SIGMA_MAX, SIGMA_MIN, karras_sigmas};
use fdistill::core::targets::ring8_unbalanced;
use fdistill::metrics::samples::{mean_log_density, mmd2, mode_report};
use fdistill::nets::MlpDenoiserConfig;
use fdistill::train::checkpoint::load_module;
use fdistill::train::teacher::{TEACHER_EMA_FILE, teacher_checkpoint};
use fdistill_plot::{Scatter, Series, line_chart_png, scatter_png};
use rand::SeedableRng;
use serde::Serialize;

use super::distill::{
    DistillArgs, read_student_config, run_distill, student_samples, student_weights,
};
use super::teacher::{TrainArgs, read_run_config};
use super::{CliError, progress};

/// The divergences the demo compares: mode seeking, balanced, covering.
pub const DEMO_DIVERGENCES: [&str; 3] = ["reverse-kl", "jensen-shannon", "forward-kl"];
/// Samples per model for the metrics (and the batch of the speed measurement).
const N_EVAL: usize = 2000;
/// Heun NFE of the teacher's reference samples.
const TEACHER_NFE: usize = 35;
/// Student iterations without `--steps`: half the `toy` preset's 24 000, so that the whole
/// demo (teacher and three students) stays within 5 minutes on 2 cores (256 s measured).
pub const DEMO_STEPS: usize = 12_000;
/// The demo's learning-rate hold (`lr_schedule.hold_fraction`; the `toy` preset's is 0.5 over
/// its 24 000 iterations): at 12 000 iterations a decay over the last quarter is the
/// schedule measured best on `ring8-unbalanced` (every mode in seeds 0–2 for all three
/// divergences; a hold of 0.5 covered every mode in 2 of 3; `docs/results.md`, "2-D
/// fidelity"). `--config` overrides it like any preset field.
pub const DEMO_HOLD_FRACTION: f64 = 0.75;

/// Arguments of `fdistill demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Output directory (teacher/, students/NAME/, summary.json, summary.md, *.png).
    #[arg(long)]
    pub out: PathBuf,
    /// Student iterations (default 12 000, half the `toy` preset's length, to keep the demo
    /// within minutes; the learning-rate schedule, held for the first 75 %, spans whatever
    /// length runs).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Teacher steps (default: the teacher's default).
    #[arg(long)]
    pub teacher_steps: Option<usize>,
    /// JSON/TOML overrides for every student (as `fdistill distill --config`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Start every stage afresh, deleting the runs of an earlier demo in --out. Without it,
    /// finished runs are reused and interrupted ones resumed.
    #[arg(long)]
    pub overwrite: bool,
    /// Device: flex (CPU, default), candle, cuda[:N], wgpu.
    #[arg(long, default_value = "flex")]
    pub device: String,
}

/// One row of the summary.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    /// `divergence` for students; absent for the teacher.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub divergence: Option<String>,
    /// Network evaluations per sample.
    pub nfe: usize,
    /// MMD² against fresh exact samples (RBF bandwidths 0.25–4).
    pub mmd2: f64,
    /// Modes holding at least half their expected mass, of 8.
    pub modes_covered: usize,
    /// Per-mode mass error `Σ_k |m_k − e_k|` (observed against expected share of each mode;
    /// [`ModeReport::mass_error`](fdistill::metrics::samples::ModeReport::mass_error)).
    pub mass_error: f64,
    /// Mean log-density of the samples under the exact mixture.
    pub mean_log_density: f64,
    /// Samples per second at batch `N_EVAL`.
    pub samples_per_sec: f64,
    /// Distillation wall time (students; absent when an earlier demo's student was reused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_s: Option<f64>,
    /// Distillation iterations (students).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iterations: Option<usize>,
}

/// `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct DemoSummary {
    /// The 35-NFE Heun teacher.
    pub teacher: ModelSummary,
    /// One entry per divergence.
    pub students: Vec<ModelSummary>,
    /// Real-vs-real floor of MMD² at the same sample size.
    pub mmd2_floor: f64,
    /// Wall time of the whole demo.
    pub wall_s: f64,
}

/// Runs `fdistill demo`.
pub fn run(args: DemoArgs) -> Result<(), CliError> {
    let start = Instant::now();
    let device: DeviceSpec = args
        .device
        .parse()
        .map_err(|e: fdistill::backends::DeviceError| CliError::Usage(e.to_string()))?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| CliError::Usage(format!("cannot create `{}`: {e}", args.out.display())))?;
    let teacher_dir = args.out.join("teacher");

    // 1. teacher (reused when a previous demo finished it, resumed when one was interrupted)
    let stage = stage_of(&teacher_dir, args.overwrite, &["teacher", "steps"]);
    if stage == Stage::Finished {
        eprintln!("[demo] reusing the teacher in {}", teacher_dir.display());
    } else {
        eprintln!("[demo] 1/3 training the teacher on ring8-unbalanced");
        let resume = stage == Stage::Unfinished;
        super::teacher::train(TrainArgs {
            data: (!resume).then(|| "ring8-unbalanced".into()),
            net: "mlp".into(),
            out: teacher_dir.clone(),
            steps: args.teacher_steps,
            config: None,
            dry_run: false,
            device: args.device.clone(),
            resume,
            overwrite: stage == Stage::Overwrite,
            parallel: Default::default(),
        })?;
    }

    // 2. one student per divergence, concurrently on a CPU (see `student_threads`)
    let steps = args.steps.unwrap_or(DEMO_STEPS);
    let mut jobs = Vec::new();
    let mut train_s: Vec<Option<f64>> = vec![None; DEMO_DIVERGENCES.len()];
    for div in DEMO_DIVERGENCES {
        let out = args.out.join("students").join(div);
        let stage = stage_of(&out, args.overwrite, &["distill", "driver", "steps"]);
        if stage == Stage::Finished {
            eprintln!("[demo] reusing the student in {}", out.display());
            jobs.push(None);
            continue;
        }
        let resume = stage == Stage::Unfinished;
        jobs.push(Some(DistillArgs {
            teacher: (!resume).then(|| teacher_dir.clone()),
            divergence: (!resume).then(|| div.to_string()),
            out,
            preset: Some("toy".into()),
            config: if resume { None } else { args.config.clone() },
            // a resumed student keeps its own length unless --steps says otherwise
            steps: if resume { args.steps } else { Some(steps) },
            resume,
            overwrite: stage == Stage::Overwrite,
            dry_run: false,
            device: args.device.clone(),
            quiet: false,
            preset_overrides: Some(serde_json::json!({
                "lr_schedule": {"hold_fraction": DEMO_HOLD_FRACTION}
            })),
            method: Default::default(),
            vardiu: Default::default(),
            parallel: Default::default(),
        }));
    }
    let pending = jobs.iter().flatten().count();
    if pending > 0 {
        let threads = student_threads(&device, pending);
        let own_length = jobs.iter().flatten().any(|j| j.resume && j.steps.is_none());
        eprintln!(
            "[demo] 2/3 distilling with {} ({steps} iterations each{}{})",
            DEMO_DIVERGENCES.join(", "),
            if own_length {
                "; a resumed student to its own length"
            } else {
                ""
            },
            match threads {
                Some(n) => format!(", concurrently, {n} CPU thread(s) each"),
                None => ", one after another".into(),
            }
        );
        let bars = indicatif::MultiProgress::new();
        let run_one = |(div, job): (&str, DistillArgs)| {
            let distill = || progress::in_group(&bars, div, || run_distill(job));
            match threads {
                Some(n) => with_cpu_threads(n, distill)
                    .map_err(|e| CliError::Usage(e.to_string()))
                    .and_then(|r| r),
                // on the CPU pool here, so that the group (thread-local) and the loop share a
                // thread (dispatch would move the loop onto the pool otherwise)
                None => on_cpu_pool(distill),
            }
        };
        let named = DEMO_DIVERGENCES.iter().copied().zip(jobs);
        let outcomes: Vec<Option<Result<_, CliError>>> = if threads.is_some() {
            std::thread::scope(|scope| {
                let handles: Vec<_> = named
                    .map(|(div, job)| job.map(|job| scope.spawn(move || run_one((div, job)))))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.map(|h| h.join().expect("a student's thread panicked")))
                    .collect()
            })
        } else {
            named
                .map(|(div, job)| job.map(|job| run_one((div, job))))
                .collect()
        };
        // every student has run (or stopped at a checkpoint); report the first failure
        for (t, outcome) in train_s.iter_mut().zip(outcomes) {
            if let Some(outcome) = outcome {
                *t = Some(outcome?.expect("not a dry run").elapsed_s);
            }
        }
    }

    // 3. evaluation, figures, summary
    eprintln!("[demo] 3/3 evaluating and plotting");
    let task = EvalTask {
        out: args.out.clone(),
        teacher_dir,
    };
    let (mut summary, samples) =
        dispatch(&device, task).map_err(|e| CliError::Usage(e.to_string()))??;
    for (s, t) in summary.students.iter_mut().zip(train_s) {
        s.train_s = t;
    }
    write_figures(&args.out, &samples).map_err(CliError::Runtime)?;
    summary.wall_s = start.elapsed().as_secs_f64();
    let json = serde_json::to_string_pretty(&summary).expect("summary serialises");
    std::fs::write(args.out.join("summary.json"), json + "\n")
        .context("writing summary.json")
        .map_err(CliError::Runtime)?;
    let md = summary_markdown(&summary);
    std::fs::write(args.out.join("summary.md"), &md)
        .context("writing summary.md")
        .map_err(CliError::Runtime)?;
    println!("{md}");
    eprintln!(
        "[demo] done in {:.0} s; see {}/summary.md",
        summary.wall_s,
        args.out.display()
    );
    Ok(())
}

/// CPU threads per student when the demo's `n` students run concurrently (`None`: run them
/// one after another). One 2-D training (MLP 256 × 4, batch 256) gains nothing from a second
/// thread (67 it/s on two threads, 62–76 it/s on one), so on a CPU the students share the
/// cores instead: `⌊threads / n⌋`, at least one each. GPU devices run them one after another.
fn student_threads(device: &DeviceSpec, n: usize) -> Option<usize> {
    matches!(device, DeviceSpec::Flex).then(|| (cpu_threads() / n.max(1)).max(1))
}

/// What the demo (and `study fidelity2d`) does with one of its run directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Nothing there yet: start it.
    Fresh,
    /// Its last checkpoint is its last step: reuse it.
    Finished,
    /// Interrupted after a checkpoint: resume it.
    Unfinished,
    /// Start afresh over what is there (`--overwrite`, or a run without a checkpoint).
    Overwrite,
}

/// The stage of the run in `dir`: `steps_key` is the path of its step count in config.json
/// (`["teacher", "steps"]` for a teacher, `["distill", "driver", "steps"]` for a student).
pub(crate) fn stage_of(dir: &Path, overwrite: bool, steps_key: &[&str]) -> Stage {
    use fdistill::train::checkpoint::{RunDir, read_json};
    use fdistill::train::distill::driver::{DriverState, latest_checkpoint};
    if !fdistill::train::guard::holds_run(dir) {
        return Stage::Fresh;
    }
    if overwrite {
        return Stage::Overwrite;
    }
    let run = RunDir::at(dir);
    let Ok(latest) = latest_checkpoint(&run) else {
        return Stage::Overwrite;
    };
    let done = read_json::<DriverState>(&latest.join("driver.json")).map(|s| s.step);
    let total = run
        .read_config::<serde_json::Value>()
        .ok()
        .and_then(|v| steps_key.iter().try_fold(v, |v, k| v.get(k).cloned()))
        .and_then(|v| v.as_u64());
    match (done, total) {
        (Ok(d), Some(t)) if d as u64 >= t => Stage::Finished,
        (Ok(_), Some(_)) => Stage::Unfinished,
        _ => Stage::Overwrite,
    }
}

/// The markdown table of `summary.md`.
pub fn summary_markdown(s: &DemoSummary) -> String {
    let mut iterations: Vec<usize> = s.students.iter().filter_map(|m| m.iterations).collect();
    iterations.dedup();
    let iterations = match iterations.as_slice() {
        [n] => format!(", {n} iterations"),
        _ => String::new(),
    };
    let mut md = format!(
        "# fdistill demo: ring8-unbalanced\n\n\
         Teacher: EDM MLP, Heun sampler. Students: one step, distilled with f-distill (`toy` preset{iterations}).\n\
         Metrics on 2000 samples against fresh exact samples of the mixture.\n\n\
         | model | NFE | MMD² | modes (of 8) | mass error | mean log-density | samples/s | speed-up |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    let row = |name: &str, m: &ModelSummary| {
        format!(
            "| {name} | {} | {:.5} | {} | {:.3} | {:.3} | {:.0} | {:.1}× |\n",
            m.nfe,
            m.mmd2,
            m.modes_covered,
            m.mass_error,
            m.mean_log_density,
            m.samples_per_sec,
            m.samples_per_sec / s.teacher.samples_per_sec
        )
    };
    md.push_str(&row("teacher (Heun)", &s.teacher));
    for st in &s.students {
        md.push_str(&row(
            &format!("student, {}", st.divergence.as_deref().unwrap_or("?")),
            st,
        ));
    }
    md.push_str(&format!(
        "\nMMD² floor (exact vs exact, same size): {:.5}. Mass error: Σ over modes of \
         |observed − expected share|. Wall time: {:.0} s.\n",
        s.mmd2_floor, s.wall_s
    ));
    md
}

/// Samples of every model, for the figures.
struct DemoSamples {
    teacher: Vec<f64>,
    students: Vec<(String, Vec<f64>)>,
}

struct EvalTask {
    out: PathBuf,
    teacher_dir: PathBuf,
}

fn summarise(
    g: &GaussianMixture,
    samples: &[f64],
    reference: &[f64],
    nfe: usize,
    rate: f64,
) -> ModelSummary {
    let modes = mode_report(g, samples);
    ModelSummary {
        divergence: None,
        nfe,
        mmd2: mmd2(samples, reference, 2),
        modes_covered: modes.modes_covered,
        mass_error: modes.mass_error(),
        mean_log_density: mean_log_density(g, samples),
        samples_per_sec: rate,
        train_s: None,
        iterations: None,
    }
}

impl BackendTask for EvalTask {
    type Output = Result<(DemoSummary, DemoSamples), CliError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        type I<B> = <B as AutodiffBackend>::InnerBackend;
        let usage = |e: &dyn std::fmt::Display| CliError::Usage(e.to_string());
        let g = ring8_unbalanced();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12345);
        let reference = g.sample(N_EVAL, &mut rng);
        let floor = mmd2(&g.sample(N_EVAL, &mut rng), &reference, 2);

        // Teacher: Heun, 35 NFE.
        let (run, tc) = read_run_config(&self.teacher_dir)?;
        let teacher_net = tc.net.as_mlp()?.clone();
        let net = load_module::<I<B>, _>(
            teacher_net.init(&device),
            &teacher_checkpoint(&run).join(TEACHER_EMA_FILE),
        )
        .map_err(|e| usage(&e))?;
        let steps = SamplerKind::Heun
            .steps_for_nfe(TEACHER_NFE)
            .expect("odd NFE");
        let sigmas = karras_sigmas(steps, SIGMA_MIN, SIGMA_MAX, RHO).map_err(|e| usage(&e))?;
        let latents = latents::<I<B>>(&teacher_net, 7, &device);
        let t = Instant::now();
        let x = sample(SamplerKind::Heun, &net, latents, &sigmas, None);
        let teacher_samples: Vec<f64> = x.into_data().convert::<f64>().to_vec().expect("f64");
        let teacher_rate = N_EVAL as f64 / t.elapsed().as_secs_f64();
        let teacher = summarise(&g, &teacher_samples, &reference, TEACHER_NFE, teacher_rate);

        let mut students = Vec::new();
        let mut student_samples_all = Vec::new();
        for div in super::demo::DEMO_DIVERGENCES {
            let (run, sc) = read_student_config(&self.out.join("students").join(div))?;
            let weights = student_weights(&run)?;
            // Warm-up once, then time the same batch size as the teacher.
            let _ =
                student_samples::<I<B>>(&sc.net, &weights, sc.distill.sigma_init, 64, 1, &device)?;
            let (samples, rate) = student_samples::<I<B>>(
                &sc.net,
                &weights,
                sc.distill.sigma_init,
                N_EVAL,
                7,
                &device,
            )?;
            let mut m = summarise(&g, &samples, &reference, 1, rate);
            m.divergence = Some(div.to_string());
            m.iterations = Some(sc.distill.driver.steps);
            students.push(m);
            student_samples_all.push((div.to_string(), samples));
        }
        Ok((
            DemoSummary {
                teacher,
                students,
                mmd2_floor: floor,
                wall_s: 0.0,
            },
            DemoSamples {
                teacher: teacher_samples,
                students: student_samples_all,
            },
        ))
    }
}

fn latents<B: burn::tensor::backend::Backend>(
    net: &MlpDenoiserConfig,
    seed: u64,
    device: &B::Device,
) -> Tensor<B, 2> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let z = standard_normal(N_EVAL * net.dim, &mut rng);
    Tensor::from_data(
        TensorData::new(z, [N_EVAL, net.dim]).convert::<f32>(),
        device,
    ) // [n, dim]
}

/// Scatter plots of every model over the target density, and the students' loss curves.
fn write_figures(out: &Path, s: &DemoSamples) -> anyhow::Result<()> {
    let g = ring8_unbalanced();
    let density = |x: f64, y: f64| g.log_density(&[x, y], 0.0);
    let extent = g
        .means()
        .iter()
        .flatten()
        .fold(0.0f64, |m, v| m.max(v.abs()))
        + 4.0 * g.stds().iter().flatten().fold(0.0f64, |m, v| m.max(*v));
    let range = (-extent, extent);
    let points = |v: &[f64]| -> Vec<[f64; 2]> { v.chunks_exact(2).map(|r| [r[0], r[1]]).collect() };
    let teacher_title = format!("teacher, Heun {TEACHER_NFE} NFE");
    let mut plots = vec![("teacher".to_string(), teacher_title, points(&s.teacher))];
    for (div, v) in &s.students {
        plots.push((
            format!("student_{div}"),
            format!("student ({div}), 1 NFE"),
            points(v),
        ));
    }
    for (file, title, pts) in &plots {
        scatter_png(
            &out.join(format!("scatter_{file}.png")),
            &Scatter {
                title,
                points: pts,
                log_density: Some(&density),
                x_range: range,
                y_range: range,
            },
        )?;
    }
    // Loss curves from each student's metrics.jsonl.
    for (key, title, log_y) in [
        (
            "loss_discriminator",
            "discriminator loss (critic steps)",
            false,
        ),
        ("loss_dsm", "fake-score DSM loss (critic steps)", true),
        ("loss_gan", "generator GAN term (generator steps)", false),
    ] {
        let mut curves: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
        for (div, _) in &s.students {
            let text =
                std::fs::read_to_string(out.join("students").join(div).join("metrics.jsonl"))?;
            let pts: Vec<(f64, f64)> = text
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter_map(|v| Some((v["step"].as_f64()?, v[key].as_f64()?)))
                .collect();
            curves.push((div.clone(), smooth(&pts, 20)));
        }
        let series: Vec<Series<'_>> = curves
            .iter()
            .map(|(n, p)| Series { name: n, points: p })
            .collect();
        line_chart_png(
            &out.join(format!("{key}.png")),
            title,
            "iteration",
            key,
            &series,
            log_y,
        )?;
    }
    Ok(())
}

/// Running mean over `w` points (the raw losses are noisy at batch 256).
fn smooth(pts: &[(f64, f64)], w: usize) -> Vec<(f64, f64)> {
    (0..pts.len())
        .map(|i| {
            let lo = i.saturating_sub(w - 1);
            let win = &pts[lo..=i];
            (
                pts[i].0,
                win.iter().map(|p| p.1).sum::<f64>() / win.len() as f64,
            )
        })
        .collect()
}
