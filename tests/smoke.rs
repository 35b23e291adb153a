mod common;
use common::*;

#[test]
fn two_users_chat() {
    let server = Server::start();
    let mut alice = server.login("alice");
    let mut bob = server.login("bob");
    alice.expect_stamped("* bob has joined the chat.");
    alice.send_line("hello bob");
    alice.expect_stamped("alice: hello bob");
    bob.expect_stamped("alice: hello bob");
}
