//! Branch: run several chains at once and combine their answers, or pick
//! one chain by a rule on the request.
//!
//! - [`parallel`] calls the entry service of every branch concurrently,
//!   within one deadline, and hands every outcome (reply or typed error)
//!   to a combining function: a failed branch is visible to it, never
//!   silently missing.
//! - [`Router`] picks the entry service from the request (first matching
//!   rule, else the default) and calls it.
//!
//! # Not guaranteed
//! Branches are independent: one branch's failure does not cancel the
//! others (use [`scatter_gather`](super::scatter_gather) with
//! `Completion::All` to stop at the first failure).

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::node::{CallError, Node};

/// Calls each service in `branches` with `req` concurrently and combines
/// the outcomes, in the order of `branches`.
pub async fn parallel<Req, Rep, Out>(
    node: &Node,
    branches: &[&str],
    req: &Req,
    timeout: Duration,
    combine: impl FnOnce(Vec<(String, Result<Rep, CallError>)>) -> Out,
) -> Out
where
    Req: Serialize,
    Rep: DeserializeOwned,
{
    let calls = branches.iter().map(|b| async move {
        let r = node.request::<Req, Rep>(b, req, timeout).await;
        (b.to_string(), r)
    });
    combine(futures_util::future::join_all(calls).await)
}

type Rule<Req> = Box<dyn Fn(&Req) -> bool + Send + Sync>;

/// Content-based routing: the first rule that matches names the service.
pub struct Router<Req> {
    rules: Vec<(Rule<Req>, String)>,
    default: Option<String>,
}

impl<Req> std::fmt::Debug for Router<Req> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field(
                "routes",
                &self.rules.iter().map(|r| &r.1).collect::<Vec<_>>(),
            )
            .field("default", &self.default)
            .finish()
    }
}

impl<Req> Default for Router<Req> {
    fn default() -> Self {
        Router {
            rules: Vec::new(),
            default: None,
        }
    }
}

/// No rule matched and there is no default route.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// Nothing matched.
    #[error("no route matches the request and there is no default")]
    NoRoute,
    /// The chosen service failed.
    #[error("route {service}: {error}")]
    Call {
        /// The service chosen.
        service: String,
        /// Its error.
        error: CallError,
    },
}

impl<Req: Serialize> Router<Req> {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests for which `rule` holds go to `service`.
    pub fn when(
        mut self,
        rule: impl Fn(&Req) -> bool + Send + Sync + 'static,
        service: impl Into<String>,
    ) -> Self {
        self.rules.push((Box::new(rule), service.into()));
        self
    }

    /// Requests no rule matches go to `service`.
    pub fn otherwise(mut self, service: impl Into<String>) -> Self {
        self.default = Some(service.into());
        self
    }

    /// The service `req` is routed to.
    pub fn route(&self, req: &Req) -> Option<&str> {
        self.rules
            .iter()
            .find(|(rule, _)| rule(req))
            .map(|(_, s)| s.as_str())
            .or(self.default.as_deref())
    }

    /// Routes `req` and calls the chosen service.
    pub async fn call<Rep: DeserializeOwned>(
        &self,
        node: &Node,
        req: &Req,
        timeout: Duration,
    ) -> Result<(String, Rep), RouteError> {
        let service = self.route(req).ok_or(RouteError::NoRoute)?.to_owned();
        match node.request(&service, req, timeout).await {
            Ok(rep) => Ok((service, rep)),
            Err(error) => Err(RouteError::Call { service, error }),
        }
    }
}
