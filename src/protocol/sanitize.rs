//! Sanitizing: makes a received line safe to show on other people's
//! terminals.
//!
//! Whatever a client sends ends up on other users' screens, so nothing that
//! a terminal would obey may pass: ANSI escape sequences are removed whole
//! (not just their ESC, which would leave `[2J` behind), as are all other
//! control characters (C0, DEL, C1) and the bidirectional override and
//! isolate characters that can make text read differently from what it is.
//! TAB becomes a space. Invalid UTF-8 becomes U+FFFD.
//!
//! The result never contains a control character, so sanitizing it again
//! changes nothing.

use std::iter::Peekable;
use std::str::Chars;

const ESC: char = '\u{1b}';
/// The one-character (C1) form of `ESC [`.
const CSI: char = '\u{9b}';
/// BEL and the C1 string terminator end an OSC string.
const BEL: char = '\u{7}';
const ST: char = '\u{9c}';

/// Turns a received line into text that is safe to display, trimmed of
/// surrounding whitespace.
pub fn sanitize(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\t' => out.push(' '),
            ESC => skip_escape(&mut chars),
            CSI => skip_csi(&mut chars),
            c if is_forbidden(c) => {}
            c => out.push(c),
        }
    }
    out.trim().to_string()
}

/// Characters that must never reach another terminal (nor the operator's,
/// through the log; see [`crate::logging::escape_controls`]).
pub fn is_forbidden(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Skips what follows an ESC that belongs to the sequence it starts.
fn skip_escape(chars: &mut Peekable<Chars>) {
    match chars.peek() {
        Some('[') => {
            chars.next();
            skip_csi(chars);
        }
        // OSC, DCS, SOS, PM, APC: a string up to BEL or ST (ESC \).
        Some(']' | 'P' | 'X' | '^' | '_') => {
            chars.next();
            while let Some(c) = chars.next() {
                if c == BEL || c == ST {
                    break;
                }
                if c == ESC {
                    if chars.peek() == Some(&'\\') {
                        chars.next();
                    }
                    break;
                }
            }
        }
        // Other escapes: intermediate bytes, then one final byte.
        Some(' '..='~') => {
            while let Some(&c) = chars.peek() {
                chars.next();
                if !(' '..='/').contains(&c) {
                    break;
                }
            }
        }
        // A lone ESC: drop only it.
        _ => {}
    }
}

/// Skips a control sequence's parameter and intermediate bytes and its final
/// byte. Stops early at anything else, which is then treated as text.
fn skip_csi(chars: &mut Peekable<Chars>) {
    while let Some(&c) = chars.peek() {
        match c {
            '0'..='?' | ' '..='/' => {
                chars.next();
            }
            '@'..='~' => {
                chars.next();
                return;
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(input: &str) -> String {
        sanitize(input.as_bytes())
    }

    #[test]
    fn plain_text_is_unchanged() {
        assert_eq!(s("hello, world! é ü 漢字 🙂"), "hello, world! é ü 漢字 🙂");
    }

    #[test]
    fn csi_sequences_are_removed_whole() {
        assert_eq!(s("\x1b[2J\x1b[Hhi \x1b[1;31mred\x1b[0m"), "hi red");
        assert_eq!(s("a\u{9b}2Jb"), "ab");
    }

    #[test]
    fn osc_and_other_escapes_are_removed() {
        assert_eq!(s("\x1b]0;pwned\x07title"), "title");
        assert_eq!(s("\x1b]8;;http://x\x1b\\link"), "link");
        assert_eq!(
            s("\x1bcreset \x1b(Bcharset \x1b7saved"),
            "reset charset saved"
        );
    }

    #[test]
    fn control_characters_are_removed_and_tab_is_a_space() {
        assert_eq!(s("a\x07b\x08c\x00d\x7fe\tf"), "abcde f");
    }

    #[test]
    fn c1_and_bidi_controls_are_removed() {
        assert_eq!(s("a\u{85}b\u{202e}c\u{2066}d\u{2069}e"), "abcde");
    }

    #[test]
    fn invalid_utf8_becomes_replacement_character() {
        assert_eq!(sanitize(b"a\xffb\xc3"), "a\u{fffd}b\u{fffd}");
    }

    #[test]
    fn surrounding_whitespace_is_trimmed() {
        assert_eq!(s("  hi there \t"), "hi there");
    }

    #[test]
    fn sanitizing_twice_changes_nothing() {
        let inputs = [
            "\x1b\x1b[31mx",
            "\x1b[\x1b[31mx",
            "[31m\x1b",
            "\u{9b}\u{1b}]x\u{9c}y",
            "\x1b\u{202e}[2J",
            "a\tb\r\nc",
            "\x1b]unterminated",
        ];
        for input in inputs {
            let once = s(input);
            assert_eq!(sanitize(once.as_bytes()), once, "input {input:?}");
            assert!(!once.chars().any(is_forbidden), "input {input:?}");
        }
    }

    /// Bytes from a small xorshift generator, biased towards the bytes
    /// that start escape sequences and controls.
    fn tricky_bytes(seed: u64, len: usize) -> Vec<u8> {
        const SPECIAL: &[u8] = b"\x1b[]P\\\x07\x9b\x9c\xc2\xe2\x80\xae\t\r\n\x00 ;0m";
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if x.is_multiple_of(3) {
                    SPECIAL[(x >> 8) as usize % SPECIAL.len()]
                } else {
                    (x >> 16) as u8
                }
            })
            .collect()
    }

    #[test]
    fn sanitizing_twice_changes_nothing_and_nothing_forbidden_survives() {
        for seed in 1..3000u64 {
            let bytes = tricky_bytes(seed, (seed % 64) as usize);
            let once = sanitize(&bytes);
            assert_eq!(sanitize(once.as_bytes()), once, "seed {seed}: {bytes:?}");
            assert!(
                !once.chars().any(|c| is_forbidden(c) || c == '\t'),
                "seed {seed}: {once:?}"
            );
        }
    }
}
