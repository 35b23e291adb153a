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
    for method in [&b"GET "[..], b"HEAD "] {
        if first.starts_with(method) {
            return Some(Wire::Http);
        }
        if method.starts_with(first) {
            return None;
        }
    }
    Some(Wire::Line)
}

/// What an HTTP client is told, until the server speaks HTTP: a whole
/// response, so a browser shows the line.
pub fn http_refusal() -> String {
    let body =
        "This is an mpchat chat server: connect with nc, telnet or a program (see PROTOCOL.md).\n";
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
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
        assert_eq!(classify(b"\xff\xfb\x01"), Some(Wire::Line));
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"HEAD"), None);
        assert_eq!(classify(b""), None);
    }

    #[test]
    fn the_http_refusal_says_its_length_right() {
        let response = http_refusal();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }
}
