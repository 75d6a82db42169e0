//! The parts a running node is made of, held together.
//!
//! Guarantees: each part owns one kind of state ([`Gossip`]: who is on the
//! fabric; [`Links`]: connections; [`Local`]: local receivers;
//! [`Routing`]: breakers, budgets, cursor; [`Services`]: what this node
//! serves) and nothing here adds state of its own. The node's
//! scrape-time gauges are read from the parts here (members by state,
//! breaker state per service and peer name, requests in flight), all
//! labelled with the node's name (`node`). Does not: run tasks or hold
//! logic beyond handing the parts out.

use std::sync::Arc;

use super::gossip::{Gossip, Gossiper};
use super::links::Links;
use super::local::Local;
use super::options::NodeConfig;
use super::routing::Routing;
use super::service::Services;

/// A running node's parts.
pub(super) struct Shared {
    pub(super) view: Arc<Gossip>,
    pub(super) links: Arc<Links>,
    pub(super) local: Arc<Local>,
    pub(super) routing: Arc<Routing>,
    pub(super) services: Arc<Services>,
    pub(super) config: NodeConfig,
    /// Parts of the layers above (a durable-event outbox), by type: the
    /// node holds them for them without knowing them.
    pub(super) extensions: Extensions,
}

/// Values attached to a node by the layers above it, one per type.
#[derive(Default, Clone)]
pub(crate) struct Extensions(Vec<Arc<dyn std::any::Any + Send + Sync>>);

impl Extensions {
    /// Attaches `value` (replacing one of the same type).
    pub(crate) fn insert<T: std::any::Any + Send + Sync>(&mut self, value: Arc<T>) {
        self.0.retain(|v| !v.is::<T>());
        self.0.push(value);
    }

    /// The value of type `T`, if one is attached.
    pub(crate) fn get<T: std::any::Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.0.iter().find_map(|v| v.clone().downcast::<T>().ok())
    }
}

impl Shared {
    /// The gossip tasks' view of the parts.
    pub(super) fn gossiper(&self) -> Gossiper {
        Gossiper {
            view: self.view.clone(),
            links: self.links.clone(),
            local: self.local.clone(),
            routing: self.routing.clone(),
        }
    }
}

impl crate::telemetry::Collector for Shared {
    fn collect(&self) {
        let node = self.routing.node_label();
        let (alive, suspect) = self.view.counts();
        for (state, n) in [("alive", alive), ("suspect", suspect)] {
            metrics::gauge!(crate::telemetry::NODE_MEMBERS, "node" => node.clone(), "state" => state)
                .set(n as f64);
        }
        self.routing.collect(|id| self.view.member_name(id));
        self.services.collect();
    }

    fn report(&self, into: &mut crate::telemetry::StatusReport) {
        use crate::telemetry::{BreakerStatus, MemberStatus, NodeStatus};
        let me = self.view.me();
        let mut members: Vec<MemberStatus> = self
            .view
            .members()
            .into_iter()
            .map(|p| MemberStatus {
                state: match self.view.state(p.id) {
                    Some(super::PeerState::Alive) => "alive",
                    Some(super::PeerState::Suspect) => "suspect",
                    _ => "gone",
                },
                name: p.name,
                id: p.id.to_string(),
                services: p.services,
                endpoints: p.endpoints.iter().map(|e| e.to_string()).collect(),
            })
            .collect();
        members.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        let breakers = self
            .routing
            .breaker_levels(|id| self.view.member_name(id))
            .into_iter()
            .map(|((service, peer), level)| BreakerStatus {
                service: service.to_string(),
                peer,
                state: match level {
                    0 => "closed",
                    1 => "half_open",
                    _ => "open",
                },
            })
            .collect();
        let mut serves = self.services.names();
        serves.sort();
        into.nodes.push(NodeStatus {
            name: me.name.clone(),
            id: me.id.to_string(),
            serves,
            members,
            breakers,
        });
    }
}
