//! The systemd unit and the install script in `scripts/`: the unit passes
//! `systemd-analyze verify` and its settings agree with one another and
//! with the server, and `install.sh` puts the binary and the unit where
//! they belong. The checks that need `systemd-analyze` or `shellcheck` are
//! skipped, with a note, on a machine without them.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod common;

use common::{Ran, Workdir, run_command};

/// How long one external command may run. Generous: each takes well under
/// a second, but the rest of the suite may be keeping both cores busy.
const DEADLINE: Duration = Duration::from_secs(60);

/// The path the unit's ExecStart names, which install.sh replaces when
/// PREFIX is another.
const DEFAULT_BIN: &str = "/usr/local/bin/mpchat";

/// mpchat's default --max-clients, which the unit's limits must allow.
const DEFAULT_MAX_CLIENTS: u64 = 1000;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn unit_source() -> PathBuf {
    repo().join("scripts/mpchat.service")
}

fn install_script() -> PathBuf {
    repo().join("scripts/install.sh")
}

fn unit_text() -> String {
    std::fs::read_to_string(unit_source()).expect("read scripts/mpchat.service")
}

/// The unit's settings, in order, without comments or section headers.
fn settings(unit: &str) -> Vec<(&str, &str)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .map(|l| {
            l.split_once('=')
                .unwrap_or_else(|| panic!("not a setting: {l}"))
        })
        .collect()
}

/// The value of `key`, which must be set exactly once.
fn setting<'a>(unit: &'a str, key: &str) -> &'a str {
    let values: Vec<&str> = settings(unit)
        .into_iter()
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(values.len(), 1, "{key}= set {} times", values.len());
    values[0]
}

/// The unit with ExecStart pointing at `binary`: `systemd-analyze verify`
/// checks that the program exists.
fn unit_for_binary(binary: &str) -> String {
    let unit = unit_text();
    let from = format!("ExecStart={DEFAULT_BIN} ");
    assert_eq!(
        unit.matches(&from).count(),
        1,
        "ExecStart names {DEFAULT_BIN}"
    );
    unit.replace(&from, &format!("ExecStart={binary} "))
}

/// Runs `systemd-analyze verify` on `unit`, written as mpchat.service into
/// a fresh directory; `None` if systemd-analyze is not installed.
fn verify(unit: &str, dir: &Workdir) -> Option<(bool, Vec<String>)> {
    let path = dir.path().join("mpchat.service");
    std::fs::write(&path, unit).expect("write unit");
    let mut command = Command::new("systemd-analyze");
    command
        .arg("verify")
        .arg(&path)
        .env("SYSTEMD_LOG_COLOR", "0");
    let ran = run_command(command, DEADLINE)?;
    // verify also loads the host's units this one depends on (network.target
    // and the default targets); what it says about those is not ours to fix.
    let mut ours = Vec::new();
    for line in ran.stderr.lines().chain(ran.stdout.lines()) {
        if line.contains("mpchat") || line.contains(&*dir.path().to_string_lossy()) {
            ours.push(line.to_string());
        } else if !line.trim().is_empty() {
            eprintln!("note: systemd-analyze said, about another unit: {line}");
        }
    }
    Some((ran.status.success(), ours))
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let dir = Workdir::new();
    let unit = unit_for_binary(env!("CARGO_BIN_EXE_mpchat"));
    let Some((success, ours)) = verify(&unit, &dir) else {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    };
    assert!(
        ours.is_empty(),
        "systemd-analyze verify complained about the unit:\n{}",
        ours.join("\n")
    );
    assert!(success, "systemd-analyze verify failed");
}

/// The check above is worth something only if verify does complain about
/// a unit with a mistake in it.
#[test]
fn systemd_analyze_verify_catches_a_misspelled_setting() {
    let dir = Workdir::new();
    let unit = unit_for_binary(env!("CARGO_BIN_EXE_mpchat"))
        .replace("\nProtectSystem=strict\n", "\nProtectSytem=strict\n");
    assert!(
        unit.contains("ProtectSytem"),
        "the unit sets ProtectSystem="
    );
    let Some((_, ours)) = verify(&unit, &dir) else {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    };
    assert!(
        ours.iter().any(|l| l.contains("ProtectSytem")),
        "no complaint about ProtectSytem=: {ours:?}"
    );
}

#[test]
fn the_unit_settings_agree_with_each_other_and_the_server() {
    let unit = unit_text();
    let exec_start = setting(&unit, "ExecStart");
    let words: Vec<&str> = exec_start.split_whitespace().collect();
    assert_eq!(words[0], DEFAULT_BIN, "install.sh rewrites this path");
    assert_eq!(*words.last().unwrap(), "${MPCHAT_PORT}");
    let data_dir = words
        .windows(2)
        .find(|w| w[0] == "--data-dir")
        .map(|w| w[1])
        .expect("ExecStart gives --data-dir");
    assert_eq!(
        data_dir,
        format!("/var/lib/{}", setting(&unit, "StateDirectory")),
        "the history goes in the directory systemd creates for mpchat"
    );
    assert_eq!(setting(&unit, "StateDirectoryMode"), "0700");

    let environment: Vec<&str> = settings(&unit)
        .into_iter()
        .filter(|(k, _)| *k == "Environment")
        .map(|(_, v)| v)
        .collect();
    let runtime = format!(
        "XDG_RUNTIME_DIR=/run/{}",
        setting(&unit, "RuntimeDirectory")
    );
    assert!(
        environment.contains(&runtime.as_str()),
        "the sockets go in the runtime directory systemd creates: {environment:?}"
    );
    assert!(environment.contains(&"MPCHAT_PORT=9999"), "{environment:?}");

    // The user install.sh creates.
    assert_eq!(setting(&unit, "User"), "mpchat");
    let script = std::fs::read_to_string(install_script()).expect("read install.sh");
    assert!(script.contains("SERVICE_USER=mpchat\n"));

    // The parent stays in the foreground: systemd must not wait for it to
    // fork and exit.
    assert!(matches!(setting(&unit, "Type"), "simple" | "exec"));
    assert_eq!(setting(&unit, "ExecReload"), "/bin/kill -HUP $MAINPID");
    // The parent's own shutdown takes at most two seconds.
    let stop: u64 = setting(&unit, "TimeoutStopSec").parse().unwrap();
    assert!(stop > 2, "TimeoutStopSec={stop}");

    // The hub holds a socket per client and each client is a process.
    let nofile: u64 = setting(&unit, "LimitNOFILE").parse().unwrap();
    assert!(nofile > 2 * DEFAULT_MAX_CLIENTS, "LimitNOFILE={nofile}");
    let tasks: u64 = setting(&unit, "TasksMax").parse().unwrap();
    assert!(tasks > 2 * DEFAULT_MAX_CLIENTS, "TasksMax={tasks}");
    assert_eq!(setting(&unit, "UMask"), "0077");
}

/// Runs install.sh with these settings, a clean environment for the rest,
/// and stand-ins for the commands that would change this machine; returns
/// what it did and which of those it called.
fn install(destdir: &Path, settings: &[(&str, &str)]) -> (Ran, String) {
    let stubs = destdir.with_extension("stubs");
    let _ = std::fs::remove_dir_all(&stubs);
    std::fs::create_dir_all(&stubs).unwrap();
    let calls = stubs.join("calls");
    for name in ["useradd", "systemctl", "cargo", "getent"] {
        let stub = stubs.join(name);
        std::fs::write(
            &stub,
            format!(
                "#!/bin/sh\necho \"{name} $*\" >> '{}'\nexit 0\n",
                calls.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!("{}:{}", stubs.display(), std::env::var("PATH").unwrap());
    let mut command = Command::new("bash");
    command.arg(install_script()).env("PATH", path);
    for key in [
        "DESTDIR",
        "PREFIX",
        "UNITDIR",
        "MPCHAT_BIN",
        "CARGO_TARGET_DIR",
    ] {
        command.env_remove(key);
    }
    command.env("DESTDIR", destdir);
    for (key, value) in settings {
        command.env(key, value);
    }
    let ran = run_command(command, DEADLINE).expect("bash is installed");
    let called = std::fs::read_to_string(&calls).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&stubs);
    (ran, called)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn install_sh_stages_the_binary_and_the_unit_under_destdir() {
    let dir = Workdir::new();
    let destdir = dir.path().join("root");
    let binary = env!("CARGO_BIN_EXE_mpchat");
    let (ran, called) = install(
        &destdir,
        &[("PREFIX", "/usr/local"), ("MPCHAT_BIN", binary)],
    );
    assert!(ran.status.success(), "install.sh failed:\n{}", ran.stderr);
    assert_eq!(called, "", "with DESTDIR nothing on the machine is touched");

    let installed = destdir.join("usr/local/bin/mpchat");
    assert_eq!(mode(&installed), 0o755);
    assert!(
        std::fs::read(&installed).unwrap() == std::fs::read(binary).unwrap(),
        "the installed binary is the one given"
    );
    let unit_dir = destdir.join("etc/systemd/system");
    let unit = unit_dir.join("mpchat.service");
    assert_eq!(mode(&unit), 0o644);
    let text = std::fs::read_to_string(&unit).unwrap();
    assert_eq!(
        text,
        unit_text(),
        "the default prefix leaves the unit as it is"
    );
    assert!(text.contains(&format!("\nExecStart={DEFAULT_BIN} ")));
    let names: Vec<_> = std::fs::read_dir(&unit_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        ["mpchat.service"],
        "nothing else is left in the unit directory"
    );
    assert!(
        ran.stdout.contains("skipped creating user mpchat"),
        "{}",
        ran.stdout
    );
}

#[test]
fn install_sh_points_exec_start_at_another_prefix() {
    let dir = Workdir::new();
    let destdir = dir.path().join("root");
    let (ran, called) = install(
        &destdir,
        &[
            ("PREFIX", "/opt/mpchat"),
            ("UNITDIR", "/usr/lib/systemd/system"),
            ("MPCHAT_BIN", env!("CARGO_BIN_EXE_mpchat")),
        ],
    );
    assert!(ran.status.success(), "install.sh failed:\n{}", ran.stderr);
    assert_eq!(called, "");
    assert_eq!(mode(&destdir.join("opt/mpchat/bin/mpchat")), 0o755);
    assert!(!destdir.join("usr/local").exists());
    let unit = destdir.join("usr/lib/systemd/system/mpchat.service");
    assert_eq!(mode(&unit), 0o644);
    let text = std::fs::read_to_string(&unit).unwrap();
    assert_eq!(
        setting(&text, "ExecStart"),
        setting(&unit_text(), "ExecStart").replacen(DEFAULT_BIN, "/opt/mpchat/bin/mpchat", 1)
    );
    // Only ExecStart changes.
    let source = unit_text();
    let changed: Vec<_> = source
        .lines()
        .zip(text.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(source.lines().count(), text.lines().count());
}

#[test]
fn install_sh_refuses_bad_settings_in_one_line() {
    let dir = Workdir::new();
    let destdir = dir.path().join("root");
    let binary = env!("CARGO_BIN_EXE_mpchat");
    let missing = dir.path().join("no-such-binary");
    let missing = missing.to_str().unwrap();
    for (settings, expected) in [
        (
            vec![("PREFIX", "usr/local"), ("MPCHAT_BIN", binary)],
            "install.sh: PREFIX must be an absolute path (got 'usr/local')",
        ),
        (
            vec![("PREFIX", "/opt/my chat"), ("MPCHAT_BIN", binary)],
            "install.sh: PREFIX must not contain",
        ),
        (
            vec![("MPCHAT_BIN", missing)],
            "install.sh: no executable mpchat binary at",
        ),
    ] {
        let (ran, called) = install(&destdir, &settings);
        assert_eq!(ran.status.code(), Some(1), "{settings:?}");
        assert_eq!(
            ran.stderr.lines().count(),
            1,
            "{settings:?}: {}",
            ran.stderr
        );
        assert!(
            ran.stderr.starts_with(expected),
            "{settings:?}: {}",
            ran.stderr
        );
        assert_eq!(called, "");
        assert!(!destdir.exists(), "{settings:?} installed something");
    }
}

#[test]
fn install_sh_passes_bash_n_and_shellcheck() {
    let mut bash = Command::new("bash");
    bash.arg("-n").arg(install_script());
    let ran = run_command(bash, DEADLINE).expect("bash is installed");
    assert!(ran.status.success(), "bash -n: {}", ran.stderr);

    let mut shellcheck = Command::new("shellcheck");
    shellcheck.arg(install_script());
    let Some(ran) = run_command(shellcheck, DEADLINE) else {
        eprintln!("skipped: shellcheck is not installed");
        return;
    };
    assert!(
        ran.status.success(),
        "shellcheck:\n{}{}",
        ran.stdout,
        ran.stderr
    );
}
