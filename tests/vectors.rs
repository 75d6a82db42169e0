//! The shared wire test vectors (`tests/fixtures/vectors.json`), checked
//! against the library's own encoder and decoder. `tests/interop/node.py`
//! checks the same file against its independent Python implementation,
//! so the two sides cannot drift apart.
//!
//! Guarantees: for every vector, the frames decode (with
//! `wire::decode_pairs`, `Header::decode` and the node's own body types)
//! to exactly the meaning written next to them; for every canonical
//! vector, encoding the meaning (`Header::encode`, `wire::encode_body`, the
//! node's hello and leave types) gives exactly those bytes; every reject
//! vector is refused with the drop reason named. The normal run only
//! compares. `ZFABRIC_WRITE_VECTORS=1` rewrites the frames of the canonical
//! vectors from their meanings (after a deliberate protocol change; the
//! Python check then tells whether the document still agrees). Does not:
//! test sockets or ZMTP framing (`tests/interop*.rs` do).

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Map, Value};
use zfabric::node::vectors as node_bodies;
use zfabric::wire::{
    self, ContentType, Deadline, Header, Kind, Limits, MessageId, NodeOp, RemoteError,
};

const FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/vectors.json");

fn load() -> Value {
    regenerate_once();
    let text = std::fs::read_to_string(FILE).expect("the vectors file is there");
    serde_json::from_str(&text).expect("the vectors file is JSON")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length: {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn kind_from(n: u64) -> Kind {
    match n {
        0 => Kind::Event,
        1 => Kind::Request,
        2 => Kind::Reply,
        3 => Kind::Error,
        4 => Kind::Control,
        other => panic!("kind {other} in a vector's meaning"),
    }
}

fn op_from(n: u64) -> NodeOp {
    match n {
        1 => NodeOp::Call,
        2 => NodeOp::Hello,
        3 => NodeOp::Leave,
        4 => NodeOp::Deliver,
        5 => NodeOp::Publish,
        6 => NodeOp::Unicast,
        other => panic!("op {other} in a vector's meaning"),
    }
}

fn id_from(v: &Value) -> MessageId {
    let b: [u8; 16] = unhex(v.as_str().expect("an id is hex"))
        .try_into()
        .expect("an id is 16 bytes");
    MessageId(u128::from_be_bytes(b))
}

/// A header as the meaning describes it (absent fields: their defaults).
fn header_from(m: &Value) -> Header {
    let known = [
        "version",
        "kind",
        "id",
        "source",
        "seq",
        "correlation",
        "reply_to",
        "deadline",
        "attempt",
        "traceparent",
        "content_type",
        "service",
        "call_id",
        "priority",
        "hops",
        "op",
        "tracestate",
    ];
    for k in m.as_object().expect("a header meaning is an object").keys() {
        assert!(known.contains(&k.as_str()), "unknown header field {k}");
    }
    let u = |k: &str| m.get(k).map(|v| v.as_u64().expect("a uint"));
    let s = |k: &str| m.get(k).map(|v| Arc::from(v.as_str().expect("a string")));
    assert_eq!(u("version"), Some(u64::from(wire::PROTOCOL_VERSION)));
    let mut h = Header::new(
        kind_from(u("kind").expect("kind")),
        id_from(&m["id"]),
        u("source").expect("source"),
        u("seq").expect("seq"),
    );
    h.correlation = m.get("correlation").map(id_from);
    h.reply_to = s("reply_to");
    h.deadline = u("deadline").map(Deadline);
    h.attempt = u("attempt").unwrap_or(0).try_into().unwrap();
    h.traceparent = s("traceparent");
    h.tracestate = s("tracestate");
    h.content_type = match u("content_type").unwrap_or(0) {
        0 => ContentType::MsgPack,
        1 => ContentType::Raw,
        other => panic!("content_type {other} in a vector's meaning"),
    };
    h.service = s("service");
    h.call_id = u("call_id").unwrap_or(0);
    h.priority = u("priority").unwrap_or(0).try_into().unwrap();
    h.hops = u("hops").unwrap_or(0).try_into().unwrap();
    h.op = u("op").map(op_from);
    h
}

/// A decoded header shown as a meaning (defaults left out, as on the wire).
fn header_meaning(h: &Header) -> Value {
    let mut m = Map::new();
    m.insert("version".into(), json!(wire::PROTOCOL_VERSION));
    m.insert("kind".into(), json!(h.kind as u8));
    m.insert("id".into(), json!(hex(&h.id.0.to_be_bytes())));
    m.insert("source".into(), json!(h.source));
    m.insert("seq".into(), json!(h.seq));
    if let Some(c) = h.correlation {
        m.insert("correlation".into(), json!(hex(&c.0.to_be_bytes())));
    }
    let mut put_str = |k: &str, v: &Option<Arc<str>>| {
        if let Some(v) = v {
            m.insert(k.into(), json!(&**v));
        }
    };
    put_str("reply_to", &h.reply_to);
    put_str("traceparent", &h.traceparent);
    put_str("tracestate", &h.tracestate);
    put_str("service", &h.service);
    if let Some(d) = h.deadline {
        m.insert("deadline".into(), json!(d.0));
    }
    for (k, v) in [
        ("attempt", u64::from(h.attempt)),
        ("content_type", h.content_type as u64),
        ("call_id", h.call_id),
        ("priority", u64::from(h.priority)),
        ("hops", u64::from(h.hops)),
    ] {
        if v != 0 {
            m.insert(k.into(), json!(v));
        }
    }
    if let Some(op) = h.op {
        m.insert("op".into(), json!(op as u8));
    }
    Value::Object(m)
}

/// The body bytes a body meaning stands for, by the library's encoders.
fn body_from(m: &Value) -> Bytes {
    let v = m.get("value").cloned().unwrap_or(Value::Null);
    match m["type"].as_str().expect("a body type") {
        "msgpack" => wire::encode_body(&v).unwrap(),
        "raw" => Bytes::from(unhex(m["hex"].as_str().unwrap())),
        "error" => {
            let e: RemoteError = serde_json::from_value(v).unwrap();
            wire::encode_body(&e).unwrap()
        }
        "hello" => node_bodies::hello_from_json(v).unwrap(),
        "leave" => node_bodies::leave_from_json(v).unwrap(),
        other => panic!("body type {other}"),
    }
}

/// A body decoded as its meaning's type says, shown as a meaning.
fn body_meaning(ty: &str, b: &[u8]) -> Value {
    let value = match ty {
        "msgpack" => wire::decode_body::<Value>(b).unwrap(),
        "raw" => return json!({"type": "raw", "hex": hex(b)}),
        "error" => serde_json::to_value(wire::decode_body::<RemoteError>(b).unwrap()).unwrap(),
        "hello" => node_bodies::hello_to_json(b).unwrap(),
        "leave" => node_bodies::leave_to_json(b).unwrap(),
        other => panic!("body type {other}"),
    };
    json!({"type": ty, "value": value})
}

/// The frames a message meaning stands for.
fn frames_from(m: &Value) -> Vec<Bytes> {
    let mut frames = Vec::new();
    if let Some(t) = m.get("topic") {
        frames.push(Bytes::from(t.as_str().unwrap().as_bytes().to_vec()));
    }
    for e in m["envelopes"].as_array().unwrap() {
        frames.push(wire::encode_header(&header_from(&e["header"])));
        frames.push(body_from(&e["body"]));
    }
    frames
}

fn check(v: &Value) -> Result<(), String> {
    let name = v["name"].as_str().unwrap();
    let m = &v["meaning"];
    let frames: Vec<Bytes> = v["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| Bytes::from(unhex(f.as_str().unwrap())))
        .collect();
    if let Some(reason) = m.get("reject") {
        let got = wire::decode_pairs(&frames, &Limits::default())
            .map(|_| "accepted".to_string())
            .unwrap_or_else(|e| e.reason().as_str().to_string());
        return (got == reason.as_str().unwrap())
            .then_some(())
            .ok_or(format!("{name}: expected {reason}, got {got}"));
    }
    // Decode: the frames mean what the vector says.
    let (prefix, pairs) = frames.split_at(m.get("topic").is_some() as usize);
    if let Some(t) = m.get("topic") {
        let got = String::from_utf8(prefix[0].to_vec()).unwrap();
        if got != t.as_str().unwrap() {
            return Err(format!("{name}: topic {got}"));
        }
    }
    let envs = wire::decode_pairs(pairs, &Limits::default())
        .map_err(|e| format!("{name}: does not decode: {e}"))?;
    let want = m["envelopes"].as_array().unwrap();
    if envs.len() != want.len() {
        return Err(format!("{name}: {} envelopes", envs.len()));
    }
    for (env, w) in envs.iter().zip(want) {
        let got = header_meaning(&env.header);
        if got != w["header"] {
            return Err(format!("{name}: header decodes as {got}"));
        }
        let ty = w["body"]["type"].as_str().unwrap();
        let got = body_meaning(ty, &env.body);
        if got != w["body"] {
            return Err(format!("{name}: body decodes as {got}"));
        }
    }
    // Encode: the meaning encodes to exactly these bytes.
    if v["canonical"].as_bool().unwrap() {
        let enc = frames_from(m);
        if enc != frames {
            let enc: Vec<String> = enc.iter().map(|f| hex(f)).collect();
            return Err(format!("{name}: encodes as {enc:?}"));
        }
    }
    Ok(())
}

#[test]
fn every_vector_decodes_to_its_meaning_and_its_meaning_encodes_to_it() {
    let doc = load();
    let vectors = doc["vectors"].as_array().unwrap();
    let failures: Vec<String> = vectors.iter().filter_map(|v| check(v).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} vectors fail (after a deliberate change: ZFABRIC_WRITE_VECTORS=1):\n{}",
        failures.len(),
        vectors.len(),
        failures.join("\n")
    );
}

#[test]
fn the_vectors_cover_every_kind_and_every_node_op() {
    let doc = load();
    let mut kinds = std::collections::BTreeSet::new();
    let mut ops = std::collections::BTreeSet::new();
    let mut bodies = std::collections::BTreeSet::new();
    for v in doc["vectors"].as_array().unwrap() {
        for e in v["meaning"]["envelopes"].as_array().into_iter().flatten() {
            kinds.insert(e["header"]["kind"].as_u64().unwrap());
            if let Some(op) = e["header"].get("op") {
                ops.insert(op.as_u64().unwrap());
            }
            bodies.insert(e["body"]["type"].as_str().unwrap().to_string());
            if e["body"]["value"]["client"] == json!(true) {
                bodies.insert("client hello".into());
            }
            if e["body"]["value"]["from"].get("curve_key").is_some() {
                bodies.insert("curve hello".into());
            }
        }
    }
    assert_eq!(kinds, (0..=3).collect(), "event, request, reply, error");
    assert_eq!(ops, (1..=6).collect(), "every node op");
    for b in [
        "msgpack",
        "raw",
        "error",
        "hello",
        "leave",
        "client hello",
        "curve hello",
    ] {
        assert!(bodies.contains(b), "no vector has a {b} body");
    }
    // The file's tables are the protocol's numbers.
    assert_eq!(doc["kinds"]["control"], json!(Kind::Control as u8));
    assert_eq!(doc["ops"]["unicast"], json!(NodeOp::Unicast as u8));
}

/// Rewrites the frames of the canonical vectors from their meanings,
/// once, before any test reads the file, and only with
/// `ZFABRIC_WRITE_VECTORS=1`: a normal run never changes the file.
fn regenerate_once() {
    static DONE: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut done = DONE.lock().unwrap();
    if *done || std::env::var_os("ZFABRIC_WRITE_VECTORS").is_none() {
        return;
    }
    *done = true;
    let text = std::fs::read_to_string(FILE).expect("the vectors file is there");
    let mut doc: Value = serde_json::from_str(&text).expect("the vectors file is JSON");
    for v in doc["vectors"].as_array_mut().unwrap() {
        if v["canonical"].as_bool().unwrap() {
            let frames: Vec<Value> = frames_from(&v["meaning"])
                .iter()
                .map(|f| json!(hex(f)))
                .collect();
            v["frames"] = Value::Array(frames);
        }
    }
    let text = serde_json::to_string_pretty(&doc).unwrap() + "\n";
    std::fs::write(FILE, text).unwrap();
}
