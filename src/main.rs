use clap::Parser;

use switchyard::cli::{self, Cli, Command};
use switchyard::observability::logging;
use switchyard::server::{self, StartMode};

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(arg) => {
            let config = cli::load_or_exit(&arg);
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
            let server = match server::build(&config, &args.config.path(), mode) {
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
            server.run_forever();
        }
    }
}
