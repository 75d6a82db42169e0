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
//! Does not: know the node, its membership or its links (it is tested
//! with two sockets and a channel).
//!
//! Datagram: the four bytes `ZFB1`, then MessagePack `{"id": u64,
//! "endpoint": str}`, at most [`MAX_BEACON`] bytes. Anything else is
//! dropped and counted (`bad_beacon`).

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::membership::PeerId;
use crate::endpoint::Endpoint;
use crate::telemetry;

const MAGIC: &[u8; 4] = b"ZFB1";
/// Largest beacon datagram accepted.
pub const MAX_BEACON: usize = 512;

/// Where beacons are sent and received.
#[derive(Debug)]
pub struct BeaconConfig {
    pub(super) socket: std::net::UdpSocket,
    pub(super) targets: Vec<SocketAddr>,
    pub(super) interval: Duration,
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
        }
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

fn encode(b: &Beacon) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    if let Ok(body) = rmp_serde::to_vec_named(b) {
        out.extend(body);
    }
    out
}

fn decode(bytes: &[u8]) -> Option<Beacon> {
    let body = bytes.strip_prefix(MAGIC)?;
    rmp_serde::from_slice(body).ok()
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
    let packet = encode(&Beacon {
        id: me.0,
        endpoint: endpoint.to_string(),
    });
    let mut tick = tokio::time::interval(cfg.interval);
    let mut buf = vec![0u8; MAX_BEACON + 1];
    loop {
        tokio::select! {
            _ = tick.tick() => {
                for t in &cfg.targets {
                    if let Err(e) = sock.send_to(&packet, t).await {
                        tracing::debug!(target = %t, error = %e, "beacon not sent");
                    }
                }
            }
            r = sock.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                let beacon = (n <= MAX_BEACON).then(|| decode(&buf[..n])).flatten();
                let Some(b) = beacon else {
                    tracing::debug!(%from, "dropping a malformed beacon");
                    telemetry::dropped(telemetry::DropReason::BadBeacon, 1);
                    continue;
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

    #[test]
    fn beacons_round_trip_and_junk_is_refused() {
        let b = Beacon {
            id: 7,
            endpoint: "tcp://10.0.0.1:5000".into(),
        };
        let d = decode(&encode(&b)).unwrap();
        assert_eq!((d.id, d.endpoint.as_str()), (7, "tcp://10.0.0.1:5000"));
        assert!(decode(b"ZFB1").is_none());
        assert!(decode(b"HTTP/1.1 200 OK").is_none());
        assert!(decode(&[0xff; 600]).is_none());
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
