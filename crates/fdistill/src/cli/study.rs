//! `fdistill study exact --target ring8-unbalanced --out DIR`.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, Subcommand};
use fdistill::study::exact::{self, ExactStudyConfig};
use indicatif::{ProgressBar, ProgressStyle};

use super::CliError;

/// `fdistill study ...`.
#[derive(Debug, Subcommand)]
pub enum StudyCommand {
    /// Mode coverage of the exact Gaussian-mixture student under every divergence: writes
    /// DIR/summary.csv, DIR/summary.md and one PNG per divergence.
    Exact(ExactArgs),
}

/// Arguments of `fdistill study exact`.
#[derive(Debug, Args)]
pub struct ExactArgs {
    /// Target: ring8-unbalanced or bimodal-1d.
    #[arg(long, default_value = "ring8-unbalanced")]
    pub target: String,
    /// Output directory (created if missing).
    #[arg(long)]
    pub out: PathBuf,
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

/// Runs `fdistill study`.
pub fn run(cmd: StudyCommand) -> Result<(), CliError> {
    let StudyCommand::Exact(args) = cmd;
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
    let bar = ProgressBar::new(exact::total_steps(&study));
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} steps ({eta})",
        )
        .expect("valid template"),
    );
    let start = Instant::now();
    let result = exact::run_and_write(&study, &args.out, &mut |n| bar.inc(n))?;
    bar.finish_and_clear();
    eprintln!(
        "{} runs in {:.1} s; wrote {}",
        result.runs.len(),
        start.elapsed().as_secs_f64(),
        args.out.display()
    );
    print!("{}", exact::summary_md(&result, &study.config));
    Ok(())
}
