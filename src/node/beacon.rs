//! LAN discovery by UDP beacon.
//!
//! Each node sends a small datagram every `interval` to the configured
//! targets (a broadcast address such as `255.255.255.255:5670` on a LAN),
//! and listens for the beacons of others on its own beacon socket. Every
//! well-formed beacon of another node is handed over a channel as a
//! [`Discovered`]; the node's gossip says hello to the ones it does not
//! know yet, and they become members once they answer, exactly as with a
//! seed. Its own beacons are ignored.
//!
//! Guarantees: malformed or oversized datagrams are dropped and counted.
//! With a fabric key ([`BeaconConfig::key`]), only beacons authenticated
//! under that key and sent within the last [`BEACON_MAX_AGE`] are heard;
//! every other beacon (unkeyed, another key, tampered, stale) is dropped
//! and counted (`beacon_auth`), and a node without a key ignores keyed
//! beacons the same way. Does not: know the node, its membership or its
//! links (it is tested with two sockets and a channel); hide who is on
//! the LAN (beacons are signed, not encrypted); stop a replay within
//! [`BEACON_MAX_AGE`] (it can only point at a real node's endpoint, which
//! then has to pass its links' own authentication).
//!
//! Datagrams, at most [`MAX_BEACON`] bytes:
//! - without a key: the four bytes `ZFB1`, then MessagePack `{"id": u64,
//!   "endpoint": str}`;
//! - with a key: `ZFB2`, the sending time (u64 big-endian, milliseconds
//!   since the Unix epoch), the same MessagePack map, and a 32-byte
//!   HMAC-SHA256 tag under the fabric key over everything before it.
//!
//! Anything that does not decode is dropped and counted (`bad_beacon`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::membership::PeerId;
use crate::endpoint::Endpoint;
use crate::telemetry;

const MAGIC: &[u8; 4] = b"ZFB1";
const MAGIC_KEYED: &[u8; 4] = b"ZFB2";
const TAG: usize = 32;
/// Largest beacon datagram accepted.
pub const MAX_BEACON: usize = 512;
/// Oldest (or furthest in the future, for clock skew) a keyed beacon may
/// be and still be heard.
pub const BEACON_MAX_AGE: Duration = Duration::from_secs(30);

/// The secret a fabric's beacons are authenticated with (HMAC-SHA256).
/// Every node of the fabric holds the same one. Its bytes are never
/// printed.
#[derive(Clone)]
pub struct BeaconKey(Arc<[u8]>);

impl std::fmt::Debug for BeaconKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BeaconKey(<redacted>)")
    }
}

/// Why a beacon key was refused.
#[derive(Debug, thiserror::Error)]
pub enum BeaconKeyError {
    /// Fewer than 16 bytes: too easy to guess.
    #[error("a beacon key needs at least 16 bytes (got {0})")]
    TooShort(usize),
    /// The key file could not be read.
    #[error("cannot read the beacon key file {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl BeaconKey {
    /// A key from its bytes (at least 16; 32 random bytes is right).
    pub fn new(bytes: impl AsRef<[u8]>) -> Result<Self, BeaconKeyError> {
        let b = bytes.as_ref();
        if b.len() < 16 {
            return Err(BeaconKeyError::TooShort(b.len()));
        }
        Ok(BeaconKey(Arc::from(b)))
    }

    /// A key read from a file (its bytes, one trailing newline removed),
    /// e.g. a mounted Kubernetes Secret.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, BeaconKeyError> {
        let path = path.as_ref();
        let mut b = std::fs::read(path).map_err(|source| BeaconKeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if b.last() == Some(&b'\n') {
            b.pop();
        }
        Self::new(b)
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }
}

/// Where beacons are sent and received.
#[derive(Debug)]
pub struct BeaconConfig {
    pub(super) socket: std::net::UdpSocket,
    pub(super) targets: Vec<SocketAddr>,
    pub(super) interval: Duration,
    pub(super) key: Option<BeaconKey>,
}

impl BeaconConfig {
    /// Listens on `listen` (shared with other nodes on this host:
    /// `SO_REUSEADDR`/`SO_REUSEPORT`, broadcast enabled) and sends to
    /// `targets` every second.
    pub fn bind(listen: SocketAddr, targets: Vec<SocketAddr>) -> std::io::Result<Self> {
        let domain = if listen.is_ipv4() {
            socket2::Domain::IPV4
        } else {
            socket2::Domain::IPV6
        };
        let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
        s.set_reuse_address(true)?;
        #[cfg(unix)]
        s.set_reuse_port(true)?;
        if listen.is_ipv4() {
            s.set_broadcast(true)?;
        }
        s.bind(&listen.into())?;
        Ok(Self::from_socket(s.into(), targets))
    }

    /// Uses an already-bound socket (e.g. port 0 in tests).
    pub fn from_socket(socket: std::net::UdpSocket, targets: Vec<SocketAddr>) -> Self {
        BeaconConfig {
            socket,
            targets,
            interval: Duration::from_secs(1),
            key: None,
        }
    }

    /// Authenticates this node's beacons under the fabric key `key` and
    /// hears only beacons authenticated under it.
    pub fn key(mut self, key: BeaconKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Sets how often beacons are sent (default 1 s).
    pub fn interval(mut self, every: Duration) -> Self {
        self.interval = every.max(Duration::from_millis(10));
        self
    }
}

/// A node heard on the LAN: its id and the endpoint it advertises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Discovered {
    pub(super) id: PeerId,
    pub(super) endpoint: Endpoint,
}

#[derive(Debug, Serialize, Deserialize)]
struct Beacon {
    id: u64,
    endpoint: String,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn encode(b: &Beacon, key: Option<&BeaconKey>, at_ms: u64) -> Vec<u8> {
    let body = rmp_serde::to_vec_named(b).unwrap_or_default();
    match key {
        None => {
            let mut out = MAGIC.to_vec();
            out.extend(body);
            out
        }
        Some(k) => {
            let mut out = MAGIC_KEYED.to_vec();
            out.extend_from_slice(&at_ms.to_be_bytes());
            out.extend(body);
            let mut mac = k.mac();
            mac.update(&out);
            out.extend_from_slice(&mac.finalize().into_bytes());
            out
        }
    }
}

/// Why a datagram was not heard.
#[derive(Debug, PartialEq, Eq)]
enum Refused {
    /// Not a beacon (counted as `bad_beacon`).
    Malformed,
    /// A beacon whose authentication does not match ours (`beacon_auth`).
    Auth,
}

fn decode(bytes: &[u8], key: Option<&BeaconKey>, now_ms: u64) -> Result<Beacon, Refused> {
    let body = match (bytes.get(..4), key) {
        (Some(m), None) if m == MAGIC => &bytes[4..],
        (Some(m), Some(_)) if m == MAGIC => return Err(Refused::Auth),
        (Some(m), None) if m == MAGIC_KEYED => return Err(Refused::Auth),
        (Some(m), Some(k)) if m == MAGIC_KEYED => {
            if bytes.len() < 4 + 8 + TAG {
                return Err(Refused::Malformed);
            }
            let (signed, tag) = bytes.split_at(bytes.len() - TAG);
            let mut mac = k.mac();
            mac.update(signed);
            // Constant-time comparison.
            mac.verify_slice(tag).map_err(|_| Refused::Auth)?;
            let at = u64::from_be_bytes(signed[4..12].try_into().map_err(|_| Refused::Malformed)?);
            if now_ms.abs_diff(at) > BEACON_MAX_AGE.as_millis() as u64 {
                return Err(Refused::Auth);
            }
            &signed[12..]
        }
        _ => return Err(Refused::Malformed),
    };
    rmp_serde::from_slice(body).map_err(|_| Refused::Malformed)
}

/// Sends and receives beacons until the node stops (or `found` closes);
/// hands every other node heard to `found`.
pub(super) async fn run(
    cfg: BeaconConfig,
    me: PeerId,
    endpoint: Endpoint,
    found: mpsc::Sender<Discovered>,
) {
    if cfg.socket.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(sock) = UdpSocket::from_std(cfg.socket) else {
        tracing::warn!("beacon socket unusable; LAN discovery is off");
        return;
    };
    let beacon = Beacon {
        id: me.0,
        endpoint: endpoint.to_string(),
    };
    let key = cfg.key;
    let mut tick = tokio::time::interval(cfg.interval);
    let mut buf = vec![0u8; MAX_BEACON + 1];
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // Keyed beacons carry their sending time: made anew each tick.
                let packet = encode(&beacon, key.as_ref(), now_ms());
                for t in &cfg.targets {
                    if let Err(e) = sock.send_to(&packet, t).await {
                        tracing::debug!(target = %t, error = %e, "beacon not sent");
                    }
                }
            }
            r = sock.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                let heard = if n <= MAX_BEACON {
                    decode(&buf[..n], key.as_ref(), now_ms())
                } else {
                    Err(Refused::Malformed)
                };
                let b = match heard {
                    Ok(b) => b,
                    Err(Refused::Malformed) => {
                        tracing::debug!(%from, "dropping a malformed beacon");
                        telemetry::dropped(telemetry::DropReason::BadBeacon, 1);
                        continue;
                    }
                    Err(Refused::Auth) => {
                        tracing::debug!(%from, "dropping a beacon not authenticated under this fabric's key");
                        telemetry::dropped(telemetry::DropReason::BeaconAuth, 1);
                        continue;
                    }
                };
                if b.id == me.0 {
                    continue;
                }
                match b.endpoint.parse::<Endpoint>() {
                    Ok(endpoint) => {
                        let d = Discovered { id: PeerId(b.id), endpoint };
                        if found.send(d).await.is_err() {
                            return;
                        }
                    }
                    Err(_) => telemetry::dropped(telemetry::DropReason::BadBeacon, 1),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b() -> Beacon {
        Beacon {
            id: 7,
            endpoint: "tcp://10.0.0.1:5000".into(),
        }
    }

    #[test]
    fn beacons_round_trip_and_junk_is_refused() {
        let d = decode(&encode(&b(), None, 0), None, 0).unwrap();
        assert_eq!((d.id, d.endpoint.as_str()), (7, "tcp://10.0.0.1:5000"));
        assert_eq!(decode(b"ZFB1", None, 0).err(), Some(Refused::Malformed));
        assert_eq!(
            decode(b"HTTP/1.1 200 OK", None, 0).err(),
            Some(Refused::Malformed)
        );
        assert_eq!(
            decode(&[0xff; 600], None, 0).err(),
            Some(Refused::Malformed)
        );
    }

    #[test]
    fn keyed_beacons_are_heard_only_under_the_same_key_fresh_and_untouched() {
        let k = BeaconKey::new([1u8; 32]).unwrap();
        let other = BeaconKey::new([2u8; 32]).unwrap();
        let t = 1_800_000_000_000u64;
        let keyed = encode(&b(), Some(&k), t);
        assert_eq!(decode(&keyed, Some(&k), t + 1_000).unwrap().id, 7);
        // Another key, no key, or an unkeyed beacon at a keyed node.
        assert_eq!(decode(&keyed, Some(&other), t).err(), Some(Refused::Auth));
        assert_eq!(decode(&keyed, None, t).err(), Some(Refused::Auth));
        assert_eq!(
            decode(&encode(&b(), None, t), Some(&k), t).err(),
            Some(Refused::Auth)
        );
        // Tampered: a changed endpoint or time breaks the tag.
        let mut bad = keyed.clone();
        let at = bad.len() - TAG - 2;
        bad[at] ^= 1;
        assert_eq!(decode(&bad, Some(&k), t).err(), Some(Refused::Auth));
        let mut later = keyed.clone();
        later[11] ^= 1;
        assert_eq!(decode(&later, Some(&k), t).err(), Some(Refused::Auth));
        // Stale or from the future beyond the window.
        let window = BEACON_MAX_AGE.as_millis() as u64;
        assert_eq!(
            decode(&keyed, Some(&k), t + window + 1).err(),
            Some(Refused::Auth)
        );
        assert_eq!(
            decode(&keyed, Some(&k), t - window - 1).err(),
            Some(Refused::Auth)
        );
        assert!(decode(&keyed, Some(&k), t + window).is_ok());
        // Truncated.
        assert_eq!(
            decode(b"ZFB2short", Some(&k), t).err(),
            Some(Refused::Malformed)
        );
        assert!(matches!(
            BeaconKey::new(b"short"),
            Err(BeaconKeyError::TooShort(5))
        ));
        assert_eq!(format!("{k:?}"), "BeaconKey(<redacted>)");
    }

    fn loopback() -> std::net::UdpSocket {
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap()
    }

    #[tokio::test]
    async fn a_beacon_heard_is_handed_over_and_its_own_is_ignored() {
        let (a, b) = (loopback(), loopback());
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let ep_a: Endpoint = "tcp://127.0.0.1:5001".parse().unwrap();
        let ep_b: Endpoint = "tcp://127.0.0.1:5002".parse().unwrap();
        // A sends to B and to itself; B sends to A.
        let cfg_a =
            BeaconConfig::from_socket(a, vec![b_addr, a_addr]).interval(Duration::from_millis(10));
        let cfg_b = BeaconConfig::from_socket(b, vec![a_addr]).interval(Duration::from_millis(10));
        let (tx_a, mut rx_a) = mpsc::channel(8);
        let (tx_b, mut rx_b) = mpsc::channel(8);
        let run_a = tokio::spawn(run(cfg_a, PeerId(1), ep_a.clone(), tx_a));
        let run_b = tokio::spawn(run(cfg_b, PeerId(2), ep_b.clone(), tx_b));
        let watchdog = Duration::from_secs(30);
        let at_a = tokio::time::timeout(watchdog, rx_a.recv())
            .await
            .unwrap()
            .unwrap();
        let at_b = tokio::time::timeout(watchdog, rx_b.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            at_a,
            Discovered {
                id: PeerId(2),
                endpoint: ep_b
            }
        );
        assert_eq!(
            at_b,
            Discovered {
                id: PeerId(1),
                endpoint: ep_a
            }
        );
        // A hears itself too, but hands over only B, however often.
        for _ in 0..3 {
            let d = tokio::time::timeout(watchdog, rx_a.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(d.id, PeerId(2));
        }
        run_a.abort();
        run_b.abort();
    }
}
