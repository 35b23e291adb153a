//! Rooms: `/join`, `/part`, `/rooms`, `/topic`, `/user` and `/kick` in a
//! room, owners, per-room history, and rooms kept across restarts of the
//! hub and of the whole server.
//!
//! A public line of room R reads `[HH:MM] alice: hi` for a member whose
//! current room is R and `[HH:MM] #lab2 alice: hi` for a member whose
//! current room is another; chat-wide events (leaving the chat, renames,
//! kicks from the chat) carry no room name.

mod common;
use common::*;

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

// ---------------------------------------------------------------------------
// Helpers local to this file.
// ---------------------------------------------------------------------------

const BAD_ROOM_NAME: &str = "Room names are # and 1 to 32 letters, digits, _, - or . (like #lab2).";
const LAST_ROOM: &str = "You cannot leave your last room; /quit leaves the chat.";

/// Asserts that the next line of each of `clients` is `[HH:MM] ` followed
/// by exactly `rest`.
fn all_expect(clients: &mut [&mut Client], rest: &str) {
    for client in clients.iter_mut() {
        client.expect_stamped(rest);
    }
}

/// `first` creates `room` (and so owns it), then `second` joins it; both
/// see each join. Each client comes with its nickname.
fn both_join(room: &str, first: (&mut Client, &str), second: (&mut Client, &str)) {
    let ((first, first_nick), (second, second_nick)) = (first, second);
    first.send_line(&format!("/join {room}"));
    first.expect_stamped(&format!("* {first_nick} has joined {room}."));
    second.send_line(&format!("/join {room}"));
    let joined = format!("* {second_nick} has joined {room}.");
    all_expect(&mut [first, second], &joined);
}

/// Asserts that the next lines of `client` are exactly `lines`.
fn expect_lines(client: &mut Client, lines: &[&str]) {
    for line in lines {
        client.expect(line);
    }
}

/// Starts a server that replays up to 20 lines on joining (the harness
/// turns the replay off).
fn start_with_history() -> Server {
    Server::start_with(&["--history-lines", "20"])
}

// ---------------------------------------------------------------------------
// 1. Nothing changes for those who never use a room command.
// ---------------------------------------------------------------------------

#[test]
fn a_user_who_never_uses_rooms_sees_exactly_the_lines_of_before() {
    let server = Server::start();
    let [mut alice, mut bob, mut carol] = server.login_all(["alice", "bob", "carol"]);
    // What happens in another room reaches neither alice nor bob.
    carol.send_line("/join #lab2");
    carol.expect_stamped("* carol has joined #lab2.");
    carol.send_line("elsewhere");
    carol.expect_stamped("carol: elsewhere");

    alice.send_line("hi");
    all_expect(&mut [&mut alice, &mut bob], "alice: hi");
    carol.expect_stamped("#lobby alice: hi");
    bob.send_line("/me waves");
    all_expect(&mut [&mut alice, &mut bob], "* bob waves");
    carol.expect_stamped("#lobby * bob waves");
    alice.send_line("/users");
    alice.expect("Users in chat: alice, bob, carol");
    bob.send_line("/quit");
    bob.expect("Bye, bob.");
    bob.expect_closed();
    all_expect(&mut [&mut alice, &mut carol], "* bob has left the chat.");
    // The lobby's history holds the lobby's lines only.
    alice.send_line("/history 3");
    expect_replay(
        &mut alice,
        &["alice: hi", "* bob waves", "* bob has left the chat."],
    );
    alice.send_line("bye");
    alice.expect_stamped("alice: bye");
    carol.expect_stamped("#lobby alice: bye");
}

// ---------------------------------------------------------------------------
// 2. /join, and where lines go.
// ---------------------------------------------------------------------------

#[test]
fn a_room_hears_its_own_lines_and_members_elsewhere_see_its_name() {
    let server = Server::start();
    let [mut alice, mut bob, mut carol, mut dave] =
        server.login_all(["alice", "bob", "carol", "dave"]);

    both_join("#lab2", (&mut alice, "alice"), (&mut bob, "bob"));
    // Alice talks in the lobby again, still a member of #lab2.
    alice.send_line("/join #lobby");
    alice.expect("Now talking in #lobby.");
    carol.send_line("/join #lab2");
    all_expect(&mut [&mut bob, &mut carol], "* carol has joined #lab2.");
    alice.expect_stamped("#lab2 * carol has joined #lab2.");

    bob.send_line("hi");
    all_expect(&mut [&mut bob, &mut carol], "bob: hi");
    alice.expect_stamped("#lab2 bob: hi");
    carol.send_line("/me waves");
    all_expect(&mut [&mut bob, &mut carol], "* carol waves");
    alice.expect_stamped("#lab2 * carol waves");

    // Dave, in the lobby only, heard none of #lab2: the next line he
    // reads is this one.
    alice.send_line("lobby marker");
    all_expect(&mut [&mut alice, &mut dave], "alice: lobby marker");
    all_expect(&mut [&mut bob, &mut carol], "#lobby alice: lobby marker");
}

// ---------------------------------------------------------------------------
// 3. Joining again; names without regard to case.
// ---------------------------------------------------------------------------

#[test]
fn joining_a_room_again_makes_it_current_and_names_ignore_case() {
    let server = Server::start();
    let [mut alice, mut bob] = server.login_all(["alice", "bob"]);

    alice.send_line("/join #Lab2");
    alice.expect_stamped("* alice has joined #Lab2.");
    alice.send_line("/join #Lab2");
    alice.expect("Now talking in #Lab2.");
    alice.send_line("/join #lobby");
    alice.expect("Now talking in #lobby.");
    alice.send_line("/join #LAB2");
    alice.expect("Now talking in #Lab2.");

    // The same room, shown as its creator spelled it.
    bob.send_line("/join #LAB2");
    all_expect(&mut [&mut alice, &mut bob], "* bob has joined #Lab2.");
    bob.send_line("/join #lab2");
    bob.expect("Now talking in #Lab2.");
    bob.send_line("/rooms");
    expect_lines(
        &mut bob,
        &["Rooms (2):", "  * #Lab2 (2 users)", "  + #lobby (2 users)"],
    );

    // Letters of any script, folded the way nicknames are.
    alice.send_line("/join #Лаб");
    alice.expect_stamped("* alice has joined #Лаб.");
    bob.send_line("/join #лАБ");
    all_expect(&mut [&mut alice, &mut bob], "* bob has joined #Лаб.");
}

// ---------------------------------------------------------------------------
// 4. Bad room names.
// ---------------------------------------------------------------------------

#[test]
fn bad_room_names_are_refused_and_change_nothing() {
    let server = Server::start();
    let [mut alice, mut bob] = server.login_all(["alice", "bob"]);
    let too_long = format!("/join #{}", "x".repeat(33));
    for bad in [
        "/join lab2",
        "/join #",
        "/join ##",
        "/join #a!b",
        "/join #a*b",
        too_long.as_str(),
        "/part lab2",
    ] {
        alice.send_line(bad);
        alice.expect(BAD_ROOM_NAME);
    }
    alice.send_line("/join");
    alice.expect("Usage: /join #room");
    alice.send_line("/rooms");
    expect_lines(&mut alice, &["Rooms (1):", "  * #lobby (2 users)"]);
    // Bob heard nothing of it.
    alice.send_line("still in the lobby");
    all_expect(&mut [&mut alice, &mut bob], "alice: still in the lobby");

    // The limits themselves are allowed.
    let longest = format!("#{}", "x".repeat(32));
    alice.send_line(&format!("/join {longest}"));
    alice.expect_stamped(&format!("* alice has joined {longest}."));
    alice.send_line("/join #a_b-c.9");
    alice.expect_stamped("* alice has joined #a_b-c.9.");
}

// ---------------------------------------------------------------------------
// 5. Limits.
// ---------------------------------------------------------------------------

#[test]
fn rooms_per_user_and_rooms_per_server_are_limited() {
    let server = Server::start_with(&["--max-rooms-per-user", "2", "--max-rooms", "3"]);
    let [mut alice, mut bob, mut carol] = server.login_all(["alice", "bob", "carol"]);

    // Alice leaves the lobby so that she holds exactly #a and #b, whether
    // or not the lobby counts against her own limit.
    alice.send_line("/join #a");
    alice.expect_stamped("* alice has joined #a.");
    alice.send_line("/join #lobby");
    alice.expect("Now talking in #lobby.");
    alice.send_line("/part");
    all_expect(
        &mut [&mut alice, &mut bob, &mut carol],
        "* alice has left #lobby.",
    );
    // Alice owned the lobby, as its first user.
    all_expect(&mut [&mut bob, &mut carol], "* bob is now the room owner.");
    alice.expect("Now talking in #a.");
    alice.send_line("/join #b");
    alice.expect_stamped("* alice has joined #b.");
    alice.send_line("/join #c");
    alice.expect("You are in 2 rooms already; /part one first.");

    // #lobby, #a and #b: no room for a fourth, but the existing ones are
    // open.
    bob.send_line("/join #c");
    bob.expect("The server has too many rooms; join an existing one.");
    bob.send_line("/join #A");
    bob.expect_stamped("* bob has joined #a.");
    alice.expect_stamped("#a * bob has joined #a.");

    // A room left empty frees its place.
    alice.send_line("/part #b");
    alice.expect_stamped("* alice has left #b.");
    alice.expect("Now talking in #a.");
    carol.send_line("/join #c");
    carol.expect_stamped("* carol has joined #c.");
    carol.send_line("/rooms");
    expect_lines(
        &mut carol,
        &[
            "Rooms (3):",
            "  - #a (2 users)",
            "  * #c (1 user)",
            "  + #lobby (2 users)",
        ],
    );
}

// ---------------------------------------------------------------------------
// 6. /part.
// ---------------------------------------------------------------------------

#[test]
fn part_leaves_a_room_but_never_the_last_one() {
    let server = Server::start();
    let [mut alice, mut bob] = server.login_all(["alice", "bob"]);

    alice.send_line("/part");
    alice.expect(LAST_ROOM);
    alice.send_line("/part #lobby");
    alice.expect(LAST_ROOM);
    alice.send_line("/part #x");
    alice.expect("You are not in #x.");

    both_join("#lab2", (&mut alice, "alice"), (&mut bob, "bob"));
    // Leaving the lobby, which is not her current room: the parter too
    // gets the lobby's line in the other form, and she stays in #lab2
    // with no "Now talking" line.
    alice.send_line("/part #lobby");
    all_expect(
        &mut [&mut alice, &mut bob],
        "#lobby * alice has left #lobby.",
    );
    // She owned the lobby, as its first user.
    bob.expect_stamped("#lobby * bob is now the room owner.");
    alice.send_line("still in lab2");
    all_expect(&mut [&mut alice, &mut bob], "alice: still in lab2");
    alice.send_line("/part #lobby");
    alice.expect("You are not in #lobby.");
    alice.send_line("/part");
    alice.expect(LAST_ROOM);
}

#[test]
fn parting_the_current_room_moves_to_the_most_recently_joined_one() {
    let server = Server::start();
    let mut alice = server.login("alice");
    for room in ["#a", "#b", "#c"] {
        alice.send_line(&format!("/join {room}"));
        alice.expect_stamped(&format!("* alice has joined {room}."));
    }
    // Made current again, #b and then #a, but #c is still the one joined
    // last.
    alice.send_line("/join #b");
    alice.expect("Now talking in #b.");
    alice.send_line("/join #a");
    alice.expect("Now talking in #a.");
    alice.send_line("/part");
    alice.expect_stamped("* alice has left #a.");
    alice.expect("Now talking in #c.");
    alice.send_line("/part #c");
    alice.expect_stamped("* alice has left #c.");
    alice.expect("Now talking in #b.");
    alice.send_line("/part #b");
    alice.expect_stamped("* alice has left #b.");
    alice.expect("Now talking in #lobby.");
    alice.send_line("back home");
    alice.expect_stamped("alice: back home");
}

#[test]
fn an_empty_room_is_forgotten_and_a_new_join_creates_it_with_a_new_owner() {
    let server = Server::start();
    let [mut alice, mut bob] = server.login_all(["alice", "bob"]);
    alice.send_line("/join #lab3");
    alice.expect_stamped("* alice has joined #lab3.");
    alice.send_line("/topic old topic");
    alice.expect_stamped("* alice set the topic of #lab3: old topic");
    alice.send_line("/part");
    alice.expect_stamped("* alice has left #lab3.");
    alice.expect("Now talking in #lobby.");

    bob.send_line("/rooms");
    expect_lines(&mut bob, &["Rooms (1):", "  * #lobby (2 users)"]);
    bob.send_line("/user #lab3");
    bob.expect("No room #lab3.");

    // Created again, by bob: his, and with no topic.
    bob.send_line("/join #lab3");
    bob.expect_stamped("* bob has joined #lab3.");
    bob.send_line("/topic");
    bob.expect("#lab3 has no topic.");
    alice.send_line("/join #lab3");
    all_expect(&mut [&mut alice, &mut bob], "* alice has joined #lab3.");
    alice.send_line("/topic mine again");
    alice.expect("Only the owner of #lab3 can set its topic.");
    bob.send_line("/topic bob's now");
    all_expect(
        &mut [&mut alice, &mut bob],
        "* bob set the topic of #lab3: bob's now",
    );
}

// ---------------------------------------------------------------------------
// 7. /rooms.
// ---------------------------------------------------------------------------

#[test]
fn rooms_lists_every_room_by_name_with_marks_counts_and_topics() {
    let server = Server::start();
    let [mut alice, mut bob, mut carol] = server.login_all(["alice", "bob", "carol"]);
    both_join("#lab2", (&mut alice, "alice"), (&mut bob, "bob"));
    alice.send_line("/topic Lab 2 homework");
    all_expect(
        &mut [&mut alice, &mut bob],
        "* alice set the topic of #lab2: Lab 2 homework",
    );
    // Sorted without regard to case: #Zeta after #lobby.
    carol.send_line("/join #Zeta");
    carol.expect_stamped("* carol has joined #Zeta.");
    alice.send_line("/join #lobby");
    alice.expect("Now talking in #lobby.");

    alice.send_line("/rooms");
    expect_lines(
        &mut alice,
        &[
            "Rooms (3):",
            "  + #lab2 (2 users): Lab 2 homework",
            "  * #lobby (3 users)",
            "  - #Zeta (1 user)",
        ],
    );
    bob.send_line("/rooms");
    expect_lines(
        &mut bob,
        &[
            "Rooms (3):",
            "  * #lab2 (2 users): Lab 2 homework",
            "  + #lobby (3 users)",
            "  - #Zeta (1 user)",
        ],
    );
    carol.send_line("/rooms");
    expect_lines(
        &mut carol,
        &[
            "Rooms (3):",
            "  - #lab2 (2 users): Lab 2 homework",
            "  + #lobby (3 users)",
            "  * #Zeta (1 user)",
        ],
    );
    // Each list went to its asker only.
    alice.send_line("listed");
    alice.expect_stamped("alice: listed");
    all_expect(&mut [&mut bob, &mut carol], "#lobby alice: listed");
}

// ---------------------------------------------------------------------------
// 8. /topic.
// ---------------------------------------------------------------------------

#[test]
fn only_the_owner_sets_the_topic_and_a_later_joiner_is_shown_it() {
    let server = start_with_history();
    let mut alice = login_with_replay(&server, "alice", &[]);
    let mut bob = login_with_replay(&server, "bob", &["* alice has joined the chat."]);
    alice.expect_stamped("* bob has joined the chat.");
    let mut carol = login_with_replay(
        &server,
        "carol",
        &["* alice has joined the chat.", "* bob has joined the chat."],
    );
    all_expect(&mut [&mut alice, &mut bob], "* carol has joined the chat.");
    let mut dave = login_with_replay(
        &server,
        "dave",
        &[
            "* alice has joined the chat.",
            "* bob has joined the chat.",
            "* carol has joined the chat.",
        ],
    );
    all_expect(
        &mut [&mut alice, &mut bob, &mut carol],
        "* dave has joined the chat.",
    );

    alice.send_line("/topic");
    alice.expect("#lobby has no topic.");
    alice.send_line("/join #lab2");
    alice.expect_stamped("* alice has joined #lab2.");
    alice.send_line("/topic");
    alice.expect("#lab2 has no topic.");
    bob.send_line("/join #lab2");
    expect_replay(&mut bob, &["* alice has joined #lab2."]);
    all_expect(&mut [&mut alice, &mut bob], "* bob has joined #lab2.");
    carol.send_line("/join #lab2");
    expect_replay(
        &mut carol,
        &["* alice has joined #lab2.", "* bob has joined #lab2."],
    );
    all_expect(
        &mut [&mut alice, &mut bob, &mut carol],
        "* carol has joined #lab2.",
    );
    carol.send_line("/join #lobby");
    carol.expect("Now talking in #lobby.");

    bob.send_line("/topic mine now");
    bob.expect("Only the owner of #lab2 can set its topic.");
    let topic = "Lab 2: pointers and malloc";
    alice.send_line(&format!("/topic {topic}"));
    all_expect(
        &mut [&mut alice, &mut bob],
        &format!("* alice set the topic of #lab2: {topic}"),
    );
    carol.expect_stamped(&format!("#lab2 * alice set the topic of #lab2: {topic}"));
    bob.send_line("/topic");
    bob.expect(&format!("Topic of #lab2: {topic}"));
    carol.send_line("/topic");
    carol.expect("#lobby has no topic.");

    // The replay, then the topic, then the joined line.
    dave.send_line("/join #lab2");
    let header = dave.read_line();
    assert!(
        header.starts_with("--- last ") && header.ends_with(" messages ---"),
        "{header:?}"
    );
    let replayed = dave.read_until(|l| l == "--- end of history ---");
    let replayed: Vec<&str> = replayed.iter().filter_map(|l| unstamp(l)).collect();
    // Whether the topic change is replayed too is not for this test.
    assert!(
        replayed.starts_with(&[
            "* alice has joined #lab2.",
            "* bob has joined #lab2.",
            "* carol has joined #lab2.",
        ]),
        "{replayed:?}"
    );
    dave.expect(&format!("Topic of #lab2: {topic}"));
    all_expect(
        &mut [&mut alice, &mut bob, &mut dave],
        "* dave has joined #lab2.",
    );
    carol.expect_stamped("#lab2 * dave has joined #lab2.");
}

// ---------------------------------------------------------------------------
// 9. /user.
// ---------------------------------------------------------------------------

#[test]
fn user_lists_the_current_room_or_a_named_one_in_join_order() {
    let server = Server::start();
    let [mut alice, mut bob, mut carol] = server.login_all(["alice", "bob", "carol"]);
    alice.send_line("/user");
    alice.expect("Users in chat: alice, bob, carol");

    // Carol first: join order, neither the lobby's nor the alphabet's.
    carol.send_line("/join #lab2");
    carol.expect_stamped("* carol has joined #lab2.");
    alice.send_line("/join #lab2");
    all_expect(&mut [&mut alice, &mut carol], "* alice has joined #lab2.");
    alice.send_line("/user");
    alice.expect("Users in #lab2: carol, alice");
    carol.send_line("/users");
    carol.expect("Users in #lab2: carol, alice");
    bob.send_line("/user #lab2");
    bob.expect("Users in #lab2: carol, alice");
    bob.send_line("/users #LAB2");
    bob.expect("Users in #lab2: carol, alice");
    bob.send_line("/user #x");
    bob.expect("No room #x.");
    // Everyone is still in the lobby.
    bob.send_line("/users");
    bob.expect("Users in chat: alice, bob, carol");
    bob.send_line("listed");
    bob.expect_stamped("bob: listed");
    all_expect(&mut [&mut alice, &mut carol], "#lobby bob: listed");
}

// ---------------------------------------------------------------------------
// 10. /kick in a room, and in the lobby.
// ---------------------------------------------------------------------------

#[test]
fn kick_in_a_room_removes_from_the_room_and_in_the_lobby_disconnects() {
    let server = Server::start();
    // Alice owns the lobby; bob will own #lab2.
    let [mut alice, mut bob, mut carol, mut dave] =
        server.login_all(["alice", "bob", "carol", "dave"]);
    both_join("#lab2", (&mut bob, "bob"), (&mut carol, "carol"));
    dave.send_line("/join #lab2");
    all_expect(
        &mut [&mut bob, &mut carol, &mut dave],
        "* dave has joined #lab2.",
    );

    carol.send_line("/kick dave");
    carol.expect("Only the owner of #lab2 can kick.");
    bob.send_line("/kick alice");
    bob.expect("alice is not in #lab2.");
    bob.send_line("/kick bob");
    bob.expect("You cannot kick yourself.");

    bob.send_line("/kick dave");
    dave.expect("You have been removed from #lab2 by bob.");
    dave.expect("Now talking in #lobby.");
    all_expect(
        &mut [&mut bob, &mut carol],
        "* dave was removed from #lab2 by bob.",
    );
    // Still connected, and talking in the lobby.
    dave.send_line("still here");
    all_expect(&mut [&mut alice, &mut dave], "dave: still here");
    all_expect(&mut [&mut bob, &mut carol], "#lobby dave: still here");
    bob.send_line("/user");
    bob.expect("Users in #lab2: bob, carol");

    // In the lobby, /kick is the lobby owner's, and disconnects.
    dave.send_line("/kick alice");
    dave.expect("Only the room owner can kick.");
    alice.send_line("/kick carol");
    carol.expect("You have been kicked from the chat.");
    carol.expect_closed();
    // Once each, though bob shared two rooms with carol.
    all_expect(
        &mut [&mut alice, &mut bob, &mut dave],
        "* carol was kicked by alice.",
    );
    bob.send_line("bye carol");
    bob.expect_stamped("bob: bye carol");
    alice.send_line("/users");
    alice.expect("Users in chat: alice, bob, dave");
    alice.send_line("order");
    all_expect(&mut [&mut alice, &mut dave], "alice: order");
    bob.expect_stamped("#lobby alice: order");
}

// ---------------------------------------------------------------------------
// 11. Owners.
// ---------------------------------------------------------------------------

#[test]
fn when_a_room_owner_leaves_the_longest_present_member_takes_over() {
    let server = Server::start();
    let [mut alice, mut bob, mut carol] = server.login_all(["alice", "bob", "carol"]);
    both_join("#lab2", (&mut bob, "bob"), (&mut carol, "carol"));
    alice.send_line("/join #lab2");
    all_expect(
        &mut [&mut alice, &mut bob, &mut carol],
        "* alice has joined #lab2.",
    );

    bob.send_line("/part");
    all_expect(
        &mut [&mut alice, &mut bob, &mut carol],
        "* bob has left #lab2.",
    );
    bob.expect("Now talking in #lobby.");
    all_expect(
        &mut [&mut alice, &mut carol],
        "* carol is now the owner of #lab2.",
    );
    alice.send_line("/topic alice's");
    alice.expect("Only the owner of #lab2 can set its topic.");
    carol.send_line("/topic carol's");
    all_expect(
        &mut [&mut alice, &mut carol],
        "* carol set the topic of #lab2: carol's",
    );
    bob.send_line("gone");
    bob.expect_stamped("bob: gone");
    all_expect(&mut [&mut alice, &mut carol], "#lobby bob: gone");

    // Leaving the chat hands the room over too.
    carol.send_line("/quit");
    carol.expect("Bye, carol.");
    carol.expect_closed();
    all_expect(&mut [&mut alice, &mut bob], "* carol has left the chat.");
    alice.expect_stamped("* alice is now the owner of #lab2.");
    alice.send_line("/topic alice's now");
    alice.expect_stamped("* alice set the topic of #lab2: alice's now");
    bob.send_line("anyone?");
    bob.expect_stamped("bob: anyone?");
    alice.expect_stamped("#lobby bob: anyone?");
}

// ---------------------------------------------------------------------------
// 12. /whisper.
// ---------------------------------------------------------------------------

#[test]
fn whispers_reach_users_in_any_room() {
    let server = Server::start();
    let [mut alice, mut bob, mut carol] = server.login_all(["alice", "bob", "carol"]);
    alice.send_line("/join #lab2");
    alice.expect_stamped("* alice has joined #lab2.");
    carol.send_line("/join #lab3");
    carol.expect_stamped("* carol has joined #lab3.");

    alice.send_line("/whisper carol psst");
    alice.expect_stamped("[Whisper to carol] psst");
    carol.expect_stamped("[Whisper from alice] psst");
    bob.send_line("/w alice from the lobby");
    bob.expect_stamped("[Whisper to alice] from the lobby");
    alice.expect_stamped("[Whisper from bob] from the lobby");
    alice.send_line("/whisper zed hello");
    alice.expect("User 'zed' not found.");
    // Nobody else saw any of it.
    bob.send_line("done");
    bob.expect_stamped("bob: done");
    all_expect(&mut [&mut alice, &mut carol], "#lobby bob: done");
}

// ---------------------------------------------------------------------------
// 13-15. History per room.
// ---------------------------------------------------------------------------

#[test]
fn history_and_replay_are_per_room_and_entries_name_their_room() {
    let server = start_with_history();
    let mut alice = login_with_replay(&server, "alice", &[]);
    let mut bob = login_with_replay(&server, "bob", &["* alice has joined the chat."]);
    alice.expect_stamped("* bob has joined the chat.");

    // A new room has no history to replay.
    alice.send_line("/join #lab2");
    alice.expect_stamped("* alice has joined #lab2.");
    for text in ["in lab2 one", "in lab2 two"] {
        alice.send_line(text);
        alice.expect_stamped(&format!("alice: {text}"));
    }
    bob.send_line("in lobby");
    bob.expect_stamped("bob: in lobby");
    alice.expect_stamped("#lobby bob: in lobby");

    let lab2 = [
        "* alice has joined #lab2.",
        "alice: in lab2 one",
        "alice: in lab2 two",
    ];
    alice.send_line("/history");
    expect_replay(&mut alice, &lab2);
    bob.send_line("/history");
    expect_replay(
        &mut bob,
        &[
            "* alice has joined the chat.",
            "* bob has joined the chat.",
            "bob: in lobby",
        ],
    );
    bob.send_line("/join #lab2");
    expect_replay(&mut bob, &lab2);
    all_expect(&mut [&mut alice, &mut bob], "* bob has joined #lab2.");

    // The hub writes before it sends: all of it is on disk.
    let stored = entries(&server.data_dir());
    let rooms: Vec<&str> = stored.iter().map(|e| field(e, "room")).collect();
    assert!(
        rooms.iter().all(|r| *r == "#lobby" || *r == "#lab2"),
        "{stored:?}"
    );
    let in_lab2: Vec<&Value> = stored
        .iter()
        .filter(|e| field(e, "room") == "#lab2")
        .collect();
    let nicks: Vec<&str> = in_lab2.iter().map(|e| field(e, "nick")).collect();
    assert_eq!(nicks, ["alice", "alice", "alice", "bob"], "{stored:?}");
    let chats: Vec<&str> = in_lab2
        .iter()
        .filter(|e| field(e, "kind") == "chat")
        .map(|e| field(e, "text"))
        .collect();
    assert_eq!(chats, ["in lab2 one", "in lab2 two"], "{stored:?}");
    let in_lobby: Vec<(&str, &str, &str)> = stored
        .iter()
        .filter(|e| field(e, "room") == "#lobby")
        .map(|e| (field(e, "kind"), field(e, "nick"), field(e, "text")))
        .collect();
    assert_eq!(
        in_lobby,
        [
            ("join", "alice", ""),
            ("join", "bob", ""),
            ("chat", "bob", "in lobby"),
        ],
        "{stored:?}"
    );
}

#[test]
fn a_restart_of_the_whole_server_keeps_each_room_s_history() {
    let first = start_with_history();
    let workdir = first.workdir();
    let mut alice = login_with_replay(&first, "alice", &[]);
    let mut bob = login_with_replay(&first, "bob", &["* alice has joined the chat."]);
    alice.expect_stamped("* bob has joined the chat.");
    alice.send_line("/join #lab2");
    alice.expect_stamped("* alice has joined #lab2.");
    alice.send_line("before the restart");
    alice.expect_stamped("alice: before the restart");
    bob.send_line("lobby line");
    bob.expect_stamped("bob: lobby line");
    alice.expect_stamped("#lobby bob: lobby line");
    // Both are still here when the server stops (SIGTERM).
    drop(first);
    drop(alice);
    drop(bob);

    let again = Server::start_in(workdir, &["--history-lines", "20"]);
    let mut carol = login_with_replay(
        &again,
        "carol",
        &[
            "* alice has joined the chat.",
            "* bob has joined the chat.",
            "bob: lobby line",
        ],
    );
    carol.send_line("/join #lab2");
    expect_replay(
        &mut carol,
        &["* alice has joined #lab2.", "alice: before the restart"],
    );
    carol.expect_stamped("* carol has joined #lab2.");
}

#[test]
fn a_quiet_room_keeps_its_lines_across_a_restart_while_the_lobby_talks_on() {
    let first = start_with_history();
    let workdir = first.workdir();
    let mut alice = first.login("alice");
    alice.send_line("/join #quiet");
    alice.expect_stamped("* alice has joined #quiet.");
    alice.send_line("one quiet line");
    alice.expect_stamped("alice: one quiet line");
    alice.send_line("/join #lobby");
    alice.expect("Now talking in #lobby.");
    // More lobby lines than any one room's replay holds.
    let burst: String = (0..300).map(|i| format!("lobby {i}\n")).collect();
    alice.send_bytes(burst.as_bytes());
    alice.read_until(|l| l.ends_with("alice: lobby 299"));
    drop(first);
    drop(alice);

    let again = Server::start_in(workdir, &["--history-lines", "20"]);
    // The lobby's replay (its last 20 lines) comes first.
    let mut bob = again.connect();
    bob.send_line("bob");
    bob.read_until(|l| l.ends_with("* bob has joined the chat."));
    bob.send_line("/join #quiet");
    expect_replay(
        &mut bob,
        &["* alice has joined #quiet.", "alice: one quiet line"],
    );
    bob.expect_stamped("* bob has joined #quiet.");
}

#[test]
fn history_written_before_rooms_belongs_to_the_lobby() {
    let workdir = Workdir::new();
    let data = workdir.path().join("mpchat-data");
    std::fs::create_dir(&data).unwrap();
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    std::fs::write(
        data.join("history-000001.jsonl"),
        format!(
            "{{\"time_ms\":{ms},\"kind\":\"join\",\"nick\":\"bob\"}}\n\
             {{\"time_ms\":{ms},\"kind\":\"chat\",\"nick\":\"bob\",\"text\":\"from before rooms\"}}\n"
        ),
    )
    .unwrap();
    let server = Server::start_in(workdir, &["--history-lines", "20"]);
    let mut alice = login_with_replay(
        &server,
        "alice",
        &["* bob has joined the chat.", "bob: from before rooms"],
    );
    alice.send_line("/join #lab2");
    alice.expect_stamped("* alice has joined #lab2.");
    alice.send_line("/history");
    expect_replay(&mut alice, &["* alice has joined #lab2."]);
    alice.send_line("/join #lobby");
    alice.expect("Now talking in #lobby.");
    alice.send_line("/history 2");
    expect_replay(
        &mut alice,
        &["bob: from before rooms", "* alice has joined the chat."],
    );
}

// ---------------------------------------------------------------------------
// 16. kill -9 of the hub.
// ---------------------------------------------------------------------------

#[test]
fn a_new_hub_restores_rooms_current_rooms_and_owners_silently() {
    let server = Server::start();
    // Alice owns the lobby and stays there; bob owns #lab2, carol #lab3.
    let [mut alice, mut bob, mut carol, mut dave] =
        server.login_all(["alice", "bob", "carol", "dave"]);
    both_join("#lab2", (&mut bob, "bob"), (&mut carol, "carol"));
    both_join("#lab3", (&mut carol, "carol"), (&mut dave, "dave"));
    carol.send_line("/join #lab2");
    carol.expect("Now talking in #lab2.");
    dave.send_line("/join #lobby");
    dave.expect("Now talking in #lobby.");
    bob.send_line("/topic before the crash");
    all_expect(
        &mut [&mut bob, &mut carol],
        "* bob set the topic of #lab2: before the crash",
    );
    let rooms = [
        "Rooms (3):",
        "  - #lab2 (2 users): before the crash",
        "  - #lab3 (2 users)",
        "  * #lobby (4 users)",
    ];
    alice.send_line("/rooms");
    expect_lines(&mut alice, &rooms);

    server.kill_hub_and_wait_for_new();
    // A line sent before the last user is back would miss that user.
    for nick in ["alice", "bob", "carol", "dave"] {
        server.wait_for_log(&format!("{nick} rejoined from"));
    }

    // Nobody was told anything: every next line is one asked for here.
    alice.send_line("/rooms");
    expect_lines(&mut alice, &rooms);
    bob.send_line("after the restart");
    all_expect(&mut [&mut bob, &mut carol], "bob: after the restart");
    dave.send_line("lobby after");
    all_expect(&mut [&mut alice, &mut dave], "dave: lobby after");
    all_expect(&mut [&mut bob, &mut carol], "#lobby dave: lobby after");
    bob.send_line("/user");
    bob.expect("Users in #lab2: bob, carol");

    carol.send_line("/topic carol's");
    carol.expect("Only the owner of #lab2 can set its topic.");
    bob.send_line("/topic still bob's");
    all_expect(
        &mut [&mut bob, &mut carol],
        "* bob set the topic of #lab2: still bob's",
    );
    dave.send_line("/kick alice");
    dave.expect("Only the room owner can kick.");

    carol.send_line("/join #lab3");
    carol.expect("Now talking in #lab3.");
    dave.send_line("/join #lab3");
    dave.expect("Now talking in #lab3.");
    dave.send_line("/topic dave's");
    dave.expect("Only the owner of #lab3 can set its topic.");
    carol.send_line("/topic still carol's");
    all_expect(
        &mut [&mut carol, &mut dave],
        "* carol set the topic of #lab3: still carol's",
    );

    alice.send_line("/users");
    alice.expect("Users in chat: alice, bob, carol, dave");
    alice.send_line("the end");
    alice.expect_stamped("alice: the end");
    all_expect(
        &mut [&mut bob, &mut carol, &mut dave],
        "#lobby alice: the end",
    );
}

// ---------------------------------------------------------------------------
// 17. /schedule.
// ---------------------------------------------------------------------------

#[test]
fn a_scheduled_message_goes_to_the_room_it_was_scheduled_in() {
    let server = Server::start();
    let [mut alice, mut bob, mut carol] = server.login_all(["alice", "bob", "carol"]);
    both_join("#lab2", (&mut alice, "alice"), (&mut bob, "bob"));

    alice.send_line("/schedule +2 lab note");
    let confirmation = alice.read_line();
    assert!(
        confirmation.starts_with("Message scheduled for "),
        "{confirmation:?}"
    );
    // Alice moves on before it is due.
    alice.send_line("/join #lobby");
    alice.expect("Now talking in #lobby.");
    bob.expect_stamped("[Scheduled by alice] lab note");
    alice.expect_stamped("#lab2 [Scheduled by alice] lab note");

    // Carol, in the lobby only, did not get it: this is her next line.
    alice.send_line("lobby marker");
    all_expect(&mut [&mut alice, &mut carol], "alice: lobby marker");
    bob.expect_stamped("#lobby alice: lobby marker");
}

// ---------------------------------------------------------------------------
// 18. /help.
// ---------------------------------------------------------------------------

#[test]
fn help_lists_the_room_commands() {
    let server = Server::start();
    let mut alice = server.login("alice");
    alice.send_line("/help");
    alice.send_line("end of help");
    let mut help = alice.read_until(|l| unstamp(l) == Some("alice: end of help"));
    help.pop();
    assert_eq!(
        help.first().map(String::as_str),
        Some("Commands:"),
        "{help:?}"
    );
    for line in [
        "/join #room - join a room (creating it) and talk there",
        "/part [#room] - leave a room",
        "/rooms - list the rooms",
        "/topic [text] - show or set the room's topic (owner)",
    ] {
        assert!(help.iter().any(|l| l == line), "no {line:?} in {help:?}");
    }
    assert!(
        help.iter().any(|l| l.starts_with("/user [#room]")),
        "no /user [#room] in {help:?}"
    );
}
