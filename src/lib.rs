//! Switchyard: an LLM gateway on Cloudflare Pingora.
//!
//! Layout: [`config`] (loading and validation) → [`routing`] (the compiled table behind an
//! `ArcSwap`) → [`proxy`] (the Pingora service: client dialect in, vendor request out) with
//! [`providers`] (pure per-vendor translation) and [`dialect`] (client formats); [`admin`],
//! [`observability`] and [`accounting`] around them; [`server`] assembles it all.

pub mod accounting;
pub mod admin;
pub mod cli;
pub mod config;
pub mod control;
pub mod dialect;
pub mod error;
pub mod observability;
pub mod providers;
pub mod proxy;
pub mod reload;
pub mod routing;
pub mod server;
