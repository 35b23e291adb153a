//! The scoreboard: counters every process can see, in one block of shared
//! memory, for `mpchat status`.
//!
//! The parent maps it before it forks anything, so every process (hub
//! restarts included) inherits the same pages. It has two parts: the
//! server's totals, which whoever sees an event adds to (the parent counts
//! connections and refusals, a child its flood and slow-reader disconnects,
//! the hub the messages), and one slot per possible client, which the
//! parent hands to a child at fork and wipes when it reaps it, and which
//! only that child writes (its lines in and out and its backlog). The hub
//! reads it all to answer the admin socket.
//!
//! Apache's scoreboard and PostgreSQL's per-backend status in shared memory
//! work the same way. Every field is an atomic counter, updated with
//! relaxed ordering: each is a statistic on its own, and a reader only
//! needs each value to be whole, not all of them to be of one instant.

use std::collections::HashMap;
use std::io;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous};

use crate::os::clock;

/// The server's totals since it started.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Totals {
    /// Clients accepted and given a process.
    pub connections: AtomicU64,
    /// Refused because --max-clients were connected.
    pub refused_full: AtomicU64,
    /// Refused by the per-address limits.
    pub refused_address: AtomicU64,
    /// Refused because too many were still logging in, or no process
    /// could be forked.
    pub refused_busy: AtomicU64,
    pub flood_disconnects: AtomicU64,
    /// Disconnected for not reading (by their child or by the hub).
    pub slow_disconnects: AtomicU64,
    pub hub_restarts: AtomicU64,
    /// Public messages: chat lines, actions and scheduled messages.
    pub messages: AtomicU64,
    /// Programs that resumed (logged in with `after`), took a session
    /// over, or failed to prove they are the bot they said.
    pub resumes: AtomicU64,
    pub takeovers: AtomicU64,
    pub auth_failures: AtomicU64,
}

/// One client child's figures. A pid of 0 is a free slot.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Slot {
    pub pid: AtomicU64,
    /// When the client connected, in milliseconds since the Unix epoch.
    pub since_ms: AtomicU64,
    /// Lines received from the client.
    pub lines_in: AtomicU64,
    /// Lines written to the client.
    pub lines_out: AtomicU64,
    /// Lines waiting for the client to read them.
    pub backlog: AtomicU64,
}

impl Slot {
    /// Clears every field (the parent, at fork and at reap).
    fn clear(&self) {
        for field in [
            &self.pid,
            &self.since_ms,
            &self.lines_in,
            &self.lines_out,
            &self.backlog,
        ] {
            field.store(0, Ordering::Relaxed);
        }
    }
}

#[repr(C)]
struct Header {
    started_ms: AtomicU64,
    totals: Totals,
}

/// Where one client's slot is in a [`Scoreboard`]: made only by
/// [`Scoreboard::places`], so it always names a slot there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place(usize);

/// The shared block. It is never unmapped, so references to it are
/// `'static` in every process that inherits it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scoreboard {
    started_ms: &'static AtomicU64,
    pub totals: &'static Totals,
    slots: &'static [Slot],
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    add(counter, 1);
}

/// Adds `n` to a counter. Counters are only ever read as totals, so no
/// order with other memory is needed.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

pub(crate) fn now_ms() -> u64 {
    clock::unix_ms(SystemTime::now())
}

impl Scoreboard {
    /// Maps a scoreboard with `slots` client slots, shared with every
    /// process forked afterwards.
    pub(crate) fn create(slots: usize) -> io::Result<Scoreboard> {
        let header = std::mem::size_of::<Header>();
        let len = header + slots * std::mem::size_of::<Slot>();
        let len = NonZeroUsize::new(len).ok_or_else(|| io::Error::other("empty scoreboard"))?;
        // SAFETY: a fresh anonymous mapping overlaps nothing of ours. It is
        // shared (forked processes see the same pages, not copies), zeroed
        // by the kernel, and never unmapped.
        let base = unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }?;
        let base = base.as_ptr().cast::<u8>();
        // SAFETY: the mapping is page-aligned and `len` bytes long: a
        // Header at its start, then `slots` Slots (a Header's size is a
        // multiple of 8, the alignment of both). All of their fields are
        // atomics, for which all-zero bytes are valid values, and which
        // may be shared between processes. The mapping lives for the rest
        // of the process, so the references may be 'static.
        let (header, slots) = unsafe {
            (
                &*base.cast::<Header>(),
                std::slice::from_raw_parts(base.add(header).cast::<Slot>(), slots),
            )
        };
        header.started_ms.store(now_ms(), Ordering::Relaxed);
        Ok(Scoreboard {
            started_ms: &header.started_ms,
            totals: &header.totals,
            slots,
        })
    }

    /// When the server started, in milliseconds since the Unix epoch.
    pub(crate) fn started_ms(&self) -> u64 {
        self.started_ms.load(Ordering::Relaxed)
    }

    /// Every slot's place, for the parent to hand out: the last one
    /// first, so that popping gives slot 0 first.
    pub(crate) fn places(&self) -> Vec<Place> {
        (0..self.slots.len()).rev().map(Place).collect()
    }

    /// The slot at `place`.
    pub(crate) fn slot(&self, place: Place) -> &'static Slot {
        &self.slots[place.0]
    }

    /// Gives the slot at `place` to the child `pid` (the parent, after
    /// forking).
    ///
    /// The slot is clear already (zeroed by the kernel, or by
    /// [`Scoreboard::release`]) and is not cleared again: the child may
    /// have counted its first lines by the time the parent gets here.
    pub(crate) fn claim(&self, place: Place, pid: u32) {
        let slot = self.slot(place);
        slot.since_ms.store(now_ms(), Ordering::Relaxed);
        slot.pid.store(pid.into(), Ordering::Relaxed);
    }

    /// Frees the slot at `place` (the parent, after reaping its child).
    pub(crate) fn release(&self, place: Place) {
        self.slot(place).clear();
    }

    /// The slots in use, by their child's pid, in one pass.
    pub(crate) fn in_use(&self) -> HashMap<u32, &'static Slot> {
        self.slots
            .iter()
            .filter_map(|slot| match slot.pid.load(Ordering::Relaxed) {
                0 => None,
                pid => Some((pid as u32, slot)),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forked_process_sees_the_same_counters() {
        let board = Scoreboard::create(4).unwrap();
        board.claim(Place(2), 4242);
        // A child process adds to the totals and its slot; the parent sees it.
        // SAFETY: the child only touches atomics and calls _exit, which
        // is safe even though the test harness has other threads.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                bump(&board.totals.messages);
                board.slots[2].lines_out.store(7, Ordering::Relaxed);
                // SAFETY: _exit has no preconditions.
                unsafe { libc::_exit(0) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None).unwrap();
            }
        }
        assert_eq!(board.totals.messages.load(Ordering::Relaxed), 1);
        let slot = board.in_use()[&4242];
        assert_eq!(slot.lines_out.load(Ordering::Relaxed), 7);
        board.release(Place(2));
        assert!(board.in_use().is_empty());
        assert!(board.started_ms() > 0);
    }
}
