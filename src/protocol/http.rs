//! HTTP on the chat's port: a request's head, and the response to it.
//!
//! The client child reads the head (see `session::web`); what it means
//! and what is answered is decided here, without I/O: the page and its
//! files are embedded in the binary (nothing to install, nothing fetched
//! from elsewhere), everything else gets its error, and every response
//! closes the connection.

/// A request head longer than this is refused (431).
pub const MAX_HEAD: usize = 8 * 1024;
/// Headers read, at most; more is a head too large.
const MAX_HEADERS: usize = 64;

/// The page's files: path, content type, bytes.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_bytes!("../../web/index.html"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../web/style.css"),
    ),
    (
        "/favicon.svg",
        "image/svg+xml",
        include_bytes!("../../web/favicon.svg"),
    ),
    (
        "/chat.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/chat.js"),
    ),
];

/// Only the page's own files and its own WebSocket; no framing by other
/// sites, no referrer sent anywhere.
const SECURITY_HEADERS: &str = "Content-Security-Policy: default-src 'none'; script-src 'self'; \
style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
frame-ancestors 'none'\r\nX-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n\
X-Frame-Options: DENY\r\n";

/// What the head of a request says, as far as the server cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub host: Option<String>,
    pub origin: Option<String>,
    /// `Upgrade: websocket` with `Connection: upgrade`.
    pub websocket: bool,
    pub websocket_key: Option<String>,
    pub websocket_version: Option<String>,
}

/// Where a browser's WebSocket is.
pub const WEBSOCKET_PATH: &str = "/ws";

/// What a head read so far amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// Not all of it has arrived.
    Partial,
    /// The request, and the head's length: what follows is not part of
    /// it (a WebSocket's first frames).
    Complete(Request, usize),
    /// Not HTTP, or too many headers.
    Malformed,
}

/// Parses what has arrived of a request head.
pub fn parse(bytes: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Partial) => Head::Partial,
        Ok(httparse::Status::Complete(length)) => {
            let (Some(method), Some(path)) = (request.method, request.path) else {
                return Head::Malformed;
            };
            let header = |name: &str| {
                let found = request
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name));
                found
                    .and_then(|h| std::str::from_utf8(h.value).ok())
                    .map(str::trim)
            };
            let has_word = |name: &str, word: &str| {
                header(name)
                    .is_some_and(|v| v.split(',').any(|w| w.trim().eq_ignore_ascii_case(word)))
            };
            Head::Complete(
                Request {
                    method: method.to_string(),
                    // The query does not choose the file.
                    path: path.split('?').next().unwrap_or(path).to_string(),
                    host: header("Host").map(str::to_string),
                    origin: header("Origin").map(str::to_string),
                    websocket: has_word("Upgrade", "websocket")
                        && has_word("Connection", "upgrade"),
                    websocket_key: header("Sec-WebSocket-Key").map(str::to_string),
                    websocket_version: header("Sec-WebSocket-Version").map(str::to_string),
                },
                length,
            )
        }
        Err(_) => Head::Malformed,
    }
}

/// Why a request gets no page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    BadRequest,
    /// The page of another site asked for a WebSocket.
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Timeout,
    HeadTooLarge,
}

impl Failure {
    fn status(self) -> &'static str {
        match self {
            Failure::BadRequest => "400 Bad Request",
            Failure::Forbidden => "403 Forbidden",
            Failure::NotFound => "404 Not Found",
            Failure::MethodNotAllowed => "405 Method Not Allowed",
            Failure::Timeout => "408 Request Timeout",
            Failure::HeadTooLarge => "431 Request Header Fields Too Large",
        }
    }
}

/// The answer to a request for the WebSocket: `Ok` with the handshake's
/// response, or the failure. `allowed` are origins other than the
/// server's own that may open one (`--allowed-origin`).
pub fn websocket(request: &Request, allowed: &[String]) -> Result<Vec<u8>, Failure> {
    if request.method != "GET" {
        return Err(Failure::MethodNotAllowed);
    }
    let (true, Some(key), Some("13")) = (
        request.websocket,
        request.websocket_key.as_deref(),
        request.websocket_version.as_deref(),
    ) else {
        return Err(Failure::BadRequest);
    };
    if let Some(origin) = &request.origin
        && !same_origin(origin, request.host.as_deref())
        && !allowed
            .iter()
            .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return Err(Failure::Forbidden);
    }
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    Ok(format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes())
}

/// A browser sends `Origin` with every WebSocket: the page must be this
/// server's own, on the host and port the browser asked for. (A client
/// that is no browser sends none, and needs none.)
fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host else { return false };
    let origin = origin.to_ascii_lowercase();
    let host = host.to_ascii_lowercase();
    origin == format!("http://{host}") || origin == format!("https://{host}")
}

/// The whole response to `request`.
pub fn respond(request: &Request) -> Vec<u8> {
    let head_only = match request.method.as_str() {
        "GET" => false,
        "HEAD" => true,
        _ => return failure(Failure::MethodNotAllowed),
    };
    let Some((_, content_type, body)) = FILES.iter().find(|(path, ..)| *path == request.path)
    else {
        return failure(Failure::NotFound);
    };
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-cache\r\n{SECURITY_HEADERS}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        response.extend_from_slice(body);
    }
    response
}

/// The response for a request that gets no page: its status, and the
/// status again as a line of text.
pub fn failure(why: Failure) -> Vec<u8> {
    let body = format!("{}\n", why.status());
    let allow = match why {
        Failure::MethodNotAllowed => "Allow: GET, HEAD\r\n",
        _ => "",
    };
    format!(
        "HTTP/1.1 {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         {allow}{SECURITY_HEADERS}Connection: close\r\n\r\n{body}",
        why.status(),
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    #[test]
    fn a_head_is_partial_until_its_blank_line() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n"), Head::Partial);
        let head = b"GET /style.css?v=2 HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut with_more = head.to_vec();
        with_more.extend_from_slice(b"\x81\x85frame");
        assert_eq!(
            parse(&with_more),
            Head::Complete(
                Request {
                    method: "GET".into(),
                    path: "/style.css".into(),
                    host: Some("x".into()),
                    ..Request::default()
                },
                head.len()
            )
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n"),
            Head::Malformed
        );
        assert_eq!(parse(b"\x00\x01 nonsense\r\n\r\n"), Head::Malformed);
    }

    #[test]
    fn the_page_is_served_with_its_headers_and_the_rest_gets_its_status() {
        let get = |method: &str, path: &str| {
            text(&respond(&Request {
                method: method.into(),
                path: path.into(),
                ..Request::default()
            }))
        };
        let page = get("GET", "/");
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
        for header in [
            "Content-Type: text/html; charset=utf-8",
            "frame-ancestors 'none'",
            "X-Content-Type-Options: nosniff",
            "Referrer-Policy: no-referrer",
            "Connection: close",
        ] {
            assert!(page.contains(header), "{header} missing: {page}");
        }
        let (head, body) = page.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        let head_only = get("HEAD", "/");
        assert!(head_only.ends_with("\r\n\r\n") && head_only.contains("Content-Length"));
        assert!(get("GET", "/nothing").starts_with("HTTP/1.1 404 "));
        let post = get("POST", "/");
        assert!(post.starts_with("HTTP/1.1 405 ") && post.contains("Allow: GET, HEAD"));
        let upgrade = |origin: Option<&str>| Request {
            method: "GET".into(),
            path: WEBSOCKET_PATH.into(),
            host: Some("chat.example:9999".into()),
            origin: origin.map(str::to_string),
            websocket: true,
            websocket_key: Some("dGhlIHNhbXBsZSBub25jZQ==".into()),
            websocket_version: Some("13".into()),
        };
        // RFC 6455's own example of a key and its answer.
        let accepted = text(&websocket(&upgrade(Some("http://Chat.example:9999")), &[]).unwrap());
        assert!(accepted.starts_with("HTTP/1.1 101 "), "{accepted}");
        assert!(accepted.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(
            websocket(&upgrade(None), &[]).is_ok(),
            "no Origin: no browser"
        );
        let elsewhere = upgrade(Some("https://evil.example"));
        assert_eq!(websocket(&elsewhere, &[]), Err(Failure::Forbidden));
        let allowed = ["https://evil.example/".to_string()];
        assert!(websocket(&elsewhere, &allowed).is_ok());
        let plain = Request {
            websocket: false,
            ..upgrade(None)
        };
        assert_eq!(websocket(&plain, &[]), Err(Failure::BadRequest));
        let too_big = text(&failure(Failure::HeadTooLarge));
        let (head, body) = too_big.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 "));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }
}
