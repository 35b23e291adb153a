//! Who gets in: the parent's rules for refusing a connection before it
//! forks anything for it.
//!
//! Three rules, each with its own option (0 turns it off):
//! - at most `max_per_ip` connections at once from one source address;
//! - at most `conn_rate` new connections a minute from one address, with
//!   bursts of up to `conn_burst` (a token bucket per address);
//! - connections that have not chosen a nickname yet are refused at random
//!   from [`UNREGISTERED_START`] of them on, more and more often up to
//!   `max_unregistered`, where every new one is refused, in the manner of
//!   sshd's MaxStartups: a flood of idle connections cannot lock out the
//!   people already chatting, nor, for certain, a newcomer.
//!
//! The per-address table is bounded ([`MAX_ADDRESSES`]): an address with
//! no open connection is forgotten, least recently seen first, so a scan
//! from many addresses cannot grow it. Nothing here does I/O; the parent
//! asks [`Admission::check`] and reports what happened.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::Instant;

use crate::protocol::render;
use crate::protocol::reply::Code;

/// Addresses remembered at most.
pub(crate) const MAX_ADDRESSES: usize = 4096;
/// Unregistered connections from which new ones may be refused.
pub(crate) const UNREGISTERED_START: usize = 16;

/// The limits, as the command line set them; 0 turns one off.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_per_ip: usize,
    /// New connections per minute from one address.
    pub conn_rate: u32,
    /// How many of them may come at once.
    pub conn_burst: u32,
    pub max_unregistered: usize,
}

/// Why a connection is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Too many connections, at once or per minute, from the address.
    Address,
    /// Too many connections still logging in.
    Busy,
}

impl Refusal {
    /// The one line the client gets, and its code for a program.
    pub(crate) fn line(self) -> (&'static str, Code) {
        match self {
            Refusal::Address => (render::TOO_MANY_FROM_ADDRESS, Code::TooManyConnections),
            Refusal::Busy => (render::SERVER_BUSY, Code::ServerBusy),
        }
    }

    /// For the log.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Refusal::Address => "too many connections from that address",
            Refusal::Busy => "too many connections logging in",
        }
    }
}

#[derive(Debug)]
struct Address {
    open: usize,
    tokens: f64,
    /// When the tokens were last counted; also the address's age for
    /// eviction.
    seen: Instant,
}

/// The parent's admission state.
#[derive(Debug)]
pub(crate) struct Admission {
    limits: Limits,
    addresses: HashMap<IpAddr, Address>,
    random: Random,
}

impl Admission {
    pub(crate) fn new(limits: Limits) -> Admission {
        Admission {
            limits,
            addresses: HashMap::new(),
            random: Random::new(),
        }
    }

    /// True if the parent has to know how many clients are logging in.
    pub(crate) fn counts_unregistered(&self) -> bool {
        self.limits.max_unregistered > 0
    }

    /// Decides about a new connection from `ip` while `unregistered`
    /// others are logging in. Every connection from an address uses up a
    /// token, refused or not, so an address that keeps hammering stays
    /// refused. An admitted connection counts as open until
    /// [`Admission::closed`].
    pub(crate) fn check(
        &mut self,
        ip: IpAddr,
        unregistered: usize,
        now: Instant,
    ) -> Result<(), Refusal> {
        let limits = self.limits;
        let per_address = limits.max_per_ip > 0 || limits.conn_rate > 0;
        if per_address {
            let address = self.address(ip, now);
            let rate_ok = limits.conn_rate == 0 || address.take_token(limits, now);
            address.seen = now;
            if !rate_ok || (limits.max_per_ip > 0 && address.open >= limits.max_per_ip) {
                return Err(Refusal::Address);
            }
        }
        let roll = self.random.percent();
        if should_drop_unregistered(unregistered, limits.max_unregistered, roll) {
            return Err(Refusal::Busy);
        }
        if per_address {
            self.address(ip, now).open += 1;
        }
        Ok(())
    }

    /// A connection admitted by [`Admission::check`] has ended.
    pub(crate) fn closed(&mut self, ip: IpAddr) {
        if let Some(address) = self.addresses.get_mut(&ip) {
            address.open = address.open.saturating_sub(1);
        }
    }

    /// Number of addresses remembered.
    #[cfg(test)]
    pub(crate) fn remembered(&self) -> usize {
        self.addresses.len()
    }

    fn address(&mut self, ip: IpAddr, now: Instant) -> &mut Address {
        if !self.addresses.contains_key(&ip) && self.addresses.len() >= MAX_ADDRESSES {
            self.forget_oldest_idle();
        }
        let burst = f64::from(self.limits.conn_burst);
        self.addresses.entry(ip).or_insert(Address {
            open: 0,
            tokens: burst,
            seen: now,
        })
    }

    /// Forgets the least recently seen address with no open connection.
    /// (A linear scan: it runs only when the table is full, and the table
    /// is small.) If every address has an open connection, nothing is
    /// forgotten: their number is bounded by the clients the server takes.
    fn forget_oldest_idle(&mut self) {
        let oldest = self
            .addresses
            .iter()
            .filter(|(_, a)| a.open == 0)
            .min_by_key(|(_, a)| a.seen)
            .map(|(ip, _)| *ip);
        if let Some(ip) = oldest {
            self.addresses.remove(&ip);
        }
    }
}

impl Address {
    /// Refills the bucket for the time since the address was last seen,
    /// then takes a token: the connection may go ahead if there was one.
    /// A refused attempt takes one too, so an address that keeps
    /// hammering stays refused; its debt is capped at one burst, so once
    /// it stops it gets in again after at most two bursts' worth of time.
    fn take_token(&mut self, limits: Limits, now: Instant) -> bool {
        let per_second = f64::from(limits.conn_rate) / 60.0;
        let burst = f64::from(limits.conn_burst);
        let elapsed = now.saturating_duration_since(self.seen).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(burst);
        let allowed = self.tokens >= 1.0;
        self.tokens = (self.tokens - 1.0).max(-burst);
        allowed
    }
}

/// sshd's MaxStartups rule: with `unregistered` connections logging in, is
/// a new one refused? Never below [`UNREGISTERED_START`] (or `full`, if
/// that is lower), always from `full` on, and in between with a chance
/// that rises in a straight line: `roll` is a random number in 0..100.
/// `full` 0 turns the rule off.
pub(crate) fn should_drop_unregistered(unregistered: usize, full: usize, roll: u32) -> bool {
    if full == 0 {
        return false;
    }
    let start = UNREGISTERED_START.min(full);
    if unregistered < start {
        return false;
    }
    if unregistered >= full {
        return true;
    }
    // At `start`, 1 in (full - start + 1); one step more for each extra.
    let chance = (unregistered - start + 1) * 100 / (full - start + 1);
    (roll as usize) < chance
}

/// A small xorshift generator: refusing at random only has to be
/// unpredictable enough that a flood cannot count on a free slot.
#[derive(Debug)]
struct Random(u64);

impl Random {
    fn new() -> Random {
        // RandomState is seeded from the OS's random source.
        Random(RandomState::new().hash_one(0u64) | 1)
    }

    fn percent(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x % 100) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const OFF: Limits = Limits {
        max_per_ip: 0,
        conn_rate: 0,
        conn_burst: 0,
        max_unregistered: 0,
    };

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn nothing_is_refused_with_every_limit_off() {
        let mut a = Admission::new(OFF);
        let now = Instant::now();
        for _ in 0..1000 {
            assert_eq!(a.check(ip(1), 1000, now), Ok(()));
        }
        assert_eq!(a.remembered(), 0, "no table without per-address limits");
    }

    #[test]
    fn open_connections_per_address_are_capped_and_freed() {
        let mut a = Admission::new(Limits {
            max_per_ip: 2,
            ..OFF
        });
        let now = Instant::now();
        assert_eq!(a.check(ip(1), 0, now), Ok(()));
        assert_eq!(a.check(ip(1), 0, now), Ok(()));
        assert_eq!(a.check(ip(1), 0, now), Err(Refusal::Address));
        assert_eq!(
            a.check(ip(2), 0, now),
            Ok(()),
            "another address is not affected"
        );
        a.closed(ip(1));
        assert_eq!(a.check(ip(1), 0, now), Ok(()));
    }

    #[test]
    fn the_rate_allows_a_burst_then_refills() {
        let mut a = Admission::new(Limits {
            conn_rate: 60,
            conn_burst: 3,
            ..OFF
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(a.check(ip(1), 0, t0), Ok(()));
        }
        assert_eq!(a.check(ip(1), 0, t0), Err(Refusal::Address));
        // 60 a minute is one a second, but the refused attempt took a
        // token too: hammering keeps an address refused.
        let t1 = t0 + Duration::from_millis(1500);
        assert_eq!(a.check(ip(1), 0, t1), Err(Refusal::Address));
        let t2 = t1 + Duration::from_millis(1500);
        assert_eq!(a.check(ip(1), 0, t2), Ok(()));
        assert_eq!(a.check(ip(1), 0, t2), Err(Refusal::Address));
        // Never more than the burst, however long the pause.
        let t3 = t2 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(a.check(ip(1), 0, t3), Ok(()));
        }
        assert_eq!(a.check(ip(1), 0, t3), Err(Refusal::Address));
        // The debt of a long flood is capped at one burst: 3 s to pay it
        // back, 1 s more for a token.
        for _ in 0..1000 {
            assert_eq!(a.check(ip(1), 0, t3), Err(Refusal::Address));
        }
        let t4 = t3 + Duration::from_millis(4100);
        assert_eq!(a.check(ip(1), 0, t4), Ok(()));
    }

    #[test]
    fn unregistered_connections_are_refused_more_often_up_to_all() {
        let full = 64;
        for roll in 0..100 {
            assert!(!should_drop_unregistered(15, full, roll));
            assert!(should_drop_unregistered(64, full, roll));
            assert!(should_drop_unregistered(500, full, roll));
            assert!(!should_drop_unregistered(500, 0, roll), "0 turns it off");
        }
        let refused = |n| {
            (0..100)
                .filter(|&r| should_drop_unregistered(n, full, r))
                .count()
        };
        assert!(refused(16) > 0 && refused(16) < 10, "{}", refused(16));
        assert!(refused(40) > refused(16));
        assert!(refused(63) > 90 && refused(63) < 100, "{}", refused(63));
    }

    #[test]
    fn a_limit_below_the_start_refuses_exactly_at_the_limit() {
        for roll in 0..100 {
            assert!(!should_drop_unregistered(1, 2, roll));
            assert!(should_drop_unregistered(2, 2, roll));
        }
    }

    #[test]
    fn the_address_table_stays_bounded_and_keeps_open_addresses() {
        let mut a = Admission::new(Limits {
            max_per_ip: 1,
            ..OFF
        });
        let t0 = Instant::now();
        let busy = IpAddr::from([192, 0, 2, 1]);
        assert_eq!(a.check(busy, 0, t0), Ok(()));
        for i in 0..(MAX_ADDRESSES as u32 * 2) {
            let scanner = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
            let now = t0 + Duration::from_millis(u64::from(i) + 1);
            assert_eq!(a.check(scanner, 0, now), Ok(()));
            a.closed(scanner);
        }
        assert!(a.remembered() <= MAX_ADDRESSES);
        // The address with a connection open was not forgotten.
        assert_eq!(a.check(busy, 0, t0), Err(Refusal::Address));
    }

    #[test]
    fn random_rolls_cover_the_range() {
        let mut r = Random::new();
        let rolls: Vec<u32> = (0..1000).map(|_| r.percent()).collect();
        assert!(rolls.iter().all(|&x| x < 100));
        assert!(rolls.iter().any(|&x| x < 10) && rolls.iter().any(|&x| x >= 90));
    }
}
