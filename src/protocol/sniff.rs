//! Which protocol a client speaks, from its first bytes: one port serves
//! people (the line protocol), programs (JSON lines) and, later, web
//! browsers (HTTP).
//!
//! The decision is pure; waiting for the bytes is the session's (see
//! `session::sniff`).

/// A client's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// People: `nc`, `telnet`, the class-lab C client.
    Line,
    /// Programs: one JSON object per line.
    Json,
    /// A web browser or another HTTP client.
    Http,
}

/// The protocol of a client whose first bytes are `first`, or `None`
/// while they could still be the start of an HTTP request line.
pub fn classify(first: &[u8]) -> Option<Wire> {
    if first.first() == Some(&b'{') {
        return Some(Wire::Json);
    }
    // GET and HEAD are what browsers send; the other methods are HTTP
    // too (and get 405), and no nickname has a space in it.
    const METHODS: [&[u8]; 9] = [
        b"GET ",
        b"HEAD ",
        b"POST ",
        b"PUT ",
        b"DELETE ",
        b"OPTIONS ",
        b"PATCH ",
        b"TRACE ",
        b"CONNECT ",
    ];
    for method in METHODS {
        if first.starts_with(method) {
            return Some(Wire::Http);
        }
        if method.starts_with(first) {
            return None;
        }
    }
    Some(Wire::Line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_choose_the_protocol() {
        assert_eq!(classify(b"{\"type\":\"hello\"}"), Some(Wire::Json));
        assert_eq!(classify(b"{"), Some(Wire::Json));
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Wire::Http));
        assert_eq!(classify(b"HEAD / HTTP/1.0\r\n"), Some(Wire::Http));
        assert_eq!(classify(b"alice\n"), Some(Wire::Line));
        assert_eq!(classify(b"GETTY\n"), Some(Wire::Line));
        assert_eq!(classify(b"POST / HTTP/1.1\r\n"), Some(Wire::Http));
        assert_eq!(classify(b"OPTIONS * HTTP/1.1\r\n"), Some(Wire::Http));
        assert_eq!(classify(b"PO"), None);
        assert_eq!(classify(b"Paul\n"), Some(Wire::Line));
        assert_eq!(classify(b"\xff\xfb\x01"), Some(Wire::Line));
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"HEAD"), None);
        assert_eq!(classify(b""), None);
    }
}
