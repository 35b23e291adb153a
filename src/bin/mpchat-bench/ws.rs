//! The client's side of WebSocket (RFC 6455) for `--proto ws`: as much of
//! it as a browser's page uses to speak mpchat's JSON messages, written
//! for an epoll loop that owns its own buffers. The upgrade request (with
//! the `Origin` a page on the server would send), masked text frames out,
//! the server's unmasked frames in. Pure functions over byte buffers; the
//! driver does the I/O.
//!
//! A real client draws a fresh, unpredictable mask for every frame so that
//! a page cannot steer the bytes on the wire (an attack on proxies, not on
//! the server). The benchmark's masks only need to be masks: the server
//! unmasks every frame the same way whatever the key, and a key that
//! varies keeps the work honest.

use std::io::Write;

pub const TEXT: u8 = 0x1;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// A frame whose payload says it is longer than this is not the server we
/// measure (mpchat's messages are at most 8 KiB; the Node.js peer's too).
const MAX_PAYLOAD: u64 = 1 << 20;

/// Appends the upgrade request for `/ws` on `host` (`ADDR:PORT`), as a
/// browser showing the page from that host sends it.
pub fn upgrade_request(out: &mut Vec<u8>, host: &str, id: u32) {
    // Sec-WebSocket-Key is 16 bytes in base64; any 16 bytes will do for a
    // benchmark, one set per client.
    let key =
        base64_16(&(u128::from(id) ^ 0x6d70_6368_6174_2d62_656e_6368_2d6b_6579).to_le_bytes());
    let _ = write!(
        out,
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
}

/// The length of the response head in `buf` (through its blank line) once
/// it has all arrived, and whether it switched protocols; `Err` with the
/// status line if the server said anything else.
pub fn response_head(buf: &[u8]) -> Option<Result<usize, String>> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let status = buf[..end].split(|&b| b == b'\r').next().unwrap_or_default();
    let mut words = status.split(|&b| b == b' ');
    let ok = words.next().is_some_and(|v| v.starts_with(b"HTTP/1.1"))
        && words.next() == Some(&b"101"[..]);
    Some(if ok {
        Ok(end)
    } else {
        Err(String::from_utf8_lossy(status).into_owned())
    })
}

/// Turns the bytes of `out` from `start` on into one masked frame of
/// `opcode`.
pub fn seal(out: &mut Vec<u8>, start: usize, opcode: u8) {
    let len = out.len() - start;
    let key = mask_key(start, len);
    let mut header = [0u8; 14];
    header[0] = 0x80 | opcode;
    let mut n = 2;
    if len < 126 {
        header[1] = 0x80 | len as u8;
    } else if len <= 0xffff {
        header[1] = 0x80 | 126;
        header[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        n = 4;
    } else {
        header[1] = 0x80 | 127;
        header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        n = 10;
    }
    header[n..n + 4].copy_from_slice(&key);
    n += 4;
    for (i, b) in out[start..].iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
    out.splice(start..start, header[..n].iter().copied());
}

/// A key that differs from frame to frame and is never all zeros.
fn mask_key(start: usize, len: usize) -> [u8; 4] {
    let x = (start as u32 ^ (len as u32).rotate_left(16)).wrapping_mul(0x9e37_79b9) | 1;
    x.to_le_bytes()
}

/// One frame from the server.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub opcode: u8,
    pub fin: bool,
    pub payload: &'a [u8],
}

/// The first frame in `buf` and the bytes it takes, `None` until it has
/// all arrived, `Err` if it cannot be a server's frame.
pub fn next_frame(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, String> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b1 & 0x80 != 0 {
        return Err("the server sent a masked frame".into());
    }
    let (len, mut at) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => (u64::from_be_bytes(b.try_into().unwrap_or_default()), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if len > MAX_PAYLOAD {
        return Err(format!("the server sent a frame of {len} bytes"));
    }
    let len = len as usize;
    let Some(payload) = buf.get(at..at + len) else {
        return Ok(None);
    };
    at += len;
    Ok(Some((
        Frame {
            opcode: b0 & 0x0f,
            fin: b0 & 0x80 != 0,
            payload,
        },
        at,
    )))
}

/// The status code of a close frame's payload.
pub fn close_code(payload: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*payload.first()?, *payload.get(1)?]))
}

fn base64_16(bytes: &[u8; 16]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(24);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Undoes `seal`, as the server does.
    fn unmask(frame: &[u8]) -> (u8, Vec<u8>) {
        assert_eq!(frame[1] & 0x80, 0x80, "client frames are masked");
        let (len, at) = match frame[1] & 0x7f {
            126 => (u16::from_be_bytes([frame[2], frame[3]]) as usize, 4),
            n => (n as usize, 2),
        };
        let key = &frame[at..at + 4];
        let payload = &frame[at + 4..];
        assert_eq!(payload.len(), len);
        let plain = payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]);
        (frame[0], plain.collect())
    }

    #[test]
    fn sealed_frames_unmask_to_their_text() {
        for len in [0usize, 5, 125, 126, 300, 8192] {
            let mut out = b"earlier".to_vec();
            let text: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            out.extend_from_slice(&text);
            seal(&mut out, 7, TEXT);
            assert_eq!(&out[..7], b"earlier");
            assert_eq!(unmask(&out[7..]), (0x81, text), "len {len}");
        }
    }

    #[test]
    fn server_frames_are_read_whole_or_not_at_all() {
        let mut buf = vec![0x81, 126, 0x01, 0x00];
        buf.extend(std::iter::repeat_n(b'x', 256));
        buf.extend_from_slice(&[0x89, 2, b'h', b'i']);
        for cut in [0, 1, 3, 100] {
            assert_eq!(next_frame(&buf[..cut]), Ok(None));
        }
        let (frame, used) = next_frame(&buf).unwrap().unwrap();
        assert_eq!(
            (frame.opcode, frame.fin, frame.payload.len(), used),
            (TEXT, true, 256, 260)
        );
        let (ping, used2) = next_frame(&buf[used..]).unwrap().unwrap();
        assert_eq!((ping.opcode, ping.payload, used2), (PING, &b"hi"[..], 4));
        assert!(next_frame(&[0x81, 0x85, 0, 0, 0, 0, 0]).is_err());
        assert_eq!(close_code(&[0x03, 0xe9]), Some(1001));
    }

    #[test]
    fn the_upgrade_is_a_browsers_and_only_101_is_success() {
        let mut out = Vec::new();
        upgrade_request(&mut out, "127.0.0.1:9999", 3);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:9999\r\n"));
        assert!(text.contains("Origin: http://127.0.0.1:9999\r\n"));
        let key = text.split("Sec-WebSocket-Key: ").nth(1).unwrap();
        assert_eq!(key.find('\r'), Some(24));
        assert!(text.ends_with("\r\n\r\n"));
        let ok = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x00";
        assert_eq!(response_head(ok), Some(Ok(ok.len() - 2)));
        assert_eq!(response_head(b"HTTP/1.1 101 Switching"), None);
        assert_eq!(
            response_head(b"HTTP/1.1 403 Forbidden\r\n\r\n"),
            Some(Err("HTTP/1.1 403 Forbidden".into()))
        );
    }

    #[test]
    fn base64_of_sixteen_bytes() {
        assert_eq!(base64_16(&[0; 16]), "AAAAAAAAAAAAAAAAAAAAAA==");
        assert_eq!(base64_16(b"the sample nonce"), "dGhlIHNhbXBsZSBub25jZQ==");
    }
}
