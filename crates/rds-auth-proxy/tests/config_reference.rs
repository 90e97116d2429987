//! docs/configuration.md against the client binary: every key `rds-auth-proxy` accepts has a
//! row in the client table, every row names a key it accepts, and the env var and default
//! columns agree. The binary itself is the source of truth: `rds-auth-proxy config` prints the
//! effective configuration, and a file that sets a key it does not know fails to load.

#![allow(clippy::unwrap_used, reason = "a test's helpers fail the test the same way its body does")]

#[path = "support/config_keys.rs"]
mod config_keys;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use config_keys::Spec;

fn scratch() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("config_reference_client");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `rds-auth-proxy --config FILE config` with nothing from this environment leaking in.
fn print_config(toml: &str) -> Output {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = scratch();
    let path = dir.join(format!("config-{}.toml", N.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&path, toml).unwrap();
    Command::new(env!("CARGO_BIN_EXE_rds-auth-proxy"))
        .env_clear()
        .env("HOME", &dir)
        .env("NO_COLOR", "1")
        .arg("--config")
        .arg(&path)
        .arg("config")
        .output()
        .unwrap()
}

#[test]
fn every_client_key_is_documented_and_every_documented_key_exists() {
    let quoted = |s: &str| format!("{s:?}");
    let spec = Spec {
        binary: "rds-auth-proxy",
        section: "Client proxy",
        env_prefix: "RDS_AUTH_PROXY_",
        fixture: vec![
            ("accounts.<name>.profile", quoted("dev")),
            ("resolve.<name>", r#"["10.0.0.5"]"#.to_owned()),
            ("upstreams.<name>.address", quoted("rds-proxy.example.com:5432")),
            ("upstreams.<name>.ca", quoted("/nonexistent/ca.crt")),
            (
                "upstreams.<name>.tunnel",
                r#"{ kind = "kubectl", resource = "svc/rds-auth-proxy" }"#.to_owned(),
            ),
            ("targets.<name>.endpoint", quoted("orders.example.com:5432")),
        ],
        bogus_key: "proxy.no_such_key",
    };
    let doc = std::fs::read_to_string(config_keys::doc_path(env!("CARGO_MANIFEST_DIR"))).unwrap();
    config_keys::check(&spec, &doc, &print_config);
}
