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
//! Removing a sequence never costs the text after it. A control sequence
//! (`ESC [`) is removed only as far as ECMA-48 lets one reach: parameter
//! bytes, then intermediate bytes, then one final byte; one that breaks off
//! before its final byte loses only its `ESC [`. The one-character CSI,
//! U+009B, is removed on its own like every other C1 control: without it
//! what follows is plain text, and it is what the user typed.
//!
//! The result never contains a control character, so sanitizing it again
//! changes nothing.

use std::iter::Peekable;
use std::str::Chars;

const ESC: char = '\u{1b}';
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
            c if is_forbidden(c) => {}
            c => out.push(c),
        }
    }
    out.trim().to_string()
}

/// Characters that must never reach another terminal: defined beside the
/// log, which keeps them from the operator's.
pub use crate::os::logging::is_forbidden;

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
            skip_string(chars);
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

/// Skips a control string and its terminator: BEL, ST, or ESC (with the
/// `\` of an `ESC \`). A string still open at the end of the line is not
/// skipped: only its introducer goes, and the text after it stays.
fn skip_string(chars: &mut Peekable<Chars>) {
    let mut ahead = chars.clone();
    while let Some(c) = ahead.next() {
        if c == BEL || c == ST {
            *chars = ahead;
            return;
        }
        if c == ESC {
            if ahead.peek() == Some(&'\\') {
                ahead.next();
            }
            *chars = ahead;
            return;
        }
    }
}

/// Skips the rest of a control sequence after its `ESC [`: parameter bytes
/// (0x30-0x3F), intermediate bytes (0x20-0x2F) and one final byte
/// (0x40-0x7E), in that order. If anything else comes first, or the line
/// ends, it was no sequence: nothing is skipped, and the rest is text.
fn skip_csi(chars: &mut Peekable<Chars>) {
    let mut ahead = chars.clone();
    let mut c = ahead.next();
    while matches!(c, Some('0'..='?')) {
        c = ahead.next();
    }
    while matches!(c, Some(' '..='/')) {
        c = ahead.next();
    }
    if matches!(c, Some('@'..='~')) {
        *chars = ahead;
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
        assert_eq!(s("a\x1b[ qb"), "ab");
    }

    #[test]
    fn a_broken_control_sequence_costs_only_its_introducer() {
        // A parameter byte after an intermediate one, a letter outside
        // ASCII, the end of the line: no final byte, so no sequence.
        assert_eq!(s("a\x1b[1 2mb"), "a1 2mb");
        assert_eq!(s("a\x1b[12\u{e9}t\u{e9}"), "a12\u{e9}t\u{e9}");
        assert_eq!(s("a\x1b[12"), "a12");
        assert_eq!(s("a\x1b]0;never closed"), "a0;never closed");
    }

    #[test]
    fn the_one_character_csi_is_removed_and_the_text_after_it_kept() {
        assert_eq!(s("s08A\u{9b}s08Z"), "s08As08Z");
        assert_eq!(s("a\u{9b}2Jb"), "a2Jb");
        assert_eq!(s("\u{9b}\u{9b}x\u{9b}"), "x");
        assert_eq!(s("x \u{9b}12 hello world"), "x 12 hello world");
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
            "s08A\u{9b}s08Z",
            "\u{9b}\u{9b}[2J",
            "\x1b\u{9b}[2J",
            "\x1b[1 2m\x1b[",
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
