//! What a node tells its peers to reach it by: its advertised endpoints.
//!
//! A node listens on its *bound* endpoints and names its *advertised*
//! ones in every hello. They differ when it binds a wildcard address
//! (`tcp://0.0.0.0:7000`, `tcp://[::]:7000`), which no peer can connect
//! to, or when peers reach it by another address than the one it binds
//! (a Kubernetes pod IP from the downward API, a published container
//! port, a DNS name).
//!
//! Guarantees: [`advertised`] is pure. Endpoints given explicitly are
//! advertised in their order, a port 0 taking the port of the first bound
//! tcp endpoint; without them every bound endpoint is advertised. Either
//! way a wildcard host is replaced by the host's address of its family
//! ([`HostAddresses`]); when none is known the wildcard is kept and
//! reported in [`Advertised::unroutable`] (the builder logs a warning).
//! Bound inproc endpoints are always advertised too: peers in the same
//! process use them. [`HostAddresses::discover`] finds the host's address
//! without sending a packet: the source address the kernel picks for a
//! route towards a seed, else the addresses the host name resolves to,
//! else the source address of the default route.
//! Does not: check that an advertised endpoint reaches this node (NAT,
//! firewalls), or follow address changes after the node started.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::endpoint::Endpoint;

/// A routable address of this host per IP family, where one is known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostAddresses {
    /// The IPv4 address to advertise instead of `0.0.0.0`.
    pub v4: Option<Ipv4Addr>,
    /// The IPv6 address to advertise instead of `::`.
    pub v6: Option<Ipv6Addr>,
}

/// The advertised endpoints, and the wildcard ones no address was found
/// for (advertised as they are, which remote peers cannot use).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Advertised {
    /// What the node's hellos name, in order of preference.
    pub endpoints: Vec<Endpoint>,
    /// Advertised endpoints that still carry a wildcard host.
    pub unroutable: Vec<Endpoint>,
}

/// Whether `host` is a wildcard (unspecified) address, and of which
/// family: `Some(false)` for `0.0.0.0`, `Some(true)` for `::`.
fn wildcard(host: &str) -> Option<bool> {
    match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_unspecified() => Some(ip.is_ipv6()),
        _ => None,
    }
}

/// The endpoints to advertise: `explicit` ones if any (port 0: the first
/// bound tcp port), else `bound`; wildcard hosts replaced from `host`;
/// bound inproc endpoints added when not already there.
pub fn advertised(bound: &[Endpoint], explicit: &[Endpoint], host: &HostAddresses) -> Advertised {
    let first_port = bound.iter().find_map(|e| match e {
        Endpoint::Tcp { port, .. } if *port != 0 => Some(*port),
        _ => None,
    });
    let base: Vec<Endpoint> = if explicit.is_empty() {
        bound.to_vec()
    } else {
        explicit
            .iter()
            .map(|e| match e {
                Endpoint::Tcp { host, port: 0 } => Endpoint::Tcp {
                    host: host.clone(),
                    port: first_port.unwrap_or(0),
                },
                other => other.clone(),
            })
            .chain(bound.iter().filter(|e| e.is_inproc()).cloned())
            .collect()
    };
    let mut out = Advertised::default();
    for ep in base {
        let ep = match &ep {
            Endpoint::Tcp { host: h, port } => match wildcard(h) {
                Some(false) => match host.v4 {
                    Some(ip) => Endpoint::Tcp {
                        host: ip.to_string(),
                        port: *port,
                    },
                    None => ep,
                },
                Some(true) => match host.v6 {
                    Some(ip) => Endpoint::Tcp {
                        host: ip.to_string(),
                        port: *port,
                    },
                    None => ep,
                },
                None => ep,
            },
            _ => ep,
        };
        if out.endpoints.contains(&ep) {
            continue;
        }
        if matches!(&ep, Endpoint::Tcp { host, .. } if wildcard(host).is_some()) {
            out.unroutable.push(ep.clone());
        }
        out.endpoints.push(ep);
    }
    out
}

/// Whether `ip` can stand for this host to other hosts.
fn routable(ip: IpAddr) -> bool {
    !ip.is_unspecified() && !ip.is_loopback() && !ip.is_multicast()
}

/// The source address the kernel would use towards `to`: a UDP socket
/// "connected" there (a route lookup; nothing is sent).
fn source_towards(to: SocketAddr) -> Option<IpAddr> {
    let local: SocketAddr = match to {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = std::net::UdpSocket::bind(local).ok()?;
    sock.connect(to).ok()?;
    let ip = sock.local_addr().ok()?.ip();
    routable(ip).then_some(ip)
}

impl HostAddresses {
    /// Finds this host's address per family (see the module docs): the
    /// route towards the first tcp seed with an address of that family,
    /// then the host name's addresses, then the default route. Resolves
    /// seed names and the host name (DNS), sends nothing else.
    pub async fn discover(seeds: &[Endpoint]) -> HostAddresses {
        let mut targets: Vec<SocketAddr> = Vec::new();
        for ep in seeds {
            if let Endpoint::Tcp { host, port } = ep {
                if let Ok(addrs) = tokio::net::lookup_host((host.as_str(), *port)).await {
                    targets.extend(addrs.filter(|a| routable(a.ip())));
                }
            }
        }
        let mut named: Vec<IpAddr> = Vec::new();
        if let Some(name) = gethostname::gethostname().to_str() {
            if let Ok(addrs) = tokio::net::lookup_host((name, 0)).await {
                named.extend(addrs.map(|a| a.ip()).filter(|ip| routable(*ip)));
            }
        }
        let pick = |v6: bool| -> Option<IpAddr> {
            targets
                .iter()
                .filter(|t| t.is_ipv6() == v6)
                .find_map(|t| source_towards(*t))
                .or_else(|| named.iter().copied().find(|ip| ip.is_ipv6() == v6))
                .or_else(|| {
                    // Documentation addresses (RFC 5737, RFC 3849): only
                    // the route to them matters.
                    let probe: SocketAddr = if v6 {
                        (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 9).into()
                    } else {
                        (Ipv4Addr::new(192, 0, 2, 1), 9).into()
                    };
                    source_towards(probe)
                })
        };
        HostAddresses {
            v4: match pick(false) {
                Some(IpAddr::V4(ip)) => Some(ip),
                _ => None,
            },
            v6: match pick(true) {
                Some(IpAddr::V6(ip)) => Some(ip),
                _ => None,
            },
        }
    }

    /// Whether any of `endpoints` has a wildcard host (so discovery is
    /// needed at all).
    pub fn needed_for(endpoints: &[Endpoint]) -> bool {
        endpoints
            .iter()
            .any(|e| matches!(e, Endpoint::Tcp { host, .. } if wildcard(host).is_some()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(list: &[&str]) -> Vec<Endpoint> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    const HOST: HostAddresses = HostAddresses {
        v4: Some(Ipv4Addr::new(10, 1, 2, 3)),
        v6: Some(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 7)),
    };

    #[test]
    fn a_wildcard_bind_advertises_the_host_address_of_its_family() {
        let a = advertised(&eps(&["tcp://0.0.0.0:7000", "tcp://[::]:7001"]), &[], &HOST);
        assert_eq!(
            a.endpoints,
            eps(&["tcp://10.1.2.3:7000", "tcp://[fd00::7]:7001"])
        );
        assert!(a.unroutable.is_empty());
    }

    #[test]
    fn specific_binds_are_advertised_as_they_are() {
        let bound = eps(&["tcp://127.0.0.1:7000", "tcp://node-a:7001", "inproc://a"]);
        assert_eq!(advertised(&bound, &[], &HOST).endpoints, bound);
    }

    #[test]
    fn explicit_endpoints_win_and_port_0_takes_the_bound_port() {
        let bound = eps(&["tcp://0.0.0.0:7000", "inproc://a"]);
        let a = advertised(
            &bound,
            &eps(&["tcp://pod-1.quote:0", "tcp://192.0.2.8:31000"]),
            &HOST,
        );
        assert_eq!(
            a.endpoints,
            eps(&[
                "tcp://pod-1.quote:7000",
                "tcp://192.0.2.8:31000",
                "inproc://a"
            ])
        );
    }

    #[test]
    fn an_unknown_host_address_keeps_the_wildcard_and_says_so() {
        let a = advertised(
            &eps(&["tcp://0.0.0.0:7000"]),
            &[],
            &HostAddresses::default(),
        );
        assert_eq!(a.endpoints, eps(&["tcp://0.0.0.0:7000"]));
        assert_eq!(a.unroutable, a.endpoints);
    }

    #[test]
    fn duplicates_collapse() {
        let a = advertised(
            &eps(&["tcp://0.0.0.0:7000", "tcp://10.1.2.3:7000"]),
            &[],
            &HOST,
        );
        assert_eq!(a.endpoints, eps(&["tcp://10.1.2.3:7000"]));
    }

    #[test]
    fn only_wildcards_need_discovery() {
        assert!(HostAddresses::needed_for(&eps(&["tcp://[::]:1"])));
        assert!(!HostAddresses::needed_for(&eps(&[
            "tcp://127.0.0.1:1",
            "tcp://h:2"
        ])));
    }

    #[tokio::test]
    async fn discovery_towards_a_loopback_seed_never_yields_loopback() {
        let h = HostAddresses::discover(&eps(&["tcp://127.0.0.1:9"])).await;
        assert!(h.v4.is_none_or(|ip| !ip.is_loopback()), "{h:?}");
        assert!(h.v6.is_none_or(|ip| !ip.is_loopback()), "{h:?}");
    }
}
