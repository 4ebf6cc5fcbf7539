//! opusgate: a content-addressed caching conversion proxy from Ogg Opus to WAV.
//!
//! Follow the names from `main.rs` down: [`cli`] parses the command line,
//! [`server::run`] serves HTTP with the routes in [`http`], which call the
//! pipeline in [`service`]; [`codec`] does the conversion itself and the
//! `opusgate_cache` crate stores its results.

pub mod cli;
pub mod codec;
pub mod config;
pub mod http;
pub mod loadtest;
pub mod server;
pub mod service;
pub mod stats;
pub mod system;
pub mod upstream;
