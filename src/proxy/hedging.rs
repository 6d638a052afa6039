//! Hedged requests (`models.NAME.hedge`): when the first target has not answered (its answer's
//! head, the first byte it sends) within the hedge delay, the next target of the round is asked
//! too, and whichever answers first is relayed. The other is dropped: its connection closes, it
//! is neither relayed nor accounted, and its breaker learns nothing from it.
//!
//! Nothing reaches the client until a winner is chosen, so hedging works alike for JSON and
//! streams in every dialect. A failure of one racer leaves the other running; the failures are
//! handed back to the retry loop, as if tried one after the other.

use std::future::Future;
use std::pin::Pin;

use pingora::protocols::http::ServerSession;

use super::attempt::{self, Attempt, SendFailure, Sent};
use super::ctx::RequestCtx;
use super::Gateway;
use crate::config::RetryPolicy;
use crate::dialect::ClientRequest;
use crate::observability::metrics::METRICS;
use crate::routing::hedge::Hedge;
use crate::routing::retry::{Gate, Retry};
use crate::routing::Target;

type Sending<'a> = Pin<Box<dyn Future<Output = Result<Sent, SendFailure>> + Send + 'a>>;

/// What became of the targets a hedged attempt asked, in the order the retry loop should take
/// them: failures first, then the answer (or the client going away) if one came.
pub(super) type Outcomes = Vec<(usize, pingora::Result<Attempt>)>;

/// Runs the attempt at `plan[first]`, hedged by the next target of the round when it is slow.
#[allow(clippy::too_many_arguments)]
pub(super) async fn race(
    gateway: &Gateway,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    request: &ClientRequest,
    plan: &[&Target],
    gate: &impl Gate,
    retry: &mut Retry,
    first: usize,
    hedge: &Hedge,
    policy: &RetryPolicy,
) -> Outcomes {
    let filters = ctx.filters.clone();
    let request_id = ctx.request_id.clone();
    let send = |i: usize| -> Sending<'_> {
        Box::pin(attempt::send(
            gateway,
            filters.as_deref(),
            &request_id,
            request,
            plan[i],
            policy,
        ))
    };
    let mut pending = vec![(first, send(first))];
    let delay = hedge.delay(plan[first]);
    let model = ctx.model_label.clone();
    let mut outcomes = Outcomes::new();
    let mut hedged = None;
    // Before the delay, only the first target; after it, the hedge too.
    let early = tokio::time::timeout(delay, &mut pending[0].1).await;
    let winner = match early {
        Ok(Ok(sent)) => {
            pending.clear();
            Some((first, sent))
        }
        Ok(Err((failed, waited))) => {
            ctx.waited += waited;
            outcomes.push((first, Ok(failed)));
            pending.clear();
            None
        }
        Err(_elapsed) => {
            if !hedge.try_take() {
                METRICS
                    .hedges_total
                    .with_label_values(&[model.as_str(), "skipped"])
                    .inc();
            } else if let Some(second) = retry.next_in_round(gate) {
                log::debug!(
                    "request {request_id}: no answer from '{}' after {} ms, asking '{}' too",
                    plan[first].provider.name,
                    delay.as_millis(),
                    plan[second].provider.name
                );
                ctx.attempts += 1;
                hedged = Some(second);
                pending.push((second, send(second)));
            }
            first_answer(ctx, &mut pending, &mut outcomes).await
        }
    };
    // The slower racer is dropped here, closing its connection.
    for (loser, _) in pending.drain(..) {
        plan[loser].health.record_neutral();
        METRICS
            .upstream_attempts_total
            .with_label_values(&[plan[loser].provider.name.as_str(), "cancelled"])
            .inc();
    }
    if let Some(second) = hedged {
        let won = matches!(winner, Some((i, _)) if i == second);
        METRICS
            .hedges_total
            .with_label_values(&[model.as_str(), if won { "won" } else { "lost" }])
            .inc();
    }
    if let Some((i, sent)) = winner {
        let target = plan[i];
        ctx.provider = Some(target.provider.name.clone());
        ctx.upstream_model = Some(target.upstream_model.clone());
        let relayed = attempt::relay(gateway, session, ctx, request, target, policy, sent).await;
        outcomes.push((i, relayed));
    }
    outcomes
}

/// Waits for the first racer that gets an answer; racers that fail first are recorded in
/// `outcomes` and taken out of `pending`.
async fn first_answer(
    ctx: &mut RequestCtx,
    pending: &mut Vec<(usize, Sending<'_>)>,
    outcomes: &mut Outcomes,
) -> Option<(usize, Sent)> {
    while !pending.is_empty() {
        let (result, at, _) =
            futures_util::future::select_all(pending.iter_mut().map(|(_, f)| f)).await;
        let (i, _) = pending.remove(at);
        match result {
            Ok(sent) => return Some((i, sent)),
            Err((failed, waited)) => {
                ctx.waited += waited;
                outcomes.push((i, Ok(failed)));
            }
        }
    }
    None
}
