//! The crate's error type: every failure a user can cause names the file (and,
//! for configs, the line and key) and what was expected.

use std::path::{Path, PathBuf};

/// Errors raised at the boundary of the engine (input files, models, output).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration file that cannot be parsed or fails validation
    /// (line 0: the file as a whole, e.g. unreadable).
    #[error("{}: {message}", location(path, *line, *column))]
    Config {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A structure file that cannot be read or describes an unusable system.
    #[error("structure {}: {message}", path.display())]
    Structure { path: PathBuf, message: String },
    /// A model file that is missing, not TorchScript, or breaks the interface.
    #[error("model {}: {message}", path.display())]
    Model { path: PathBuf, message: String },
    /// An invalid option that is not tied to a file (command line, API use).
    #[error("{0}")]
    Invalid(String),
    /// A failure writing outputs during a run.
    #[error("output {}: {message}", path.display())]
    Output { path: PathBuf, message: String },
    /// An output location that cannot be used at all (read-only, a file
    /// where a directory belongs, ...): bad input, found before any step.
    #[error("output {}: {message}", path.display())]
    OutputPath { path: PathBuf, message: String },
    /// A libtorch failure during the run.
    #[error("torch error while {context}: {source}")]
    Torch {
        context: String,
        #[source]
        source: tch::TchError,
    },
    /// The simulation itself went wrong (non-finite energies, ...).
    #[error("simulation: {0}")]
    Simulation(String),
    /// A run's outputs that cannot be read (`mlff-md report`).
    #[error("{}: {message}", path.display())]
    Input { path: PathBuf, message: String },
    /// Stopped by a signal after saving everything.
    #[error("{message}")]
    Interrupted { signal: i32, message: String },
}

impl Error {
    /// Exit status for the command line: 2 for bad input, 1 for run-time failures.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config { .. }
            | Error::Structure { .. }
            | Error::Model { .. }
            | Error::OutputPath { .. }
            | Error::Input { .. }
            | Error::Invalid(_) => 2,
            Error::Output { .. } | Error::Torch { .. } | Error::Simulation(_) => 1,
            // Shell convention: 128 + signal number (130 for SIGINT).
            Error::Interrupted { signal, .. } => 128 + signal,
        }
    }

    /// Whether libtorch ran out of device memory (its message is the only
    /// sign; the batch that caused it can be retried smaller or skipped).
    /// A model error's message is read without its path.
    pub fn is_out_of_memory(&self) -> bool {
        const WORDS: &str = "out of memory";
        match self {
            Error::Model { message, .. } => message.contains(WORDS),
            other => other.to_string().contains(WORDS),
        }
    }

    pub fn structure(path: &Path, message: impl Into<String>) -> Self {
        Error::Structure {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    pub fn model(path: &Path, message: impl Into<String>) -> Self {
        Error::Model {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    /// An unusable output location (exit 2).
    pub fn output_path(path: &Path, message: impl std::fmt::Display) -> Self {
        Error::OutputPath {
            path: path.to_path_buf(),
            message: message.to_string(),
        }
    }

    pub fn input(path: &Path, message: impl std::fmt::Display) -> Self {
        Error::Input {
            path: path.to_path_buf(),
            message: message.to_string(),
        }
    }

    pub fn output(path: &Path, message: impl std::fmt::Display) -> Self {
        Error::Output {
            path: path.to_path_buf(),
            message: message.to_string(),
        }
    }
}

/// `file:line:column`, or just `file` when there is no line.
fn location(path: &Path, line: usize, column: usize) -> String {
    match (line, column) {
        (0, _) => path.display().to_string(),
        (l, 0) => format!("{}:{l}", path.display()),
        (l, c) => format!("{}:{l}:{c}", path.display()),
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach a context to a libtorch error.
pub trait TorchContext<T> {
    fn torch_context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> TorchContext<T> for Result<T, tch::TchError> {
    fn torch_context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Torch {
            context: context(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The screen halves its batch and `bench md` skips a point on these
    /// words; libtorch puts them in every CUDA allocator failure.
    #[test]
    fn out_of_memory_is_recognised_in_a_model_error() {
        let oom = Error::Model {
            path: "m.pt".into(),
            message: "forward_pairs failed: RuntimeError: CUDA out of memory. Tried to allocate 5.47 GiB.".into(),
        };
        assert!(oom.is_out_of_memory());
        let other = Error::Model {
            path: "m.pt".into(),
            message: "forward_pairs failed: RuntimeError: shape mismatch".into(),
        };
        assert!(!other.is_out_of_memory());
        let in_path = Error::Model {
            path: "out of memory/m.pt".into(),
            message: "forward_pairs failed: RuntimeError: shape mismatch".into(),
        };
        assert!(!in_path.is_out_of_memory(), "the path is not the message");
    }
}
