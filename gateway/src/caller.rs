//! The one token extractor: a handler that takes a `Caller<A>` runs only for
//! a live run's token, and any other request gets 401 in API `A`'s shape.

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::Response;

use crate::apis::{refuse, ApiShape};
use crate::call::Refusal;
use crate::metering::runs::RunLedger;
use crate::state::GatewayState;

/// The run a request comes from.
pub struct Caller<A> {
    pub ledger: Arc<RunLedger>,
    api: PhantomData<A>,
}

impl<A: ApiShape> FromRequestParts<Arc<GatewayState>> for Caller<A> {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        gateway: &Arc<GatewayState>,
    ) -> Result<Self, Self::Rejection> {
        gateway
            .caller(&parts.headers)
            .map(|ledger| Caller {
                ledger,
                api: PhantomData,
            })
            .ok_or_else(|| refuse::<A>(&Refusal::Unauthorized))
    }
}
