//! WebSocket (RFC 6455) for the browser's page: each text message is one
//! JSON message of the programs' protocol, unchanged.
//!
//! Reading is tungstenite's (masking, UTF-8, control frames, limits, the
//! close handshake), over an in-memory pipe: the session reads the socket
//! as for every client and feeds the bytes in, and what tungstenite
//! answers by itself (pongs, the close) comes out to be queued like any
//! line. Writing the server's text frames needs only a header before each
//! line, which the client's backlog adds itself (see [`text_header`]).

use std::collections::VecDeque;
use std::io::{self, Read, Write};

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocket, WebSocketConfig};
use tungstenite::{Error, Message};

use super::framing::Line;
use super::json::MAX_JSON_LINE;

/// The largest message or frame a client may send (tungstenite's default
/// is megabytes).
pub const MAX_MESSAGE: usize = MAX_JSON_LINE;

/// What tungstenite reads from the pipe at a time. Its default, 128 KiB,
/// is zero-filled before the first read: that alone would double an idle
/// browser child's private memory. A longer message grows the buffer.
const READ_CHUNK: usize = 4096;

/// The header of an unmasked text frame of `len` bytes, as a server sends.
pub fn text_header(len: usize, out: &mut Vec<u8>) {
    out.push(0x81);
    match len {
        0..=125 => out.push(len as u8),
        126..=0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

/// A close frame with `code`, as a server sends.
pub fn close_frame(code: u16) -> Vec<u8> {
    let mut frame = vec![0x88, 2];
    frame.extend_from_slice(&code.to_be_bytes());
    frame
}

/// Going away: the server is stopping, or ends the session.
pub const GOING_AWAY: u16 = 1001;
pub const NORMAL: u16 = 1000;

/// The bytes in and out of tungstenite.
#[derive(Debug, Default)]
struct Pipe {
    input: VecDeque<u8>,
    output: Vec<u8>,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.input.read(buf)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A browser's messages, from the bytes of its socket.
#[derive(Debug)]
pub struct WsReader {
    socket: WebSocket<Pipe>,
    /// The connection is over: the client closed it, or broke the
    /// protocol (and was sent a close frame saying why).
    pub ended: bool,
    /// It was the client's fault.
    pub broken: bool,
}

impl Default for WsReader {
    fn default() -> Self {
        Self::new()
    }
}

impl WsReader {
    pub fn new() -> WsReader {
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE))
            .accept_unmasked_frames(false)
            .read_buffer_size(READ_CHUNK)
            // Its own answers (pongs, a close) go straight to the pipe.
            .write_buffer_size(0);
        WsReader {
            socket: WebSocket::from_raw_socket(Pipe::default(), Role::Server, Some(config)),
            ended: false,
            broken: false,
        }
    }

    /// Feeds bytes from the socket; each text message is appended to
    /// `out` as a line.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<Line>) {
        self.socket.get_mut().input.extend(input);
        while !self.ended {
            match self.socket.read() {
                Ok(Message::Text(text)) => out.push(Line {
                    bytes: text.as_bytes().to_vec(),
                    truncated: false,
                }),
                Ok(Message::Binary(_)) => self.close(CloseCode::Unsupported, "text frames only"),
                // Pings are answered by tungstenite (the pong is in the
                // output); a close is answered the same way.
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Ok(Message::Close(_)) => self.ended = true,
                Err(Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(Error::Capacity(_)) => self.close(CloseCode::Size, "message too big"),
                Err(Error::Utf8(_)) => self.close(CloseCode::Invalid, "invalid UTF-8"),
                Err(Error::Protocol(_)) => self.close(CloseCode::Protocol, "protocol error"),
                Err(_) => self.ended = true,
            }
        }
        // What tungstenite answers by itself goes to the output.
        let _ = self.socket.flush();
    }

    fn close(&mut self, code: CloseCode, reason: &str) {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = self.socket.close(Some(frame));
        let _ = self.socket.flush();
        self.ended = true;
        self.broken = true;
    }

    /// The frames tungstenite wrote (pongs, a close), to be sent.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.socket.get_mut().output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's masked frame.
    fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut frame = vec![0x80 | opcode];
        assert!(payload.len() < 126);
        frame.push(0x80 | payload.len() as u8);
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    }

    #[test]
    fn text_messages_become_lines_and_pings_are_answered() {
        let mut reader = WsReader::new();
        let mut lines = Vec::new();
        let mut bytes = masked(1, br#"{"type":"ping"}"#);
        bytes.extend(masked(9, b"hi"));
        // Split anywhere: a frame is kept until it is whole.
        reader.push(&bytes[..5], &mut lines);
        assert!(lines.is_empty());
        reader.push(&bytes[5..], &mut lines);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].bytes, br#"{"type":"ping"}"#);
        assert_eq!(reader.take_output(), [0x8A, 2, b'h', b'i']);
        assert!(!reader.ended);
    }

    #[test]
    fn unmasked_frames_bad_utf8_and_binary_end_it_with_a_close() {
        for (bytes, code) in [
            (vec![0x81, 2, b'h', b'i'], 1002u16),
            (masked(1, &[0xff, 0xfe]), 1007),
            (masked(2, b"x"), 1003),
        ] {
            let mut reader = WsReader::new();
            reader.push(&bytes, &mut Vec::new());
            assert!(reader.ended && reader.broken);
            let out = reader.take_output();
            assert_eq!(out[0], 0x88, "a close frame: {out:?}");
            assert_eq!(u16::from_be_bytes([out[2], out[3]]), code);
        }
    }

    #[test]
    fn server_frames_have_the_right_length_form() {
        for (len, header) in [(5, 2), (200, 4), (70_000, 10)] {
            let mut out = Vec::new();
            text_header(len, &mut out);
            assert_eq!(out.len(), header);
            assert_eq!(out[0], 0x81);
        }
    }
}
