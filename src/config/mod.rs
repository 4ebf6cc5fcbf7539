//! Configuration: every setting, its default, and how the layers combine.
//!
//! Layers, later wins: built-in defaults < `config.toml` (or `--config PATH`)
//! < the original service's environment names (`HOST`, `PORT`,
//! `MAX_UPLOAD_SIZE`, `MAX_CONCURRENT_AUDIO_CONVERSIONS`,
//! `AUDIO_CONVERTER_WORKERS`) < `OPUSGATE_<SECTION>__<KEY>` < command-line
//! flags. The repo's `config.toml` lists every setting with its default.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::{Figment, Provider};
use serde::{Deserialize, Serialize};

use crate::codec::SUPPORTED_RATES;

mod console;
mod cors;
mod error;
mod limits;
mod lists;
mod shared;
mod upstream_convert;
pub use console::ConsoleConfig;
pub use cors::{AllowedOrigins, CorsConfig};
pub use error::ConfigError;
use error::{EnvLayers, ENV_PREFIX, LEGACY_ENV};
pub use limits::LimitsConfig;
pub use shared::SharedConfig;
pub use upstream_convert::UpstreamConvert;

/// Everything opusgate can be told, by section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where to listen and how to stop.
    pub server: ServerConfig,
    /// Bounds on what one request may cost.
    pub limits: LimitsConfig,
    /// Conversion parameters and the worker pool.
    pub conversion: ConversionConfig,
    /// The two-tier result store.
    pub cache: CacheConfig,
    /// API keys.
    pub auth: AuthConfig,
    /// Log output.
    pub log: LogConfig,
    /// The speech backend of proxy mode.
    pub upstream: UpstreamConfig,
    /// The shared tier of a fleet (Redis); off by default.
    pub shared: SharedConfig,
    /// Which web pages may call opusgate from a browser; off by default.
    pub cors: CorsConfig,
    /// The built-in web console and the stats history.
    pub console: ConsoleConfig,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to bind.
    pub host: IpAddr,
    /// Port to bind.
    pub port: u16,
    /// Seconds in-flight requests get to finish after SIGINT/SIGTERM.
    pub shutdown_grace_seconds: u64,
    /// Seconds a client may take to send its request body; 408
    /// `request_timeout` beyond (the head has its own limit below).
    pub request_read_timeout_seconds: u64,
    /// Seconds a client may take to send a request head (request line and
    /// headers), fractions allowed; beyond, the connection is closed. This is
    /// hyper's HTTP/1 `header_read_timeout`: one deadline for the whole head,
    /// not reset by each byte that arrives. hyper 1.12 starts it as soon as
    /// the connection is ready to read a head, before any byte of it: at
    /// accept for a new connection, and as soon as a keep-alive connection
    /// goes idle after an exchange, so it also bounds how long an idle
    /// keep-alive connection is kept. On expiry hyper closes the connection
    /// without writing any answer (no 408), and the server logs it at info.
    pub header_read_timeout_seconds: f64,
    /// Seconds an answer may go without progress (the socket accepts no
    /// byte), fractions allowed; beyond, the connection is closed and its
    /// buffers freed, logged at info. Each byte taken restarts it, so a slow
    /// reader is not cut off; it runs only while a write is pending, so an
    /// idle keep-alive connection is left to the header read timeout.
    pub write_timeout_seconds: f64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: IpAddr::from([127, 0, 0, 1]),
            port: 5000,
            shutdown_grace_seconds: 30,
            request_read_timeout_seconds: 30,
            header_read_timeout_seconds: 10.0,
            write_timeout_seconds: 60.0,
        }
    }
}

/// `[conversion]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConversionConfig {
    /// Output sample rate when the request names none.
    pub default_rate: u32,
    /// Output channels when the request names none.
    pub default_channels: u8,
    /// Conversion threads; 0 means one per core.
    pub workers: usize,
    /// Conversions running at once; 0 means as many as workers.
    pub max_concurrent: usize,
    /// Conversions waiting for a permit before new ones get 503.
    pub max_queued: usize,
    /// Decode the intact prefix of a truncated stream instead of refusing it.
    pub lenient: bool,
}

impl Default for ConversionConfig {
    fn default() -> Self {
        ConversionConfig {
            default_rate: 16_000,
            default_channels: 1,
            workers: 0,
            max_concurrent: 0,
            max_queued: 256,
            lenient: false,
        }
    }
}

impl ConversionConfig {
    /// The worker count with 0 resolved to the number of cores.
    pub fn effective_workers(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }

    /// The permit count with 0 resolved to the worker count.
    pub fn effective_max_concurrent(&self) -> usize {
        if self.max_concurrent > 0 {
            self.max_concurrent
        } else {
            self.effective_workers()
        }
    }
}

/// `[cache]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Directory of the on-disk tier (created if missing).
    pub dir: PathBuf,
    /// Capacity of the in-memory tier, in bytes.
    pub memory_bytes: u64,
    /// Capacity of the on-disk tier, in bytes of stored values.
    pub disk_bytes: u64,
}

impl CacheConfig {
    /// The audio store's directory: `<dir>/audio`.
    pub fn audio_dir(&self) -> PathBuf {
        self.dir.join("audio")
    }

    /// Proxy mode's answer store's directory: `<dir>/upstream`.
    pub fn upstream_dir(&self) -> PathBuf {
        self.dir.join("upstream")
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            dir: PathBuf::from("data"),
            memory_bytes: 268_435_456,
            disk_bytes: 4_294_967_296,
        }
    }
}

/// `[auth]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Accepted API keys; empty means no key is asked for. Each is text
    /// as written, whatever it looks like (`12345`, `true`): see [`api_keys`].
    #[serde(deserialize_with = "lists::api_keys")]
    pub api_keys: Vec<String>,
    /// Allow running without keys on a non-loopback address.
    pub allow_anonymous: bool,
}

/// `[upstream]`: the OpenAI-compatible speech backend of proxy mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URL ending in `/v1`; empty means proxy mode is off (503 `upstream_not_configured`).
    pub url: String,
    /// Sent to the backend as `Authorization: Bearer`; clients never see it.
    pub api_key: String,
    /// Model of `/v1/audio/transcriptions` and `/v1/audio/translations`
    /// when the client names none.
    pub transcription_model: String,
    /// Model of `translate_audio` (chat completions with audio input).
    pub chat_model: String,
    /// The old name of `transcription_model` (`upstream.model`,
    /// `OPUSGATE_UPSTREAM__MODEL`), still accepted: [`Config::load`] moves
    /// it into `transcription_model` unless that is given too (the new name
    /// wins). Never written out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Deadline of one backend call, in seconds.
    pub timeout_seconds: u64,
    /// Backend calls in flight at once.
    pub max_concurrent: usize,
    /// Retries of a call that could not connect, with exponential backoff.
    pub retries: u32,
    /// Store deterministic successful answers and answer repeats from the store.
    pub cache_responses: bool,
    /// In-memory capacity of the answer store (under `cache.dir`/upstream), bytes.
    pub cache_memory_bytes: u64,
    /// On-disk capacity of the answer store, bytes.
    pub cache_disk_bytes: u64,
    /// `translate_audio`'s target languages when the request names none.
    #[serde(deserialize_with = "lists::list_or_comma_separated")]
    pub target_languages: Vec<String>,
    /// `translate_audio`'s system message; `{languages}` becomes the requested
    /// languages, `{format}` the line format asked for.
    pub system_prompt: String,
    /// Which uploads `/v1/audio/*` converts to 16 kHz mono WAV before
    /// forwarding: `all` (default), `opus` or `none`.
    pub convert: UpstreamConvert,
}

/// The original service's instruction, with its line format.
pub const DEFAULT_SYSTEM_PROMPT: &str = "你是一个专业的语音转写与翻译助手。请先准确转写用户音频的原文，然后翻译成以下语言：{languages}。\n只输出以下格式的内容，每项一行，不要输出任何其他内容：\n{format}";

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            url: String::new(),
            api_key: String::new(),
            transcription_model: "whisper-1".into(),
            chat_model: "gpt-4o-audio-preview".into(),
            model: None,
            timeout_seconds: 60,
            max_concurrent: 32,
            retries: 2,
            cache_responses: true,
            cache_memory_bytes: 33_554_432,
            cache_disk_bytes: 268_435_456,
            target_languages: vec!["英文".into(), "日文".into()],
            system_prompt: DEFAULT_SYSTEM_PROMPT.into(),
            convert: UpstreamConvert::All,
        }
    }
}

impl UpstreamConfig {
    /// The transcription model in force: `model` (the old name) when given
    /// and not empty, else `transcription_model`.
    pub fn effective_transcription_model(&self) -> &str {
        self.model
            .as_deref()
            .filter(|m| !m.trim().is_empty())
            .unwrap_or(&self.transcription_model)
    }
}

/// `[log]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Settings given on the command line of `opusgate serve`; the last layer.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--host`
    pub host: Option<IpAddr>,
    /// `--port`
    pub port: Option<u16>,
    /// `--cache-dir`
    pub cache_dir: Option<PathBuf>,
    /// `--log-format`
    pub log_format: Option<LogFormat>,
}

impl Config {
    /// Loads defaults < `file` (if it exists, or must exist when `required`)
    /// < environment < `overrides`, then validates.
    pub fn load(file: &Path, required: bool, overrides: &Overrides) -> Result<Config, ConfigError> {
        if required && !file.exists() {
            return Err(ConfigError::Invalid {
                setting: "--config",
                value: file.display().to_string(),
                why: "no such file".into(),
            });
        }
        let legacy = Env::raw()
            .filter_map(|key| {
                LEGACY_ENV
                    .iter()
                    .find(|(name, _)| key.as_str().eq_ignore_ascii_case(name))
                    .map(|(_, setting)| (*setting).into())
            })
            .lowercase(false);
        let prefixed = Env::prefixed(ENV_PREFIX).split("__");
        let layers = EnvLayers {
            legacy: legacy.metadata(),
            prefixed: prefixed.metadata(),
        };
        let defaults = Serialized::defaults(Config::default());
        let defaults_name = defaults.metadata().name;
        let figment = Figment::from(defaults)
            .merge(Toml::file(file))
            .merge(legacy)
            .merge(prefixed);
        let mut config: Config = figment
            .extract()
            .map_err(|e| ConfigError::parse(e, &layers))?;
        // `upstream.model`, the old name, sets transcription_model unless
        // that is given itself (in any layer): the new name wins.
        let old_model = config
            .upstream
            .model
            .take()
            .filter(|m| !m.trim().is_empty());
        let new_name_given = figment
            .find_metadata("upstream.transcription_model")
            .is_some_and(|m| m.name != defaults_name);
        if let (Some(model), false) = (old_model, new_name_given) {
            config.upstream.transcription_model = model;
        }
        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }

    /// Applies command-line flags.
    pub fn apply(&mut self, o: &Overrides) {
        if let Some(host) = o.host {
            self.server.host = host;
        }
        if let Some(port) = o.port {
            self.server.port = port;
        }
        if let Some(dir) = &o.cache_dir {
            self.cache.dir = dir.clone();
        }
        if let Some(format) = o.log_format {
            self.log.format = format;
        }
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting, value: String, why: String| {
            Err(ConfigError::Invalid {
                setting,
                value,
                why,
            })
        };
        let c = &self.conversion;
        if !SUPPORTED_RATES.contains(&c.default_rate) {
            return invalid(
                "conversion.default_rate",
                c.default_rate.to_string(),
                format!("must be one of {SUPPORTED_RATES:?}"),
            );
        }
        if !(1..=2).contains(&c.default_channels) {
            return invalid(
                "conversion.default_channels",
                c.default_channels.to_string(),
                "must be 1 or 2".into(),
            );
        }
        self.limits.validate()?;
        if self.cache.memory_bytes == 0 {
            return invalid("cache.memory_bytes", "0".into(), "must be positive".into());
        }
        let u = &self.upstream;
        let scheme_ok = u.url.starts_with("http://") || u.url.starts_with("https://");
        if !u.url.is_empty() && !scheme_ok {
            return invalid(
                "upstream.url",
                u.url.clone(),
                "must start with http:// or https://".into(),
            );
        }
        if u.timeout_seconds == 0 || u.max_concurrent == 0 {
            return invalid(
                "upstream.timeout_seconds / upstream.max_concurrent",
                format!("{} / {}", u.timeout_seconds, u.max_concurrent),
                "must be positive".into(),
            );
        }
        if self.server.request_read_timeout_seconds == 0 {
            return invalid(
                "server.request_read_timeout_seconds",
                "0".into(),
                "must be positive".into(),
            );
        }
        if let Some((setting, value, why)) = self.shared.problem() {
            return invalid(setting, value, why);
        }
        let api_keys = !self.auth.api_keys.is_empty();
        if let Some((setting, value, why)) = self.cors.problem(api_keys) {
            return invalid(setting, value, why);
        }
        if let Some((setting, value, why)) = self.console.problem() {
            return invalid(setting, value, why);
        }
        let header_timeout = self.server.header_read_timeout_seconds;
        if !(header_timeout.is_finite() && header_timeout > 0.0 && header_timeout <= 86_400.0) {
            return invalid(
                "server.header_read_timeout_seconds",
                header_timeout.to_string(),
                "must be more than 0 and at most 86400".into(),
            );
        }
        let write_timeout = self.server.write_timeout_seconds;
        if !(write_timeout.is_finite() && write_timeout > 0.0 && write_timeout <= 86_400.0) {
            return invalid(
                "server.write_timeout_seconds",
                write_timeout.to_string(),
                "must be more than 0 and at most 86400".into(),
            );
        }
        Ok(())
    }

    /// The socket address to bind.
    pub fn bind_addr(&self) -> SocketAddr {
        SocketAddr::new(self.server.host, self.server.port)
    }

    /// Refuses an open server on a non-loopback address unless allowed.
    pub fn check_exposure(&self, addr: &SocketAddr) -> Result<(), ConfigError> {
        if self.auth.api_keys.is_empty() && !addr.ip().is_loopback() && !self.auth.allow_anonymous {
            return Err(ConfigError::Invalid {
                setting: "auth.api_keys",
                value: "[]".into(),
                why: format!(
                    "no API keys are configured and {addr} is not a loopback address: \
                     set auth.api_keys (OPUSGATE_AUTH__API_KEYS) or auth.allow_anonymous = true"
                ),
            });
        }
        Ok(())
    }

    /// The conversion deadline.
    pub fn conversion_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.limits.conversion_timeout_seconds)
    }

    /// The deadline for a request head (`server.header_read_timeout_seconds`).
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.server.header_read_timeout_seconds)
    }
}
