//! `fdistill study exact --target ring8-unbalanced --out DIR`,
//! `fdistill study mog40 --out DIR` and `fdistill study fidelity2d --out DIR`
//! (implemented in `study_fidelity2d.rs`).

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, Subcommand};
use fdistill::backends::CpuBackend;
use fdistill::studies::exact::{self, ExactStudyConfig};
use fdistill::studies::mog40;
use fdistill::train::guard::{RunGuard, WriteMode};

use super::CliError;
use super::progress::Progress;

/// `fdistill study ...`.
#[derive(Debug, Subcommand)]
pub enum StudyCommand {
    /// Mode coverage of the exact Gaussian-mixture student under every divergence: writes
    /// DIR/summary.csv, DIR/summary.md and one PNG per divergence.
    Exact(ExactArgs),
    /// VarDiU's MoG-40 benchmark: VarDiU (study budget and the reference's own run),
    /// Diff-Instruct (its preset and with VarDiU's σ law), DMD2 and f-distill (reverse-kl,
    /// jensen-shannon, forward-kl) with the analytic and a learned MLP teacher; writes
    /// DIR/summary.csv, DIR/summary.md, sample scatters and metric curves.
    Mog40(Mog40Args),
    /// 2-D fidelity of one-step students: per target, teacher seed, candidate configuration
    /// (JSON overrides of the `toy` preset), divergence and seed, train a teacher and a
    /// student (finished runs are reused), evaluate both against exact samples and write
    /// DIR/runs.csv, DIR/summary.csv, DIR/summary.md and scatter plots.
    Fidelity2d(super::study_fidelity2d::Fidelity2dArgs),
}

/// Arguments of `fdistill study mog40`.
#[derive(Debug, Args)]
pub struct Mog40Args {
    /// Output directory (created if missing). A directory that holds an earlier study (its
    /// config.json) is refused unless --overwrite.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace the study in --out (its config.json and summaries are deleted first; figures of
    /// the same names are rewritten).
    #[arg(long)]
    pub overwrite: bool,
    /// Generator updates per run (the equal budget).
    #[arg(long, default_value_t = 3000)]
    pub steps: usize,
    /// Generator updates of the `vardiu-reference` runs (the reference's own settings).
    #[arg(long, default_value_t = 15000)]
    pub reference_steps: usize,
    /// Number of seeds per (teacher, method): seeds FIRST..FIRST+N (FIRST from --first-seed).
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// The first seed: add seeds to an earlier study in a new --out without rerunning its
    /// seeds (`--first-seed 3 --seeds 2` runs seeds 3 and 4).
    #[arg(long, default_value_t = 0)]
    pub first_seed: u64,
    /// Generator updates between points of the metric curves.
    #[arg(long, default_value_t = 100)]
    pub eval_every: usize,
    /// Training steps of the learned MLP teacher.
    #[arg(long, default_value_t = 3000)]
    pub teacher_steps: usize,
    /// Samples of the final evaluation.
    #[arg(long, default_value_t = 2000)]
    pub eval_samples: usize,
    /// Samples per point of the metric curves.
    #[arg(long, default_value_t = 500)]
    pub curve_samples: usize,
    /// Samples per generator update.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Hidden width of every network (VarDiU needs 256 on MoG-40: 128 collapses it onto
    /// 7 of 40 modes).
    #[arg(long, default_value_t = 256)]
    pub hidden: usize,
    /// Comma-separated methods (vardiu, vardiu-reference, vardiu-image-range, diff-instruct,
    /// diff-instruct-vardiu-law, dmd2, f-distill-reverse-kl, f-distill-jensen-shannon,
    /// f-distill-forward-kl); default: all.
    #[arg(long)]
    pub methods: Option<String>,
    /// Comma-separated teachers (analytic, learned); default: both.
    #[arg(long)]
    pub teachers: Option<String>,
    /// Reuse the finished runs in --out and continue its unfinished ones from their last
    /// checkpoint (runs whose settings changed start afresh).
    #[arg(long)]
    pub resume: bool,
}

/// Arguments of `fdistill study exact`.
#[derive(Debug, Args)]
pub struct ExactArgs {
    /// Target: ring8-unbalanced or bimodal-1d.
    #[arg(long, default_value = "ring8-unbalanced")]
    pub target: String,
    /// Output directory (created if missing). A directory that holds an earlier study (its
    /// config.json) is refused unless --overwrite.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace the study in --out (its config.json and summaries are deleted first; figures of
    /// the same names are rewritten).
    #[arg(long)]
    pub overwrite: bool,
    /// Number of seeds (0..N).
    #[arg(long, default_value_t = 5)]
    pub seeds: u64,
    /// Generator steps per run.
    #[arg(long, default_value_t = 1500)]
    pub steps: usize,
    /// Comma-separated divergences (`reverse-kl,alpha:0.5`); default: every registered one,
    /// the alpha family at 0.5.
    #[arg(long)]
    pub divergences: Option<String>,
    /// Stage-1 time-binned ratio normalisation with this many bins (off by default).
    #[arg(long)]
    pub time_bins: Option<usize>,
    /// EMA β of the stage-1 normaliser.
    #[arg(long, default_value_t = 0.0)]
    pub time_bins_beta: f64,
}

/// Splits `a,b,alpha:0.5,c` into divergence specs (the α family takes a single value, so
/// every comma separates two divergences).
fn split_specs(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// What a study writes besides config.json (deleted by `--overwrite`).
const STUDY_FILES: [&str; 3] = ["summary.csv", "summary.md", "summary.json"];

/// One writer per study directory, and no silent overwrite of an earlier study.
fn lock_study(out: &std::path::Path, resume: bool, overwrite: bool) -> Result<RunGuard, CliError> {
    super::run_guard::acquire(
        out,
        WriteMode::from_flags(resume, overwrite),
        &STUDY_FILES,
        "",
    )
}

/// Runs `fdistill study`.
pub fn run(cmd: StudyCommand) -> Result<(), CliError> {
    match cmd {
        StudyCommand::Exact(args) => run_exact(args),
        StudyCommand::Mog40(args) => run_mog40(args),
        StudyCommand::Fidelity2d(args) => super::study_fidelity2d::run(args),
    }
}

fn run_mog40(args: Mog40Args) -> Result<(), CliError> {
    let usage = |e: anyhow::Error| CliError::Usage(format!("{e:#}"));
    let methods = match args.methods.as_deref() {
        Some(text) => split_specs(text)
            .iter()
            .map(|m| mog40::Mog40Method::parse(m))
            .collect::<anyhow::Result<Vec<_>>>()
            .map_err(usage)?,
        None => mog40::METHODS.to_vec(),
    };
    let teachers = match args.teachers.as_deref() {
        Some(text) => split_specs(text)
            .iter()
            .map(|t| match t.as_str() {
                "analytic" => Ok(mog40::TeacherKind::Analytic),
                "learned" => Ok(mog40::TeacherKind::Learned),
                other => Err(CliError::Usage(format!(
                    "unknown teacher `{other}`; known: analytic, learned"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => vec![mog40::TeacherKind::Analytic, mog40::TeacherKind::Learned],
    };
    let config = mog40::Mog40Config {
        seeds: args.seeds,
        first_seed: args.first_seed,
        steps: args.steps,
        reference_steps: args.reference_steps,
        eval_every: args.eval_every,
        teacher_steps: args.teacher_steps,
        eval_samples: args.eval_samples,
        curve_samples: args.curve_samples,
        batch_size: args.batch_size,
        hidden: args.hidden,
        methods,
        teachers,
        ..Default::default()
    }
    .check()
    .map_err(usage)?;
    let _guard = lock_study(&args.out, args.resume, args.overwrite)?;
    let progress = std::cell::RefCell::new(Progress::new(
        "study mog40",
        0,
        mog40::total_ticks(&config),
        false,
    ));
    let mut done = 0;
    let start = Instant::now();
    let hooks = mog40::StudyHooks {
        resume: args.resume,
        progress: &mut |n| {
            done += n;
            progress.borrow_mut().update(done, String::new);
        },
        finished: &mut |r| {
            progress.borrow().suspend(|| {
                eprintln!(
                    "[{:.0} s] {} / {} / seed {}: {} after {} updates: log-density {:.2}, MMD² {:.4}, {} modes, {:.1} ms/update",
                    start.elapsed().as_secs_f64(),
                    r.teacher.label(),
                    r.method.label(),
                    r.seed,
                    r.status,
                    r.updates,
                    r.final_point.log_density,
                    r.final_point.mmd,
                    r.final_point.modes,
                    1e3 * r.seconds_per_update
                )
            })
        },
    };
    let result = mog40::run_and_write::<CpuBackend>(&config, &args.out, hooks)?;
    progress.borrow_mut().finish(String::new);
    eprintln!(
        "{} runs in {:.1} s; wrote {}",
        result.runs.len(),
        start.elapsed().as_secs_f64(),
        args.out.display()
    );
    print!("{}", mog40::summary_md(&result, &config));
    Ok(())
}

fn run_exact(args: ExactArgs) -> Result<(), CliError> {
    let config = ExactStudyConfig {
        target: args.target,
        divergences: args
            .divergences
            .as_deref()
            .map(split_specs)
            .unwrap_or_default(),
        seeds: args.seeds,
        steps: args.steps,
        time_bins: args.time_bins.map(|b| (b, args.time_bins_beta)),
        ..Default::default()
    };
    let study = config
        .check()
        .map_err(|e| CliError::Usage(format!("{e:#}")))?;
    let _guard = lock_study(&args.out, false, args.overwrite)?;
    let mut progress = Progress::new("study exact", 0, exact::total_steps(&study), false);
    let mut done = 0;
    let start = Instant::now();
    let result = exact::run_and_write(&study, &args.out, &mut |n| {
        done += n;
        progress.update(done, String::new);
    })?;
    progress.finish(String::new);
    eprintln!(
        "{} runs in {:.1} s; wrote {}",
        result.runs.len(),
        start.elapsed().as_secs_f64(),
        args.out.display()
    );
    print!("{}", exact::summary_md(&result, &study.config));
    Ok(())
}
