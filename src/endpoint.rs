//! Typed endpoints: `inproc://name`, `ipc:///path`, `tcp://host:port`.
//!
//! Parsing is strict and happens at the edge: every later layer receives an
//! [`Endpoint`] that is known to be well formed. `tcp` port 0 is allowed when
//! binding; the bound socket reports the resolved endpoint.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Longest ipc path accepted (the Unix `sun_path` limit less the NUL).
pub const MAX_IPC_PATH: usize = 107;

/// A parsed, validated endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// zfabric's own in-process transport; `name` is process-wide.
    Inproc(String),
    /// A Unix domain socket at this path.
    Ipc(PathBuf),
    /// A TCP address; `host` is an IP literal (IPv6 without brackets) or a
    /// name resolved when binding or connecting.
    Tcp {
        /// Host name or IP literal.
        host: String,
        /// Port; 0 when binding means "pick one".
        port: u16,
    },
}

/// Why a string is not an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// The scheme is not `inproc`, `ipc` or `tcp`.
    #[error("unknown transport in {0:?}: expected inproc://, ipc:// or tcp://")]
    UnknownScheme(String),
    /// The part after `scheme://` is empty.
    #[error("endpoint {0:?} has no address after the scheme")]
    Empty(String),
    /// A tcp endpoint without `:port`.
    #[error("tcp endpoint {0:?} has no port")]
    MissingPort(String),
    /// The port is not a number from 0 to 65535.
    #[error("tcp endpoint {0:?} has an invalid port")]
    InvalidPort(String),
    /// The tcp host is not a valid name or IP literal.
    #[error("tcp endpoint {0:?} has an invalid host")]
    InvalidHost(String),
    /// The ipc path is longer than [`MAX_IPC_PATH`] bytes.
    #[error("ipc path of {len} bytes is longer than the {max}-byte limit")]
    PathTooLong {
        /// Path length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The inproc name contains whitespace or control characters.
    #[error("inproc name {0:?} contains whitespace or control characters")]
    InvalidName(String),
}

impl Endpoint {
    /// The name of an inproc endpoint.
    pub(crate) fn inproc_name(&self) -> Option<&str> {
        match self {
            Endpoint::Inproc(n) => Some(n),
            _ => None,
        }
    }

    /// Whether this endpoint uses zfabric's in-process transport.
    pub fn is_inproc(&self) -> bool {
        matches!(self, Endpoint::Inproc(_))
    }

    /// The transport's name: `inproc`, `ipc` or `tcp`.
    pub fn transport(&self) -> &'static str {
        match self {
            Endpoint::Inproc(_) => "inproc",
            Endpoint::Ipc(_) => "ipc",
            Endpoint::Tcp { .. } => "tcp",
        }
    }
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| EndpointError::UnknownScheme(s.to_owned()))?;
        if rest.is_empty() {
            return Err(EndpointError::Empty(s.to_owned()));
        }
        match scheme {
            "inproc" => {
                if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(EndpointError::InvalidName(rest.to_owned()));
                }
                Ok(Endpoint::Inproc(rest.to_owned()))
            }
            "ipc" => {
                if rest.len() > MAX_IPC_PATH {
                    return Err(EndpointError::PathTooLong {
                        len: rest.len(),
                        max: MAX_IPC_PATH,
                    });
                }
                Ok(Endpoint::Ipc(PathBuf::from(rest)))
            }
            "tcp" => {
                let (host, port) = rest
                    .rsplit_once(':')
                    .ok_or_else(|| EndpointError::MissingPort(s.to_owned()))?;
                let port: u16 = port
                    .parse()
                    .map_err(|_| EndpointError::InvalidPort(s.to_owned()))?;
                let host = match host {
                    "*" => "0.0.0.0".to_owned(),
                    h if h.starts_with('[') && h.ends_with(']') && h.len() > 2 => {
                        let inner = &h[1..h.len() - 1];
                        inner
                            .parse::<std::net::Ipv6Addr>()
                            .map_err(|_| EndpointError::InvalidHost(s.to_owned()))?;
                        inner.to_owned()
                    }
                    h if !h.is_empty()
                        && h.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') =>
                    {
                        h.to_owned()
                    }
                    _ => return Err(EndpointError::InvalidHost(s.to_owned())),
                };
                Ok(Endpoint::Tcp { host, port })
            }
            _ => Err(EndpointError::UnknownScheme(s.to_owned())),
        }
    }
}

impl TryFrom<&str> for Endpoint {
    type Error = EndpointError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Inproc(n) => write!(f, "inproc://{n}"),
            Endpoint::Ipc(p) => write!(f, "ipc://{}", p.display()),
            Endpoint::Tcp { host, port } if host.contains(':') => {
                write!(f, "tcp://[{host}]:{port}")
            }
            Endpoint::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_print_back() {
        for s in [
            "inproc://prices",
            "ipc:///tmp/x.sock",
            "tcp://127.0.0.1:0",
            "tcp://[::1]:5555",
            "tcp://localhost:80",
        ] {
            let e: Endpoint = s.parse().unwrap();
            assert_eq!(e.to_string(), s);
        }
        assert_eq!(
            "tcp://*:1".parse::<Endpoint>().unwrap().to_string(),
            "tcp://0.0.0.0:1"
        );
    }

    #[test]
    fn bad_endpoints_name_what_is_wrong() {
        assert!(matches!(
            "udp://x:1".parse::<Endpoint>(),
            Err(EndpointError::UnknownScheme(_))
        ));
        assert!(matches!(
            "nonsense".parse::<Endpoint>(),
            Err(EndpointError::UnknownScheme(_))
        ));
        assert!(matches!(
            "tcp://".parse::<Endpoint>(),
            Err(EndpointError::Empty(_))
        ));
        assert!(matches!(
            "tcp://host".parse::<Endpoint>(),
            Err(EndpointError::MissingPort(_))
        ));
        assert!(matches!(
            "tcp://host:99999".parse::<Endpoint>(),
            Err(EndpointError::InvalidPort(_))
        ));
        assert!(matches!(
            "tcp://ho st:1".parse::<Endpoint>(),
            Err(EndpointError::InvalidHost(_))
        ));
        assert!(matches!(
            "tcp://[zz]:1".parse::<Endpoint>(),
            Err(EndpointError::InvalidHost(_))
        ));
        assert!(matches!(
            "inproc://a b".parse::<Endpoint>(),
            Err(EndpointError::InvalidName(_))
        ));
        let long = format!("ipc:///{}", "x".repeat(200));
        assert!(matches!(
            long.parse::<Endpoint>(),
            Err(EndpointError::PathTooLong { .. })
        ));
    }
}
