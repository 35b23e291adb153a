//! Bots: the `--bots` file, and checking a bot's proof that it knows its
//! secret (see `PROTOCOL.md`, "Bots").
//!
//! The file holds one bot a line, `NAME SECRET [RATE]` (the secret as
//! hex, at least 32 bytes; RATE, lines a second the bot may send after its
//! burst instead of `--flood-rate`, 0 for no limit), and must be readable
//! by its owner alone, as ssh wants
//! of a key. The parent checks it once before serving, so a bad file
//! stops the start with one line; the hub reads it whenever it starts and
//! again on SIGHUP (a bad file then keeps the bots it had, and says why
//! in the log).
//!
//! A child makes the nonce and takes the client's MAC; the hub, which has
//! the secrets, checks it: in constant time, and not at all for an address
//! that failed too often lately, so a secret cannot be guessed by trying.
//!
//! May use: `protocol` and `os`.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::protocol::command::{check_nick, nick_key};

/// The shortest secret allowed, in bytes.
pub(crate) const MIN_SECRET_BYTES: usize = 32;
/// Failed proofs from one address that are checked, per [`FAILURE_WINDOW`];
/// after them, every proof from that address fails unchecked until the
/// window has passed.
const MAX_FAILURES: usize = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses whose failures are remembered, at most.
const FAILING_ADDRESSES: usize = 10_000;

/// One bot of the file.
#[derive(Clone)]
pub(crate) struct Bot {
    /// As the file spells it.
    pub name: String,
    secret: Vec<u8>,
    /// Its own flood rate, if it has one.
    pub rate: Option<f64>,
}

impl std::fmt::Debug for Bot {
    // The secret never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bot").field("name", &self.name).finish()
    }
}

/// The bots file's contents, by folded name.
#[derive(Debug, Default)]
pub(crate) struct Bots {
    path: Option<PathBuf>,
    bots: HashMap<String, Bot>,
    /// Recent failures by address.
    failures: HashMap<IpAddr, Vec<Instant>>,
}

/// Why a proof failed, for the log only: the client is told the same
/// thing whatever it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    UnknownBot,
    WrongMac,
    TooManyFailures,
}

/// What the MAC is made of: the protocol's label, the bot, the device and
/// the nonce, each on a line.
pub(crate) fn signed_text(bot: &str, device: &str, nonce: &str) -> String {
    format!("mpchat-bot-v1\n{bot}\n{device}\n{nonce}")
}

impl Bots {
    /// Reads the bots file at `path` (`None`: no bots).
    pub(crate) fn load(path: Option<&Path>) -> io::Result<Bots> {
        let Some(path) = path else {
            return Ok(Bots::default());
        };
        let bots = read(path)?;
        Ok(Bots {
            path: Some(path.to_path_buf()),
            bots,
            failures: HashMap::new(),
        })
    }

    /// Reads the file again (SIGHUP); a file that fails to read or parse
    /// leaves the bots as they were.
    pub(crate) fn reload(&mut self) {
        let Some(path) = &self.path else { return };
        match read(path) {
            Ok(bots) => {
                log::info!("{}: {} bots", path.display(), bots.len());
                self.bots = bots;
            }
            Err(e) => log::error!("{e}; keeping the {} bots read before", self.bots.len()),
        }
    }

    /// The bots' names, folded, which people may not take.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.bots.keys().map(String::as_str)
    }

    /// Checks that the client at `ip` knows the secret of `bot`: `mac`
    /// (hex) must be HMAC-SHA256 over [`signed_text`]. Returns the bot,
    /// with its name as the file spells it.
    pub(crate) fn verify(
        &mut self,
        ip: IpAddr,
        bot: &str,
        device: &str,
        nonce: &str,
        mac: &str,
        now: Instant,
    ) -> Result<Bot, Failure> {
        let recent = self.failures.entry(ip).or_default();
        recent.retain(|t| now.duration_since(*t) < FAILURE_WINDOW);
        if recent.len() >= MAX_FAILURES {
            return Err(Failure::TooManyFailures);
        }
        let result = match self.bots.get(&nick_key(bot)) {
            None => Err(Failure::UnknownBot),
            Some(known) => {
                let mut hmac = Hmac::<Sha256>::new_from_slice(&known.secret)
                    .expect("HMAC takes a key of any length");
                hmac.update(signed_text(bot, device, nonce).as_bytes());
                // verify_slice compares in constant time.
                match hex::decode(mac) {
                    Ok(mac) if hmac.verify_slice(&mac).is_ok() => Ok(known.clone()),
                    _ => Err(Failure::WrongMac),
                }
            }
        };
        if result.is_err() {
            if self.failures.len() >= FAILING_ADDRESSES {
                self.failures.retain(|_, f| !f.is_empty());
            }
            self.failures.entry(ip).or_default().push(now);
        } else if self.failures.get(&ip).is_some_and(Vec::is_empty) {
            self.failures.remove(&ip);
        }
        result
    }

    /// Failures from `ip` within the window, for the log.
    pub(crate) fn recent_failures(&self, ip: IpAddr) -> usize {
        self.failures.get(&ip).map_or(0, Vec::len)
    }
}

/// Checks the file at `path` as the server starts: one line saying what
/// is wrong, or the number of bots.
pub(crate) fn check(path: &Path) -> io::Result<usize> {
    read(path).map(|bots| bots.len())
}

fn read(path: &Path) -> io::Result<HashMap<String, Bot>> {
    let name = path.display();
    let meta = fs::metadata(path).map_err(|e| io::Error::new(e.kind(), format!("{name}: {e}")))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{name} is readable by others (mode {:o}); it holds secrets: chmod 600 {name}",
                meta.permissions().mode() & 0o777
            ),
        ));
    }
    let text =
        fs::read_to_string(path).map_err(|e| io::Error::new(e.kind(), format!("{name}: {e}")))?;
    parse(&text).map_err(|(line, why)| {
        io::Error::new(io::ErrorKind::InvalidData, format!("{name}:{line}: {why}"))
    })
}

/// The file's bots; an error names the line (from 1) and what is wrong.
fn parse(text: &str) -> Result<HashMap<String, Bot>, (usize, String)> {
    let mut bots = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fail = |why: String| (i + 1, why);
        let mut words = line.split_whitespace();
        let (Some(name), Some(secret), rate, None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            return Err(fail("expected NAME SECRET [RATE]".into()));
        };
        let rate = match rate.map(str::parse::<f64>) {
            None => None,
            Some(Ok(rate)) if rate.is_finite() && rate >= 0.0 => Some(rate),
            Some(_) => return Err(fail("RATE is lines a second, 0 or more".into())),
        };
        check_nick(name).map_err(&fail)?;
        let secret = hex::decode(secret).map_err(|_| fail("the secret must be hex".into()))?;
        if secret.len() < MIN_SECRET_BYTES {
            return Err(fail(format!(
                "the secret must be at least {MIN_SECRET_BYTES} bytes ({} hex digits)",
                2 * MIN_SECRET_BYTES
            )));
        }
        let bot = Bot {
            name: name.to_string(),
            secret,
            rate,
        };
        if bots.insert(nick_key(name), bot).is_some() {
            return Err(fail(format!("{name} is listed twice")));
        }
    }
    Ok(bots)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn mac(secret: &str, bot: &str, device: &str, nonce: &str) -> String {
        let mut hmac = Hmac::<Sha256>::new_from_slice(&hex::decode(secret).unwrap()).unwrap();
        hmac.update(signed_text(bot, device, nonce).as_bytes());
        hex::encode(hmac.finalize().into_bytes())
    }

    #[test]
    fn the_file_names_its_bad_line() {
        assert_eq!(
            parse(&format!("# bots\n\nweather {SECRET}\n"))
                .unwrap()
                .len(),
            1
        );
        assert_eq!(parse("weather\n").unwrap_err().0, 1);
        assert_eq!(parse(&format!("\nbad*name {SECRET}")).unwrap_err().0, 2);
        assert_eq!(parse("w 0011").unwrap_err().0, 1);
        assert_eq!(parse("w xyz").unwrap_err().0, 1);
        let fast = parse(&format!("w {SECRET} 20\n")).unwrap();
        assert_eq!(fast["w"].rate, Some(20.0));
        assert_eq!(parse(&format!("w {SECRET} -1")).unwrap_err().0, 1);
        assert_eq!(parse(&format!("w {SECRET} 1 2")).unwrap_err().0, 1);
        let twice = format!("w {SECRET}\nW {SECRET}\n");
        assert!(parse(&twice).unwrap_err().1.contains("twice"));
    }

    #[test]
    fn a_proof_passes_with_the_secret_and_an_address_that_fails_is_stopped() {
        let mut bots = Bots {
            bots: parse(&format!("Weather {SECRET}")).unwrap(),
            ..Bots::default()
        };
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let now = Instant::now();
        let good = mac(SECRET, "weather", "pi", "n1");
        let bot = bots.verify(ip, "weather", "pi", "n1", &good, now);
        assert_eq!(bot.map(|b| b.name), Ok("Weather".to_string()));
        // The MAC covers the device and the nonce.
        let name = |r: Result<Bot, Failure>| r.map(|b| b.name);
        assert_eq!(
            name(bots.verify(ip, "weather", "pi2", "n1", &good, now)),
            Err(Failure::WrongMac)
        );
        assert_eq!(
            name(bots.verify(ip, "nobody", "pi", "n1", &good, now)),
            Err(Failure::UnknownBot)
        );
        for _ in 0..3 {
            let _ = bots.verify(ip, "weather", "pi", "n1", "00", now);
        }
        // Five failures: now even the right proof fails, until a minute
        // has passed; another address is not held back.
        assert_eq!(
            name(bots.verify(ip, "weather", "pi", "n1", &good, now)),
            Err(Failure::TooManyFailures)
        );
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(
            bots.verify(other, "weather", "pi", "n1", &good, now)
                .is_ok()
        );
        let later = now + FAILURE_WINDOW;
        assert!(bots.verify(ip, "weather", "pi", "n1", &good, later).is_ok());
    }
}
