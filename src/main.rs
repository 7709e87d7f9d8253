//! The `mlff-md` command line: argument parsing, signal handlers and exit
//! codes only.

use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use mlff_md::compile::{compile, CompileOptions, Kernels};
use mlff_md::config::{BlowupPolicy, Config, GraphPolicy, Overrides};
use mlff_md::device::{parse_device, resolve};
use mlff_md::error::Error;
use mlff_md::inspect::inspect;
use mlff_md::io::checkpoint::Checkpoint;
use mlff_md::parallel::{self, Communicator, Solo};
use mlff_md::report::{report, ReportOptions};
use mlff_md::run::{minimize, minimize_summary, run_on, validate, RunOptions, RunOutcome};
use mlff_md::screen::config::ScreenConfig;
use mlff_md::screen::{screen, ScreenOptions};

/// Molecular dynamics of many replicas in lockstep, with one batched
/// TorchScript force call per step for all of them.
#[derive(Parser)]
#[command(name = "mlff-md", version, about, long_about = None)]
#[command(after_help = "Examples:\n  \
    mlff-md inspect models/ani1x_nl.pt              what a model file takes and costs\n  \
    mlff-md validate configs/replica_exchange.toml   check files and model without running\n  \
    mlff-md run configs/replica_exchange.toml        run as configured\n  \
    mlff-md compile configs/replica_exchange.toml    a faster compiled package for that set-up (GPU)\n  \
    mlff-md run configs/ensemble.toml --steps 100 --device cpu --output /tmp/try --overwrite\n  \
    mlff-md run configs/ensemble.toml --resume --steps 40000   continue (and extend) a stopped run\n  \
    mlff-md resume out/ensemble                      continue to the step count the run was started with\n  \
    mlff-md resume out/ensemble --timestep 0.25      continue a run that blew up, with a smaller time step\n  \
    mlff-md screen library.sdf --config configs/screen.toml   minimise every molecule of a library\n  \
    mlff-md report out/replica_exchange              figures, acceptance and free energies of a run\n\n\
A resumed run continues to the step count it was started with (--steps included) unless\n\
--steps says otherwise; only --steps, --timestep, --on-blowup, --cuda-graphs and --device\n\
(and, in the config, [run] max_force, max_temperature and [integrator] friction) may change.\n\
One process at a time writes an output directory (it holds DIR/.mlff-md.lock).\n\n\
Ctrl-C (SIGINT) or SIGTERM finishes the current step, flushes outputs and writes a checkpoint;\n\
a second Ctrl-C (a second or more later) aborts at once.\n\n\
Exit status: 0 success, 2 bad input (config, structure, model), 1 failure during the run,\n\
130/143 stopped by SIGINT/SIGTERM after saving a checkpoint.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the simulation described by a TOML config.
    Run {
        /// The TOML config file.
        config: PathBuf,
        #[command(flatten)]
        common: Common,
        /// Output directory (relative to the working directory), replacing [output] directory.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Seed of all random numbers, replacing [ensemble] seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Replace the results of an earlier run in the output directory.
        #[arg(long, conflicts_with = "resume")]
        overwrite: bool,
        /// Continue the run whose checkpoint is in the output directory,
        /// appending to its outputs (see below for what may differ).
        #[arg(long)]
        resume: bool,
        /// With --resume: continue even if the model file's contents changed
        /// since the checkpoint (the new SHA-256 is recorded), and on what
        /// [model] compiled picks now (e.g. a package compiled since).
        #[arg(long, requires = "resume")]
        allow_model_change: bool,
    },
    /// Continue a stopped run from its output directory (reads the config
    /// stored in the checkpoint).
    Resume {
        /// The run's output directory (holding checkpoint.bin).
        directory: PathBuf,
        #[command(flatten)]
        common: Common,
        /// Continue even if the model file's contents changed since the
        /// checkpoint (the new SHA-256 is recorded), and on what [model]
        /// compiled picks now (e.g. a package compiled since).
        #[arg(long)]
        allow_model_change: bool,
    },
    /// Minimise every member with batched FIRE and write minimized.pdb
    /// (one MODEL per member) to the output directory.
    Minimize {
        /// The TOML config file ([minimize] sets the threshold and iteration limit).
        config: PathBuf,
        /// Output directory, replacing [output] directory.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Device: auto, cpu, cuda or cuda:N (replaces [model] device).
        #[arg(long)]
        device: Option<String>,
        /// Replace an existing minimized.pdb.
        #[arg(long)]
        overwrite: bool,
        /// Print nothing but errors and the result.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Minimise every molecule of a library (SDF, .sdf.gz, other structure
    /// files, folders) with batched FIRE, many different molecules per
    /// force call; a molecule leaves the batch when it converges and the
    /// next one enters. Writes minimized.sdf (final structures, energies as
    /// SD data items) and results.csv (one row per record) to the output
    /// directory.
    #[command(after_help = "Examples:\n  \
    mlff-md screen systems/screen/sample.sdf --config configs/screen.toml\n  \
    mlff-md screen library.sdf.gz more/ --config configs/screen.toml --output out/lib --device cuda\n  \
    mlff-md screen library.sdf.gz --config configs/screen.toml --resume   continue after Ctrl-C\n\n\
Records the model cannot take (unknown or unsupported elements, charged molecules for a\n\
model without a charge input, zero atoms, unreadable records) are skipped with one line\n\
each and listed in results.csv with the reason. Every finished molecule is appended to\n\
ledger.jsonl at once, so Ctrl-C (or a crash) loses nothing; --resume skips what is done.\n\
SMILES: python/smiles_to_sdf.py makes 3D records with RDKit (pip install rdkit).\n\n\
Exit status: 0 success, 2 bad input, 1 failure, 130/143 stopped by SIGINT/SIGTERM.")]
    Screen {
        /// Library files or folders, in order.
        #[arg(required = true)]
        library: Vec<PathBuf>,
        /// The screen's TOML config ([model], [minimize], [batch], [output]).
        #[arg(long, short)]
        config: PathBuf,
        /// Output directory, replacing [output] directory.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Device: auto, cpu, cuda or cuda:N (replaces [model] device).
        #[arg(long)]
        device: Option<String>,
        /// Continue the screen in the output directory (done molecules are kept).
        #[arg(long, conflicts_with = "overwrite")]
        resume: bool,
        /// Replace an earlier screen's results in the output directory.
        #[arg(long)]
        overwrite: bool,
        /// Print nothing but errors and the result.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Tell a run in figures: energies and temperatures over time, and for
    /// replica exchange the acceptance per neighbour pair, replica walks,
    /// round trips, energy histograms per temperature, a suggested ladder,
    /// and MBAR free energies and heat capacity over the ladder. Writes
    /// DIR/report/index.html (self-contained: SVG figures inline, no
    /// network), the figures as .svg and report.json; prints a summary.
    #[command(after_help = "Examples:\n  \
    mlff-md report out/replica_exchange            after (or during) a run\n  \
    mlff-md report out/ensemble --output /tmp/rep   somewhere else\n  \
    mlff-md report out/peptide_folding --reference systems/peptides/chignolin_folded.pdb --folded-below 2.0\n\n\
Peptides (a topology with backbone N, CA, C names) also get the Ramachandran map and the\n\
free energy along phi at the lowest temperature, from the trajectories.\n\
Works on finished, running (reads without locking; the writer is not disturbed) and\n\
resumed runs, and on a screen's output directory (results.csv). Free energies use the\n\
exchanges from the end of [equilibration] on, each temperature's series thinned by its\n\
statistical inefficiency; they are reduced (kT), of U - U0 (U0 the lowest energy sampled).\n\n\
Exit status: 0 success, 2 not a run directory or unreadable, 1 cannot write.")]
    Report {
        /// The run's output directory (holding observables.h5), or a screen's
        /// (holding results.csv).
        directory: PathBuf,
        /// Where to write the report (default DIR/report).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// A reference structure (PDB, ...; e.g. the folded peptide): RMSD
        /// per temperature over time, its distributions and the fraction
        /// folded, from the trajectories (CA atoms when both have them).
        #[arg(long)]
        reference: Option<PathBuf>,
        /// RMSD to the reference (Å) below which a frame counts as folded.
        #[arg(long, default_value_t = 2.0)]
        folded_below: f64,
        /// Print only the path of the page.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Benchmarks: batched vs sequential force calls, and MD throughput.
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
    /// Check a config without running: files, elements, device, and one
    /// evaluation of the model on every member.
    Validate {
        /// The TOML config file.
        config: PathBuf,
        /// Device: auto, cpu, cuda or cuda:N (replaces [model] device).
        #[arg(long)]
        device: Option<String>,
        /// Check the whole config, then build and evaluate one member
        /// instead of the whole batch (replica exchange: one member at the
        /// lowest temperature): for a config sized for a GPU on a small
        /// machine.
        #[arg(long)]
        one_member: bool,
    },
    /// Compile the config's static-shape model (e.g. models/ani1x_static.pt)
    /// into an AOTInductor package for its molecule, member count and
    /// device, stored in the package cache; later runs of the config (and
    /// of any config with the same model, molecule, members and device) use
    /// it in place of the model file ([model] compiled = "auto").
    #[command(after_help = "Examples:\n  \
    mlff-md compile configs/replica_exchange.toml            on the GPU the run will use\n  \
    mlff-md compile configs/ensemble.toml --python .venv/bin/python\n  \
    mlff-md compile configs/peptide_folding.toml --room 1.6,1.3  rows for the folded peptide\n  \
    mlff-md compile configs/peptide_folding.toml --resume    for the list the run's checkpoint holds\n  \
    mlff-md compile configs/peptide_folding.toml --kernels triton  only the angular sum by Triton\n\n\
Runs python/export_pt2.py (carried inside the binary) with a Python that has torch 2.11:\n\
--python, else $MLFF_MD_PYTHON, else python3. Compiling takes one to three minutes; the\n\
package serves only this molecule, member count and GPU (or CPU) model. On an H200 a\n\
package's steps were 1.18-1.35x faster than the TorchScript file's in the shipped configs\n\
(both in CUDA graphs); compiling pays for itself after about 1-2 million steps.\n\
Cache: $MLFF_MD_CACHE, else $XDG_CACHE_HOME/mlff-md, else ~/.cache/mlff-md. A resumed\n\
run keeps the force path it started with (package or file).\n\n\
A neighbour-list model's package (e.g. models/ani1x_nl.pt) takes the list shape the run\n\
starts with; a run whose list outgrows it evaluates the model file from then on (a warning\n\
says so). --room FACTOR,INNER compiles rows FACTOR times as long and angular rows INNER\n\
times (fresh runs' lists take them; chignolin's atoms have up to 39 neighbours within 5.2 A\n\
and 20 within 3.5 A extended, 63 and 25 folded, so a folding run wants about 1.6,1.3;\n\
longer rows cost time at every step, angular ones the most: on an H100 chignolin x 32 took\n\
1.65 ms per step with 1.6,1.3 against 1.30 without). --resume compiles for the list\n\
of the run's latest checkpoint instead (replacing the cached package, which fresh runs still\n\
use: their lists take its longer rows); then `mlff-md run CONFIG --resume\n\
--allow-model-change` continues on it.\n\n\
--kernels: for the neighbour-list ANI-1x/1ccx files on a GPU the package's angular sum and\n\
network layers are hand-written Triton kernels (auto = triton-nets, the default; the layers\n\
on tensor cores with three TF32 products, about float32's rounding); `triton` is the angular\n\
sum alone, `model` compiles the file's own code. On an H100, ms per step, file / package of\n\
its code / triton / triton-nets: chignolin x 32 2.23 / 1.83 / 1.47 / 1.30, alanine dipeptide\n\
x 4096 28.3 / 23.2 / 18.5 / 15.0 (14.2 with the current list build). Energies within 1e-10\n\
(relative) of the file's at the same positions; a graphed run repeats an eager one bit for\n\
bit.\n\n\
Exit status: 0 compiled (or already in the cache), 2 bad input or a model that cannot be\n\
compiled, or compiling failed.")]
    Compile {
        /// The run's TOML config.
        config: PathBuf,
        /// Device: auto, cpu, cuda or cuda:N (replaces [model] device).
        #[arg(long)]
        device: Option<String>,
        /// Python with torch 2.11 (default: $MLFF_MD_PYTHON, else python3).
        #[arg(long)]
        python: Option<PathBuf>,
        /// Compile again even if the cache holds this package.
        #[arg(long)]
        force: bool,
        /// Compile for the run's latest checkpoint: its neighbour list
        /// (grown since the start, say), which `run --resume` keeps;
        /// continue with `run --resume --allow-model-change`.
        #[arg(long)]
        resume: bool,
        /// With --resume: the run's output directory (relative to the
        /// working directory), replacing [output] directory.
        #[arg(long, short, requires = "resume")]
        output: Option<PathBuf>,
        /// Neighbour-list models: rows FACTOR times as long as the run
        /// starts with, and inner (angular) rows INNER times (default
        /// FACTOR), for a list that will grow (a peptide folding from an
        /// extended chain: 1.6,1.3).
        #[arg(
            long,
            value_name = "FACTOR[,INNER]",
            value_delimiter = ',',
            conflicts_with = "resume"
        )]
        room: Option<Vec<f64>>,
        /// What computes the model's terms: `model` (the file's own code,
        /// compiled by Inductor), `triton` (the neighbour-list ANI-1x/1ccx
        /// files on CUDA: their angular sum by hand-written Triton kernels,
        /// values copied exactly), `triton-tf32x3` (the same on tensor
        /// cores, values rounded to about float32's precision),
        /// `triton-nets` (triton's angular sum, and the networks' layers on
        /// tensor cores with three TF32 products) or `auto` (triton-nets
        /// where it serves, model elsewhere).
        #[arg(long, default_value = "auto", value_parser = clap::builder::PossibleValuesParser::new(
            std::iter::once("auto").chain(Kernels::ALL.map(Kernels::name))
        ))]
        kernels: String,
        /// Print nothing but errors and the package's path.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Describe a model file: contract version, methods, elements, cutoffs,
    /// periodic or not, CUDA-graph capturable or not, metadata, SHA-256,
    /// and the time of one forward + backward on a small molecule (it is
    /// loaded and evaluated as a run would; exit 2 if it cannot be used).
    Inspect {
        /// The TorchScript model file.
        model: PathBuf,
        /// Device: auto, cpu, cuda or cuda:N.
        #[arg(long, default_value = "auto")]
        device: String,
        /// Precision of the positions handed to the model, as [model] dtype.
        #[arg(long, default_value = "float32", value_parser = ["float32", "float64"])]
        dtype: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Sequential (one call per molecule) vs batched (one call per batch)
    /// forward + backward over the benchmark molecule set.
    Forces {
        #[command(flatten)]
        common: BenchCommon,
        /// Folder with index.json listing the molecules.
        #[arg(long, default_value = "systems/molecules")]
        molecules: PathBuf,
        /// Batch sizes (comma-separated).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "1,2,4,8,16,32,64,128,256,512,1024"
        )]
        batch_sizes: Vec<usize>,
        /// Timed trials per batch size.
        #[arg(long, default_value_t = 30)]
        trials: usize,
        /// Random displacement of every atom before each trial (Å).
        #[arg(long, default_value_t = 0.01)]
        perturbation: f64,
    },
    /// Langevin MD throughput for R replicas: replica-steps/s, ns/day,
    /// memory, and the engine-overhead ratio (MD step / bare model call).
    Md {
        #[command(flatten)]
        common: BenchCommon,
        /// Structures (comma-separated), each benchmarked at every R.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "systems/peptides/alanine_dipeptide.pdb,systems/peptides/chignolin_extended.pdb"
        )]
        structures: Vec<PathBuf>,
        /// Replica counts (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "1,8,64,256,1024,4096")]
        replicas: Vec<usize>,
        /// Timed MD steps per row.
        #[arg(long, default_value_t = 100)]
        steps: usize,
        /// Time step in fs.
        #[arg(long, default_value_t = 0.5)]
        timestep: f64,
        /// CUDA-graph settings to measure each row with, side by side
        /// (comma-separated auto/on/off; graphs need a GPU and a
        /// static-shape model such as models/ani1x_static.pt or
        /// models/ani1x_nl.pt).
        #[arg(long, value_delimiter = ',', default_value = "auto")]
        cuda_graphs: Vec<GraphPolicy>,
        /// Integrator: langevin (BAOAB, the default) or verlet (no
        /// thermostat noise: the difference is what the thermostat costs).
        #[arg(long, default_value = "langevin")]
        integrator: BenchIntegrator,
        /// Precision of the integrator state (positions, velocities).
        #[arg(long, default_value = "float64")]
        precision: BenchPrecision,
        /// Å the neighbour list of a periodic or large system reaches
        /// beyond the model's cutoff (as [run] neighbor_skin; 0: rebuilt in
        /// every step).
        #[arg(long, default_value_t = mlff_md::neighbors::DEFAULT_SKIN)]
        skin: f64,
        /// Time each row with the compiled package `mlff-md compile` put in
        /// the package cache for this model, molecule, R and GPU, where
        /// there is one (rows without one time the file, and say so).
        #[arg(long)]
        compiled: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BenchIntegrator {
    Langevin,
    Verlet,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BenchPrecision {
    Float64,
    Float32,
}

#[derive(Args)]
struct BenchCommon {
    /// TorchScript model.
    #[arg(long, default_value = "models/ani1x.pt")]
    model: PathBuf,
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Warm-up calls (or steps) before timing. `bench md` runs these steps
    /// eagerly, grows a neighbour list that overflowed in them, then lets
    /// the step be captured (its own 5 eager steps and the capture).
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Folder for the JSON and markdown results.
    #[arg(long, default_value = "benches/results")]
    out: PathBuf,
}

fn bench_device(s: &str) -> mlff_md::Result<tch::Device> {
    let spec = mlff_md::device::parse_device(s).map_err(mlff_md::Error::Invalid)?;
    mlff_md::device::resolve(spec).map_err(mlff_md::Error::Invalid)
}

fn run_bench(which: BenchCommand) -> mlff_md::Result<()> {
    use mlff_md::bench::{bench_forces, bench_md, ForcesOptions, MdOptions};
    match which {
        BenchCommand::Forces {
            common,
            molecules,
            batch_sizes,
            trials,
            perturbation,
        } => {
            let opts = ForcesOptions {
                model: common.model,
                molecules,
                device: bench_device(&common.device)?,
                batch_sizes,
                warmup: common.warmup,
                trials,
                perturbation,
                out: common.out,
            };
            let (report, path) = bench_forces(&opts)?;
            println!(
                "batch  ms/call  ms/molecule  speedup  molecules/s   ({})",
                report.device
            );
            for r in &report.rows {
                println!(
                    "{:5}  {:7.3}  {:11.4}  {:6.1}x  {:11.0}",
                    r.batch_size,
                    r.ms_per_call.median,
                    r.ms_per_molecule,
                    r.speedup,
                    r.molecules_per_second
                );
            }
            println!("wrote {}", path.display());
        }
        BenchCommand::Md {
            common,
            structures,
            replicas,
            steps,
            timestep,
            cuda_graphs,
            integrator,
            precision,
            skin,
            compiled,
        } => {
            let opts = MdOptions {
                model: common.model,
                structures,
                device: bench_device(&common.device)?,
                replicas,
                steps,
                warmup: common.warmup,
                timestep,
                temperature: 300.0,
                friction: 1.0,
                out: common.out,
                cuda_graphs,
                thermostat: matches!(integrator, BenchIntegrator::Langevin),
                state_kind: match precision {
                    BenchPrecision::Float64 => tch::Kind::Double,
                    BenchPrecision::Float32 => tch::Kind::Float,
                },
                skin,
                compiled,
            };
            let (report, path) = bench_md(&opts)?;
            println!(
                "structure  R  graph  ms/step  replica-steps/s  ns/day  overhead   ({})",
                report.device
            );
            for r in &report.rows {
                println!(
                    "{} {:5} {:>5} {:8.3} {:12.0} {:9.2} {:6.3}",
                    r.structure,
                    r.replicas,
                    if r.cuda_graph { "yes" } else { "no" },
                    r.ms_per_step,
                    r.replica_steps_per_second,
                    r.aggregate_ns_per_day,
                    r.engine_overhead_ratio
                );
            }
            for p in &report.did_not_fit {
                println!(
                    "{} {:5} {:>5}  did not fit in device memory",
                    p.structure, p.replicas, p.cuda_graphs
                );
            }
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}

#[derive(Args)]
struct Common {
    /// Number of MD steps in total, replacing [run] steps (raise it to extend a run).
    #[arg(long)]
    steps: Option<u64>,
    /// Device: auto, cpu, cuda or cuda:N (replaces [model] device).
    #[arg(long)]
    device: Option<String>,
    /// Capture each step in a CUDA graph: auto (on a GPU with a static-shape
    /// model such as models/ani1x_static.pt), on (fail if impossible) or off
    /// (replaces [run] cuda_graphs).
    #[arg(long, value_name = "auto|on|off")]
    cuda_graphs: Option<GraphPolicy>,
    /// Time step in fs, replacing [integrator] timestep (may change when a
    /// run is resumed, e.g. after a blow-up).
    #[arg(long, value_name = "FS")]
    timestep: Option<f64>,
    /// What to do when a member blows up: stop or reinitialize, replacing
    /// [run] on_blowup (may change when a run is resumed).
    #[arg(long, value_name = "stop|reinitialize")]
    on_blowup: Option<BlowupPolicy>,
    /// Print nothing but errors.
    #[arg(long, short)]
    quiet: bool,
}

impl Common {
    /// The command-line values that replace those of the config.
    fn overrides(&self, output: Option<PathBuf>, seed: Option<u64>) -> Overrides {
        Overrides {
            steps: self.steps,
            output,
            device: self.device.clone(),
            seed,
            cuda_graphs: self.cuda_graphs,
            timestep: self.timestep,
            on_blowup: self.on_blowup,
        }
    }
}

/// The config at `path` with the command line's `overrides` applied.
fn config_with(path: &std::path::Path, overrides: &Overrides) -> mlff_md::Result<Config> {
    let mut c = Config::from_file(path)?;
    c.apply(overrides)?;
    Ok(c)
}

/// Say so when a resume found nothing to do (a finished run prints its own summary).
fn report_outcome(outcome: &RunOutcome, quiet: bool) {
    if let (RunOutcome::AlreadyComplete { step, directory }, false) = (outcome, quiet) {
        eprintln!(
            "{}: already complete at step {step}; nothing changed (pass --steps N with N > {step} to extend it)",
            directory.display()
        );
    }
}

/// SIGINT/SIGTERM set `flag` to the signal number (the run stops cleanly);
/// a second one exits at once, unless it is a repeat of the first (see
/// [`REPEATED_SIGNAL_NS`]).
fn install_signal_handlers() -> Arc<AtomicUsize> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
    let flag = Arc::new(AtomicUsize::new(0));
    // When the first signal came (monotonic ns; 0: none yet).
    let first = Arc::new(AtomicU64::new(0));
    for sig in [SIGINT, SIGTERM] {
        let (flag, first) = (Arc::clone(&flag), Arc::clone(&first));
        let handler = move || {
            let now = monotonic_ns().max(1);
            match first.compare_exchange(0, now, SeqCst, SeqCst) {
                Ok(_) => flag.store(sig as usize, SeqCst),
                Err(t0) if now.saturating_sub(t0) >= REPEATED_SIGNAL_NS => {
                    signal_hook::low_level::exit(128 + sig)
                }
                Err(_) => {}
            }
        };
        // SAFETY: the handler does only async-signal-safe work: atomics,
        // clock_gettime and _exit.
        let _ = unsafe { signal_hook::low_level::register(sig, handler) };
    }
    flag
}

/// A second SIGINT/SIGTERM this long (ns) after the first exits at once (a
/// person pressing Ctrl-C again while the checkpoint is written); an earlier
/// one is the same request delivered twice and is ignored: `timeout -s INT`
/// signals its child and then the child's process group, and a run stopped
/// that way must still write its checkpoint (on an H200 one such run exited
/// without it).
const REPEATED_SIGNAL_NS: u64 = 1_000_000_000;

/// CLOCK_MONOTONIC in ns (async-signal-safe).
fn monotonic_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the struct we pass.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t);
    }
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// One trajectory file per member means thousands of open files for large
/// ensembles; many systems start processes with a soft limit of 1024. Raise
/// the soft limit to the hard one (allowed without privileges).
fn raise_open_file_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// libtorch's CPU allocator takes every large tensor from malloc, which
/// serves it by mmap and gives it back by munmap when the tensor is freed;
/// each step allocates the same sizes again, so it faults its whole working
/// set in afresh (measured on a 2-core CPU: as much time in the kernel as in
/// the model, and an LJ NPT test 2.4x slower). Keep freed memory in the
/// heap for reuse instead: what `MALLOC_MMAP_THRESHOLD_=2147483647
/// MALLOC_TRIM_THRESHOLD_=... MALLOC_TOP_PAD_=268435456` would do. The CUDA
/// caching allocator is not affected. Variables set by the user win.
fn keep_freed_memory() {
    let user_set = std::env::vars_os().any(|(k, _)| k.to_string_lossy().starts_with("MALLOC_"));
    if user_set {
        return;
    }
    // SAFETY: mallopt only changes glibc's allocator parameters; called
    // first thing, before any thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

/// A captured step records into a private memory pool, and a large batch
/// that is captured again (after its neighbour list grew) needs the old
/// pool's blocks back; with fixed-size segments they stay fragmented: on an
/// H200, chignolin in water x 32 (151k atoms) then failed for lack of 192
/// MiB with 84 GB reserved and unused. Expandable segments (PyTorch's own
/// remedy) let the allocator reuse them. Set before the first CUDA call;
/// a value chosen by the user wins.
fn expandable_cuda_segments() {
    if std::env::var_os("PYTORCH_CUDA_ALLOC_CONF").is_none() {
        std::env::set_var("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True");
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    expandable_cuda_segments();
    let cli = Cli::parse();
    raise_open_file_limit();
    // Runs started by mpirun/srun are ranks of one job (src/parallel).
    let comm: Rc<dyn Communicator> = match &cli.command {
        Command::Run { .. } | Command::Resume { .. } => match parallel::world() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(e.exit_code().clamp(1, 255) as u8);
            }
        },
        _ => Rc::new(Solo),
    };
    let hint = match cli.command {
        Command::Screen { .. } => Hint::Screen,
        _ => Hint::Members,
    };
    let result = match cli.command {
        Command::Run {
            config,
            common,
            output,
            seed,
            overwrite,
            resume,
            allow_model_change,
        } => config_with(&config, &common.overrides(output, seed))
            .and_then(|c| {
                let options = RunOptions {
                    quiet: common.quiet,
                    overwrite,
                    resume,
                    steps_given: common.steps.is_some(),
                    allow_model_change,
                    stop: Some(install_signal_handlers()),
                };
                run_on(&c, &options, Rc::clone(&comm)).map(|o| report_outcome(&o, common.quiet))
            }),
        Command::Resume {
            directory,
            common,
            allow_model_change,
        } => Checkpoint::read_latest(&directory)
            .and_then(|(ck, _)| {
                let mut c = Config::from_checkpoint(&ck.header)?;
                c.apply(&common.overrides(Some(directory.clone()), Some(ck.header.seed)))?;
                Ok(c)
            })
            .and_then(|c| {
                let options = RunOptions {
                    quiet: common.quiet,
                    overwrite: false,
                    resume: true,
                    steps_given: common.steps.is_some(),
                    allow_model_change,
                    stop: Some(install_signal_handlers()),
                };
                run_on(&c, &options, Rc::clone(&comm)).map(|o| report_outcome(&o, common.quiet))
            }),
        Command::Minimize {
            config,
            output,
            device,
            overwrite,
            quiet,
        } => config_with(
            &config,
            &Overrides {
                output,
                device,
                ..Overrides::default()
            },
        )
        .and_then(|c| {
                let (report, path) = minimize(&c, overwrite, quiet)?;
                println!("{}", minimize_summary(&report));
                println!("wrote {}", path.display());
                Ok(())
            }),
        Command::Compile {
            config,
            device,
            python,
            force,
            resume,
            output,
            room,
            kernels,
            quiet,
        } => config_with(
            &config,
            &Overrides {
                device,
                output,
                ..Overrides::default()
            },
        )
        .and_then(|c| {
                let options = CompileOptions {
                    python,
                    force,
                    quiet,
                    resume,
                    room,
                    kernels: Kernels::from_name(&kernels),
                };
                let done = compile(&c, &options)?;
                if quiet {
                    println!("{}", done.path.display());
                } else if done.compiled {
                    println!(
                        "compiled in {:.0} s: {}",
                        done.seconds,
                        done.path.display()
                    );
                } else {
                    println!(
                        "already compiled: {} (--force compiles it again)",
                        done.path.display()
                    );
                }
                Ok(())
            }),
        Command::Screen {
            library,
            config,
            output,
            device,
            resume,
            overwrite,
            quiet,
        } => ScreenConfig::from_file(&config).and_then(|c| {
            let options = ScreenOptions {
                inputs: library,
                output,
                device,
                resume,
                overwrite,
                quiet,
                stop: Some(install_signal_handlers()),
            };
            let s = screen(&c, &options)?;
            println!(
                "screened {} molecule(s) in {:.1} s ({:.2} molecules/s; {} done before): {} converged, {} not converged, {} of {} records skipped; {} force calls in batches of up to {} atoms",
                s.screened,
                s.wall_seconds,
                s.molecules_per_second,
                s.screened_before,
                s.converged,
                s.not_converged,
                s.skipped,
                s.records,
                s.force_calls,
                s.batch_atoms
            );
            let p = &s.phases;
            println!(
                "time: {:.1} s of set-up before (library, model, memory probe); then {:.1} s in {} blocks of FIRE iterations, {:.1} s in {} refills, {:.1} s in checks{}",
                s.setup_seconds,
                p.iterations_seconds,
                p.blocks,
                p.refill_seconds,
                p.refills,
                p.check_seconds,
                if s.sampling_seconds > 0.0 {
                    format!(", {:.1} s sampling conformers", s.sampling_seconds)
                } else {
                    String::new()
                }
            );
            println!(
                "wrote {}/{{minimized.sdf,results.csv,summary.json}}",
                s.output_directory.display()
            );
            Ok(())
        }),
        Command::Bench { which } => run_bench(which),
        Command::Report {
            directory,
            output,
            reference,
            folded_below,
            quiet,
        } => report(
            &directory,
            &ReportOptions {
                output,
                reference,
                folded_below,
            },
        )
        .map(|s| {
            if quiet {
                println!("{}", s.directory.join("index.html").display());
            } else {
                print!("{}", s.text);
            }
        }),
        Command::Inspect {
            model,
            device,
            dtype,
            json,
        } => parse_device(&device)
            .and_then(resolve)
            .map_err(mlff_md::Error::Invalid)
            .and_then(|device| {
                let kind = if dtype == "float64" {
                    tch::Kind::Double
                } else {
                    tch::Kind::Float
                };
                inspect(&model, device, kind)
            })
            .map(|report| {
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&report).expect("report serialises")
                    );
                } else {
                    println!("{}", report.text());
                }
            }),
        Command::Validate {
            config,
            device,
            one_member,
        } => config_with(
            &config,
            &Overrides {
                device,
                ..Overrides::default()
            },
        )
        .map(|c| {
                if one_member {
                    eprintln!(
                        "note: --one-member: evaluating 1 of the config's {} member(s)",
                        c.n_members()
                    );
                    c.one_member()
                } else {
                    c
                }
            })
            .and_then(|c| {
                let v = validate(&c)?;
                for w in &v.warnings {
                    eprintln!("warning: {w}");
                }
                if let Some(note) = &v.output_note {
                    eprintln!("note: {note}");
                }
                eprintln!("{}", v.cuda_graphs);
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
        Err(e) if comm.size() > 1 => {
            // Ranks stopped by a signal stop together (rank 0 says so); a
            // rank that failed ends the job rather than leave the others
            // waiting for it.
            let code = e.exit_code().clamp(1, 255);
            let together = matches!(e, Error::Interrupted { .. });
            if comm.rank() == 0 || !together {
                eprintln!("error (rank {}): {e}", comm.rank());
                print_hint(&e, hint);
            }
            if !together {
                comm.abort(code);
            }
            ExitCode::from(code as u8)
        }
        Err(e) => {
            eprintln!("error: {e}");
            print_hint(&e, hint);
            ExitCode::from(e.exit_code().clamp(1, 255) as u8)
        }
    }
}

/// Which advice an error's hint gives: what a user of the command can
/// change.
#[derive(Clone, Copy)]
enum Hint {
    /// Runs, minimisations, validation: the members are the batch.
    Members,
    /// A screen halves its own batches when molecules enter and do not fit.
    Screen,
}

/// What to do about an error whose message alone does not say it.
fn print_hint(e: &Error, hint: Hint) {
    if !e.is_out_of_memory() {
        return;
    }
    match hint {
        Hint::Members => eprintln!(
            "hint: the batch does not fit in the device's memory. Run fewer members per device \
             ([ensemble] members, or ranks of one job under mpirun: see the README). Models of \
             interface v1 split a batch into chunks of members on their own; neighbour-list \
             (v2) models are evaluated whole."
        ),
        Hint::Screen => eprintln!(
            "hint: the screen ran out of device memory where it cannot make its batch smaller: \
             a molecule alone did not fit, or a batch that had fit ran out later. Lower [batch] \
             max_atoms or memory_fraction for the second; the first needs a device with more \
             memory (or a model that needs less). --resume goes on without redoing finished \
             molecules."
        ),
    }
}
