//! Admission, the stage every model endpoint runs before anything is sent upstream: the client
//! key may use every model the request names, and its limits and budget admit the request (the
//! limiter reserves what it may use; [`RequestCtx::settle`] settles it when it ends).

use super::ctx::RequestCtx;
use crate::error::GatewayError;
use crate::limits::{Rider, LIMITS};
use crate::routing::ClientKey;

/// Admits a request naming `models` (the first is the one limits count under) that may use
/// `tokens`, or says why not: 403 for a model the key may not use, 429 (with its rate headers
/// in `ctx`) over a limit or the budget, 503 when the limits backend is down and fails closed.
pub(super) async fn admit<'m>(
    ctx: &mut RequestCtx,
    key: Option<&ClientKey>,
    mut models: impl Iterator<Item = &'m str>,
    tokens: u64,
    rider: Option<&mut Rider>,
) -> Result<(), GatewayError> {
    let Some(key) = key else {
        return Ok(());
    };
    let Some(first) = models.next() else {
        return Ok(());
    };
    if let Some(refused) = std::iter::once(first)
        .chain(models)
        .find(|m| !key.allows(m))
    {
        return Err(GatewayError::ModelNotAllowed {
            key: key.name.clone(),
            model: refused.to_string(),
        });
    }
    if key.policy.is_unlimited() {
        return Ok(());
    }
    match Box::pin(LIMITS.admit_with(&key.policy, first, tokens, rider)).await {
        Ok(admission) => {
            ctx.rate_headers = Some(admission.headers.clone());
            ctx.settlement = Some((key.policy.clone(), admission));
            Ok(())
        }
        Err(refusal) => {
            ctx.rate_headers = Some(refusal.headers);
            Err(refusal.error)
        }
    }
}
