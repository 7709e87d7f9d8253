//! An exclusive lock on an output directory, held for the whole of a `run`,
//! `resume` or `minimize`, so two processes never write one directory (a
//! second `run --overwrite` would delete files the first still writes).
//!
//! The lock is `flock(2)` on `DIR/.mlff-md.lock`, which also holds the pid
//! of the process that has it. The kernel releases a flock when its process
//! ends, however it ends, so the file a killed process leaves behind is not
//! a lock: the next process takes it over and writes its own pid. The file
//! is never removed (removing it would let two processes lock two different
//! files under the same name).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Name of the lock file inside an output directory.
pub const LOCK_FILE: &str = ".mlff-md.lock";

/// Held while the value lives; released when it is dropped or the process ends.
#[derive(Debug)]
pub struct OutputLock {
    _file: File,
    path: PathBuf,
}

impl OutputLock {
    /// Lock `dir` (which must exist), or fail at once with an input error
    /// naming the process that holds it.
    pub fn acquire(dir: &Path) -> Result<OutputLock> {
        let path = dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::output_path(dir, format!("cannot create the lock file: {e}")))?;
        // SAFETY: flock only reads the descriptor, which `file` keeps open.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let who = holder
                    .lines()
                    .next()
                    .and_then(|l| l.strip_prefix("pid "))
                    .map(|pid| format!("process {}", pid.trim()))
                    .unwrap_or_else(|| "another process".to_string());
                return Err(Error::Invalid(format!(
                    "output directory {} is in use by another mlff-md run ({who} holds {}); wait for it to finish or stop it, or choose another --output",
                    dir.display(),
                    path.display()
                )));
            }
            return Err(Error::output_path(
                dir,
                format!("cannot lock {}: {err}", path.display()),
            ));
        }
        // Ours now: record who holds it (an earlier holder's pid may be there).
        let note = format!(
            "pid {}\ncommand {}\n",
            std::process::id(),
            std::env::args().collect::<Vec<_>>().join(" ")
        );
        let written = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(note.as_bytes()))
            .and_then(|()| file.flush());
        written.map_err(|e| {
            Error::output_path(dir, format!("cannot write {}: {e}", path.display()))
        })?;
        Ok(OutputLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_and_released_on_drop() {
        let dir = tempfile_dir("lock");
        let first = OutputLock::acquire(&dir).unwrap();
        // flock locks belong to the open file description: a second open in
        // the same process conflicts just as another process would.
        let e = OutputLock::acquire(&dir).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("process {}", std::process::id())),
            "{msg}"
        );
        drop(first);
        let again = OutputLock::acquire(&dir).unwrap();
        assert!(again.path().ends_with(LOCK_FILE));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_stale_lock_file_is_taken_over() {
        let dir = tempfile_dir("stale");
        // What a killed process leaves: the file with its pid, no flock.
        std::fs::write(dir.join(LOCK_FILE), "pid 999999999\n").unwrap();
        let lock = OutputLock::acquire(&dir).unwrap();
        let text = std::fs::read_to_string(lock.path()).unwrap();
        assert!(
            text.starts_with(&format!("pid {}\n", std::process::id())),
            "{text}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mlffmd-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
