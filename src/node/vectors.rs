//! A test hook, not an API: the node control bodies (hello, leave) through
//! the node's own types, to and from JSON, so that `tests/vectors.rs` can
//! check the shared test vectors (`tests/fixtures/vectors.json`) against
//! the real encoder and decoder rather than a copy of their shape.
//!
//! Guarantees: `*_from_json` encodes exactly as a node encodes the body it
//! sends; `*_to_json` decodes exactly as a node decodes one it receives,
//! then shows it as JSON (fields a node leaves out stay out). Does not:
//! make these types public, or promise anything across versions: it is
//! `#[doc(hidden)]` and may change with the protocol.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::protocol::{Hello, Leave};
use crate::wire;

fn to_json<T: DeserializeOwned + Serialize>(body: &[u8]) -> Result<serde_json::Value, String> {
    let v: T = wire::decode_body(body).map_err(|e| e.to_string())?;
    serde_json::to_value(&v).map_err(|e| e.to_string())
}

fn from_json<T: DeserializeOwned + Serialize>(v: serde_json::Value) -> Result<Bytes, String> {
    let v: T = serde_json::from_value(v).map_err(|e| e.to_string())?;
    wire::encode_body(&v).map_err(|e| e.to_string())
}

/// A hello body (op 2, and the reply to one) decoded as a node decodes it.
pub fn hello_to_json(body: &[u8]) -> Result<serde_json::Value, String> {
    to_json::<Hello>(body)
}

/// A hello body encoded as a node encodes it.
pub fn hello_from_json(v: serde_json::Value) -> Result<Bytes, String> {
    from_json::<Hello>(v)
}

/// A leave body (op 3) decoded as a node decodes it.
pub fn leave_to_json(body: &[u8]) -> Result<serde_json::Value, String> {
    to_json::<Leave>(body)
}

/// A leave body encoded as a node encodes it.
pub fn leave_from_json(v: serde_json::Value) -> Result<Bytes, String> {
    from_json::<Leave>(v)
}
