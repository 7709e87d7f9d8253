//! The `mlff-md` command line: argument parsing and exit codes only.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use mlff_md::config::{Config, Overrides};
use mlff_md::run::{run, validate, RunOptions};

/// Molecular dynamics of many replicas in lockstep, with one batched
/// TorchScript force call per step for all of them.
#[derive(Parser)]
#[command(name = "mlff-md", version, about, long_about = None)]
#[command(after_help = "Examples:\n  \
    mlff-md validate configs/ensemble.toml      check files and model without running\n  \
    mlff-md run configs/ensemble.toml           run as configured\n  \
    mlff-md run configs/ensemble.toml --steps 100 --device cpu --output /tmp/try --overwrite\n\n\
Exit status: 0 success, 2 bad input (config, structure, model), 1 failure during the run.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the simulation described by a TOML config.
    Run {
        #[command(flatten)]
        common: Common,
        /// Output directory (relative to the working directory), replacing [output] directory.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Number of MD steps, replacing [run] steps.
        #[arg(long)]
        steps: Option<u64>,
        /// Seed of all random numbers, replacing [ensemble] seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Replace the results of an earlier run in the output directory.
        #[arg(long)]
        overwrite: bool,
        /// Print nothing but errors.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Check a config without running: files, elements, device, and one
    /// evaluation of the model on every member.
    Validate {
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Args)]
struct Common {
    /// The TOML config file.
    config: PathBuf,
    /// Device: auto, cpu, cuda or cuda:N (replaces [model] device).
    #[arg(long)]
    device: Option<String>,
}

fn load(common: &Common, overrides: Overrides) -> mlff_md::Result<Config> {
    let mut config = Config::from_file(&common.config)?;
    config.apply(&Overrides {
        device: common.device.clone(),
        ..overrides
    })?;
    Ok(config)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            common,
            output,
            steps,
            seed,
            overwrite,
            quiet,
        } => load(
            &common,
            Overrides {
                steps,
                output,
                seed,
                device: None,
            },
        )
        .and_then(|config| run(&config, &RunOptions { quiet, overwrite }).map(|_| ())),
        Command::Validate { common } => load(&common, Overrides::default()).and_then(|config| {
            let v = validate(&config)?;
            for w in &v.warnings {
                eprintln!("warning: {w}");
            }
            let shown: Vec<String> = v.energies_ev.iter().take(4).map(|e| format!("{e:.6}")).collect();
            println!(
                "ok: {} member(s) of {} atoms ({} starting structure(s)) on {}; {}; initial energies (eV): {}{}",
                v.members,
                v.atoms,
                v.structures,
                v.device,
                v.model,
                shown.join(", "),
                if v.members > 4 { ", ..." } else { "" }
            );
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
