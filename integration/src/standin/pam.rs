//! The `verify` subcommand, as `pam_exec` runs it for each login on the PAM port.
//!
//! `pam_exec expose_authtok` writes the password to standard input: at most the first 511
//! bytes (its buffer is `PAM_MAX_RESP_SIZE`), usually followed by a NUL. The login user is in
//! `PAM_USER`. The exit status is the verdict: 0 accepts, anything else refuses. Longer tokens
//! arrive cut short and are refused, as on RDS, which is why the front exists.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::standin::{Accepted, Config, Refusal, verify};

/// The most `pam_exec` ever passes on; anything past it is not read.
pub const MAX_STDIN: usize = 64 * 1024;

/// The password `pam_exec` wrote: everything before the first NUL.
pub fn password_from_stdin(stdin: &[u8]) -> &[u8] {
    let end = stdin.iter().position(|&b| b == 0).unwrap_or(stdin.len());
    &stdin[..end]
}

/// Checks one PAM login and logs the verdict. `user` is `PAM_USER`, `stdin` what `pam_exec`
/// wrote.
pub fn check_login(
    config: &Config,
    user: Option<&str>,
    stdin: &[u8],
    now: SystemTime,
) -> Result<Accepted, Refusal> {
    let user = user.unwrap_or_default();
    let password = password_from_stdin(stdin);
    let verdict = match std::str::from_utf8(password) {
        Ok(token) => verify(&config.policy(config.endpoint.pam_port), user, token, now),
        Err(_) => Err(Refusal::NotUtf8),
    };
    log_verdict(&config.log_path, "pam", user, password.len(), &verdict);
    verdict
}

/// Appends one line per login attempt to the log: when, which listener, the user, the length
/// of what was presented, and the verdict with its reason. Never the token itself. A log that
/// cannot be written does not change the verdict.
pub fn log_verdict(
    path: &Path,
    listener: &str,
    user: &str,
    presented_len: usize,
    verdict: &Result<Accepted, Refusal>,
) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
    let outcome = match verdict {
        Ok(accepted) => {
            format!("accept key={} session_token={}", accepted.access_key_id, accepted.session_token)
        }
        Err(refusal) => format!("refuse: {refusal}"),
    };
    let line = format!("standin {now} {listener} user={user:?} len={presented_len} {outcome}\n");
    log_line(path, &line);
}

/// Appends a line that is not a verdict (the front's connection errors, for example).
pub fn log_line(path: &Path, line: &str) {
    let written = OpenOptions::new().create(true).append(true).open(path).and_then(|mut file| {
        let mut line = line.to_owned();
        if !line.ends_with('\n') {
            line.push('\n');
        }
        file.write_all(line.as_bytes())
    });
    // Nobody reads a failure to log: the verdict still stands, and the exit status carries it.
    drop(written);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_stops_at_the_nul() {
        assert_eq!(password_from_stdin(b"token\0garbage"), b"token");
        assert_eq!(password_from_stdin(b"token"), b"token");
        assert_eq!(password_from_stdin(b"\0"), b"");
        assert_eq!(password_from_stdin(b""), b"");
    }
}
