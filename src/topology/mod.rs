//! Topologies: the microservice shapes people build, composed from nodes.
//!
//! | topology | API | what it guarantees |
//! |---|---|---|
//! | aggregator (scatter-gather) | [`scatter_gather`] | concurrent fan-out to services or to every member of one; completion by all, quorum, first success or deadline; every target accounted for (replied, failed with its error, timed out) |
//! | asynchronous messaging | [`events::emit`], [`NodeBuilder::consume`](crate::node::NodeBuilder::consume) | choreography by topic; each consumer group handles an event once; at least once (ack, redelivery, dedup) or at most once |
//! | branch | [`branch::parallel`], [`branch::Router`] | concurrent branches with every outcome handed to the combiner; content-based choice of one chain |
//! | chain | [`chain::forward`], [`chain::transform`] | deadline shrinks along the chain; hop count carried and traced; loops stopped at [`MAX_HOPS`](crate::node::MAX_HOPS) |
//! | configuration service | [`config::serve`], [`config::fetch`], [`config::watch`] | documents keyed by service, type, environment and version, served from a directory; nothing outside it read; new versions published on `config.<service>.<env>` |
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

pub use aggregator::{scatter_gather, Completion, Gathered, Incomplete, Scatter, Target};
