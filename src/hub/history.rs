//! The chat history on disk: every public line, one JSON object per line,
//! in numbered segment files (`history-000001.jsonl`, ...) inside the data
//! directory.
//!
//! The hub is the only writer. It only ever appends, so a line once
//! written is never touched again; a crash can only leave the last line
//! torn, and the next hub to start cuts that line off (and says so in the
//! log) before it appends anything. Lines are written to the file at the
//! end of each turn of the hub's loop, before anyone is sent them, so even
//! `kill -9` of the hub loses only what it had not yet handled. What is
//! written reaches the disk itself by `--fsync`: after every write, once a
//! second (on a thread of its own, so a slow disk never holds up the room),
//! or when the kernel decides.
//!
//! The parent holds [`DataDir`], whose lock keeps a second server from
//! writing into the same directory.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::mpsc::{self, SyncSender};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};

use crate::os::dirs::{self, IfExists};
use crate::os::logging::Throttle;
use crate::room::Entry;

/// How much of a segment's end is read to find its last lines: far more
/// than [`MAX_HISTORY`](crate::protocol::command::MAX_HISTORY) of the longest lines the protocol allows.
const TAIL_BYTES: u64 = 4 << 20;

/// The last entries a new hub reads back, over all rooms: each room's
/// last [`MAX_HISTORY`](crate::protocol::command::MAX_HISTORY) among them are kept, so a quiet room keeps its
/// lines across a restart while busy ones talk on (until this many lines
/// have passed since its last). The tail read parses this many and more
/// anyway.
const RESTORED: usize = 10_000;

/// Bytes that may wait for a disk that refuses them before they are given
/// up (and the loss logged), so a full disk cannot grow the hub forever.
const MAX_PENDING: usize = 4 << 20;

/// When written lines are forced to the disk (`--fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// After every write: nothing acknowledged is ever lost, at the price
    /// of a disk flush in the hub's loop.
    Always,
    /// Once a second, on a thread of its own: a power cut loses at most
    /// the last second.
    Interval,
    /// When the kernel decides (usually within 30 seconds).
    Never,
}

impl FromStr for Fsync {
    type Err = String;

    fn from_str(s: &str) -> Result<Fsync, String> {
        match s {
            "always" => Ok(Fsync::Always),
            "interval" => Ok(Fsync::Interval),
            "never" => Ok(Fsync::Never),
            _ => Err("expected always, interval or never".into()),
        }
    }
}

/// The history's settings from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub dir: PathBuf,
    /// A segment is closed and a new one started once it would grow past
    /// this size.
    pub segment_bytes: u64,
    /// Segments kept, the one being written included; older ones are
    /// deleted.
    pub keep: usize,
    pub fsync: Fsync,
    /// Lines shown to a user who joins (0: none).
    pub replay_lines: usize,
}

/// The data directory, created if need be (mode 0700) and locked for as
/// long as this value lives.
///
/// The lock is a POSIX record lock, which belongs to the process that took
/// it: forked processes do not inherit it, and their closing the inherited
/// fd does not release it. So the parent holds it for the server's whole
/// life, hub restarts included, and it ends when the parent does.
#[derive(Debug)]
pub(crate) struct DataDir {
    lock: File,
}

impl std::os::fd::AsFd for DataDir {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.lock.as_fd()
    }
}

impl DataDir {
    /// Creates and locks `dir`; the error is a line for the operator.
    pub(crate) fn open(dir: &Path) -> io::Result<DataDir> {
        let explain = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("cannot use data directory {}: {e}", dir.display()),
            )
        };
        dirs::private_dir(dir, IfExists::Take).map_err(explain)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.join("lock"))
            .map_err(explain)?;
        let mut whole_file = write_lock();
        match fcntl(&file, FcntlArg::F_SETLK(&whole_file)) {
            Ok(_) => Ok(DataDir { lock: file }),
            Err(Errno::EAGAIN | Errno::EACCES) => {
                let holder = match fcntl(&file, FcntlArg::F_GETLK(&mut whole_file)) {
                    Ok(_) if whole_file.l_type != libc::F_UNLCK as libc::c_short => {
                        format!(" (pid {})", whole_file.l_pid)
                    }
                    _ => String::new(),
                };
                Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "data directory {} is in use by another mpchat{holder}",
                        dir.display()
                    ),
                ))
            }
            Err(e) => Err(explain(e.into())),
        }
    }
}

/// A write lock on a whole file.
fn write_lock() -> libc::flock {
    // SAFETY: an all-zero `flock` is a valid value of that plain C struct
    // (start 0 and length 0: the whole file, however long it grows).
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("history-{number:06}.jsonl"))
}

/// The numbers of the segments in `dir`, oldest first.
fn segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut numbers = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let number = name
            .to_str()
            .and_then(|n| n.strip_prefix("history-"))
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u64>().ok());
        numbers.extend(number);
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// Cuts off a last line that has no newline (a write the crash
/// interrupted) and returns the size left. Whole lines are never touched.
fn cut_torn_line(path: &Path) -> io::Result<u64> {
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let mut end = len;
    let mut chunk = vec![0u8; 64 << 10];
    // Back from the end, a chunk at a time, to the last newline.
    let whole = loop {
        if end == 0 {
            break 0;
        }
        let start = end.saturating_sub(chunk.len() as u64);
        let part = &mut chunk[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(part)?;
        if let Some(i) = part.iter().rposition(|&b| b == b'\n') {
            break start + i as u64 + 1;
        }
        end = start;
    };
    if whole < len {
        file.set_len(whole)?;
        file.sync_all()?;
        log::warn!(
            "history: cut off a torn last line ({} bytes) of {}, left by an interrupted write",
            len - whole,
            path.display()
        );
    }
    Ok(whole)
}

/// The last `want` entries of the segment at `path`; lines that are not
/// entries are counted in `damaged` and skipped.
fn last_entries(path: &Path, want: usize, damaged: &mut usize) -> io::Result<Vec<Entry>> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let mut text = bytes.as_slice();
    if start > 0 {
        // Starts in the middle of a line: begin after it.
        let first = text.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
        text = &text[first..];
    }
    let mut entries = VecDeque::with_capacity(want);
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<Entry>(line) {
            Ok(entry) => {
                if entries.len() == want {
                    entries.pop_front();
                }
                entries.push_back(entry);
            }
            Err(_) => *damaged += 1,
        }
    }
    Ok(entries.into())
}

/// The hub's writer: appends entries to the newest segment and rotates.
pub(crate) struct Writer {
    dir: PathBuf,
    segment_bytes: u64,
    keep: usize,
    fsync: Fsync,
    number: u64,
    /// Shared with the flushing thread, which needs no fd of its own.
    file: Arc<File>,
    /// Bytes of the segment that are whole lines.
    size: u64,
    /// Lines not written yet.
    pending: Vec<u8>,
    /// Written since the last flush to disk.
    unsynced: bool,
    last_sync: Instant,
    syncer: Option<Syncer>,
    /// Write failures, logged once a minute.
    errors: Throttle,
}

impl Writer {
    /// Opens the newest segment for appending (mending a torn last line
    /// first) and returns the last [`RESTORED`] entries of the history.
    pub(crate) fn open(options: &Options) -> io::Result<(Writer, Vec<Entry>)> {
        let dir = options.dir.clone();
        let numbers = segments(&dir)?;
        let number = numbers.last().copied().unwrap_or(1);
        let path = segment_path(&dir, number);
        let size = cut_torn_line(&path)?;
        let recent = recent(&dir, &numbers)?;
        let file = Arc::new(open_segment(&path)?);
        let syncer = match options.fsync {
            Fsync::Interval => Some(Syncer::start()?),
            Fsync::Always | Fsync::Never => None,
        };
        let mut writer = Writer {
            dir,
            segment_bytes: options.segment_bytes.max(1),
            keep: options.keep.max(1),
            fsync: options.fsync,
            number,
            file,
            size,
            pending: Vec::new(),
            unsynced: false,
            last_sync: Instant::now(),
            syncer,
            errors: Throttle::new(Duration::from_secs(60)),
        };
        writer.prune();
        Ok((writer, recent))
    }

    /// Adds entries to what the next [`Writer::write`] writes, starting a
    /// new segment whenever the current one would grow too big.
    pub(crate) fn append(&mut self, entries: impl IntoIterator<Item = Entry>) {
        for entry in entries {
            let Ok(mut line) = serde_json::to_vec(&entry) else {
                continue;
            };
            line.push(b'\n');
            let used = self.size + self.pending.len() as u64;
            if used > 0 && used + line.len() as u64 > self.segment_bytes {
                self.rotate();
            }
            self.pending.extend_from_slice(&line);
        }
    }

    /// Writes what is pending, and flushes it to disk as `--fsync` says.
    /// Failures are logged (once a minute) and tried again at the next
    /// turn; the room goes on either way.
    pub(crate) fn write(&mut self, now: Instant) {
        if let Err(e) = self.write_pending() {
            self.failed(now, &e);
        }
        match self.fsync {
            Fsync::Always if self.unsynced => {
                self.unsynced = false;
                if let Err(e) = self.file.sync_data() {
                    self.failed(now, &e);
                }
            }
            Fsync::Interval if self.unsynced && now >= self.last_sync + Duration::from_secs(1) => {
                self.sync_in_background(now);
            }
            _ => {}
        }
    }

    /// When the hub must wake up to flush to disk, if it must.
    pub(crate) fn wake_by(&self) -> Option<Instant> {
        (self.fsync == Fsync::Interval && self.unsynced)
            .then(|| self.last_sync + Duration::from_secs(1))
    }

    /// Closes and opens the current segment again by name (SIGHUP), so a
    /// segment moved away by a log rotation tool gets a fresh file.
    pub(crate) fn reopen(&mut self) {
        let now = Instant::now();
        self.write(now);
        let path = segment_path(&self.dir, self.number);
        match open_segment(&path).and_then(|f| Ok((f.metadata()?.len(), f))) {
            Ok((size, file)) => {
                self.sync_in_background(now);
                self.file = Arc::new(file);
                self.size = size;
                log::info!("history: reopened {}", path.display());
            }
            Err(e) => log::error!("history: cannot reopen {}: {e}", path.display()),
        }
    }

    /// Writes what is pending and flushes it to disk: the hub is stopping.
    pub(crate) fn close(&mut self) {
        if let Err(e) = self.write_pending().and_then(|()| self.file.sync_data()) {
            log::error!("history: cannot write the last lines: {e}");
        }
    }

    fn write_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if let Err(e) = (&*self.file).write_all(&self.pending) {
            // A part written before the failure would be a torn line in
            // the middle of the file once later lines follow it.
            let _ = self.file.set_len(self.size);
            if self.pending.len() > MAX_PENDING {
                log::error!(
                    "history: gave up {} bytes of lines that could not be written",
                    self.pending.len()
                );
                self.pending.clear();
            }
            return Err(e);
        }
        self.size += self.pending.len() as u64;
        self.pending.clear();
        self.unsynced = true;
        Ok(())
    }

    fn sync_in_background(&mut self, now: Instant) {
        self.unsynced = false;
        self.last_sync = now;
        if let Some(syncer) = &self.syncer {
            syncer.sync(&self.file);
        }
    }

    /// Closes the current segment and starts the next one.
    fn rotate(&mut self) {
        let now = Instant::now();
        if let Err(e) = self.write_pending() {
            // Stay in this segment; the next turn tries again.
            self.failed(now, &e);
            return;
        }
        let path = segment_path(&self.dir, self.number + 1);
        let file = match open_segment(&path) {
            Ok(file) => file,
            Err(e) => {
                self.failed(now, &e);
                return;
            }
        };
        // The old segment is complete: flush it (in the background unless
        // every write is flushed anyway) before the new one is used.
        match self.fsync {
            Fsync::Always => {
                let _ = self.file.sync_data();
            }
            Fsync::Interval => self.sync_in_background(now),
            Fsync::Never => {}
        }
        if self.fsync != Fsync::Never
            && let Err(e) = File::open(&self.dir).and_then(|d| d.sync_all())
        {
            self.failed(now, &e);
        }
        self.file = Arc::new(file);
        self.number += 1;
        self.size = 0;
        log::info!("history: started {}", path.display());
        self.prune();
    }

    /// Deletes the segments beyond `--history-keep`.
    fn prune(&mut self) {
        let Some(oldest_kept) = self.number.checked_sub(self.keep as u64 - 1) else {
            return;
        };
        let numbers = segments(&self.dir).unwrap_or_default();
        for old in numbers.into_iter().filter(|&n| n < oldest_kept) {
            let path = segment_path(&self.dir, old);
            match fs::remove_file(&path) {
                Ok(()) => log::info!("history: deleted {}", path.display()),
                Err(e) => log::warn!("history: cannot delete {}: {e}", path.display()),
            }
        }
    }

    fn failed(&mut self, now: Instant, e: &io::Error) {
        let dir = self.dir.display();
        self.errors
            .error(now, format_args!("history: cannot write to {dir}: {e}"));
    }
}

fn open_segment(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

/// The last [`RESTORED`] entries over the segments `numbers` (oldest
/// first), newest segments read first.
fn recent(dir: &Path, numbers: &[u64]) -> io::Result<Vec<Entry>> {
    let mut damaged = 0;
    let mut entries: Vec<Entry> = Vec::new();
    for &number in numbers.iter().rev() {
        let want = RESTORED - entries.len();
        if want == 0 {
            break;
        }
        let mut older = match last_entries(&segment_path(dir, number), want, &mut damaged) {
            Ok(older) => older,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        older.append(&mut entries);
        entries = older;
    }
    if damaged > 0 {
        log::warn!(
            "history: skipped {damaged} damaged lines in {}",
            dir.display()
        );
    }
    Ok(entries)
}

/// Flushes segments to disk on a thread of its own.
struct Syncer {
    /// Room for one request: a flush already waiting covers every write
    /// made before it runs, so a second one would add nothing.
    requests: SyncSender<Arc<File>>,
}

impl Syncer {
    fn start() -> io::Result<Syncer> {
        let (requests, incoming) = mpsc::sync_channel::<Arc<File>>(1);
        std::thread::Builder::new()
            .name("history-sync".into())
            .spawn(move || {
                for file in incoming {
                    if let Err(e) = file.sync_data() {
                        log::error!("history: cannot flush to disk: {e}");
                    }
                }
            })?;
        Ok(Syncer { requests })
    }

    fn sync(&self, file: &Arc<File>) {
        let _ = self.requests.try_send(Arc::clone(file));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::Kind;
    use std::time::SystemTime;

    fn scratch_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("mpchat-history-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn options(dir: &Path, segment_bytes: u64, keep: usize) -> Options {
        Options {
            dir: dir.to_path_buf(),
            segment_bytes,
            keep,
            fsync: Fsync::Never,
            replay_lines: 20,
        }
    }

    fn say(i: usize) -> Entry {
        Entry::new(
            SystemTime::now(),
            "#lobby",
            Kind::Chat,
            "bob",
            &format!("line {i}"),
        )
    }

    #[test]
    fn what_is_written_is_read_back_after_a_restart() {
        let dir = scratch_dir("restart");
        let (mut writer, recent) = Writer::open(&options(&dir, 1 << 20, 4)).unwrap();
        assert!(recent.is_empty());
        writer.append((0..5).map(say));
        writer.write(Instant::now());
        drop(writer);
        let (_, recent) = Writer::open(&options(&dir, 1 << 20, 4)).unwrap();
        assert!(
            recent
                .iter()
                .all(|e| e.kind == Kind::Chat && e.nick == "bob")
        );
        let texts: Vec<&str> = recent.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(texts, ["line 0", "line 1", "line 2", "line 3", "line 4"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn segments_rotate_and_only_the_newest_are_kept() {
        let dir = scratch_dir("rotate");
        let line_len = serde_json::to_vec(&say(0)).unwrap().len() as u64 + 1;
        // Three lines to a segment, three segments kept.
        let (mut writer, _) = Writer::open(&options(&dir, 3 * line_len, 3)).unwrap();
        for i in 0..20 {
            writer.append([say(i % 10)]);
            writer.write(Instant::now());
        }
        let numbers = segments(&dir).unwrap();
        assert_eq!(numbers, [5, 6, 7]);
        for &n in &numbers[..2] {
            assert_eq!(
                fs::metadata(segment_path(&dir, n)).unwrap().len(),
                3 * line_len
            );
        }
        let (_, recent) = Writer::open(&options(&dir, 3 * line_len, 3)).unwrap();
        // Segments 5, 6 and 7 hold lines 12..20.
        assert_eq!(recent.len(), 8);
        assert_eq!(recent[0].text, "line 2");
        assert_eq!(recent[7].text, "line 9");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_last_line_is_cut_off_and_earlier_lines_are_kept() {
        let dir = scratch_dir("torn");
        let (mut writer, _) = Writer::open(&options(&dir, 1 << 20, 4)).unwrap();
        writer.append((0..3).map(say));
        writer.write(Instant::now());
        drop(writer);
        let path = segment_path(&dir, 1);
        let whole = fs::metadata(&path).unwrap().len();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(br#"{"time_ms":1,"kind":"chat","ni"#)
            .unwrap();
        drop(file);
        let (mut writer, recent) = Writer::open(&options(&dir, 1 << 20, 4)).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), whole);
        assert_eq!(recent.len(), 3);
        writer.append([say(3)]);
        writer.write(Instant::now());
        drop(writer);
        let (_, recent) = Writer::open(&options(&dir, 1 << 20, 4)).unwrap();
        let texts: Vec<&str> = recent.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(texts, ["line 0", "line 1", "line 2", "line 3"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn damaged_lines_are_skipped_and_the_rest_is_read() {
        let dir = scratch_dir("damaged");
        let path = segment_path(&dir, 1);
        let good = serde_json::to_string(&say(1)).unwrap();
        fs::write(&path, format!("{good}\n\0\0\0not json\n{good}\n")).unwrap();
        let (_, recent) = Writer::open(&options(&dir, 1 << 20, 4)).unwrap();
        assert_eq!(recent.len(), 2);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fsync_policies_parse() {
        assert_eq!("always".parse(), Ok(Fsync::Always));
        assert_eq!("interval".parse(), Ok(Fsync::Interval));
        assert_eq!("never".parse(), Ok(Fsync::Never));
        assert!("sometimes".parse::<Fsync>().is_err());
    }
}
