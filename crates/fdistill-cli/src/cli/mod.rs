//! Subcommands of the `fdistill` binary, one module each.

use clap::{Parser, Subcommand};
use thiserror::Error;

mod classifier;
mod demo;
mod distill;
mod distill_vardiu;
mod divergences;
mod eval;
mod export;
mod interrupt;
mod parallel;
mod plot;
mod progress;
mod run_guard;
mod sample;
mod study;
mod study_fidelity2d;
mod teacher;
mod teacher_import;

/// Distil diffusion models into one-step generators by f-divergence distribution matching.
#[derive(Debug, Parser)]
#[command(name = "fdistill", version, about, long_about = None)]
pub struct Cli {
    /// More log output (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// CPU threads for tensor work (the flex backend); default: RAYON_NUM_THREADS, else one per core.
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<usize>,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the registered f-divergences, or show one at given log-ratios.
    Divergences(divergences::DivergencesArgs),
    /// Train an EDM teacher.
    Teacher(teacher::TeacherArgs),
    /// Distil a teacher into a one-step student (f-distill with its DMD2 and Diff-Instruct
    /// presets, or VarDiU with --method vardiu).
    Distill(distill::DistillArgs),
    /// Train a teacher on ring8-unbalanced, distil it with three divergences, write a summary.
    Demo(demo::DemoArgs),
    /// Draw samples from a trained teacher (multi-step) or student (one step) checkpoint.
    Sample(sample::SampleArgs),
    /// Evaluate samples against a target or a reference set.
    Eval(eval::EvalArgs),
    /// Run a study and write its tables and figures (`study exact --target ring8-unbalanced`).
    #[command(subcommand)]
    Study(study::StudyCommand),
    /// Train the image metric network (a classifier).
    Classifier(classifier::ClassifierArgs),
    /// Write a student's EMA generator or a teacher with EDM's parameter names, for PyTorch
    /// (EDMPrecond.load_state_dict).
    Export(export::ExportArgs),
    /// A line chart (PNG) of one CSV column against another, one line per value of a
    /// grouping column.
    Plot(plot::PlotArgs),
}

/// A command-line failure: bad input (exit code 2), a failure while running (exit code 1),
/// or a clean stop on Ctrl-C/SIGTERM (exit code 130).
#[derive(Debug, Error)]
pub enum CliError {
    /// The user's input is wrong; the message says how to fix it.
    #[error("{0}")]
    Usage(String),
    /// Something failed while running.
    #[error(transparent)]
    Runtime(#[from] anyhow::Error),
    /// Training stopped on a signal after writing a checkpoint; the message says how to resume.
    #[error("{0}")]
    Interrupted(String),
}

impl CliError {
    /// Process exit code: 2 for bad input, 130 after an interrupt, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Runtime(_) => 1,
            CliError::Interrupted(_) => interrupt::EXIT_INTERRUPTED,
        }
    }
}

impl From<fdistill::divergence::RegistryError> for CliError {
    fn from(e: fdistill::divergence::RegistryError) -> Self {
        CliError::Usage(e.to_string())
    }
}

/// Sets up `tracing` on stderr.
pub fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("FDISTILL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    if let Some(n) = cli.threads {
        fdistill::backends::set_cpu_threads(n).map_err(|e| CliError::Usage(e.to_string()))?;
    }
    match cli.command {
        Command::Divergences(args) => divergences::run(args),
        Command::Teacher(args) => teacher::run(args),
        Command::Distill(args) => distill::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Sample(args) => sample::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Study(cmd) => study::run(cmd),
        Command::Classifier(args) => classifier::run(args),
        Command::Export(args) => export::run(args),
        Command::Plot(args) => plot::run(args),
    }
}
