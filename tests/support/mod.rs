//! The one test harness of the root package, shared by every integration
//! test binary (`mod support;`) and by the benches
//! (`#[path = "../tests/support/mod.rs"] mod support;`). Each helper is
//! defined once, in the module that owns its subject:
//!
//! - [`clips`]: inputs and expected outputs: sample clips, fresh
//!   conversions, WAV reading and writing, synthetic music;
//! - [`tools`]: the reference tools opusenc, opusdec and ffmpeg;
//! - [`formats`]: WAV, FLAC, MP3, Vorbis and AAC fixtures made by sox and
//!   ffmpeg, and the sox and ffmpeg references they are compared with;
//! - [`ogg`]: an Ogg page editor and muxer (the CRC is the codec's own);
//! - [`webm`]: an EBML reader and WebM muxer for fixtures (browser layout,
//!   BlockGroups, lacing), and ffmpeg's WebM encoding and decoding;
//! - [`hostile`]: the broken and malicious inputs the codec and HTTP tests
//!   both send;
//! - [`rng`]: a deterministic xorshift generator;
//! - [`http`]: the HTTP API of a test server, of either kind;
//! - [`server`]: a server in process, on 127.0.0.1:0;
//! - [`process`]: the real `opusgate` binary as a child process;
//! - [`tmpfs`]: small tmpfs mounts for the tests that fill a filesystem;
//! - [`backend`]: a stand-in OpenAI-protocol backend for proxy mode;
//! - [`browser`]: headless Chromium through chromedriver (fantoccini), its
//!   console and network logs, screenshots;
//! - [`background`]: a server on its own runtime and thread in the bench
//!   process (opusgate, or a bare axum handler: the ceiling);
//! - [`proxy`]: a server in proxy mode against it, and the forms sent;
//! - [`redis`]: real `redis-server` processes and a Redis Cluster for the
//!   fleet tests, and a small RESP client;
//! - [`fleet`]: fleets of `opusgate` processes on a shared tier in Redis:
//!   their settings, stats, conversions and stored values, and loads.
// Each binary uses a different part of the harness.
#![allow(dead_code)]

pub mod backend;
pub mod background;
pub mod browser;
pub mod clips;
pub mod fleet;
pub mod formats;
pub mod hostile;
pub mod http;
pub mod ogg;
pub mod process;
pub mod proxy;
pub mod redis;
pub mod rng;
pub mod server;
pub mod tmpfs;
pub mod tools;
pub mod webm;
