//! docs/configuration.md against the server binary: every key `rds-auth-proxy-server` accepts
//! has a row in the server table, every row names a key it accepts, and the env var and
//! default columns agree. `check-config` prints the effective configuration after validating
//! it, so the fixture carries real certificates from `gen-certs`.

#![allow(clippy::unwrap_used, reason = "a test's helpers fail the test the same way its body does")]

#[path = "../../rds-auth-proxy/tests/support/config_keys.rs"]
mod config_keys;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use config_keys::Spec;

const SERVER: &str = env!("CARGO_BIN_EXE_rds-auth-proxy-server");

fn scratch() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("config_reference_server");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `rds-auth-proxy-server --config FILE check-config` with nothing from this environment
/// leaking in.
fn check_config(toml: &str) -> Output {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = scratch();
    let path = dir.join(format!("server-{}.toml", N.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&path, toml).unwrap();
    Command::new(SERVER)
        .env_clear()
        .env("HOME", &dir)
        .env("NO_COLOR", "1")
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .output()
        .unwrap()
}

fn gen_certs(dir: &Path) {
    let output = Command::new(SERVER)
        .env_clear()
        .args(["gen-certs", "--force", "--user", "alice", "--out"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "gen-certs failed:\n{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn every_server_key_is_documented_and_every_documented_key_exists() {
    let certs = scratch().join("certs");
    gen_certs(&certs);
    let path = |file: &str| format!("{:?}", certs.join(file).display().to_string());
    let spec = Spec {
        binary: "rds-auth-proxy-server",
        section: "Server proxy",
        env_prefix: "RDS_AUTH_SERVER_",
        fixture: vec![
            ("listen.cert", path("server.crt")),
            ("listen.key", path("server.key")),
            ("listen.client_ca", path("ca.crt")),
            ("upstream.ca_file", path("ca.crt")),
            ("upstream.resolve.<name>", r#"["10.0.0.5"]"#.to_owned()),
            ("targets[].endpoint", r#""orders.example.com:5432""#.to_owned()),
            ("discovery.accounts.<name>.regions", r#"["eu-west-1"]"#.to_owned()),
        ],
        bogus_key: "listen.no_such_key",
    };
    let doc = std::fs::read_to_string(config_keys::doc_path(env!("CARGO_MANIFEST_DIR"))).unwrap();
    config_keys::check(&spec, &doc, &check_config);
}
