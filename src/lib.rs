//! Switchyard: an LLM gateway on Cloudflare Pingora.
//!
//! Layout: [`config`] (loading and validation) → [`routing`] (the compiled table behind an
//! `ArcSwap`) → [`proxy`] (the Pingora service: the request stages parse, admit, plan, attempt,
//! render). A request is decoded by its client [`dialect`] into the canonical [`chat`] model,
//! translated by a vendor adapter in [`providers`], and carried by the [`transport`]; answers
//! come back as canonical events that the dialect encodes. [`admin`], [`observability`] and
//! [`accounting`] sit around them; [`server`] assembles it all, and [`app`] is the program
//! ([`Gateway::builder`] adds [`filters`] written in Rust).

// These docs are for the people who work on the gateway (`cargo doc --document-private-items`):
// a module's doc links to its private parts to say what each holds.
#![allow(rustdoc::private_intra_doc_links)]

pub mod accounting;
pub mod admin;
pub mod app;
pub mod auth;
pub mod cache;
pub mod calendar;
pub mod chat;
pub mod cli;
pub mod config;
pub mod control;
pub mod dialect;
pub mod error;
pub mod filters;
pub mod limits;
pub mod observability;
pub mod process;
pub mod providers;
pub mod proxy;
pub mod reload;
pub mod routing;
pub mod server;
pub mod store;
pub mod transport;

pub use app::{Gateway, GatewayBuilder};
