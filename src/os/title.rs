//! Process titles: what `ps -ef` shows for each process, such as
//! `mpchat: hub, 3 users` or `mpchat: alice 203.0.113.7:51234`.
//!
//! Linux has no call for this. `ps` reads `/proc/PID/cmdline`, which the
//! kernel reads from the memory where it put the argv strings at exec, so a
//! process describes itself by writing over them, as sshd and PostgreSQL
//! do. `mpchat 9999` leaves only a dozen bytes of argv, so, like
//! PostgreSQL, [`init`] first moves the environment strings, which the
//! kernel put right after argv, to the heap, and then uses both areas as
//! one.
//!
//! From [`init`] on, this module owns that memory. Two things follow:
//! `std::env::args` must be read before [`init`] (afterwards it returns
//! pieces of the title), and `/proc/PID/environ` no longer shows the
//! environment (the variables themselves are unchanged for `std::env`).
//!
//! A forked process inherits a copy-on-write copy of the area, so each
//! process writes its own title without touching its parent's. The short
//! name in `ps -o comm` and `top` is separate: it is the kernel's `comm`,
//! set with `prctl(PR_SET_NAME)` (see [`crate::os::spawn::become_role`]).
//!
//! A title is a convenience, never a reason to fail: if anything is not as
//! expected, [`init`] says why at debug level and [`set`] does nothing.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Mutex, PoisonError};

/// The memory a title is written into: the argv strings, and the
/// environment strings after them when they could be moved away.
#[derive(Debug, Clone, Copy)]
struct Area {
    start: usize,
    len: usize,
}

/// Set by [`init`]. The lock also keeps two [`set`] calls from writing the
/// area at the same time.
static AREA: Mutex<Option<Area>> = Mutex::new(None);

/// Takes over the argv and environment strings for [`set`].
///
/// Call it once, early in `main`, after the command line has been parsed
/// (`std::env::args` returns pieces of the title afterwards) and while the
/// process still has one thread; after logging is set up, so that a reason
/// for titles being off reaches the log. Linux only (it reads
/// `/proc/self/stat`); a second call does nothing.
pub fn init() {
    let mut area = AREA.lock().unwrap_or_else(PoisonError::into_inner);
    if area.is_some() {
        return;
    }
    match take_over() {
        Ok(found) => *area = Some(found),
        Err(why) => log::debug!("process titles off: {why}"),
    }
}

/// Shows `title` in `ps -ef` and `/proc/PID/cmdline` for this process (and
/// for the processes it forks afterwards, until they set their own).
///
/// A title too long for the area is cut, at a character boundary; what is
/// left of the area is cleared so nothing of the old command line or
/// environment shows. Does nothing if [`init`] has not taken over the area.
pub fn set(title: &str) {
    let area = AREA.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(Area { start, len }) = *area else {
        return;
    };
    // SAFETY: [start, start + len) is the argv strings (and, when they were
    // moved away, the environment strings) that the kernel copied onto this
    // process's stack at exec; it stays mapped and writable for the
    // process's whole life. init() has moved the environment out of it and
    // is documented to run after the command line was read, so nothing but
    // this function uses it from then on (the kernel reading it for
    // /proc/PID/cmdline only copies bytes). Holding the lock makes this the
    // only reference to it while it lives.
    let bytes = unsafe { std::slice::from_raw_parts_mut(start as *mut u8, len) };
    render(title, bytes);
}

/// Writes `title` at the start of `area` and NULs over the rest, keeping
/// at least the last byte NUL so the area always ends a C string.
fn render(title: &str, area: &mut [u8]) {
    let Some(room) = area.len().checked_sub(1) else {
        return;
    };
    let end = title.floor_char_boundary(room);
    area[..end].copy_from_slice(&title.as_bytes()[..end]);
    area[end..].fill(0);
}

/// Where the kernel put this process's strings, from `/proc/self/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    threads: u64,
    arg_start: usize,
    arg_end: usize,
    env_start: usize,
    env_end: usize,
}

/// Finds the area and, when the environment strings follow argv, moves the
/// environment to the heap so both can hold the title.
fn take_over() -> Result<Area, String> {
    let stat = std::fs::read("/proc/self/stat").map_err(|e| format!("/proc/self/stat: {e}"))?;
    let layout = parse_stat(&stat).ok_or("/proc/self/stat: unexpected format")?;
    // Moving the environment, and later writing over argv, is only sound
    // while no other thread can be reading them.
    if layout.threads != 1 {
        return Err(format!("{} threads running", layout.threads));
    }
    if layout.arg_start == 0 || layout.arg_end <= layout.arg_start {
        return Err("no argv strings".into());
    }
    let argv_only = Area {
        start: layout.arg_start,
        len: layout.arg_end - layout.arg_start,
    };
    if layout.env_start != layout.arg_end || layout.env_end <= layout.env_start {
        log::debug!("process titles: environment not right after argv, using argv only");
        return Ok(argv_only);
    }
    match move_environment() {
        Ok(()) => Ok(Area {
            start: layout.arg_start,
            len: layout.env_end - layout.arg_start,
        }),
        Err(why) => {
            log::debug!("process titles: using argv only: {why}");
            Ok(argv_only)
        }
    }
}

/// Copies every environment variable to the heap and points the
/// environment at the copies, so the original strings are free to reuse.
fn move_environment() -> Result<(), String> {
    let mut vars = Vec::new();
    for (name, value) in std::env::vars_os() {
        // setenv() refuses such a name: rather than lose the variable, leave
        // the environment where it is.
        if name.is_empty() || name.as_bytes().contains(&b'=') {
            return Err(format!("cannot re-set variable {name:?}"));
        }
        match (
            CString::new(name.as_bytes()),
            CString::new(value.as_bytes()),
        ) {
            (Ok(name), Ok(value)) => vars.push((name, value)),
            _ => return Err(format!("variable {name:?} holds a NUL")),
        }
    }
    let mut lost = Vec::new();
    // SAFETY: take_over() has just checked that this process has a single
    // thread, so nothing can read or change the environment meanwhile, and
    // every pointer passed is a NUL-terminated string that outlives the
    // call (setenv() copies it).
    unsafe {
        if libc::clearenv() != 0 {
            return Err("clearenv() failed".into());
        }
        for (name, value) in &vars {
            if libc::setenv(name.as_ptr(), value.as_ptr(), 1) != 0 {
                lost.push(name);
            }
        }
    }
    // Out of memory this early: too late to undo clearenv(), so say so.
    for name in lost {
        log::warn!("environment variable {name:?} lost while moving the environment");
    }
    Ok(())
}

/// Reads the thread count and the argv and environment bounds from the
/// contents of `/proc/self/stat`.
///
/// The second field, the command name, is in parentheses and may itself
/// hold spaces and parentheses, so the fields are counted from the last
/// `)`.
fn parse_stat(stat: &[u8]) -> Option<Layout> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    // Field numbers as in proc(5); the first field after the name is 3.
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |n: usize| fields.get(n.checked_sub(3)?)?.parse::<u64>().ok();
    let address = |n: usize| usize::try_from(field(n)?).ok();
    Some(Layout {
        threads: field(20)?,
        arg_start: address(48)?,
        arg_end: address(49)?,
        env_start: address(50)?,
        env_end: address(51)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stat line as Linux 6 writes it (52 fields), with `comm` in it and
    /// field n holding n except for the ones read.
    fn stat_line(comm: &str) -> Vec<u8> {
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        for (n, value) in [
            (20, "1"),
            (48, "1000"),
            (49, "1012"),
            (50, "1012"),
            (51, "3000"),
        ] {
            fields[n - 3] = value.to_string();
        }
        format!("4242 ({comm}) {}\n", fields.join(" ")).into_bytes()
    }

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let expected = Layout {
            threads: 1,
            arg_start: 1000,
            arg_end: 1012,
            env_start: 1012,
            env_end: 3000,
        };
        assert_eq!(parse_stat(&stat_line("mpchat")), Some(expected));
        assert_eq!(parse_stat(&stat_line("a) b (c) 1 2")), Some(expected));
    }

    #[test]
    fn short_or_garbled_stat_is_refused() {
        assert_eq!(parse_stat(b"4242 (mpchat) S 1 4242"), None);
        assert_eq!(parse_stat(b"no parenthesis at all"), None);
        let line = String::from_utf8(stat_line("mpchat")).unwrap();
        assert_eq!(
            parse_stat(line.replace(" 3000 ", " 30x0 ").as_bytes()),
            None
        );
    }

    #[test]
    fn title_is_padded_with_nuls() {
        let mut area = *b"mpchat\09999\0HOME=/root\0";
        render("mpchat: hub", &mut area);
        assert_eq!(&area, b"mpchat: hub\0\0\0\0\0\0\0\0\0\0\0\0");
    }

    #[test]
    fn long_title_is_cut_and_ends_with_nul() {
        let mut area = [b'x'; 8];
        render("mpchat: listening", &mut area);
        assert_eq!(&area, b"mpchat:\0");
    }

    #[test]
    fn title_is_cut_at_a_character_boundary() {
        let mut area = [b'x'; 5];
        // 'é' takes bytes 3 and 4; only 4 bytes fit.
        render("café", &mut area);
        assert_eq!(&area, b"caf\0\0");
    }

    #[test]
    fn empty_area_is_left_alone() {
        render("mpchat", &mut []);
    }
}
