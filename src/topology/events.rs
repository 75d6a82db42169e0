//! Asynchronous messaging: domain events, choreography, consumer groups.
//!
//! Services publish events by topic ([`emit`]) and react to others'
//! events; there is no central controller. Who receives an event:
//! - every **consumer group** with a member consuming a prefix of the
//!   topic gets it once: one member of the group handles it (registered
//!   with [`NodeBuilder::consume`](crate::node::NodeBuilder::consume));
//! - every plain **subscriber** ([`Node::subscribe`]) gets it at most once.
//!
//! # Delivery ([`EventDelivery`])
//! - **At most once**: one attempt per group; a group whose member does
//!   not acknowledge is reported lost (counted as dropped,
//!   `event_unacked`).
//! - **At least once**: the event is redelivered, with the same event id,
//!   until a member of the group acknowledges (its handler returned `Ok`)
//!   or `max_attempts` is spent (reported lost, counted as dropped,
//!   `event_undelivered`). Consumers deduplicate by event id within their
//!   window, so a redelivered event whose first delivery succeeded (the
//!   ack was lost or late) is processed once. An event is sent to the
//!   same member on every attempt while that member is alive (chosen by
//!   the event id), so that the member's window sees the redelivery.
//!
//! - **Durable**: kept in the emitter's outbox (a stream log) before
//!   `emit` returns, then relayed at least once, even across restarts of
//!   the emitter ([`super::outbox`]).
//!
//! # Not guaranteed
//! No ordering between events. Without the durable delivery, no
//! persistence: an event whose publisher dies before every group
//! acknowledged it may be lost. If the
//! chosen member dies after processing and before acknowledging, another
//! member processes the event again (its window does not know it).

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::node::{CallError, CallOptions, Node, NodeBuilder, PeerId, PeerState, ServeOptions};
use crate::resilience::DedupConfig;
use crate::wire::{self, EncodeError};
use crate::{RemoteError, Request};

/// Services named with this prefix carry events to consumer groups:
/// `@ev/<group>/<topic prefix>`.
pub const EVENT_SERVICE_PREFIX: &str = "@ev/";

/// Counter: redeliveries of events, by `group`.
pub const EVENTS_REDELIVERED: &str = "zfabric_events_redelivered_total";

/// An event as it travels to a consumer group's service: a map
/// `{topic, body (bin: the event's MessagePack), id}`. Written and read in
/// place: the event's body is neither copied into it nor out of it.
#[derive(Debug, Serialize, Deserialize)]
struct EventMsg<'a> {
    #[serde(borrow)]
    topic: Cow<'a, str>,
    #[serde(borrow, with = "serde_bytes")]
    body: &'a [u8],
    id: u64,
}

/// An event as a consumer sees it.
#[derive(Debug, Clone)]
pub struct Event<T> {
    /// Its topic.
    pub topic: String,
    /// Its body.
    pub body: T,
    /// The node that emitted it.
    pub from: PeerId,
    /// Its id (the same on every redelivery).
    pub id: u64,
}

/// How an event is delivered to consumer groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventDelivery {
    /// One attempt per group, acknowledged within `timeout`.
    AtMostOnce {
        /// How long to wait for the acknowledgement.
        timeout: Duration,
    },
    /// Kept in the emitter's [`Outbox`](super::outbox::Outbox) before
    /// `emit` returns, then relayed at least once to every consumer group,
    /// across restarts of the emitter (see [`super::outbox`]). Needs an
    /// outbox attached to the node ([`Outbox::relay_on`](super::outbox::Outbox::relay_on)).
    Durable,
    /// Redelivered until acknowledged, up to `max_attempts`.
    AtLeastOnce {
        /// How long one attempt waits for its acknowledgement.
        ack_timeout: Duration,
        /// Attempts in all.
        max_attempts: u32,
        /// Wait between attempts.
        backoff: Duration,
    },
}

impl EventDelivery {
    /// At most once, 1 s to acknowledge.
    pub fn at_most_once() -> Self {
        EventDelivery::AtMostOnce {
            timeout: Duration::from_secs(1),
        }
    }

    /// Durable: in the node's outbox before `emit` returns, relayed at
    /// least once even across restarts.
    pub fn durable() -> Self {
        EventDelivery::Durable
    }

    /// At least once: 1 s per attempt, 5 attempts, 50 ms apart.
    pub fn at_least_once() -> Self {
        EventDelivery::AtLeastOnce {
            ack_timeout: Duration::from_secs(1),
            max_attempts: 5,
            backoff: Duration::from_millis(50),
        }
    }
}

/// What became of an emitted event.
#[derive(Debug, Default)]
pub struct EmitReport {
    /// Consumer groups (with the prefix they consume) that acknowledged.
    pub acked: Vec<String>,
    /// Groups that did not, with the last error.
    pub lost: Vec<(String, CallError)>,
    /// Redeliveries made.
    pub redeliveries: u32,
    /// Plain subscriptions that took it (at most once).
    pub subscribers: u32,
    /// For a durable event: its offset in the outbox (the relay delivers
    /// it to the groups after `emit` returned).
    pub outbox: Option<u64>,
}

/// Why an event could not be emitted.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    /// The event could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// A durable event on a node with no outbox attached.
    #[error("durable delivery needs an outbox on the node (Outbox::relay_on)")]
    NoOutbox,
    /// The outbox could not take it (its log failed): not emitted.
    #[error(transparent)]
    Outbox(#[from] super::outbox::OutboxError),
}

fn service_name(group: &str, prefix: &str) -> String {
    format!("{EVENT_SERVICE_PREFIX}{group}/{prefix}")
}

/// A consumer's acknowledgement: MessagePack nil, as a typed `()` reply.
fn ack_body() -> Bytes {
    Bytes::from_static(&[0xc0])
}

/// `(group, prefix)` of an event service name.
fn parse_service(name: &str) -> Option<(&str, &str)> {
    name.strip_prefix(EVENT_SERVICE_PREFIX)?.split_once('/')
}

impl NodeBuilder {
    /// Consumes events whose topic starts with `prefix`, as a member of
    /// consumer group `group` (one member of each group handles each
    /// event). `Ok` from the handler acknowledges the event; an error or
    /// no answer leads to redelivery when the emitter asked for at least
    /// once. Duplicates are processed once within `dedup`'s window.
    ///
    /// # Panics
    /// If `group` contains `/`.
    pub fn consume<T, H, Fut>(
        self,
        group: &str,
        prefix: &str,
        dedup: DedupConfig,
        handler: H,
    ) -> Self
    where
        T: DeserializeOwned + Send + 'static,
        H: Fn(Event<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RemoteError>> + Send + 'static,
    {
        assert!(
            !group.contains('/'),
            "a consumer group name cannot contain '/'"
        );
        let handler = std::sync::Arc::new(handler);
        self.serve_raw(
            service_name(group, prefix),
            ServeOptions::new().dedup(dedup),
            move |req: Request<Bytes>| {
                let handler = handler.clone();
                let event = rmp_serde::from_slice::<EventMsg<'_>>(&req.body)
                    .map_err(|e| {
                        RemoteError::new(crate::wire::RemoteCode::BadRequest, e.to_string())
                    })
                    .and_then(|m| {
                        let body: T = wire::decode_body(m.body).map_err(|e| {
                            RemoteError::new(crate::wire::RemoteCode::BadEvent, e.to_string())
                        })?;
                        Ok(Event {
                            topic: m.topic.into_owned(),
                            body,
                            from: PeerId(req.header.source),
                            id: m.id,
                        })
                    });
                async move {
                    let event = event?;
                    handler(event).await?;
                    Ok(ack_body())
                }
            },
        )
    }
}

/// Emits `event` on `topic` to every consumer group and subscriber
/// interested in it, concurrently, as `delivery` says. A durable event is
/// in the node's outbox when this returns; its groups get it from the
/// relay (the report names the outbox offset).
pub async fn emit<T: Serialize>(
    node: &Node,
    topic: &str,
    event: &T,
    delivery: EventDelivery,
) -> Result<EmitReport, EmitError> {
    let id = wire::random_u64() | 1;
    let body = wire::encode_body(&EventMsg {
        topic: Cow::Borrowed(topic),
        body: &wire::encode_body(event)?,
        id,
    })?;
    if delivery == EventDelivery::Durable {
        let outbox = super::outbox::of(node).ok_or(EmitError::NoOutbox)?;
        let offset = outbox.append(id, body).await?;
        let subscribers = node
            .publish(topic, event, Duration::from_secs(1))
            .await
            .unwrap_or(0);
        return Ok(EmitReport {
            subscribers,
            outbox: Some(offset),
            ..EmitReport::default()
        });
    }
    // The emit span: every delivery and publish below continues it.
    let op = crate::trace::outgoing(crate::trace::Op::Emit, &topic, true);
    let (outcomes, subscribers, services) = op
        .bind(async {
            let services = group_services(node, topic);
            let deliveries = services
                .iter()
                .map(|svc| deliver(node, svc, body.clone(), id, delivery, true));
            let plain = async {
                match delivery {
                    EventDelivery::AtMostOnce { timeout } => {
                        node.publish(topic, event, timeout).await
                    }
                    EventDelivery::AtLeastOnce { ack_timeout, .. } => {
                        node.publish(topic, event, ack_timeout).await
                    }
                    EventDelivery::Durable => Ok(0),
                }
            };
            let (outcomes, subscribers) =
                tokio::join!(futures_util::future::join_all(deliveries), plain);
            (outcomes, subscribers, services)
        })
        .await;
    let mut report = EmitReport {
        subscribers: subscribers.unwrap_or(0),
        ..EmitReport::default()
    };
    for (svc, (r, redeliveries)) in services.into_iter().zip(outcomes) {
        let group = parse_service(&svc)
            .map(|(g, p)| format!("{g}/{p}"))
            .unwrap_or_default();
        report.redeliveries += redeliveries;
        match r {
            Ok(()) => report.acked.push(group),
            Err(e) => report.lost.push((group, e)),
        }
    }
    Ok(report)
}

/// The event services (one per consumer group and prefix) that take
/// `topic`, as the membership knows them now.
pub(crate) fn group_services(node: &Node, topic: &str) -> Vec<String> {
    let mut services: Vec<String> = node
        .members()
        .iter()
        .flat_map(|m| m.services.iter())
        .filter(|s| parse_service(s).is_some_and(|(_, p)| topic.starts_with(p)))
        .cloned()
        .collect();
    services.sort();
    services.dedup();
    services
}

/// The topic of an encoded event (an outbox record); `None` if it is not
/// one.
pub(crate) fn encoded_topic(body: &[u8]) -> Option<String> {
    rmp_serde::from_slice::<EventMsg<'_>>(body)
        .ok()
        .map(|m| m.topic.into_owned())
}

/// Whether event service `service` (`@ev/<group>/<prefix>`) takes `topic`.
pub(crate) fn takes(service: &str, topic: &str) -> bool {
    parse_service(service).is_some_and(|(_, p)| topic.starts_with(p))
}

/// One delivery of an encoded event to `service`'s group, as `delivery`
/// says (durable: at least once, 1 s per attempt); whether the group
/// acknowledged. A failure is not counted as a loss: the caller (the
/// outbox relay) tries again.
pub(crate) async fn deliver_encoded(
    node: &Node,
    service: &str,
    id: u64,
    body: Bytes,
    delivery: EventDelivery,
) -> bool {
    let delivery = match delivery {
        EventDelivery::Durable => EventDelivery::at_least_once(),
        d => d,
    };
    deliver(node, service, body, id, delivery, false)
        .await
        .0
        .is_ok()
}

/// The member an event goes to: chosen by the event id among the alive
/// members, so that every redelivery goes to the same one while it lives.
fn sticky(node: &Node, service: &str, id: u64, skip: &[PeerId]) -> Option<PeerId> {
    let members: Vec<PeerId> = node
        .serving(service)
        .into_iter()
        .filter(|(p, s)| *s == PeerState::Alive && !skip.contains(p))
        .map(|(p, _)| p)
        .collect();
    if members.is_empty() {
        return None;
    }
    Some(members[(id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % members.len()])
}

async fn deliver(
    node: &Node,
    service: &str,
    body: Bytes,
    id: u64,
    delivery: EventDelivery,
    count_loss: bool,
) -> (Result<(), CallError>, u32) {
    let (timeout, attempts, backoff) = match delivery {
        EventDelivery::AtMostOnce { timeout } => (timeout, 1, Duration::ZERO),
        EventDelivery::Durable => (Duration::from_secs(1), 5, Duration::from_millis(50)),
        EventDelivery::AtLeastOnce {
            ack_timeout,
            max_attempts,
            backoff,
        } => (ack_timeout, max_attempts.max(1), backoff),
    };
    let group = parse_service(service)
        .map(|(g, _)| g.to_owned())
        .unwrap_or_default();
    let mut skip: Vec<PeerId> = Vec::new();
    let mut last = CallError::NoSuchService(service.to_owned());
    for attempt in 1..=attempts {
        if attempt > 1 {
            metrics::counter!(EVENTS_REDELIVERED, "group" => group.clone()).increment(1);
            tokio::time::sleep(backoff).await;
        }
        let Some(member) = sticky(node, service, id, &skip) else {
            // Everyone we tried is gone: start over with the members alive now.
            skip.clear();
            continue;
        };
        match node
            .request_peer_raw(
                member,
                service,
                body.clone(),
                CallOptions::default().timeout(timeout).call_id(id),
            )
            .await
        {
            Ok(_) => return (Ok(()), attempt - 1),
            Err(e) => {
                if matches!(e, CallError::UnknownPeer(_) | CallError::CircuitOpen { .. })
                    || node.peer_state(member) != Some(PeerState::Alive)
                {
                    skip.push(member);
                }
                last = e;
            }
        }
    }
    let reason = if attempts == 1 {
        "event_unacked"
    } else {
        "event_undelivered"
    };
    if count_loss {
        metrics::counter!(crate::telemetry::MESSAGES_DROPPED, "reason" => reason).increment(1);
    }
    (Err(last), attempts - 1)
}
