//! opusgate: a content-addressed caching conversion proxy from Ogg Opus to WAV.
//!
//! Follow the names from `main.rs` down: [`cli`] parses the command line,
//! [`server::run`] serves HTTP with the routes in [`http`], which call the
//! pipeline in [`service`]; [`codec`] does the conversion itself and the
//! `opusgate_cache` crate stores its results.

//!
//! Everything but [`codec`] needs the default feature `server`; without it
//! the library is the converter alone (the fuzz targets build it so).

pub mod codec;

#[cfg(feature = "server")]
pub mod cli;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod console;
#[cfg(feature = "server")]
pub mod http;
#[cfg(feature = "server")]
pub mod loadtest;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod service;
#[cfg(feature = "server")]
pub mod stats;
#[cfg(feature = "server")]
pub mod system;
#[cfg(feature = "server")]
pub mod upstream;
