//! `rds-auth-proxy config import` as a person runs it: TOML on stdout or into `--output`,
//! which it does not overwrite without `--force`, notes on stderr, exit 64 with the YAML key
//! pointed at for input it cannot read, and a result that `rds-auth-proxy config` loads.

#![allow(clippy::unwrap_used, reason = "a test's helpers fail the test the same way its body does")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CLIENT: &str = env!("CARGO_BIN_EXE_rds-auth-proxy");

const OLD: &str = r#"
proxy:
  listen_addr: "0.0.0.0:8001"
upstream_proxies:
  default:
    host: rds-proxy.internal.example.com:8000
    ssl:
      mode: verify-full
      root_certificate: /etc/rds-auth-proxy/root-ca.pem
      client_certificate: /etc/rds-auth-proxy/alice.pem
      client_private_key: /etc/rds-auth-proxy/alice-key.pem
targets:
  analytics:
    host: analytics.internal.example.com:5432
    database: warehouse
    local_port: 7001
"#;

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("config_import").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn client(dir: &Path, args: &[&str]) -> Output {
    Command::new(CLIENT)
        .env_clear()
        .env("HOME", dir)
        .env("NO_COLOR", "1")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn converts_to_stdout_and_the_result_loads() {
    let dir = scratch("stdout");
    std::fs::write(dir.join("old.yaml"), OLD).unwrap();
    let import = client(&dir, &["config", "import", "old.yaml"]);
    assert!(import.status.success(), "{}", text(&import.stderr));
    let toml = text(&import.stdout);
    assert!(
        toml.contains("[upstreams.default]\naddress = \"rds-proxy.internal.example.com:8000\"\n"),
        "{toml}"
    );
    let notes = text(&import.stderr);
    assert!(
        notes.contains("proxy.listen_addr (line 3): the predecessor listened on every interface"),
        "{notes}"
    );

    std::fs::write(dir.join("config.toml"), &toml).unwrap();
    let printed = client(&dir, &["--config", "config.toml", "config"]);
    assert!(printed.status.success(), "{}", text(&printed.stderr));
    let printed: serde_json::Value = serde_json::from_slice(&printed.stdout).unwrap();
    assert_eq!(printed["upstreams"]["default"]["cert"], "/etc/rds-auth-proxy/alice.pem");
    assert_eq!(printed["targets"]["analytics"]["local_port"], 7001);
    assert_eq!(printed["targets"]["analytics"]["auth"], "passthrough");
    assert_eq!(printed["proxy"]["listen_address"], "127.0.0.1");
}

#[test]
fn output_is_not_overwritten_without_force() {
    let dir = scratch("output");
    std::fs::write(dir.join("old.yaml"), OLD).unwrap();
    let first = client(&dir, &["config", "import", "old.yaml", "--output", "config.toml"]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(first.stdout.is_empty());
    assert!(text(&first.stderr).starts_with("wrote config.toml, converted from old.yaml"));
    let written = std::fs::read_to_string(dir.join("config.toml")).unwrap();

    std::fs::write(dir.join("config.toml"), "# mine\n").unwrap();
    let again = client(&dir, &["config", "import", "old.yaml", "--output", "config.toml"]);
    assert_eq!(again.status.code(), Some(64), "{}", text(&again.stderr));
    assert!(text(&again.stderr).contains("refusing to overwrite config.toml"), "{}", text(&again.stderr));
    assert_eq!(std::fs::read_to_string(dir.join("config.toml")).unwrap(), "# mine\n");

    let forced = client(&dir, &["config", "import", "old.yaml", "--output", "config.toml", "--force"]);
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    assert_eq!(std::fs::read_to_string(dir.join("config.toml")).unwrap(), written);
}

#[test]
fn bad_input_exits_64_and_names_the_key() {
    let dir = scratch("bad");
    std::fs::write(dir.join("old.yaml"), OLD.replace("local_port: 7001", "local_port: seven")).unwrap();
    let import = client(&dir, &["config", "import", "old.yaml"]);
    assert_eq!(import.status.code(), Some(64));
    assert!(import.stdout.is_empty());
    let stderr = text(&import.stderr);
    assert!(stderr.contains("`targets.analytics.local_port` is not a port number"), "{stderr}");
    assert!(stderr.contains("seven"), "the source is shown: {stderr}");

    let missing = client(&dir, &["config", "import", "absent.yaml"]);
    assert_eq!(missing.status.code(), Some(64));
    assert!(text(&missing.stderr).contains("cannot read absent.yaml"));
}
