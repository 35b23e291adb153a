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

use crate::os::procfs;

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

/// Finds the area and, when the environment strings follow argv, moves the
/// environment to the heap so both can hold the title.
fn take_over() -> Result<Area, String> {
    let stat = procfs::read_self().map_err(|e| e.to_string())?;
    // Moving the environment, and later writing over argv, is only sound
    // while no other thread can be reading them.
    if stat.num_threads != 1 {
        return Err(format!("{} threads running", stat.num_threads));
    }
    let address = |a: u64| usize::try_from(a).map_err(|_| format!("address {a:#x} out of range"));
    let (arg_start, arg_end) = (address(stat.arg_start)?, address(stat.arg_end)?);
    let (env_start, env_end) = (address(stat.env_start)?, address(stat.env_end)?);
    if arg_start == 0 || arg_end <= arg_start {
        return Err("no argv strings".into());
    }
    let argv_only = Area {
        start: arg_start,
        len: arg_end - arg_start,
    };
    if env_start != arg_end || env_end <= env_start {
        log::debug!("process titles: environment not right after argv, using argv only");
        return Ok(argv_only);
    }
    match move_environment() {
        Ok(()) => Ok(Area {
            start: arg_start,
            len: env_end - arg_start,
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

#[cfg(test)]
mod tests {
    use super::*;

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
