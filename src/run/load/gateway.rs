//! `kind = "gateway"`: calls to `target` through the gateway a node runs,
//! a share of them (`bad_token_rate`) with a forged token.
//!
//! Guarantees: a forged token refused is counted as `forged_refused`, one
//! accepted as `forged_accepted` (the run's failure); `service_handled`
//! is what reached the service. Does not: hold the key anywhere but the
//! driver and the gateway's node.

use serde::Serialize;
use serde_bytes::ByteBuf;
use zfabric::topology::gateway::{sign_jwt, Claims, GatewayRequest};
use zfabric::wire::RemoteCode;
use zfabric::RequestError;

use super::{answer, Call, Ctx, Figures, Load, Shot, Tally};
use crate::run::spec::{LoadSpec, NodeSpec};
use crate::run::world::{self, NodeStats};

/// Calls through the gateway.
pub(super) struct Gateway;

/// Whether a successful call carried a forged token.
pub(super) struct Token {
    forged: bool,
}

/// What the gateway let through.
#[derive(Debug, Serialize)]
pub(super) struct Outcome {
    forged_refused: u64,
    forged_accepted: u64,
    service_handled: u64,
    authorized_ok: u64,
}

impl Load for Gateway {
    type Extra = Token;
    type Outcome = Outcome;

    async fn call(ctx: &Ctx, load: &LoadSpec, shot: Shot) -> Call<Token> {
        let (Some(gw), Some(key)) = (ctx.gateway.as_ref(), ctx.gateway_key.as_ref()) else {
            return Call::failed("no_gateway_signing_key");
        };
        let forged = world::chance(load.bad_token_rate);
        let claims = Claims {
            sub: "driver".into(),
            exp: world::now_us() / 1_000_000 + 3600,
            nbf: None,
            services: None,
        };
        let token = if forged {
            sign_jwt(b"not-the-key", &claims)
        } else {
            sign_jwt(key, &claims)
        };
        let req = GatewayRequest {
            token,
            service: load.target.clone(),
            body: ByteBuf::from(shot.body.to_vec()),
        };
        match gw.request_within(&req, shot.timeout).await {
            Ok(raw) => answer(&raw, shot.started).with(Token { forged }),
            Err(RequestError::Remote(r)) if r.known_code() == Some(RemoteCode::Unauthorized) => {
                Call::failed(if forged {
                    "forged_refused"
                } else {
                    "unauthorized"
                })
            }
            Err(RequestError::Remote(r)) => Call::Failed(r.code),
            Err(RequestError::Timeout(_)) => Call::Timeout,
            Err(e) => Call::Failed(e.to_string()),
        }
    }

    fn figures(
        l: &LoadSpec,
        t: &Tally<Token>,
        nodes: &[NodeStats],
        _: &[NodeSpec],
    ) -> Figures<Outcome> {
        let outcome = Outcome {
            forged_refused: t.errors.get("forged_refused").copied().unwrap_or(0),
            forged_accepted: t.extras.iter().filter(|e| e.forged).count() as u64,
            service_handled: nodes
                .iter()
                .flat_map(|n| n.handled.iter())
                .filter(|(k, _)| k.as_str() == l.target)
                .map(|(_, v)| *v)
                .sum(),
            authorized_ok: t.ok,
        };
        Figures::calls(t, outcome)
    }
}
