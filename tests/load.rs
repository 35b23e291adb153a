//! The hub under a burst from many senders at once: `mpchat-bench`, an
//! independent load generator (one thread, epoll), drives the real server
//! and counts every delivery. In a file of its own, so that nothing else
//! of the suite runs beside it.

mod common;
use common::*;

use std::process::Command;
use std::time::Duration;

/// 100 clients, 10 of which each send 1,000 lines of 80 bytes as fast as
/// their sockets take them while everyone reads everything, five times
/// over: no line lost or duplicated, every receiver the same order, nobody
/// disconnected, and the hub dropped no child.
#[test]
fn ten_senders_at_full_speed_lose_nothing_five_times_over() {
    for run in 1..=5 {
        full_speed_loses_nothing(run, "line", 1000);
    }
    // Then twice over WebSocket, as the web page speaks (500 lines each):
    // the frames the children write under load carry every line once, in
    // one order. In the same test, so the two never run side by side.
    for run in 6..=7 {
        full_speed_loses_nothing(run, "ws", 500);
    }
}

fn full_speed_loses_nothing(run: u32, proto: &str, messages: u64) {
    let server = Server::start();
    let mut bench = Command::new(env!("CARGO_BIN_EXE_mpchat-bench"));
    bench.args(["--json", "--quiet", "--timeout", "60", "--test", "fanout"]);
    bench.args(["--proto", proto, "--clients", "100", "--senders", "10"]);
    bench.args(["--messages", &messages.to_string()]);
    bench.args(["--size", "80", "--window", "0"]);
    bench.args(["--addr", &server.addr.to_string()]);
    bench.args(["--server-pid", &server.pid().to_string()]);
    let ran = run_command(bench, Duration::from_secs(90)).expect("mpchat-bench runs");
    let report: serde_json::Value = serde_json::from_str(&ran.stdout)
        .unwrap_or_else(|e| panic!("run {run}: no report ({e}): {}", ran.stderr));
    let fanout = &report["fanout"];
    let figure = |name: &str| {
        fanout[name]
            .as_u64()
            .unwrap_or_else(|| panic!("run {run}: no {name} in {fanout}"))
    };
    assert_eq!(fanout["ended"], "done", "run {run}: {fanout}");
    assert_eq!(figure("lost"), 0, "run {run}: {fanout}");
    assert_eq!(figure("duplicates"), 0, "run {run}: {fanout}");
    assert_eq!(figure("reordered"), 0, "run {run}: {fanout}");
    assert_eq!(figure("dropped_clients"), 0, "run {run}: {fanout}");
    assert_eq!(
        fanout["order"]["one_global_order"], true,
        "run {run}: {fanout}"
    );
    assert_eq!(
        figure("received"),
        100 * 10 * messages,
        "run {run}: {fanout}"
    );
    assert!(ran.status.success(), "run {run}: {}", ran.stderr);
    let log = server.log_text();
    assert!(
        !log.contains("not reading") && !log.contains("stopped reading"),
        "run {run}: someone was cut off:\n{log}"
    );
}
