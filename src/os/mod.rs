//! What every process uses from the operating system, and nothing else of
//! mpchat's: `fork()` and a new process's first steps, signals as events,
//! process titles, `/proc/PID/stat`, the scoreboard in shared memory, the
//! clock (stamps, poll timeouts, the stall clock), logging (and its
//! throttle), private directories, a client child's epoll wait set.
//!
//! May use: nothing in the crate outside `os`. Checked by
//! `scripts/check_layout.py`.

pub(crate) mod clock;
pub(crate) mod dirs;
pub mod logging;
pub mod procfs;
pub(crate) mod scoreboard;
pub(crate) mod signals;
pub(crate) mod spawn;
pub mod title;
pub(crate) mod waitset;
