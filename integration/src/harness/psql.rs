//! The real `psql`, run with libpq's environment variables, for checks that must not depend
//! on our own client code.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use crate::harness::HarnessError;

/// One `psql -c` invocation. The password goes through `PGPASSWORD`, never the command line.
#[derive(Debug, Clone)]
pub struct Psql {
    /// The host name libpq connects to and checks the certificate against.
    pub host: String,
    pub port: u16,
    pub user: String,
    pub dbname: String,
    pub password: Option<String>,
    /// `PGSSLMODE`: `verify-full` unless a test says otherwise.
    pub sslmode: String,
    /// `PGSSLROOTCERT`.
    pub root_cert: Option<PathBuf>,
    /// More libpq variables, such as `PGGSSENCMODE` or `PGCHANNELBINDING`.
    pub env: Vec<(String, String)>,
}

/// What psql did.
#[derive(Debug, Clone)]
pub struct PsqlOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Psql {
    /// psql to `addr` as `user` on database `postgres`, `verify-full` against `root_cert`.
    pub fn new(addr: SocketAddr, user: &str, root_cert: PathBuf) -> Psql {
        Psql {
            host: addr.ip().to_string(),
            port: addr.port(),
            user: user.to_owned(),
            dbname: "postgres".to_owned(),
            password: None,
            sslmode: "verify-full".to_owned(),
            root_cert: Some(root_cert),
            env: Vec::new(),
        }
    }

    /// psql to a client proxy's local listener: plaintext, as users are told to connect.
    pub fn local(addr: SocketAddr, user: &str) -> Psql {
        Psql {
            host: addr.ip().to_string(),
            port: addr.port(),
            user: user.to_owned(),
            dbname: "postgres".to_owned(),
            password: None,
            sslmode: "disable".to_owned(),
            root_cert: None,
            env: Vec::new(),
        }
    }

    pub fn sslmode(mut self, sslmode: &str) -> Psql {
        sslmode.clone_into(&mut self.sslmode);
        self
    }

    pub fn root_cert(mut self, path: PathBuf) -> Psql {
        self.root_cert = Some(path);
        self
    }

    /// Sets a libpq environment variable for this run.
    pub fn env(mut self, name: &str, value: &str) -> Psql {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn password(mut self, password: &str) -> Psql {
        self.password = Some(password.to_owned());
        self
    }

    pub fn dbname(mut self, dbname: &str) -> Psql {
        dbname.clone_into(&mut self.dbname);
        self
    }

    /// Runs `sql` with unaligned, tuples-only output (`-XAtc`), within 30 seconds.
    pub async fn run(&self, sql: &str) -> Result<PsqlOutput, HarnessError> {
        let program = if std::path::Path::new("/usr/bin/psql").is_file() { "/usr/bin/psql" } else { "psql" };
        let mut command = tokio::process::Command::new(program);
        command
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .env("PGHOST", &self.host)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", &self.user)
            .env("PGDATABASE", &self.dbname)
            .env("PGSSLMODE", &self.sslmode)
            .env("PGCONNECT_TIMEOUT", "10")
            .env("PGAPPNAME", "rds-auth-e2e")
            // Nothing from the environment or ~/.pgpass may change what is tested.
            .env("PGPASSFILE", "/dev/null")
            .env("PGSERVICEFILE", "/dev/null")
            .env_remove("PGPASSWORD")
            .env_remove("PGSSLROOTCERT")
            .env_remove("PGHOSTADDR")
            .env_remove("PGOPTIONS")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(password) = &self.password {
            command.env("PGPASSWORD", password);
        }
        if let Some(root_cert) = &self.root_cert {
            command.env("PGSSLROOTCERT", root_cert);
        }
        for (name, value) in &self.env {
            command.env(name, value);
        }
        let timed_out = |_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer within 30 s");
        let output = tokio::time::timeout(Duration::from_secs(30), command.output())
            .await
            .map_err(timed_out)
            .and_then(|output| output)
            .map_err(HarnessError::io(format!("cannot run {program}")))?;
        Ok(PsqlOutput {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}
