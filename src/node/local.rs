//! Local delivery: this node's unicast inbox, fabric subscriptions and
//! joined groups.
//!
//! Guarantees: a message is delivered to local receivers without blocking
//! the dispatcher: a full inbox or subscription queue refuses or drops it
//! and counts the drop (`inbox_full`, `subscriber_queue_full`); closed
//! subscriptions are swept before every delivery and every hello. Locks
//! cannot be poisoned (`parking_lot`), so a panicking receiver never turns
//! into a silently empty list. Does not: know peers, links or how
//! messages travel.

use std::collections::HashMap;

use bytes::Bytes;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use super::membership::PeerId;
use super::service::Handler;
use crate::topic::TopicFilter;
use crate::wire::{self, Header, RemoteCode, RemoteError};

/// A message published on the fabric, as a subscriber receives it.
#[derive(Debug, Clone)]
pub struct Published {
    /// The topic it was published on.
    pub topic: String,
    /// The MessagePack body.
    pub body: Bytes,
    /// The publisher's header (source, id, trace context).
    pub header: Header,
}

impl Published {
    /// Decodes the body as `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, crate::wire::DecodeError> {
        wire::decode_body(&self.body)
    }

    /// The trace it came in (its receive span, when this process records
    /// spans): continue it with [`trace::with_context`](crate::trace::with_context).
    pub fn trace_context(&self) -> Option<crate::trace::TraceContext> {
        crate::trace::from_header(&self.header)
    }
}

/// A message sent to this node alone ([`Node::unicast`](super::Node::unicast)).
#[derive(Debug, Clone)]
pub struct Direct {
    /// The sending node.
    pub from: PeerId,
    /// The MessagePack body.
    pub body: Bytes,
    /// The sender's header.
    pub header: Header,
}

impl Direct {
    /// Decodes the body as `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, crate::wire::DecodeError> {
        wire::decode_body(&self.body)
    }

    /// The trace it came in (its receive span, when this process records
    /// spans): continue it with [`trace::with_context`](crate::trace::with_context).
    pub fn trace_context(&self) -> Option<crate::trace::TraceContext> {
        crate::trace::from_header(&self.header)
    }
}

/// Where unicast messages to this node arrive ([`Node::inbox`](super::Node::inbox)).
#[derive(Debug)]
pub struct NodeInbox {
    rx: mpsc::Receiver<Direct>,
}

impl NodeInbox {
    /// The next message; `None` once the node is gone.
    pub async fn recv(&mut self) -> Option<Direct> {
        self.rx.recv().await
    }
}

/// A subscription to topics published anywhere on the fabric.
/// Dropping it unsubscribes (peers learn it with the next heartbeat).
#[derive(Debug)]
pub struct NodeSubscription {
    rx: mpsc::Receiver<Published>,
}

impl NodeSubscription {
    /// The next message; `None` once the node is gone.
    pub async fn recv(&mut self) -> Option<Published> {
        self.rx.recv().await
    }
}

/// This node's local receivers.
pub(super) struct Local {
    /// Where unicast messages go, once the application asks for them.
    inbox: Mutex<Option<mpsc::Sender<Direct>>>,
    /// Local subscriptions: filter and where matching messages go.
    subscriptions: Mutex<Vec<(TopicFilter, mpsc::Sender<Published>)>>,
    /// Groups joined, with their handlers (changes at run time; hellos
    /// carry the current list).
    groups: Mutex<HashMap<String, Handler>>,
}

impl Local {
    pub(super) fn new(groups: HashMap<String, Handler>) -> Self {
        Local {
            inbox: Mutex::new(None),
            subscriptions: Mutex::new(Vec::new()),
            groups: Mutex::new(groups),
        }
    }

    /// A new inbox, replacing the previous one.
    pub(super) fn inbox(&self, capacity: usize) -> NodeInbox {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        *self.inbox.lock() = Some(tx);
        NodeInbox { rx }
    }

    /// A new subscription to the topics `filter` matches.
    pub(super) fn subscribe(&self, filter: TopicFilter, capacity: usize) -> NodeSubscription {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.subscriptions.lock().push((filter, tx));
        NodeSubscription { rx }
    }

    pub(super) fn join(&self, group: String, handler: Handler) {
        self.groups.lock().insert(group, handler);
    }

    pub(super) fn leave(&self, group: &str) {
        self.groups.lock().remove(group);
    }

    /// The groups joined, sorted (as a hello carries them).
    pub(super) fn group_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.groups.lock().keys().cloned().collect();
        v.sort();
        v
    }

    /// The prefixes subscribed to (a pattern's literal prefix), sorted
    /// and deduplicated; closed subscriptions are dropped first.
    pub(super) fn topics(&self) -> Vec<String> {
        let mut subs = self.subscriptions.lock();
        subs.retain(|(_, tx)| !tx.is_closed());
        let mut v: Vec<String> = subs.iter().map(|(f, _)| f.literal_prefix()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// The handler of a joined group.
    pub(super) fn group(&self, group: &str) -> Option<Handler> {
        self.groups.lock().get(group).cloned()
    }

    /// Hands a unicast message to the inbox, or refuses it (`no_inbox`,
    /// `inbox_full`, counted).
    pub(super) fn deliver_direct(&self, msg: Direct) -> Result<(), RemoteError> {
        let tx = self.inbox.lock().clone();
        let Some(tx) = tx else {
            return Err(RemoteError::new(
                RemoteCode::NoInbox,
                "this node takes no unicast messages",
            ));
        };
        tx.try_send(msg).map_err(|_| {
            crate::telemetry::dropped(crate::telemetry::DropReason::InboxFull, 1);
            RemoteError::new(RemoteCode::InboxFull, "the receiving node's inbox is full")
        })
    }

    /// Hands a published message to every subscription whose filter
    /// matches; returns how many took it (a full queue drops, counted).
    pub(super) fn deliver_published(&self, msg: Published) -> u32 {
        let mut delivered = 0u32;
        let mut subs = self.subscriptions.lock();
        subs.retain(|(_, tx)| !tx.is_closed());
        for (filter, tx) in subs.iter() {
            if filter.matches(&msg.topic) {
                match tx.try_send(msg.clone()) {
                    Ok(()) => delivered += 1,
                    Err(_) => crate::telemetry::dropped(
                        crate::telemetry::DropReason::SubscriberQueueFull,
                        1,
                    ),
                }
            }
        }
        delivered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Kind, MessageId};

    fn published(topic: &str) -> Published {
        Published {
            topic: topic.into(),
            body: Bytes::new(),
            header: Header::new(Kind::Request, MessageId(1), 1, 0),
        }
    }

    #[test]
    fn published_messages_reach_matching_open_subscriptions_only() {
        let local = Local::new(HashMap::new());
        let mut a = local.subscribe(TopicFilter::prefix("orders."), 4);
        let b = local.subscribe(TopicFilter::prefix("users."), 4);
        let closed = local.subscribe(TopicFilter::prefix("orders."), 4);
        drop(closed);
        assert_eq!(local.deliver_published(published("orders.new")), 1);
        assert!(a.rx.try_recv().is_ok());
        assert_eq!(
            local.topics(),
            vec!["orders.".to_string(), "users.".to_string()]
        );
        drop(b);
        assert_eq!(local.topics(), vec!["orders.".to_string()]);
    }

    #[test]
    fn a_pattern_advertises_its_literal_prefix_and_takes_only_what_it_matches() {
        let local = Local::new(HashMap::new());
        let mut paid = local.subscribe(TopicFilter::parse("orders.*.paid").unwrap(), 4);
        let mut all = local.subscribe(TopicFilter::parse("orders.>").unwrap(), 4);
        assert_eq!(local.topics(), vec!["orders.".to_string()]);
        assert_eq!(local.deliver_published(published("orders.eu.paid")), 2);
        assert_eq!(local.deliver_published(published("orders.eu.new")), 1);
        assert_eq!(local.deliver_published(published("orders.eu.x.paid")), 1);
        assert_eq!(local.deliver_published(published("orders")), 0);
        assert_eq!(paid.rx.try_recv().unwrap().topic, "orders.eu.paid");
        assert!(paid.rx.try_recv().is_err());
        for want in ["orders.eu.paid", "orders.eu.new", "orders.eu.x.paid"] {
            assert_eq!(all.rx.try_recv().unwrap().topic, want);
        }
    }

    #[test]
    fn unicast_without_an_inbox_or_with_a_full_one_is_refused() {
        let local = Local::new(HashMap::new());
        let direct = || Direct {
            from: PeerId(1),
            body: Bytes::new(),
            header: Header::new(Kind::Request, MessageId(1), 1, 0),
        };
        let e = local.deliver_direct(direct()).unwrap_err();
        assert_eq!(e.known_code(), Some(RemoteCode::NoInbox));
        let _inbox = local.inbox(1);
        assert!(local.deliver_direct(direct()).is_ok());
        let e = local.deliver_direct(direct()).unwrap_err();
        assert_eq!(e.known_code(), Some(RemoteCode::InboxFull));
    }
}
