//! Topologies: the microservice shapes people build, composed from nodes.
//!
//! | topology | API | what it guarantees |
//! |---|---|---|
//! | aggregator (scatter-gather) | [`scatter_gather`] | concurrent fan-out to services or to every member of one; completion by all, quorum, first success or deadline; every target accounted for (replied, failed with its error, timed out) |
//! | asynchronous messaging | [`events::emit`], [`NodeBuilder::consume`](crate::node::NodeBuilder::consume) | choreography by topic; each consumer group handles an event once; at least once (ack, redelivery, dedup), at most once, or durable (an outbox in the emitter's log, relayed across restarts: [`outbox::Outbox`]) |
//! | branch | [`branch::parallel`], [`branch::Router`] | concurrent branches with every outcome handed to the combiner; content-based choice of one chain |
//! | chain | [`chain::forward`], [`chain::transform`] | deadline shrinks along the chain; hop count carried and traced; loops stopped at [`MAX_HOPS`](crate::node::MAX_HOPS) |
//! | configuration service | [`config::serve`], [`config::fetch`], [`config::watch`] | documents keyed by service, type, environment and version, served from a directory; nothing outside it read; new versions published on `config.<service>.<env>` |
//! | shared resources (data) | [`shared_data::DataStore`], [`shared_data::serve`], [`shared_data::CustomerCache`] | one data service over a redb file; `create_customer(email)` makes one customer however often or concurrently it is called; versioned updates (a stale one is a `conflict`); read-through caches invalidated by change events, stale for at most their TTL when one is missed |
//! | proxy / gateway | [`gateway::Gateway`], [`gateway::Forwarder`] | HS256 JWT checked before anything reaches a service; dumb or smart forwarding; pub/sub bridging |
//!
//! Each submodule opens with its guarantees and what it does not promise.
//! The runnable catalogue of all of these is `patterns/*.toml`, run by
//! `zfabric run`.

pub mod aggregator;
pub mod branch;
pub mod chain;
pub mod config;
pub mod events;
pub mod gateway;
pub mod outbox;
pub mod shared_data;

pub use aggregator::{scatter_gather, Completion, Gathered, Incomplete, Scatter, Target};
