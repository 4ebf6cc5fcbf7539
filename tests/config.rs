//! Configuration layering: defaults < file < original env names < OPUSGATE_ env < flags.
// figment's Jail closures return figment::Error, which is large; that is its API.
#![allow(clippy::result_large_err)]

use std::net::IpAddr;
use std::path::Path;

use figment::Jail;
use opusgate::config::{Config, ConfigError, LogFormat, Overrides};

#[test]
fn repo_config_toml_lists_exactly_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let from_file: Config = toml_like(&text);
    assert_eq!(from_file, Config::default());
    // Every key of every section appears in the file (deny_unknown_fields
    // catches extra ones; this catches missing ones).
    let defaults = serde_json::to_value(Config::default()).unwrap();
    for (section, keys) in defaults.as_object().unwrap() {
        assert!(
            text.contains(&format!("[{section}]")),
            "config.toml lacks [{section}]"
        );
        for key in keys.as_object().unwrap().keys() {
            assert!(
                text.lines()
                    .any(|l| l.trim_start().starts_with(&format!("{key} "))),
                "config.toml lacks {section}.{key}"
            );
        }
    }
}

fn toml_like(text: &str) -> Config {
    use figment::providers::{Format, Toml};
    figment::Figment::from(Toml::string(text))
        .extract()
        .unwrap()
}

#[test]
fn layers_apply_in_order() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "c.toml",
            "[server]\nport = 6000\nhost = \"127.0.0.2\"\n[conversion]\nmax_queued = 3\nworkers = 5\n",
        )?;
        let load = |o: &Overrides| Config::load(Path::new("c.toml"), true, o).unwrap();
        let c = load(&Overrides::default());
        assert_eq!(c.server.port, 6000);
        assert_eq!(c.conversion.max_queued, 3);
        assert_eq!(c.limits.max_upload_bytes, 33_554_432);

        // The original service's names.
        jail.set_env("PORT", "7000");
        jail.set_env("MAX_UPLOAD_SIZE", "1000");
        jail.set_env("MAX_CONCURRENT_AUDIO_CONVERSIONS", "9");
        jail.set_env("AUDIO_CONVERTER_WORKERS", "4");
        let c = load(&Overrides::default());
        assert_eq!(c.server.port, 7000);
        assert_eq!(c.limits.max_upload_bytes, 1000);
        assert_eq!(c.conversion.max_concurrent, 9);
        assert_eq!(c.conversion.workers, 4);

        // OPUSGATE_<SECTION>__<KEY> wins over both.
        jail.set_env("OPUSGATE_SERVER__PORT", "8000");
        jail.set_env("OPUSGATE_CONVERSION__MAX_QUEUED", "8");
        jail.set_env("OPUSGATE_AUTH__API_KEYS", "k1, k2");
        jail.set_env("OPUSGATE_LOG__FORMAT", "json");
        jail.set_env("OPUSGATE_SERVER__HEADER_READ_TIMEOUT_SECONDS", "2.5");
        let c = load(&Overrides::default());
        assert_eq!(c.server.port, 8000);
        assert_eq!(c.server.header_read_timeout_seconds, 2.5);
        assert_eq!(
            c.header_read_timeout(),
            std::time::Duration::from_millis(2500)
        );
        assert_eq!(c.conversion.max_queued, 8);
        assert_eq!(c.auth.api_keys, vec!["k1".to_string(), "k2".to_string()]);
        assert_eq!(c.log.format, LogFormat::Json);

        // Flags win over everything.
        let c = load(&Overrides {
            port: Some(9000),
            host: Some(IpAddr::from([127, 0, 0, 3])),
            ..Overrides::default()
        });
        assert_eq!(c.server.port, 9000);
        assert_eq!(c.server.host, IpAddr::from([127, 0, 0, 3]));
        Ok(())
    });
}

#[test]
fn bad_values_name_the_setting() {
    Jail::expect_with(|jail| {
        jail.set_env("OPUSGATE_CONVERSION__DEFAULT_RATE", "44100");
        let err = Config::load(Path::new("none.toml"), false, &Overrides::default()).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Invalid {
                setting: "conversion.default_rate",
                ..
            }
        ));
        assert!(err.to_string().contains("16000"), "{err}");

        jail.set_env("OPUSGATE_CONVERSION__DEFAULT_RATE", "16000");
        jail.set_env("OPUSGATE_SERVER__PORT", "not-a-port");
        let err = Config::load(Path::new("none.toml"), false, &Overrides::default()).unwrap_err();
        // The message names the setting; "port" alone would match the bad
        // value itself.
        assert!(
            err.to_string().to_lowercase().contains("server.port"),
            "{err}"
        );

        jail.set_env("OPUSGATE_SERVER__PORT", "5000");
        jail.create_file("bad.toml", "[cache]\nmemory_bytez = 1\n")?;
        let err = Config::load(Path::new("bad.toml"), true, &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("memory_bytez"), "{err}");

        let err = Config::load(Path::new("missing.toml"), true, &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("missing.toml"), "{err}");
        Ok(())
    });
}

#[test]
fn parse_errors_name_the_variable_as_set_and_the_setting() {
    Jail::expect_with(|jail| {
        let load = || {
            Config::load(Path::new("none.toml"), false, &Overrides::default())
                .unwrap_err()
                .to_string()
        };
        jail.set_env("PORT", "abc");
        let err = load();
        assert_eq!(
            err,
            "configuration: PORT (server.port): invalid type: found string \"abc\", expected u16"
        );
        assert!(!err.contains("SERVER.PORT"), "{err}");
        jail.set_env("PORT", "5000");

        // Every original name, with the value it had to be reset to.
        for (var, setting, good) in [
            ("HOST", "server.host", "127.0.0.1"),
            ("MAX_UPLOAD_SIZE", "limits.max_upload_bytes", "1"),
            (
                "MAX_CONCURRENT_AUDIO_CONVERSIONS",
                "conversion.max_concurrent",
                "1",
            ),
            ("AUDIO_CONVERTER_WORKERS", "conversion.workers", "1"),
        ] {
            jail.set_env(var, "abc");
            let err = load();
            assert!(
                err.starts_with(&format!("configuration: {var} ({setting}): ")),
                "{err}"
            );
            assert!(!err.contains(&setting.to_ascii_uppercase()), "{err}");
            jail.set_env(var, good);
        }

        jail.set_env("OPUSGATE_SERVER__PORT", "abc");
        let err = load();
        assert!(
            err.starts_with("configuration: OPUSGATE_SERVER__PORT (server.port): "),
            "{err}"
        );
        assert!(!err.contains("SERVER.PORT"), "{err}");
        Ok(())
    });
}

#[test]
fn unknown_keys_are_refused_as_written() {
    Jail::expect_with(|jail| {
        // In a file: its TOML path and the file, as given.
        jail.create_dir("etc")?;
        jail.create_file("etc/opusgate.toml", "[server]\nport = 6000\nprot = 6001\n")?;
        let err = Config::load(Path::new("etc/opusgate.toml"), true, &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("configuration: server.prot in etc/opusgate.toml: unknown key; "),
            "{err}"
        );
        assert!(err.contains("header_read_timeout_seconds"), "{err}");
        assert!(!err.contains("default."), "{err}");
        assert!(!err.contains("``"), "{err}");

        // A whole unknown section at the top.
        jail.create_file("config.toml", "[sever]\nport = 6000\n")?;
        let err = Config::load(Path::new("config.toml"), true, &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("configuration: sever in config.toml: unknown key; "),
            "{err}"
        );
        assert!(!err.contains("default."), "{err}");
        assert!(!err.contains("``"), "{err}");

        // In the environment: the variable.
        jail.set_env("OPUSGATE_SERVER__PROT", "1");
        let err = Config::load(Path::new("none.toml"), false, &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("configuration: OPUSGATE_SERVER__PROT (server.prot): unknown key; "),
            "{err}"
        );
        assert!(!err.contains("SERVER.PROT"), "{err}");
        assert!(!err.contains("``"), "{err}");
        Ok(())
    });
}

#[test]
fn header_read_timeout_is_positive_seconds_fractions_allowed() {
    assert_eq!(Config::default().server.header_read_timeout_seconds, 10.0);
    Jail::expect_with(|jail| {
        let load = || Config::load(Path::new("none.toml"), false, &Overrides::default());
        jail.set_env("OPUSGATE_SERVER__HEADER_READ_TIMEOUT_SECONDS", "1");
        assert_eq!(load().unwrap().server.header_read_timeout_seconds, 1.0);
        for bad in ["0", "-1", "0.0", "86401"] {
            jail.set_env("OPUSGATE_SERVER__HEADER_READ_TIMEOUT_SECONDS", bad);
            let err = load().unwrap_err();
            assert!(
                matches!(
                    err,
                    ConfigError::Invalid {
                        setting: "server.header_read_timeout_seconds",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains("at most 86400"), "{err}");
        }
        jail.set_env("OPUSGATE_SERVER__HEADER_READ_TIMEOUT_SECONDS", "soon");
        // Named as OPUSGATE_SERVER__HEADER_READ_TIMEOUT_SECONDS (server.header_read_timeout_seconds).
        let err = load().unwrap_err();
        assert!(
            err.to_string()
                .to_ascii_lowercase()
                .contains("server.header_read_timeout_seconds"),
            "{err}"
        );
        Ok(())
    });
}

#[test]
fn open_server_refuses_non_loopback_without_keys() {
    let mut c = Config::default();
    let public = "0.0.0.0:5000".parse().unwrap();
    assert!(c.check_exposure(&public).is_err());
    assert!(c.check_exposure(&"127.0.0.1:5000".parse().unwrap()).is_ok());
    c.auth.allow_anonymous = true;
    assert!(c.check_exposure(&public).is_ok());
    c.auth.allow_anonymous = false;
    c.auth.api_keys = vec!["k".into()];
    assert!(c.check_exposure(&public).is_ok());
}

#[test]
fn the_old_model_name_sets_the_transcription_model_unless_the_new_one_is_given() {
    Jail::expect_with(|jail| {
        let load = || Config::load(Path::new("c.toml"), false, &Overrides::default()).unwrap();
        assert_eq!(load().upstream.transcription_model, "whisper-1");
        assert_eq!(load().upstream.chat_model, "gpt-4o-audio-preview");

        jail.set_env("OPUSGATE_UPSTREAM__MODEL", "old-env");
        let c = load();
        assert_eq!(c.upstream.transcription_model, "old-env");
        assert_eq!(c.upstream.model, None, "folded into transcription_model");
        assert_eq!(c.upstream.chat_model, "gpt-4o-audio-preview");

        // Both names given, in different layers: the new name wins.
        jail.create_file("c.toml", "[upstream]\nmodel = \"old-file\"\n")?;
        jail.set_env("OPUSGATE_UPSTREAM__TRANSCRIPTION_MODEL", "new-env");
        assert_eq!(load().upstream.transcription_model, "new-env");
        Ok(())
    });
}

#[test]
fn api_keys_are_text_as_written_whatever_they_look_like() {
    Jail::expect_with(|jail| {
        let load = || Config::load(Path::new("c.toml"), false, &Overrides::default());
        let keys = |c: Config| c.auth.api_keys;
        let strings = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();

        // config.toml: TOML strings, whatever they look like.
        jail.create_file(
            "c.toml",
            "[auth]\napi_keys = [\"12345\", \"true\", \"1e3\", \"0x10\", \"1.50\", \"007\"]\n",
        )?;
        assert_eq!(
            keys(load().unwrap()),
            strings(&["12345", "true", "1e3", "0x10", "1.50", "007"])
        );

        // The environment, which figment parses into numbers and booleans
        // (and 1.50 into 1.5, 007 into 7) before the keys are read: each is
        // the variable's text as set.
        for (set, expected) in [
            ("12345", &["12345"][..]),
            ("12345,true,1e3,0x10", &["12345", "true", "1e3", "0x10"]),
            (" 12345 , true ", &["12345", "true"]),
            ("true", &["true"]),
            ("false", &["false"]),
            ("1e3", &["1e3"]),
            ("0x10", &["0x10"]),
            ("1.50", &["1.50"]),
            ("1.0e3", &["1.0e3"]),
            ("007", &["007"]),
            ("+5", &["+5"]),
            ("-0", &["-0"]),
            ("-12", &["-12"]),
            ("99999999999999999999999", &["99999999999999999999999"]),
            ("[007, true, abc, \"x y\"]", &["007", "true", "abc", "x y"]),
            ("[k1,k2]", &["k1", "k2"]),
            ("\"1.50\"", &["1.50"]),
        ] {
            jail.set_env("OPUSGATE_AUTH__API_KEYS", set);
            assert_eq!(keys(load().unwrap()), strings(expected), "{set:?}");
        }
        // Structures figment reads are no keys (quoted, they are).
        for set in ["{a=1}", "[k1, [2]]"] {
            jail.set_env("OPUSGATE_AUTH__API_KEYS", set);
            let err = load().unwrap_err().to_string();
            assert!(
                err.starts_with(
                    "configuration: OPUSGATE_AUTH__API_KEYS (auth.api_keys): \
                     an API key must be a string, found "
                ),
                "{set}: {err}"
            );
        }
        jail.set_env("OPUSGATE_AUTH__API_KEYS", "\"{a=1}\"");
        assert_eq!(keys(load().unwrap()), strings(&["{a=1}"]));

        // Any case of the name, as figment takes it.
        jail.clear_env();
        jail.set_env("opusgate_auth__api_keys", "0042");
        assert_eq!(keys(load().unwrap()), strings(&["0042"]));
        jail.clear_env();

        // A bare number in the file has no text to keep (TOML reads `0x10`
        // and `1_000` as numbers too): refused, naming the setting.
        jail.create_file("c.toml", "[auth]\napi_keys = [\"ok\", 1_000]\n")?;
        let err = load().unwrap_err().to_string();
        assert_eq!(
            err,
            "configuration: auth.api_keys in c.toml: an API key must be a string, \
             found signed int `1000`: write it in quotes",
        );
        jail.create_file("c.toml", "[auth]\napi_keys = 12345\n")?;
        let err = load().unwrap_err().to_string();
        assert!(
            err.contains("auth.api_keys in c.toml: an API key must be a string"),
            "{err}"
        );
        // The environment wins over the file, as for every setting.
        jail.set_env("OPUSGATE_AUTH__API_KEYS", "12345");
        assert_eq!(keys(load().unwrap()), strings(&["12345"]));

        // upstream.target_languages, the other list, as before.
        jail.create_file(
            "c.toml",
            "[upstream]\ntarget_languages = [\"英文\", \" 日文 \"]\n",
        )?;
        assert_eq!(
            load().unwrap().upstream.target_languages,
            strings(&["英文", "日文"])
        );
        jail.set_env("OPUSGATE_UPSTREAM__TARGET_LANGUAGES", "法文, 德文,");
        assert_eq!(
            load().unwrap().upstream.target_languages,
            strings(&["法文", "德文"])
        );
        jail.set_env("OPUSGATE_UPSTREAM__TARGET_LANGUAGES", "42");
        let err = load().unwrap_err().to_string();
        assert!(
            err.contains(
                "OPUSGATE_UPSTREAM__TARGET_LANGUAGES (upstream.target_languages): \
                 expected a string or a list of strings, found unsigned int `42`"
            ),
            "{err}"
        );
        Ok(())
    });
}

#[test]
fn cors_settings_layer_and_are_checked_against_the_keys() {
    Jail::expect_with(|jail| {
        let load = || Config::load(Path::new("c.toml"), true, &Overrides::default());
        let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        jail.create_file(
            "c.toml",
            "[auth]\napi_keys = [\"k\"]\n[cors]\nallowed_origins = [\"https://a.example\"]\nmax_age_seconds = 60\n",
        )?;
        let c = load().unwrap();
        assert_eq!(c.cors.allowed_origins, strings(&["https://a.example"]));
        assert_eq!(c.cors.max_age_seconds, 60);

        // The environment wins, as a comma-separated list.
        jail.set_env(
            "OPUSGATE_CORS__ALLOWED_ORIGINS",
            "https://b.example, http://127.0.0.1:8080",
        );
        let c = load().unwrap();
        assert_eq!(
            c.cors.allowed_origins,
            strings(&["https://b.example", "http://127.0.0.1:8080"])
        );
        assert_eq!(c.cors.max_age_seconds, 60, "still the file's");

        // `*` with keys: refused, naming both settings.
        jail.set_env("OPUSGATE_CORS__ALLOWED_ORIGINS", "*");
        let err = load().unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    setting: "cors.allowed_origins",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("auth.api_keys"), "{err}");
        // Without keys, `*` is allowed.
        jail.create_file("c.toml", "[cors]\nallowed_origins = [\"*\"]\n")?;
        jail.set_env("OPUSGATE_CORS__ALLOWED_ORIGINS", "*");
        assert_eq!(load().unwrap().cors.allowed_origins, strings(&["*"]));

        // Not an origin: refused, naming the entry.
        jail.set_env("OPUSGATE_CORS__ALLOWED_ORIGINS", "https://a.example/app");
        let err = load().unwrap_err().to_string();
        assert!(
            err.contains("cors.allowed_origins = https://a.example/app"),
            "{err}"
        );
        jail.set_env("OPUSGATE_CORS__ALLOWED_ORIGINS", "");
        jail.set_env("OPUSGATE_CORS__MAX_AGE_SECONDS", "-1");
        let err = load().unwrap_err().to_string();
        assert!(err.contains("OPUSGATE_CORS__MAX_AGE_SECONDS"), "{err}");
        Ok(())
    });
}

#[test]
fn upstream_convert_is_all_opus_or_none() {
    use opusgate::config::UpstreamConvert;
    Jail::expect_with(|jail| {
        let load = || Config::load(Path::new("c.toml"), false, &Overrides::default());
        assert_eq!(load().unwrap().upstream.convert, UpstreamConvert::All);
        jail.create_file("c.toml", "[upstream]\nconvert = \"opus\"\n")?;
        assert_eq!(load().unwrap().upstream.convert, UpstreamConvert::Opus);
        jail.set_env("OPUSGATE_UPSTREAM__CONVERT", "none");
        assert_eq!(load().unwrap().upstream.convert, UpstreamConvert::None);
        jail.set_env("OPUSGATE_UPSTREAM__CONVERT", "wav");
        let err = load().unwrap_err().to_string();
        assert!(
            err.contains("OPUSGATE_UPSTREAM__CONVERT (upstream.convert)"),
            "{err}"
        );
        assert!(err.contains("all, opus, none"), "{err}");
        Ok(())
    });
}
