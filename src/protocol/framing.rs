//! Framing: turns the byte stream from a client into lines.
//!
//! A line ends at LF, CR LF, CR NUL (what telnet sends for Enter) or a bare
//! CR. Telnet option negotiation (IAC sequences) is removed here, because it
//! is part of the byte stream and not of any line; the state machine keeps
//! its place across reads, so a sequence split between two reads is still
//! removed whole. A line longer than [`MAX_LINE`] bytes is cut on a
//! character boundary and the rest of it is dropped.
//!
//! The 200 ms rule for clients that never send a line end (the class-lab C
//! client) is a matter of time, so it lives with the caller: it asks
//! [`LineReader::has_partial`] and calls [`LineReader::take_partial`].

/// Longest line accepted, in bytes, before sanitizing.
pub const MAX_LINE: usize = 512;

const IAC: u8 = 255;
const SB: u8 = 250;
const SE: u8 = 240;
const WILL: u8 = 251;
const DONT: u8 = 254;

/// One line as received, not yet sanitized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub bytes: Vec<u8>,
    /// The client sent more than [`MAX_LINE`] bytes; the rest was dropped.
    pub truncated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Telnet {
    /// Ordinary data.
    Data,
    /// After IAC: a command byte follows.
    Iac,
    /// After IAC WILL/WONT/DO/DONT: one option byte follows.
    Option,
    /// Inside IAC SB ... IAC SE.
    Sub,
    /// After IAC inside a subnegotiation.
    SubIac,
}

/// Splits a client's byte stream into [`Line`]s.
#[derive(Debug)]
pub struct LineReader {
    telnet: Telnet,
    /// The previous data byte was CR, so an LF or NUL right after it is the
    /// second half of the same line end.
    after_cr: bool,
    line: Vec<u8>,
    /// The current line was already cut and handed out; drop until its end.
    overflow: bool,
}

impl Default for LineReader {
    fn default() -> Self {
        Self::new()
    }
}

impl LineReader {
    pub fn new() -> Self {
        LineReader {
            telnet: Telnet::Data,
            after_cr: false,
            line: Vec::new(),
            overflow: false,
        }
    }

    /// Feeds bytes from the client; complete lines are appended to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<Line>) {
        for &byte in input {
            self.push_byte(byte, out);
        }
    }

    /// True while an unfinished line is pending (bytes, or the dropped tail
    /// of a cut line).
    pub fn has_partial(&self) -> bool {
        !self.line.is_empty() || self.overflow
    }

    /// Ends the pending line as if a line end had arrived: used when a
    /// fragment has sat unfinished long enough, and at EOF.
    pub fn take_partial(&mut self) -> Option<Line> {
        self.overflow = false;
        self.after_cr = false;
        if self.line.is_empty() {
            return None;
        }
        Some(Line {
            bytes: std::mem::take(&mut self.line),
            truncated: false,
        })
    }

    fn push_byte(&mut self, byte: u8, out: &mut Vec<Line>) {
        match self.telnet {
            Telnet::Data => self.data_byte(byte, out),
            Telnet::Iac => match byte {
                // IAC IAC is an escaped 255 data byte.
                IAC => {
                    self.add(IAC, out);
                    self.telnet = Telnet::Data;
                }
                WILL..=DONT => self.telnet = Telnet::Option,
                SB => self.telnet = Telnet::Sub,
                // A two-byte command (NOP, AYT, GA, ...): dropped.
                SE.. => self.telnet = Telnet::Data,
                // Not a telnet command at all: a client that is no telnet
                // sent a stray 0xFF. Keep both bytes as data (the sanitizer
                // turns the 0xFF into U+FFFD).
                _ => {
                    self.telnet = Telnet::Data;
                    self.add(IAC, out);
                    self.data_byte(byte, out);
                }
            },
            Telnet::Option => self.telnet = Telnet::Data,
            Telnet::Sub => {
                if byte == IAC {
                    self.telnet = Telnet::SubIac;
                }
            }
            Telnet::SubIac => {
                self.telnet = if byte == SE {
                    Telnet::Data
                } else {
                    Telnet::Sub
                };
            }
        }
    }

    fn data_byte(&mut self, byte: u8, out: &mut Vec<Line>) {
        let after_cr = std::mem::take(&mut self.after_cr);
        match byte {
            IAC => self.telnet = Telnet::Iac,
            b'\n' | 0 if after_cr => {}
            b'\r' => {
                self.end_line(out);
                self.after_cr = true;
            }
            b'\n' => self.end_line(out),
            _ => self.add(byte, out),
        }
    }

    fn add(&mut self, byte: u8, out: &mut Vec<Line>) {
        if self.overflow {
            return;
        }
        if self.line.len() < MAX_LINE {
            self.line.push(byte);
            return;
        }
        // The line is full and goes on: cut it, stepping back so that a
        // multi-byte character is not split (`byte` would continue it).
        let mut cut = MAX_LINE;
        let mut next = byte;
        while cut > MAX_LINE - 3 && is_continuation(next) {
            cut -= 1;
            next = self.line[cut];
        }
        if next < 0xc0 {
            // No character's first byte before the continuation bytes: not
            // UTF-8 anyway (the sanitizer replaces them), and nothing to
            // keep together.
            cut = MAX_LINE;
        }
        self.line.truncate(cut);
        out.push(Line {
            bytes: std::mem::take(&mut self.line),
            truncated: true,
        });
        self.overflow = true;
    }

    fn end_line(&mut self, out: &mut Vec<Line>) {
        if std::mem::take(&mut self.overflow) {
            return;
        }
        if !self.line.is_empty() {
            out.push(Line {
                bytes: std::mem::take(&mut self.line),
                truncated: false,
            });
        }
    }
}

fn is_continuation(byte: u8) -> bool {
    byte & 0b1100_0000 == 0b1000_0000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(chunks: &[&[u8]]) -> Vec<Line> {
        let mut reader = LineReader::new();
        let mut out = Vec::new();
        for chunk in chunks {
            reader.push(chunk, &mut out);
        }
        out
    }

    fn texts(chunks: &[&[u8]]) -> Vec<String> {
        lines(chunks)
            .into_iter()
            .map(|l| String::from_utf8_lossy(&l.bytes).into_owned())
            .collect()
    }

    #[test]
    fn every_line_end_ends_one_line() {
        assert_eq!(texts(&[b"a\nb\r\nc\r\0d\re\n"]), ["a", "b", "c", "d", "e"]);
    }

    #[test]
    fn crlf_split_across_reads_is_one_line_end() {
        assert_eq!(texts(&[b"a\r", b"\nb\r", b"\0", b"c\n"]), ["a", "b", "c"]);
    }

    #[test]
    fn blank_lines_produce_nothing() {
        assert!(texts(&[b"\n\r\n\r\n"]).is_empty());
    }

    #[test]
    fn telnet_negotiation_is_removed() {
        // IAC DO ECHO, IAC WILL SGA, IAC SB TTYPE ... IAC SE, IAC NOP.
        let input = b"\xff\xfd\x01hi\xff\xfb\x03 there\xff\xfa\x18\x00xterm\xff\xf0!\xff\xf1\n";
        assert_eq!(texts(&[input]), ["hi there!"]);
    }

    #[test]
    fn telnet_sequence_split_across_reads_is_removed() {
        assert_eq!(
            texts(&[b"a\xff", b"\xfd", b"\x01b\xff\xfa", b"xx\xff", b"\xf0c\n"]),
            ["abc"]
        );
    }

    #[test]
    fn stray_ff_before_a_non_command_is_kept_as_data() {
        let out = lines(&[b"bad \xff byte\n", b"\xff\n"]);
        assert_eq!(out[0].bytes, b"bad \xff byte");
        // The LF after a stray 0xFF still ends the line.
        assert_eq!(out[1].bytes, b"\xff");
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn escaped_iac_is_a_data_byte() {
        let out = lines(&[b"a\xff\xffb\n"]);
        assert_eq!(out[0].bytes, b"a\xffb");
    }

    #[test]
    fn long_line_is_cut_and_rest_dropped() {
        let mut input = vec![b'x'; 600];
        input.extend_from_slice(b"\nnext\n");
        let out = lines(&[&input]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].bytes.len(), MAX_LINE);
        assert!(out[0].truncated);
        assert_eq!(out[1].bytes, b"next");
        assert!(!out[1].truncated);
    }

    #[test]
    fn exactly_max_line_is_not_truncated() {
        let mut input = vec![b'x'; MAX_LINE];
        input.push(b'\n');
        let out = lines(&[&input]);
        assert_eq!(out.len(), 1);
        assert!(!out[0].truncated);
    }

    #[test]
    fn cut_falls_on_a_character_boundary() {
        // 511 ASCII bytes then "é" (2 bytes) would straddle byte 512.
        let mut input = vec![b'x'; 511];
        input.extend_from_slice("é and more".as_bytes());
        input.push(b'\n');
        let out = lines(&[&input]);
        assert_eq!(out[0].bytes.len(), 511);
        assert!(std::str::from_utf8(&out[0].bytes).is_ok());
    }

    #[test]
    fn a_stray_continuation_byte_at_the_cut_costs_no_other_byte() {
        let mut input = vec![b'x'; 512];
        input.extend_from_slice(b"\x80 and more\n");
        let out = lines(&[&input]);
        assert_eq!(out[0].bytes, vec![b'x'; 512]);
        assert!(out[0].truncated);
    }

    #[test]
    fn partial_line_is_taken_on_request() {
        let mut reader = LineReader::new();
        let mut out = Vec::new();
        reader.push(b"hello", &mut out);
        assert!(out.is_empty());
        assert!(reader.has_partial());
        assert_eq!(reader.take_partial().unwrap().bytes, b"hello");
        assert!(!reader.has_partial());
        assert_eq!(reader.take_partial(), None);
    }

    #[test]
    fn taking_partial_ends_an_overflowed_line() {
        let mut reader = LineReader::new();
        let mut out = Vec::new();
        reader.push(&[b'x'; 700], &mut out);
        assert_eq!(out.len(), 1);
        assert!(reader.has_partial());
        assert_eq!(reader.take_partial(), None);
        reader.push(b"again", &mut out);
        assert_eq!(reader.take_partial().unwrap().bytes, b"again");
    }
}
