//! The delivery ledger: which receiver saw which (sender, seq), and what
//! follows from it: loss, duplicates, per-sender reordering, whether all
//! receivers of a room saw one order, lines that crossed into another
//! room, and the latency distribution.

use crate::rooms::Rooms;

/// Log-linear latency histogram: exact below 128 ns, then 128 buckets per
/// power of two (under 1% error), in a few thousand counters whatever the
/// number of samples.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

const SUB: u64 = 128;

impl Histogram {
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; (64 * SUB) as usize],
            total: 0,
            max: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < SUB {
            return v as usize;
        }
        let e = 63 - u64::from(v.leading_zeros());
        let mantissa = v >> (e - 7);
        ((e - 6) * SUB + (mantissa - SUB)) as usize
    }

    /// The middle of bucket `i`.
    fn value(i: usize) -> u64 {
        let i = i as u64;
        if i < SUB {
            return i;
        }
        let e = i / SUB + 6;
        let mantissa = i % SUB + SUB;
        let low = mantissa << (e - 7);
        low + ((1u64 << (e - 7)) >> 1)
    }

    pub fn record(&mut self, v: u64) {
        self.counts[Self::index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1); 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        if rank == self.total {
            return self.max;
        }
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::value(i).min(self.max);
            }
        }
        self.max
    }
}

/// What happened to one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    New,
    Duplicate,
    /// Not a message of this run (sender or seq out of range, or an IRC
    /// sender hearing itself).
    Foreign,
    /// A message of this run said in a room the receiver is not in.
    CrossRoom,
}

#[derive(Debug)]
pub struct Tally {
    rooms: Rooms,
    receivers: usize,
    senders: usize,
    messages: u32,
    /// Whether a sender receives its own messages (mpchat yes, IRC no).
    self_delivery: bool,
    /// One bit per (receiver, sender, seq), receiver and sender of one
    /// room; the pair's slot is [`Rooms::pair`].
    seen: Vec<u64>,
    /// Last seq each receiver saw from each sender of its room, by pair
    /// slot (u32::MAX: none yet).
    last: Vec<u32>,
    /// Per receiver: a hash of the order it saw messages in.
    order: Vec<u64>,
    per_receiver: Vec<u64>,
    /// Per sender: which receiver's arrivals open its window.
    watcher: Vec<usize>,
    /// Per sender: one past the highest seq its watcher has seen.
    pub acked: Vec<u32>,
    pub received: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub foreign: u64,
    /// Messages of this run delivered to a client outside the sender's
    /// room: not deliveries, errors.
    pub cross_room: u64,
    pub latency: Histogram,
    pub first_ns: Option<u64>,
    pub last_ns: Option<u64>,
}

/// How far the receivers agree on one order. With rooms, each room is
/// compared on its own: its receivers against the room's first.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OrderSummary {
    /// Receivers that are expected to see every message of their room and
    /// were compared.
    pub compared: usize,
    /// Of those, how many saw exactly their room's reference receiver's
    /// order.
    pub agreeing: usize,
    /// All compared receivers saw every message of their room, in one
    /// order per room.
    pub one_global_order: bool,
}

const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

impl Tally {
    /// The ledger of one run: `rooms` says who is in which room and who
    /// sends; `self_delivery` whether the server echoes a sender's own
    /// messages (mpchat yes, IRC no).
    pub fn new(rooms: Rooms, messages: u32, self_delivery: bool) -> Tally {
        let receivers = rooms.clients();
        let senders = rooms.senders();
        let pairs = rooms.pairs();
        let bits = pairs as u64 * u64::from(messages);
        let watcher = (0..senders)
            .map(|s| {
                if self_delivery {
                    s
                } else {
                    rooms.next_member(s)
                }
            })
            .collect();
        Tally {
            rooms,
            receivers,
            senders,
            messages,
            self_delivery,
            seen: vec![0; bits.div_ceil(64) as usize],
            last: vec![u32::MAX; pairs],
            order: vec![FNV_OFFSET; receivers],
            per_receiver: vec![0; receivers],
            watcher,
            acked: vec![0; senders],
            received: 0,
            duplicates: 0,
            reordered: 0,
            foreign: 0,
            cross_room: 0,
            latency: Histogram::new(),
            first_ns: None,
            last_ns: None,
        }
    }

    pub fn expected(&self) -> u64 {
        self.rooms.expected(self.messages, self.self_delivery)
    }

    /// Records that `receiver` got (`sender`, `seq`) sent at `sent_ns`.
    pub fn record(
        &mut self,
        receiver: usize,
        sender: u32,
        seq: u32,
        sent_ns: u64,
        now_ns: u64,
    ) -> Outcome {
        let s = sender as usize;
        if receiver >= self.receivers
            || s >= self.senders
            || seq >= self.messages
            || (!self.self_delivery && receiver == s)
        {
            self.foreign += 1;
            return Outcome::Foreign;
        }
        if !self.rooms.same_room(receiver, s) {
            self.cross_room += 1;
            return Outcome::CrossRoom;
        }
        let pair = self.rooms.pair(receiver, s);
        let bit = pair as u64 * u64::from(self.messages) + u64::from(seq);
        let (word, mask) = ((bit / 64) as usize, 1u64 << (bit % 64));
        if self.seen[word] & mask != 0 {
            self.duplicates += 1;
            return Outcome::Duplicate;
        }
        self.seen[word] |= mask;
        self.received += 1;
        let last = self.last[pair];
        if last != u32::MAX && seq < last {
            self.reordered += 1;
        }
        self.last[pair] = if last == u32::MAX { seq } else { last.max(seq) };
        let key = (u64::from(sender) << 32) | u64::from(seq);
        self.order[receiver] = (self.order[receiver] ^ key).wrapping_mul(FNV_PRIME);
        self.per_receiver[receiver] += 1;
        if self.watcher[s] == receiver {
            self.acked[s] = self.acked[s].max(seq + 1);
        }
        self.latency.record(now_ns.saturating_sub(sent_ns));
        self.first_ns.get_or_insert(now_ns);
        self.last_ns = Some(now_ns);
        Outcome::New
    }

    /// Deliveries `receiver` should get and has not got (yet). A receiver
    /// the server disconnected with some missing will never get them.
    pub fn missing(&self, receiver: usize) -> u64 {
        if receiver >= self.receivers {
            return 0;
        }
        let senders = self.rooms.senders_heard_by(receiver, self.self_delivery);
        (senders as u64 * u64::from(self.messages)).saturating_sub(self.per_receiver[receiver])
    }

    /// Compares, room by room, each receiver that should see every
    /// message of its room (with IRC, those that do not send) against the
    /// room's first such receiver.
    pub fn order_summary(&self) -> OrderSummary {
        let full = |r: &usize| self.self_delivery || *r >= self.senders;
        let mut compared = 0;
        let mut agreeing = 0;
        let mut complete = true;
        for room in 0..self.rooms.count() {
            // Room k's members are k, k + N, k + 2N, ...
            let mut members = (room..self.receivers)
                .step_by(self.rooms.count())
                .filter(full);
            let Some(reference) = members.next() else {
                continue;
            };
            let per_full = self.rooms.senders_in(room) as u64 * u64::from(self.messages);
            for r in std::iter::once(reference).chain(members) {
                compared += 1;
                if self.order[r] == self.order[reference]
                    && self.per_receiver[r] == self.per_receiver[reference]
                {
                    agreeing += 1;
                }
                complete &= self.per_receiver[r] == per_full;
            }
        }
        OrderSummary {
            compared,
            agreeing,
            one_global_order: compared > 0 && complete && agreeing == compared,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_close() {
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        assert!((p50 / 50_000_000.0 - 1.0).abs() < 0.01, "{p50}");
        assert_eq!(h.max(), 100_000_000);
        assert_eq!(h.quantile(1.0), 100_000_000);
    }

    #[test]
    fn counts_duplicates_reordering_and_order() {
        let mut t = Tally::new(Rooms::new(1, 2, 1), 3, true);
        assert_eq!(t.record(0, 0, 0, 0, 10), Outcome::New);
        assert_eq!(t.record(0, 0, 0, 0, 10), Outcome::Duplicate);
        t.record(0, 0, 2, 0, 10);
        t.record(0, 0, 1, 0, 10);
        assert_eq!(t.reordered, 1);
        for q in 0..3 {
            t.record(1, 0, q, 0, 10);
        }
        assert_eq!(t.received, 6);
        assert_eq!(t.expected(), 6);
        let order = t.order_summary();
        assert_eq!((order.compared, order.agreeing), (2, 1));
        assert!(!order.one_global_order);
        assert_eq!(t.record(0, 5, 0, 0, 10), Outcome::Foreign);
    }

    #[test]
    fn irc_senders_do_not_hear_themselves() {
        let mut t = Tally::new(Rooms::new(1, 3, 1), 1, false);
        assert_eq!(t.record(0, 0, 0, 0, 1), Outcome::Foreign);
        t.record(1, 0, 0, 0, 1);
        assert_eq!(t.acked[0], 1);
        t.record(2, 0, 0, 0, 1);
        assert_eq!(t.expected(), 2);
        assert!(t.order_summary().one_global_order);
    }

    #[test]
    fn missing_deliveries_per_receiver() {
        // IRC: two senders, so a sender expects only the other's messages.
        let mut t = Tally::new(Rooms::new(1, 3, 2), 2, false);
        assert_eq!((t.missing(0), t.missing(1), t.missing(2)), (2, 2, 4));
        t.record(0, 1, 0, 0, 1);
        t.record(0, 1, 0, 0, 1);
        t.record(2, 0, 1, 0, 1);
        assert_eq!((t.missing(0), t.missing(2)), (1, 3));
        assert_eq!(t.missing(9), 0);
        // The line protocol echoes a sender's own messages.
        let mut t = Tally::new(Rooms::new(1, 2, 1), 2, true);
        t.record(0, 0, 0, 0, 1);
        t.record(0, 0, 1, 0, 1);
        assert_eq!((t.missing(0), t.missing(1)), (0, 2));
    }

    #[test]
    fn a_line_from_another_room_is_counted_apart() {
        // 6 clients in 2 rooms (0, 2, 4 and 1, 3, 5), senders 0 and 1.
        let mut t = Tally::new(Rooms::new(2, 6, 2), 2, true);
        assert_eq!(t.expected(), 2 * 3 * 2);
        assert_eq!(t.record(2, 0, 0, 0, 1), Outcome::New);
        assert_eq!(t.record(3, 0, 0, 0, 1), Outcome::CrossRoom);
        assert_eq!(t.record(4, 1, 1, 0, 1), Outcome::CrossRoom);
        assert_eq!((t.received, t.cross_room, t.foreign), (1, 2, 0));
        // Out of range stays foreign, whatever the room.
        assert_eq!(t.record(3, 2, 0, 0, 1), Outcome::Foreign);
        assert_eq!(t.missing(2), 1);
        assert_eq!(t.missing(3), 2);
    }

    #[test]
    fn each_room_is_compared_with_itself() {
        // 4 clients in 2 rooms (0, 2 and 1, 3), senders 0 and 1, two
        // messages each; the rooms see different messages, and room 1's
        // receivers disagree on the order.
        let mut t = Tally::new(Rooms::new(2, 4, 2), 2, true);
        for r in [0, 2] {
            t.record(r, 0, 0, 0, 1);
            t.record(r, 0, 1, 0, 1);
        }
        t.record(1, 1, 0, 0, 1);
        t.record(1, 1, 1, 0, 1);
        let o = t.order_summary();
        assert_eq!((o.compared, o.agreeing, o.one_global_order), (4, 3, false));
        t.record(3, 1, 0, 0, 1);
        t.record(3, 1, 1, 0, 1);
        let o = t.order_summary();
        assert_eq!((o.compared, o.agreeing, o.one_global_order), (4, 4, true));
        assert_eq!(t.received, t.expected());
    }

    #[test]
    fn irc_windows_are_opened_by_a_member_of_the_same_room() {
        // 6 clients in 3 rooms of 2, all sending: the sender does not hear
        // itself, so the other member's arrivals move its window.
        let mut t = Tally::new(Rooms::new(3, 6, 6), 1, false);
        assert_eq!(t.expected(), 6);
        assert_eq!(t.record(4, 1, 0, 0, 1), Outcome::New);
        assert_eq!(t.acked[1], 1);
        assert_eq!(t.record(1, 4, 0, 0, 1), Outcome::New);
        assert_eq!(t.acked[4], 1);
        // Every receiver sends, so none is expected to see a whole room.
        assert_eq!(t.order_summary().compared, 0);
    }
}
