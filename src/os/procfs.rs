//! `/proc/PID/stat`, the one place its format is known: process titles
//! read where the kernel put the argv and environment strings, the load
//! generator a server's process tree and its CPU times, the tests the
//! state and process group of a server's processes.
//!
//! Part of `os`: uses nothing else of mpchat's.

use std::io;
use std::str::FromStr;

/// The fields of `/proc/PID/stat` that mpchat reads, named and typed as in
/// proc(5); the number before each is its field number there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// (2) The short name that `ps -o comm` and `top` show. It may hold
    /// any bytes but NUL (`prctl(PR_SET_NAME)` checks nothing), so bytes
    /// that are not UTF-8 come out as U+FFFD.
    pub comm: String,
    /// (3) `R` running, `S` sleeping, `Z` zombie, and so on.
    pub state: char,
    /// (4) The parent's pid.
    pub ppid: i32,
    /// (5) The process group.
    pub pgrp: i32,
    /// (14) User CPU time, in clock ticks.
    pub utime: u64,
    /// (15) System CPU time, in clock ticks.
    pub stime: u64,
    /// (16) User CPU time of the children reaped so far, in clock ticks.
    pub cutime: i64,
    /// (17) System CPU time of the children reaped so far, in clock ticks.
    pub cstime: i64,
    /// (20) Threads in the process.
    pub num_threads: i64,
    /// (48) Where the argv strings start.
    pub arg_start: u64,
    /// (49) Where the argv strings end.
    pub arg_end: u64,
    /// (50) Where the environment strings start.
    pub env_start: u64,
    /// (51) Where the environment strings end.
    pub env_end: u64,
    /// (52) The wait status of a process that has exited (a zombie).
    pub exit_code: i32,
}

/// Reads `/proc/PID/stat` of `pid`.
///
/// A process that is gone gives an error of kind `NotFound`; every error
/// names the file.
pub fn read(pid: i32) -> io::Result<Stat> {
    read_path(&format!("/proc/{pid}/stat"))
}

/// Reads `/proc/self/stat`.
pub fn read_self() -> io::Result<Stat> {
    read_path("/proc/self/stat")
}

fn read_path(path: &str) -> io::Result<Stat> {
    let bytes =
        std::fs::read(path).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    parse(&bytes).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{path}: unexpected format"),
        )
    })
}

/// Parses the contents of a `/proc/PID/stat` file; `None` if it is not
/// one as Linux 3.5 and later write it (52 fields or more), or a field
/// mpchat reads is not a number of its type.
pub fn parse(stat: &[u8]) -> Option<Stat> {
    // The name is in parentheses and may itself hold spaces and
    // parentheses, but nothing after it can hold a ')': so it ends at the
    // last one, and the fields are counted from there.
    let open = stat.iter().position(|&b| b == b'(')?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    let comm = stat.get(open + 1..close)?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // fields[0] is field 3 of proc(5).
    let field = |n: usize| fields.get(n.checked_sub(3)?).copied();
    fn number<T: FromStr>(text: Option<&str>) -> Option<T> {
        text?.parse().ok()
    }
    let &[state] = field(3)?.as_bytes() else {
        return None;
    };
    Some(Stat {
        comm: String::from_utf8_lossy(comm).into_owned(),
        state: char::from(state),
        ppid: number(field(4))?,
        pgrp: number(field(5))?,
        utime: number(field(14))?,
        stime: number(field(15))?,
        cutime: number(field(16))?,
        cstime: number(field(17))?,
        num_threads: number(field(20))?,
        arg_start: number(field(48))?,
        arg_end: number(field(49))?,
        env_start: number(field(50))?,
        env_end: number(field(51))?,
        exit_code: number(field(52))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stat line of 52 fields, with `comm` in it and field n holding n
    /// except for the state.
    fn stat_line(comm: &str) -> String {
        let fields: Vec<String> = (4..=52).map(|n| n.to_string()).collect();
        format!("4242 ({comm}) S {}\n", fields.join(" "))
    }

    fn numbered(comm: &str) -> Stat {
        Stat {
            comm: comm.to_string(),
            state: 'S',
            ppid: 4,
            pgrp: 5,
            utime: 14,
            stime: 15,
            cutime: 16,
            cstime: 17,
            num_threads: 20,
            arg_start: 48,
            arg_end: 49,
            env_start: 50,
            env_end: 51,
            exit_code: 52,
        }
    }

    #[test]
    fn a_line_as_linux_6_writes_it() {
        let line = b"12389 (cat) R 12387 12387 5178 0 -1 4194304 100 0 0 0 7 3 11 2 20 0 1 0 \
            61402 3133440 390 18446744073709551615 94720557031424 94720557051305 \
            140734025252528 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 94720557067312 94720557068928 \
            94720708120576 140734025259734 140734025259754 140734025259754 140734025261035 0\n";
        let stat = parse(line).expect("parses");
        assert_eq!((stat.comm.as_str(), stat.state), ("cat", 'R'));
        assert_eq!((stat.ppid, stat.pgrp), (12387, 12387));
        assert_eq!(
            (stat.utime, stat.stime, stat.cutime, stat.cstime),
            (7, 3, 11, 2)
        );
        assert_eq!(stat.num_threads, 1);
        assert_eq!(
            (stat.arg_start, stat.arg_end, stat.env_start, stat.env_end),
            (
                140734025259734,
                140734025259754,
                140734025259754,
                140734025261035
            )
        );
        assert_eq!(stat.exit_code, 0);
    }

    #[test]
    fn fields_are_counted_from_the_last_parenthesis() {
        for comm in ["mpchat", "a) b (c) 1 2", "(a) b (c))", ") S 1 2 (", "", " "] {
            assert_eq!(
                parse(stat_line(comm).as_bytes()),
                Some(numbered(comm)),
                "{comm:?}"
            );
        }
    }

    #[test]
    fn a_name_that_is_not_utf8_is_kept_lossily() {
        let mut line = b"4242 (mp\xffchat".to_vec();
        line.extend_from_slice(stat_line("").split_once('(').unwrap().1.as_bytes());
        let stat = parse(&line).expect("parses");
        assert_eq!(stat.comm, "mp\u{fffd}chat");
        assert_eq!(stat.ppid, 4);
    }

    #[test]
    fn fields_after_52_are_ignored() {
        let line = stat_line("mpchat").replace('\n', " 53 54\n");
        assert_eq!(parse(line.as_bytes()), Some(numbered("mpchat")));
    }

    #[test]
    fn negative_fields_are_read_where_proc_5_allows_them() {
        let line = stat_line("mpchat").replace(" 16 17 ", " -16 -17 ");
        let stat = parse(line.as_bytes()).expect("parses");
        assert_eq!((stat.cutime, stat.cstime), (-16, -17));
        let line = stat_line("mpchat").replace(" 14 ", " -14 ");
        assert_eq!(parse(line.as_bytes()), None);
    }

    #[test]
    fn short_or_garbled_stat_is_refused() {
        assert_eq!(parse(b""), None);
        assert_eq!(parse(b"4242 (mpchat) S 1 4242"), None);
        assert_eq!(parse(b"no parenthesis at all"), None);
        let line = stat_line("mpchat");
        assert_eq!(parse(line.replace(" 51 ", " 5x1 ").as_bytes()), None);
        assert_eq!(parse(line.replace(" 4 ", " four ").as_bytes()), None);
        assert_eq!(parse(line.replace(" S ", " SS ").as_bytes()), None);
        assert_eq!(parse(line.replace(" 52\n", "\n").as_bytes()), None);
        assert_eq!(parse(line.replace("(mpchat)", ")mpchat(").as_bytes()), None);
        // Field 30 is not read, but a line that is not text is no stat line.
        let mut not_text = line.into_bytes();
        let at = not_text.windows(4).position(|w| w == b" 30 ").unwrap();
        not_text[at + 2] = 0xff;
        assert_eq!(parse(&not_text), None);
    }

    #[test]
    fn own_stat_is_read() {
        let stat = read_self().expect("/proc/self/stat");
        let parent = std::os::unix::process::parent_id();
        assert_eq!(u32::try_from(stat.ppid), Ok(parent));
        assert!(stat.num_threads >= 1);
        assert!(stat.arg_start != 0 && stat.arg_start < stat.arg_end);
        let me = i32::try_from(std::process::id()).unwrap();
        let by_pid = read(me).expect("/proc/PID/stat");
        assert_eq!((by_pid.ppid, by_pid.pgrp), (stat.ppid, stat.pgrp));
    }

    #[test]
    fn a_process_that_is_gone_is_not_found_and_named() {
        // Above the largest pid_max Linux allows (2^22).
        let error = read(i32::MAX).expect_err("no such process");
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        assert!(error.to_string().starts_with("/proc/2147483647/stat: "));
    }
}
