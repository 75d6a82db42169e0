//! Baselines through Zenoh, with the `peers` feature: two sessions of
//! the `zenoh` crate in peer mode on loopback, no router.
//!
//! Each run opens a pair ([`Pair::open`]): one session listens on
//! `tcp/127.0.0.1:<free port>`, the other connects to it, multicast
//! scouting is off in both and the connecting one listens nowhere; both
//! are closed at the end of the run. Cells: request/reply as get against
//! a queryable ([`reqrep`]), timed by the same loops as zfabric's side
//! ([`super::measure::rtt_loop`], [`super::measure::inflight_loop`]), and
//! put/subscribe ([`pubsub`]) in both congestion-control modes: `Block`
//! (lossless: the publisher waits for room, named `zenoh`) and `Drop`
//! (what does not fit is dropped and counted as lost, named
//! `zenoh-drop`), timed by the same stream ([`super::measure::stream`]).
//!
//! Guarantees: loopback only, no router, no multicast; the subscriber's
//! queue holds the whole burst (as libzmq's high-water marks do,
//! [`super::libzmq`]), so `Block` loses nothing and `Drop` loses only
//! what Zenoh's own transmission queue drops; replies are not
//! consolidated (each get takes the first and only reply as it arrives).
//! Does not: measure shared memory, a router, QUIC or any transport but
//! TCP.

use std::time::Duration;

use zenoh::bytes::ZBytes;
use zenoh::handlers::{FifoChannel, FifoChannelHandler};
use zenoh::pubsub::Subscriber;
use zenoh::qos::CongestionControl;
use zenoh::query::ConsolidationMode;
use zenoh::sample::Sample;
use zenoh::Session;

use super::measure::{count_until, inflight_loop, rtt_loop, stream, Budget, Recv, Stats};
use crate::app::BoxError;

/// How long the connecting session may take to see its peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The figures' name for a put/subscribe run in `mode`.
pub(super) fn name(mode: CongestionControl) -> &'static str {
    match mode {
        CongestionControl::Drop => "zenoh-drop",
        _ => "zenoh",
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released).
fn free_port() -> Result<u16, BoxError> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(l.local_addr()?.port())
}

/// The configuration of a peer on loopback: listening on `listen` and
/// connecting to `connect` (each a list of endpoints), with multicast
/// scouting off and no wait for scouted peers in `zenoh::open`.
pub(super) fn peer_config(
    listen: &[String],
    connect: &[String],
) -> Result<zenoh::Config, BoxError> {
    let list = |v: &[String]| serde_json::to_string(v);
    let mut c = zenoh::Config::default();
    c.insert_json5("mode", r#""peer""#)?;
    c.insert_json5("scouting/multicast/enabled", "false")?;
    // Open returns at once; [`Pair::open`] waits for the peer itself.
    c.insert_json5("open/return_conditions/connect_scouted", "false")?;
    c.insert_json5("listen/endpoints", &list(listen)?)?;
    c.insert_json5("connect/endpoints", &list(connect)?)?;
    Ok(c)
}

/// Two peer sessions, the second connected to the first.
#[derive(Debug)]
struct Pair {
    listener: Session,
    connector: Session,
}

impl Pair {
    async fn open() -> Result<Self, BoxError> {
        let ep = format!("tcp/127.0.0.1:{}", free_port()?);
        let listener = zenoh::open(peer_config(std::slice::from_ref(&ep), &[])?).await?;
        let opened = async {
            let connector = zenoh::open(peer_config(&[], &[ep])?).await?;
            let start = std::time::Instant::now();
            while connector.info().peers_zid().await.next().is_none() {
                if start.elapsed() > CONNECT_TIMEOUT {
                    let _ = connector.close().await;
                    return Err::<Session, BoxError>(
                        "zenoh: the peers did not connect within 10 s".into(),
                    );
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok(connector)
        }
        .await;
        match opened {
            Ok(connector) => Ok(Pair {
                listener,
                connector,
            }),
            Err(e) => {
                let _ = listener.close().await;
                Err(e)
            }
        }
    }

    async fn close(self) {
        let _ = self.connector.close().await;
        let _ = self.listener.close().await;
    }
}

/// Request/reply: gets from the connecting session to a queryable on the
/// listening one, echoing each query's payload.
pub(super) async fn reqrep(size: usize, budget: Budget) -> Result<Stats, BoxError> {
    let pair = Pair::open().await?;
    let r = reqrep_on(&pair, size, budget).await;
    pair.close().await;
    r
}

async fn reqrep_on(pair: &Pair, size: usize, budget: Budget) -> Result<Stats, BoxError> {
    let key = format!("bench/rr/{}", super::measure::random_tag());
    let queryable = pair.listener.declare_queryable(key.clone()).await?;
    let echo = tokio::spawn(async move {
        while let Ok(q) = queryable.recv_async().await {
            let body = q.payload().cloned().unwrap_or_default();
            if q.reply(q.key_expr().clone(), body).await.is_err() {
                break;
            }
        }
    });
    let session = pair.connector.clone();
    let body = ZBytes::from(vec![7u8; size]);
    // The queryable's declaration travels to the other peer: the first
    // get that is answered says it arrived (bounded: 10 s).
    let start = std::time::Instant::now();
    while get(&session, &key, &body).await.is_err() {
        if start.elapsed() > CONNECT_TIMEOUT {
            echo.abort();
            return Err("zenoh: the queryable never answered".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let measured = async {
        let (s, b, k) = (&session, &body, &key);
        let h = rtt_loop(budget, || get(s, k, b)).await?;
        let (s, b, k) = (session.clone(), body.clone(), key.clone());
        let thr = inflight_loop(budget, 16, move || {
            let (s, b, k) = (s.clone(), b.clone(), k.clone());
            async move { get(&s, &k, &b).await }
        })
        .await?;
        Ok::<_, BoxError>(Stats::new("zenoh", size, Some(thr), Some(&h)))
    }
    .await;
    echo.abort();
    measured
}

/// One get of `key` with `body`, waiting for its (first) reply.
async fn get(session: &Session, key: &str, body: &ZBytes) -> Result<(), BoxError> {
    let replies = session
        .get(key)
        .payload(body.clone())
        .consolidation(ConsolidationMode::None)
        .timeout(Duration::from_secs(5))
        .await?;
    let reply = replies.recv_async().await?;
    reply
        .result()
        .map(|_| ())
        .map_err(|e| format!("zenoh: error reply: {e:?}").into())
}

impl Recv for Subscriber<FifoChannelHandler<Sample>> {
    async fn next(&mut self) -> bool {
        self.recv_async().await.is_ok()
    }
}

/// Put/subscribe with congestion control `Block` (lossless), as `zenoh`.
pub(super) async fn pubsub_block(size: usize, n: u64) -> Result<Stats, BoxError> {
    pubsub(size, n, CongestionControl::Block).await
}

/// Put/subscribe with congestion control `Drop`, as `zenoh-drop`.
pub(super) async fn pubsub_drop(size: usize, n: u64) -> Result<Stats, BoxError> {
    pubsub(size, n, CongestionControl::Drop).await
}

/// Put/subscribe: `n` puts in congestion-control `mode` from the
/// connecting session to a subscriber on the listening one.
async fn pubsub(size: usize, n: u64, mode: CongestionControl) -> Result<Stats, BoxError> {
    let pair = Pair::open().await?;
    let r = pubsub_on(&pair, size, n, mode).await;
    pair.close().await;
    r
}

async fn pubsub_on(
    pair: &Pair,
    size: usize,
    n: u64,
    mode: CongestionControl,
) -> Result<Stats, BoxError> {
    let key = format!("bench/ps/{}", super::measure::random_tag());
    let burst = usize::try_from(n)
        .unwrap_or(usize::MAX)
        .saturating_add(1024);
    let mut sub = pair
        .listener
        .declare_subscriber(key.clone())
        .with(FifoChannel::new(burst))
        .await?;
    let publisher = pair
        .connector
        .declare_publisher(key)
        .congestion_control(mode)
        .await?;
    let body = ZBytes::from(vec![7u8; size]);
    // The subscription travels to the publisher: put probes until one
    // arrives, then drain the rest.
    let mut ready = false;
    for _ in 0..500 {
        publisher.put(body.clone()).await?;
        if tokio::time::timeout(Duration::from_millis(10), sub.recv_async())
            .await
            .is_ok_and(|r| r.is_ok())
        {
            ready = true;
            break;
        }
    }
    if !ready {
        return Err("zenoh pub/sub: the subscription never arrived".into());
    }
    while tokio::time::timeout(Duration::from_millis(50), sub.recv_async())
        .await
        .is_ok_and(|r| r.is_ok())
    {}
    let (thr, lost) = stream(
        n,
        move |n, done| async move {
            for _ in 0..n {
                publisher.put(body.clone()).await?;
            }
            let _ = done.await;
            drop(publisher);
            Ok(())
        },
        |n| count_until(n, &mut sub),
    )
    .await?;
    Ok(Stats::stream(name(mode), size, thr, n, lost))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_modes_have_their_own_names() {
        assert_eq!(name(CongestionControl::Block), "zenoh");
        assert_eq!(name(CongestionControl::Drop), "zenoh-drop");
    }

    #[test]
    fn a_peer_listens_and_connects_only_where_told_with_multicast_off() {
        let c = peer_config(&["tcp/127.0.0.1:7447".into()], &[]).unwrap();
        let get = |k: &str| c.get_json(k).unwrap();
        assert_eq!(get("mode"), r#""peer""#);
        assert_eq!(get("scouting/multicast/enabled"), "false");
        assert_eq!(get("open/return_conditions/connect_scouted"), "false");
        assert_eq!(get("listen/endpoints"), r#"["tcp/127.0.0.1:7447"]"#);
        assert_eq!(get("connect/endpoints"), "[]");
    }
}
