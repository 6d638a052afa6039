//! The command line: `switchyard serve | check | keys hash` (README, "Command line").

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config, DEFAULT_CONFIG_PATH};

#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    version,
    about = "An LLM gateway on Cloudflare Pingora"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Validate a config file and print a summary.
    Check(ConfigArg),
    /// Client-key tools.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print the SHA-256 digest of a client key, for `auth.keys[].key_sha256`. Reads the key
    /// from standard input (one line), so that it stays out of the shell's history.
    Hash,
}

/// The digest line `switchyard keys hash` prints for what it read.
pub fn hash_key(input: &str) -> Result<String, &'static str> {
    let key = input.trim_end_matches(['\n', '\r']);
    if key.is_empty() {
        return Err(
            "no key on standard input (pipe it in: echo -n \"$KEY\" | switchyard keys hash)",
        );
    }
    Ok(crate::auth::to_hex(&crate::auth::digest(key)))
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Config file [default: $SWITCHYARD_CONFIG, else conf/switchyard.yaml]
    #[arg(long, short = 'c', value_name = "PATH")]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    pub fn path(&self) -> PathBuf {
        self.config
            .clone()
            .or_else(|| std::env::var_os("SWITCHYARD_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Take the listening sockets over from a running instance (graceful upgrade).
    #[arg(long, short = 'u')]
    pub upgrade: bool,
    /// Detach and run in the background.
    #[arg(long, short = 'd')]
    pub daemon: bool,
}

/// The one-screen summary `switchyard check` prints for a valid config.
pub fn summary(config: &Config) -> String {
    let mut out = String::new();
    let listen: Vec<String> = config
        .server
        .listen
        .iter()
        .map(ToString::to_string)
        .collect();
    let _ = writeln!(out, "config OK");
    let _ = writeln!(out, "listen:       {}", listen.join(", "));
    let _ = writeln!(
        out,
        "admin_listen: {}",
        config
            .server
            .admin_listen
            .map_or("(off)".to_string(), |a| a.to_string())
    );
    let _ = writeln!(out, "providers:");
    for p in config.providers.values() {
        let state = match &p.disabled {
            Some(why) => format!("disabled: {why}"),
            None => "enabled".to_string(),
        };
        let url = p.base_url.as_ref().map_or("(built in)", |u| u.as_str());
        let _ = writeln!(out, "  {:<16} {:<18} {:<40} {}", p.name, p.kind, url, state);
    }
    let _ = writeln!(out, "models:");
    for m in config.models.values() {
        let targets: Vec<String> = m
            .targets
            .iter()
            .map(|t| format!("{}/{}", t.provider, t.model))
            .collect();
        let _ = writeln!(
            out,
            "  {:<24} {:<14} {}",
            m.name,
            m.strategy.as_str(),
            targets.join(", ")
        );
    }
    let limited = config
        .auth
        .keys
        .iter()
        .filter(|k| !k.limits.is_empty() || !k.model_limits.is_empty() || k.budget.is_some())
        .count();
    let _ = writeln!(
        out,
        "client keys:  {} ({limited} with limits or a budget)",
        config.auth.keys.len()
    );
    let state = match config.state.backend {
        config::StateBackend::Memory => "memory (this instance alone)",
        config::StateBackend::Redis { .. } => "redis (shared)",
    };
    let _ = writeln!(out, "state:        {state}");
    for w in &config.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}

/// Loads the config for a command, printing the reason and exiting 1 when it is invalid.
pub fn load_or_exit(arg: &ConfigArg) -> Config {
    let path = arg.path();
    match config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: invalid config:\n{e}", path.display());
            std::process::exit(1);
        }
    }
}
