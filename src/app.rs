//! Switchyard as a program: the command line (`serve`, `check`, `keys hash`) and the
//! [`GatewayBuilder`] that runs it, with filters added in code. The `switchyard` binary is
//! `Gateway::builder().run()`; a binary of your own adds its filters first (see
//! `examples/custom_filter.rs`).

use std::io::Read;
use std::sync::Arc;

use clap::Parser;
use pingora::server::RunArgs;

use crate::cli::{self, Cli, Command, KeysCommand};
use crate::filters::{Filter, FilterSet};
use crate::observability::logging;
use crate::process::{listen, signals::Signals};
use crate::server::{self, StartMode};

/// The gateway, to run as a program.
pub struct Gateway;

impl Gateway {
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }
}

/// Builds the gateway program: filters first, then [`GatewayBuilder::run`].
#[derive(Default)]
pub struct GatewayBuilder {
    filters: Vec<Arc<dyn Filter>>,
}

impl GatewayBuilder {
    /// Adds a filter that every request goes through, before the filters of its key and its
    /// model (see [`crate::filters`] for the phases).
    pub fn filter(mut self, filter: impl Filter + 'static) -> Self {
        self.filters.push(Arc::new(filter));
        self
    }

    /// Reads the command line as the `switchyard` binary does and runs the command; never
    /// returns.
    pub fn run(self) -> ! {
        run(Cli::parse(), FilterSet::new(self.filters))
    }
}

pub(crate) fn run(cli: Cli, filters: FilterSet) -> ! {
    match cli.command {
        Command::Keys(KeysCommand::Hash) => {
            let mut input = String::new();
            let hashed = std::io::stdin()
                .read_to_string(&mut input)
                .map_err(|_| "standard input is not UTF-8 text")
                .and_then(|_| cli::hash_key(&input));
            match hashed {
                Ok(digest) => println!("{digest}"),
                Err(why) => {
                    eprintln!("{why}");
                    std::process::exit(1);
                }
            }
        }
        Command::Check(arg) => {
            let config = cli::load_or_exit(&arg);
            // Compiled as `serve` would, with health records of its own: what only the table
            // checks (each target's model against its vendor) fails here too.
            let health = crate::routing::health::HealthRegistry::default();
            if let Err(e) = crate::routing::RoutingTable::build_with(&config, &health) {
                eprintln!("{}: invalid config:\n{e}", arg.path().display());
                std::process::exit(1);
            }
            // `serve` refuses to start on a spending snapshot it cannot read; say so here first.
            if let Some(settings) = &config.state.snapshot {
                let snapshots = crate::limits::snapshot::Snapshots::new(settings);
                if let Err(e) = snapshots.check() {
                    eprintln!("{}: state.snapshot_path: {e}", arg.path().display());
                    std::process::exit(1);
                }
            }
            print!("{}", cli::summary(&config));
        }
        Command::Serve(args) => {
            logging::init();
            let config = cli::load_or_exit(&args.config);
            for warning in &config.warnings {
                log::warn!("{warning}");
            }
            let mode = StartMode {
                upgrade: args.upgrade,
                daemon: args.daemon,
            };
            // Before anything starts (and before a daemon detaches from the terminal): a port
            // that cannot be bound is one line and exit code 1.
            let mut addrs = config.server.listen.clone();
            addrs.extend(config.server.admin_listen);
            let sockets = match listen::bind(&addrs, mode.upgrade) {
                Ok(sockets) => sockets,
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(1);
                }
            };
            listen::exit_on_listener_panic();
            let server = match server::build(&config, &args.config.path(), mode, sockets, filters) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("cannot start: {e}");
                    std::process::exit(1);
                }
            };
            let listen: Vec<String> = config
                .server
                .listen
                .iter()
                .map(ToString::to_string)
                .collect();
            log::info!(
                "switchyard {} serving on {} (admin {})",
                env!("CARGO_PKG_VERSION"),
                listen.join(", "),
                config
                    .server
                    .admin_listen
                    .map_or("off".to_string(), |a| a.to_string())
            );
            let signals = Signals::new(config.server.upgrade_sock.clone());
            server.run(RunArgs {
                shutdown_signal: Box::new(signals),
            });
            std::process::exit(0);
        }
    }
    std::process::exit(0)
}
