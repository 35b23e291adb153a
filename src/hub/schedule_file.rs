//! The hub's state file: what must outlive one hub process (the scheduled
//! messages), so that the hub the parent starts after a crash carries on.
//!
//! The file is replaced, never edited in place: the new contents go to a
//! temporary file beside it, which is flushed to disk and then renamed
//! over the old one. A crash at any moment leaves the old file or the new
//! one, each whole; a write that fails leaves the old one as it was.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::os::logging::Throttle;
use crate::room::saved::State;

/// After a failed save the next try waits this long, so a full disk does
/// not slow the room; the failure is logged once a minute at most, so it
/// does not fill the log either.
const RETRY_AFTER: Duration = Duration::from_secs(1);
const LOG_EVERY: Duration = Duration::from_secs(60);

/// The schedule file, and which change of the room's schedule is in it.
pub(crate) struct ScheduleFile {
    path: PathBuf,
    saved_changes: u64,
    failed: Option<Instant>,
    errors: Throttle,
}

impl ScheduleFile {
    /// The file at `path`, which holds the schedule as of `saved_changes`.
    pub(crate) fn new(path: PathBuf, saved_changes: u64) -> ScheduleFile {
        ScheduleFile {
            path,
            saved_changes,
            failed: None,
            errors: Throttle::new(LOG_EVERY),
        }
    }

    /// Saves the schedule if it has changed since (`changes` counts its
    /// changes; `state` makes what is saved). A failure (disk full,
    /// read-only directory) is logged and chat goes on; the last good file
    /// stays as it was.
    pub(crate) fn save_if_changed(
        &mut self,
        changes: u64,
        state: impl FnOnce() -> State,
        now: Instant,
    ) {
        if changes == self.saved_changes
            || self
                .failed
                .is_some_and(|t| now.duration_since(t) < RETRY_AFTER)
        {
            return;
        }
        match save(&self.path, &state()) {
            Ok(()) => {
                self.saved_changes = changes;
                self.failed = None;
            }
            Err(e) => {
                self.failed = Some(now);
                self.errors.error(
                    now,
                    format_args!(
                        "cannot save the scheduled messages to {}: {e}",
                        self.path.display()
                    ),
                );
            }
        }
    }
}

/// Replaces the file at `path` with `state`, atomically.
pub(crate) fn save(path: &Path, state: &State) -> io::Result<()> {
    let bytes = serde_json::to_vec(state).map_err(io::Error::other)?;
    let temporary = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temporary, path)?;
    // The rename itself is only durable once the directory is.
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Reads the file at `path`. No file is an empty state (the first hub);
/// a file that cannot be read or understood is logged and ignored, since a
/// hub that refused to start would take the whole room down with it.
pub(crate) fn load(path: &Path) -> State {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return State::default(),
        Err(e) => {
            log::error!("cannot read {}: {e}; starting empty", path.display());
            return State::default();
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(state) => state,
        Err(e) => {
            log::error!("{} is damaged ({e}); starting empty", path.display());
            State::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::saved::SavedMessage;

    fn scratch_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("mpchat-state-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn sample() -> State {
        State {
            next_seq: 7,
            schedule: vec![SavedMessage {
                due_ms: 1_800_000_000_000,
                seq: 6,
                author: 42,
                author_nick: "alice".into(),
                text: "\"quotes\", \\ and\nnewlines".into(),
                room: "#lab2".into(),
            }],
            topics: vec![("#lab2".into(), "lab two".into())],
        }
    }

    #[test]
    fn what_is_saved_is_loaded() {
        let dir = scratch_dir("roundtrip");
        let path = dir.join("state.json");
        assert_eq!(load(&path), State::default(), "no file yet");
        save(&path, &sample()).unwrap();
        assert_eq!(load(&path), sample());
        assert!(!dir.join("state.tmp").exists());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_failed_save_leaves_the_old_file_whole() {
        let dir = scratch_dir("failed");
        let path = dir.join("state.json");
        save(&path, &sample()).unwrap();
        // The temporary file's name taken by a directory: the write fails.
        fs::create_dir(dir.join("state.tmp")).unwrap();
        assert!(save(&path, &State::default()).is_err());
        assert_eq!(load(&path), sample());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_damaged_file_is_an_empty_state() {
        let dir = scratch_dir("damaged");
        let path = dir.join("state.json");
        fs::write(&path, b"{\"next_seq\": 3, \"sched").unwrap();
        assert_eq!(load(&path), State::default());
        fs::remove_dir_all(dir).unwrap();
    }
}
