//! Assembling the Pingora server from a validated config.
//!
//! This is the boundary between Switchyard's config and Pingora's: the user's file never reaches
//! Pingora; the few settings Pingora needs are copied into its `ServerConf` here.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::AdminApp;
use crate::config::Config;
use crate::control::Control;
use crate::filters::FilterSet;
use crate::process::inflight::InFlight;
use crate::process::lifecycle::Lifecycle;
use crate::process::listen::{PreBound, Sockets};
use crate::proxy::Gateway;
use crate::reload::Reloader;
use crate::routing::checks::HealthChecker;
use crate::routing::RoutingTable;
use crate::transport::Transport;

/// How Pingora itself should start: the `--upgrade` and `--daemon` flags of `serve`.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartMode {
    pub upgrade: bool,
    pub daemon: bool,
}

/// Builds the server with the client and admin services, listening on `sockets` (bound
/// beforehand, see [`crate::process::listen`]); running it is left to the caller.
pub fn build(
    config: &Config,
    path: &Path,
    mode: StartMode,
    mut sockets: Sockets,
    filters: FilterSet,
) -> Result<Server, String> {
    let table = RoutingTable::build(config)?;
    crate::limits::LIMITS.configure(&config.state)?;
    crate::store::configure(&config.state)?;
    let table = Arc::new(ArcSwap::from_pointee(table));

    let conf = ServerConf {
        threads: config.server.threads,
        pid_file: config.server.pid_file.to_string_lossy().into_owned(),
        upgrade_sock: config.server.upgrade_sock.to_string_lossy().into_owned(),
        grace_period_seconds: Some(config.server.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(5),
        daemon: mode.daemon,
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: mode.upgrade,
        daemon: mode.daemon,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    // Subscribed before bootstrap so that no phase is missed.
    let phases = server.watch_execution_phase();
    let lifecycle_phases = server.watch_execution_phase();
    server.bootstrap();
    let draining = Arc::new(AtomicBool::new(false));
    let inflight = Arc::new(InFlight::default());
    let transport = Arc::new(Transport::default());

    let mut proxy = Service::new(
        "switchyard".to_string(),
        Gateway::new(
            table.clone(),
            transport.clone(),
            draining.clone(),
            inflight.clone(),
            filters,
        ),
    );
    for addr in &config.server.listen {
        // No user-space read buffer on client connections: Pingora's default is a zero-filled
        // 64 KiB one per connection, and plain-TCP HTTP/1 gains nothing from it, since Pingora
        // reads heads and bodies into buffers of its own. 10,000 open streams take ~64 MiB less.
        let listener =
            ListenerConfig::tcp(addr.to_string()).l4_buffer(L4BufferSettings::default().read(0));
        proxy.add_listener(listener);
    }
    server.add_service(PreBound::new(proxy, sockets.take(&config.server.listen)));

    server.add_service(background_service(
        "health checks",
        HealthChecker::new(table.clone(), transport),
    ));
    server.add_service(background_service(
        "state snapshots",
        crate::limits::snapshot::SnapshotService,
    ));
    // An absolute path, so that reloads find the file after a daemon changed its directory.
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let reloader = Arc::new(Reloader::new(path, table.clone(), config.server.clone()));
    server.add_service(background_service(
        "control",
        Control::new(
            reloader.clone(),
            config.server.upgrade_sock.clone(),
            mode.daemon,
            phases,
            draining,
        ),
    ));

    if let Some(addr) = config.server.admin_listen {
        let mut admin = Service::new(
            "switchyard admin".to_string(),
            AdminApp::new(table, reloader),
        );
        admin.threads = Some(1);
        admin.add_tcp(&addr.to_string());
        server.add_service(PreBound::new(admin, sockets.take(&[addr])));
    }
    server.add_service(background_service(
        "lifecycle",
        Lifecycle::new(lifecycle_phases, inflight, mode.upgrade),
    ));
    Ok(server)
}
