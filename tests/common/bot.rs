//! A bot's login (PROTOCOL.md, "Bots"): the challenge, and the answer
//! its secret makes.

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::Server;
use super::json::JsonClient;

pub fn mac(secret: &str, bot: &str, device: &str, nonce: &str) -> String {
    let key = hex::decode(secret).unwrap();
    let mut hmac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    hmac.update(format!("mpchat-bot-v1\n{bot}\n{device}\n{nonce}").as_bytes());
    hex::encode(hmac.finalize().into_bytes())
}

/// Says hello as `bot` on `device` and returns the connection and its
/// challenge's nonce.
pub fn challenged(server: &Server, bot: &str, device: &str) -> (JsonClient, String) {
    let mut client = JsonClient::connect(server);
    client.send(&json!({"type": "hello", "bot": bot, "device": device, "id": "h"}));
    let challenge = client.next();
    assert_eq!(
        (&challenge["type"], &challenge["id"]),
        (&json!("challenge"), &json!("h")),
        "{challenge}"
    );
    let nonce = challenge["nonce"].as_str().expect("a nonce").to_string();
    assert_eq!(nonce.len(), 64, "64 hex digits: {nonce}");
    assert!(nonce.bytes().all(|b| b.is_ascii_hexdigit()), "{nonce}");
    (client, nonce)
}

/// Logs `bot` in on `device` with `secret`; returns the connection and
/// its welcome.
pub fn bot_login(server: &Server, bot: &str, secret: &str, device: &str) -> (JsonClient, Value) {
    let (mut client, nonce) = challenged(server, bot, device);
    client.send(&json!({"type": "auth", "mac": mac(secret, bot, device, &nonce), "id": "a"}));
    let welcome = client.next();
    assert_eq!(
        (&welcome["type"], &welcome["id"], &welcome["bot"]),
        (&json!("welcome"), &json!("a"), &json!(true)),
        "{welcome}"
    );
    (client, welcome)
}
