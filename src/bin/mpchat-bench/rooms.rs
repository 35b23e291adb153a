//! Which room each client is in with `--rooms N`: client `i` is in room
//! `i % N`, named `#r{i % N}`. The senders are clients `0..S` as without
//! rooms, so they are spread over the rooms the same way: room `k` gets
//! `ceil((S - k) / N)` of them, the first `S % N` rooms one more than the
//! others when N does not divide S.
//!
//! Because a client's room follows from its number alone, and every
//! benchmark message carries its sender's number, a receiver knows which
//! room a message was said in without trusting how the server decorated
//! the line: that is how a line that crossed into another room is caught.
//!
//! With one room (the default) every client is in it, and the layout of
//! the delivery ledger is exactly the one-room layout it always was.

/// The room layout of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rooms {
    /// Rooms, at least 1.
    count: usize,
    clients: usize,
    senders: usize,
}

impl Rooms {
    /// The layout of `clients` clients, the first `senders` of them
    /// sending, over `count` rooms (0 is taken as 1, so no division by 0
    /// can follow from a bad value; the command line refuses it earlier).
    pub fn new(count: usize, clients: usize, senders: usize) -> Rooms {
        Rooms {
            count: count.max(1),
            clients,
            senders,
        }
    }

    pub fn count(&self) -> usize {
        self.count
    }

    pub fn clients(&self) -> usize {
        self.clients
    }

    pub fn senders(&self) -> usize {
        self.senders
    }

    /// The room client `client` is in.
    pub fn room_of(&self, client: usize) -> usize {
        // The division is skipped for one room: the ledger asks once per
        // delivery, millions of times a second.
        if self.count == 1 {
            0
        } else {
            client % self.count
        }
    }

    /// The name a client joins: `#r0`, `#r1`, ...
    pub fn name(room: usize) -> String {
        format!("#r{room}")
    }

    /// Whether two clients share a room.
    pub fn same_room(&self, a: usize, b: usize) -> bool {
        self.room_of(a) == self.room_of(b)
    }

    /// Clients in room `room`.
    pub fn members(&self, room: usize) -> usize {
        if room >= self.count {
            return 0;
        }
        self.clients.saturating_sub(room).div_ceil(self.count)
    }

    /// Senders in room `room`.
    pub fn senders_in(&self, room: usize) -> usize {
        if room >= self.count {
            return 0;
        }
        self.senders.saturating_sub(room).div_ceil(self.count)
    }

    /// The client after `client` in its room, back to the room's first
    /// after its last: with IRC a sender does not hear itself, so this is
    /// whose arrivals tell it how far its messages got.
    pub fn next_member(&self, client: usize) -> usize {
        let next = client + self.count;
        if next < self.clients {
            next
        } else {
            self.room_of(client)
        }
    }

    /// Receiver-sender pairs the ledger keeps a slot for: every member of
    /// a room with every sender of that room, each room as wide as the
    /// one with the most members and senders (room 0).
    pub fn pairs(&self) -> usize {
        self.clients.div_ceil(self.count) * self.senders.div_ceil(self.count) * self.count
    }

    /// The ledger slot of (`receiver`, `sender`), two clients of one room:
    /// the pair's place in its room's table (member index times the room's
    /// sender count, plus sender index), interleaved with the other rooms'.
    /// With one room that is `receiver * senders + sender`, the layout the
    /// ledger had before there were rooms.
    pub fn pair(&self, receiver: usize, sender: usize) -> usize {
        if self.count == 1 {
            receiver * self.senders + sender
        } else {
            let in_room =
                (receiver / self.count) * self.senders.div_ceil(self.count) + sender / self.count;
            in_room * self.count + receiver % self.count
        }
    }

    /// Deliveries of one message of `sender`: every member of its room
    /// (room 0, sender 0's, is never smaller than another),
    /// the sender itself only when the server echoes (`self_delivery`).
    pub fn receivers_of(&self, sender: usize, self_delivery: bool) -> usize {
        let members = self.members(self.room_of(sender));
        if self_delivery {
            members
        } else {
            members.saturating_sub(1)
        }
    }

    /// Messages `receiver` should get per message count: one from each
    /// sender of its room (not its own when the server does not echo).
    pub fn senders_heard_by(&self, receiver: usize, self_delivery: bool) -> usize {
        let senders = self.senders_in(self.room_of(receiver));
        if !self_delivery && receiver < self.senders {
            senders.saturating_sub(1)
        } else {
            senders
        }
    }

    /// Deliveries of the whole run when each sender sends `messages`.
    pub fn expected(&self, messages: u32, self_delivery: bool) -> u64 {
        (0..self.count)
            .map(|room| {
                let members = self.members(room) as u64;
                let per_message = if self_delivery {
                    members
                } else {
                    members.saturating_sub(1)
                };
                self.senders_in(room) as u64 * per_message
            })
            .sum::<u64>()
            * u64::from(messages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_and_senders_go_round_the_rooms() {
        let r = Rooms::new(3, 10, 4);
        let rooms: Vec<usize> = (0..10).map(|c| r.room_of(c)).collect();
        assert_eq!(rooms, [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]);
        assert_eq!((r.members(0), r.members(1), r.members(2)), (4, 3, 3));
        // Senders 0..4: rooms 0, 1, 2, 0.
        assert_eq!(
            (r.senders_in(0), r.senders_in(1), r.senders_in(2)),
            (2, 1, 1)
        );
        assert_eq!((r.members(3), r.senders_in(3)), (0, 0));
        assert_eq!(Rooms::name(0), "#r0");
        assert_eq!(Rooms::name(99), "#r99");
    }

    #[test]
    fn fewer_senders_than_rooms_leaves_rooms_without_senders() {
        let r = Rooms::new(4, 8, 2);
        assert_eq!(
            (0..4).map(|k| r.senders_in(k)).collect::<Vec<_>>(),
            [1, 1, 0, 0]
        );
        assert_eq!(r.expected(10, true), 2 * 2 * 10);
    }

    #[test]
    fn same_room_is_the_same_remainder() {
        let r = Rooms::new(100, 1000, 1000);
        assert!(r.same_room(7, 107));
        assert!(r.same_room(999, 99));
        assert!(!r.same_room(7, 8));
        let one = Rooms::new(1, 1000, 10);
        assert!(one.same_room(7, 8));
        assert_eq!(one.room_of(999), 0);
    }

    #[test]
    fn one_room_keeps_the_old_ledger_layout_and_counts() {
        let r = Rooms::new(1, 100, 10);
        assert_eq!(r.pairs(), 100 * 10);
        assert_eq!(r.pair(7, 3), 7 * 10 + 3);
        assert_eq!(r.expected(1000, true), 100 * 10 * 1000);
        assert_eq!(r.expected(1000, false), 99 * 10 * 1000);
        assert_eq!(r.receivers_of(3, true), 100);
        assert_eq!(r.receivers_of(3, false), 99);
        assert_eq!(r.next_member(3), 4);
        assert_eq!(r.next_member(99), 0);
        // Zero rooms cannot divide by zero.
        assert_eq!(Rooms::new(0, 5, 1).count(), 1);
    }

    #[test]
    fn pair_slots_are_distinct_and_in_range() {
        for (count, clients, senders) in [(3, 10, 4), (100, 1000, 1000), (7, 50, 3), (4, 4, 4)] {
            let r = Rooms::new(count, clients, senders);
            let mut used = vec![false; r.pairs()];
            for receiver in 0..clients {
                for sender in (0..senders).filter(|&s| r.same_room(receiver, s)) {
                    let p = r.pair(receiver, sender);
                    assert!(p < r.pairs(), "{count} {clients} {senders}: {p}");
                    assert!(!used[p], "{count} {clients} {senders}: slot {p} twice");
                    used[p] = true;
                }
            }
        }
    }

    #[test]
    fn expected_deliveries_sum_over_the_rooms() {
        // 1000 clients in 100 rooms of 10, every one of them sending:
        // each message reaches the 10 members, or 9 without the echo.
        let r = Rooms::new(100, 1000, 1000);
        assert_eq!(r.expected(20, true), 1000 * 10 * 20);
        assert_eq!(r.expected(20, false), 1000 * 9 * 20);
        assert_eq!(r.senders_heard_by(5, true), 10);
        assert_eq!(r.senders_heard_by(5, false), 9);
        // Uneven: rooms of 4, 3, 3 with 2, 1, 1 senders.
        let r = Rooms::new(3, 10, 4);
        assert_eq!(r.expected(1, true), 2 * 4 + 3 + 3);
        assert_eq!(r.expected(1, false), 2 * 3 + 2 + 2);
        assert_eq!(r.receivers_of(1, true), 3);
        assert_eq!(r.senders_heard_by(9, true), 2);
        assert_eq!(r.senders_heard_by(3, false), 1);
    }

    #[test]
    fn the_next_member_stays_in_the_room() {
        let r = Rooms::new(3, 10, 10);
        assert_eq!(r.next_member(0), 3);
        assert_eq!(r.next_member(9), 0);
        assert_eq!(r.next_member(7), 1);
        assert_eq!(r.next_member(8), 2);
        for c in 0..10 {
            assert!(r.same_room(c, r.next_member(c)));
            assert_ne!(c, r.next_member(c));
        }
    }
}
