//! Operating a running gateway by signal and by file:
//! - SIGHUP (`systemctl reload`) and a change of the config file reload the routing table
//!   ([`Reloader`]); the file is polled, and a change must be stable for one more poll before it
//!   is loaded, so a half-written file is never picked up;
//! - SIGUSR2 performs a zero-downtime binary upgrade from inside: it starts the binary now on disk
//!   with `--upgrade` (as this process's child, so it stays in the same systemd service), waits
//!   until that process listens for the sockets, then sends itself SIGQUIT, on which Pingora hands
//!   the listening sockets over and drains.
//!
//! SIGTERM (graceful stop), SIGQUIT (socket hand-over) and SIGINT (fast stop) are Pingora's,
//! through [`crate::process::signals`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ExecutionPhase, ShutdownWatch};
use pingora::services::background::BackgroundService;
use tokio::signal::unix::SignalKind;
use tokio::sync::broadcast;

use crate::process::signals::{listen, next, successor_waiting};
use crate::reload::Reloader;

const FILE_POLL: Duration = Duration::from_millis(500);
/// How long the new process may take to start listening for the sockets.
const UPGRADE_START_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Control {
    reloader: Arc<Reloader>,
    upgrade_sock: PathBuf,
    daemon: bool,
    phases: Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
    draining: Arc<AtomicBool>,
}

impl Control {
    /// `phases` is the server's execution-phase feed; `draining` is raised when the process
    /// starts to hand over or stop.
    pub fn new(
        reloader: Arc<Reloader>,
        upgrade_sock: PathBuf,
        daemon: bool,
        phases: broadcast::Receiver<ExecutionPhase>,
        draining: Arc<AtomicBool>,
    ) -> Self {
        Control {
            reloader,
            upgrade_sock,
            daemon,
            phases: Mutex::new(Some(phases)),
            draining,
        }
    }
}

/// Waits for the phase in which this process stops taking new work.
async fn draining_phase(phases: &mut Option<broadcast::Receiver<ExecutionPhase>>) {
    let Some(rx) = phases.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        match rx.recv().await {
            Ok(
                ExecutionPhase::GracefulUpgradeTransferringFds
                | ExecutionPhase::GracefulUpgradeCloseTimeout
                | ExecutionPhase::GracefulTerminate
                | ExecutionPhase::ShutdownStarted,
            ) => return,
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => {
                *phases = None;
                return std::future::pending().await;
            }
        }
    }
}

/// The running binary's path, even when a package upgrade replaced the file under it.
fn own_binary() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let text = exe.to_string_lossy();
    Ok(match text.strip_suffix(" (deleted)") {
        Some(path) => PathBuf::from(path),
        None => exe,
    })
}

/// Starts the replacement process and, once it waits for the sockets, hands them over.
async fn upgrade(config: &Path, upgrade_sock: &Path, daemon: bool) -> Result<(), String> {
    let exe = own_binary().map_err(|e| format!("cannot find own binary: {e}"))?;
    // A socket file left by an earlier upgrade would look like the new process is ready.
    let _ = std::fs::remove_file(upgrade_sock);
    let mut command = Command::new(&exe);
    command.args(["serve", "--upgrade", "--config"]).arg(config);
    if daemon {
        command.arg("--daemon");
    }
    // systemd's watchdog variables name this process; without the PID the new process, which
    // becomes the service's main process, takes the watchdog over.
    command.env_remove("WATCHDOG_PID");
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    let started = Instant::now();
    loop {
        if successor_waiting(upgrade_sock) {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            // A daemonising child exits once it has forked; anything else is a failure.
            if !(daemon && status.success()) {
                return Err(format!(
                    "the new process exited with {status} before taking over"
                ));
            }
        }
        if started.elapsed() > UPGRADE_START_TIMEOUT {
            let _ = child.kill();
            return Err("the new process did not start listening for the sockets".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    log::info!(
        "upgrade: new process {} waits for the sockets; handing them over",
        child.id()
    );
    // SAFETY: kill(2) on our own pid with a valid signal number has no memory effects.
    let rc = unsafe { libc::kill(libc::getpid(), libc::SIGQUIT) };
    if rc != 0 {
        return Err(format!(
            "cannot signal self: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[async_trait]
impl BackgroundService for Control {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangup = listen(SignalKind::hangup(), "SIGHUP");
        let mut usr2 = listen(SignalKind::user_defined2(), "SIGUSR2");
        let mut poll = tokio::time::interval(FILE_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pending: Option<u64> = None;
        let mut phases = self
            .phases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = draining_phase(&mut phases) => {
                    self.draining.store(true, Ordering::Release);
                    phases = None;
                }
                _ = next(&mut hangup) => {
                    pending = None;
                    let _ = self.reloader.reload("SIGHUP");
                }
                _ = next(&mut usr2) => {
                    log::info!("SIGUSR2: starting a graceful binary upgrade");
                    if let Err(e) = upgrade(self.reloader.path(), &self.upgrade_sock, self.daemon).await {
                        log::error!("upgrade aborted, this process keeps serving: {e}");
                    }
                }
                _ = poll.tick() => {
                    match (self.reloader.file_changed(), pending) {
                        // Unchanged since the last poll: the write is complete.
                        (Some(hash), Some(seen)) if hash == seen => {
                            pending = None;
                            let _ = self.reloader.reload("file change");
                        }
                        (changed, _) => pending = changed,
                    }
                }
            }
        }
    }
}
