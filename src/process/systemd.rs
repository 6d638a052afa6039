//! Messages to systemd (`Type=notify`), through the `sd-notify` crate. Outside systemd
//! (`NOTIFY_SOCKET` unset) every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        log::warn!("cannot notify systemd: {e}");
    }
}

/// The sockets are listening. A process that took them over from another (`--upgrade`) also
/// names itself the service's main process, so systemd follows it without a PID file (the unit
/// needs `NotifyAccess=all`: the message comes from a process that is not the main one yet).
pub fn ready(took_over: bool) {
    let pid = std::process::id();
    if took_over {
        send(&[NotifyState::MainPid(pid), NotifyState::Ready]);
    } else {
        send(&[NotifyState::Ready]);
    }
}

/// A config reload starts; [`reloaded`] ends it. systemd wants the monotonic time with it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// A config reload ended (applied or rejected): the service runs as before.
pub fn reloaded() {
    send(&[NotifyState::Ready]);
}

/// The process stops for good (SIGTERM, SIGINT). Never sent on a hand-over to a new process:
/// systemd would take the whole service for stopping.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often to ping the watchdog: half its timeout, when the unit sets `WatchdogSec=`.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .filter(|d| !d.is_zero())
        .map(|d| d / 2)
}
