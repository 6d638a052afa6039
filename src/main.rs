use clap::Parser;

use std::io::Read;

use pingora::server::RunArgs;

use switchyard::cli::{self, Cli, Command, KeysCommand};
use switchyard::observability::logging;
use switchyard::process::{listen, signals::Signals};
use switchyard::server::{self, StartMode};

/// With `--features mimalloc`: mimalloc instead of glibc's malloc: less CPU per request, more
/// memory per open stream, so it is opt-in; BENCHMARKS.md has the measured trade.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
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
            let health = switchyard::routing::health::HealthRegistry::default();
            if let Err(e) = switchyard::routing::RoutingTable::build_with(&config, &health) {
                eprintln!("{}: invalid config:\n{e}", arg.path().display());
                std::process::exit(1);
            }
            // `serve` refuses to start on a spending snapshot it cannot read; say so here first.
            if let Some(settings) = &config.state.snapshot {
                let snapshots = switchyard::limits::snapshot::Snapshots::new(settings);
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
            let server = match server::build(&config, &args.config.path(), mode, sockets) {
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
}
