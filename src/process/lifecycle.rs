//! What the process does at its turning points, from Pingora's execution phases:
//! - `Running` (every socket is listening: bound up front or handed over): READY=1 to systemd,
//!   with MAINPID= when this process took the sockets over from another;
//! - while running, a watchdog ping at half of `WatchdogSec=` when systemd asks for one;
//! - `ShutdownGracePeriod` (after SIGTERM, or after a hand-over: the sockets are closed): exit as
//!   soon as no request is in flight. Pingora sleeps the whole `grace_period_s` there even with
//!   nothing to wait for; its sleep stays the upper bound, after which it ends the process itself.
//!
//! This runs as a background service that deliberately ignores Pingora's shutdown broadcast:
//! its runtime lives on through the grace period, which is when it has work to do.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ExecutionPhase, ShutdownWatch};
use pingora::services::background::BackgroundService;
use tokio::sync::broadcast::{self, error::RecvError};

use super::inflight::InFlight;
use super::systemd;

/// How often the stopping process looks at the in-flight count.
const DRAIN_POLL: Duration = Duration::from_millis(20);

pub struct Lifecycle {
    phases: Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
    inflight: Arc<InFlight>,
    took_over: bool,
}

impl Lifecycle {
    /// `phases` must be subscribed before the server bootstraps, so no phase is missed;
    /// `took_over` is `serve --upgrade`.
    pub fn new(
        phases: broadcast::Receiver<ExecutionPhase>,
        inflight: Arc<InFlight>,
        took_over: bool,
    ) -> Self {
        Lifecycle {
            phases: Mutex::new(Some(phases)),
            inflight,
            took_over,
        }
    }

    /// Returns once nothing has been in flight for two polls in a row: a connection accepted
    /// just before the listeners closed gets one poll to be counted.
    async fn drained(&self) {
        let mut idle_polls = 0;
        while idle_polls < 2 {
            idle_polls = if self.inflight.count() == 0 {
                idle_polls + 1
            } else {
                0
            };
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }
}

#[async_trait]
impl BackgroundService for Lifecycle {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let Some(mut phases) = self
            .phases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        else {
            return;
        };
        let watchdog = systemd::watchdog_interval();
        let mut ping = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                phase = phases.recv() => match phase {
                    Ok(ExecutionPhase::Running) => systemd::ready(self.took_over),
                    Ok(ExecutionPhase::ShutdownGracePeriod) => {
                        let since = Instant::now();
                        self.drained().await;
                        log::info!(
                            "nothing in flight after {} ms of the grace period; exiting",
                            since.elapsed().as_millis()
                        );
                        // Queued access-log lines are written by the logger's exit handler.
                        std::process::exit(0);
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                },
                _ = ping.tick(), if watchdog.is_some() => systemd::watchdog(),
            }
        }
    }
}
