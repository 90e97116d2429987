//! `gen-certs`: a development PKI for the two proxies, so a first deployment needs no outside
//! tooling. Production deployments may use their own CA or cert-manager instead.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use miette::{IntoDiagnostic, WrapErr};
use rds_auth_io::certgen::{CertAuthority, Issued};

#[derive(Debug, Args)]
pub(crate) struct GenCerts {
    /// The directory to write into. An existing ca.crt and ca.key there are reused, so users
    /// can be added later.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Names the server proxy's certificate carries (DNS names or IP addresses).
    #[arg(long = "server-name", value_name = "NAME", default_values_t = ["localhost".to_owned(), "127.0.0.1".to_owned()])]
    server_names: Vec<String>,
    /// Issue a client certificate whose subject common name is this user (repeatable).
    #[arg(long = "user", value_name = "NAME")]
    users: Vec<String>,
    /// Validity of the server and client certificates, in days.
    #[arg(long, default_value_t = 90)]
    days: u64,
    /// Replace existing server and client certificates.
    #[arg(long)]
    force: bool,
}

const CA_DAYS: u64 = 3650;

pub(crate) fn run(args: &GenCerts) -> miette::Result<()> {
    fs::create_dir_all(&args.out)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot create {}", args.out.display()))?;
    let (ca_cert, ca_key) = (args.out.join("ca.crt"), args.out.join("ca.key"));
    let ca = if ca_cert.exists() && ca_key.exists() {
        let cert = fs::read_to_string(&ca_cert).into_diagnostic()?;
        let key = fs::read_to_string(&ca_key).into_diagnostic()?;
        CertAuthority::from_pem(&cert, &key).into_diagnostic().wrap_err("cannot reuse the existing CA")?
    } else {
        let ca = CertAuthority::new("rds-auth-proxy development CA", days(CA_DAYS)).into_diagnostic()?;
        write(&ca_cert, ca.cert_pem(), false, true)?;
        write(&ca_key, ca.key_pem(), true, true)?;
        ca
    };
    let cancel_key = args.out.join("cancel.key");
    if !cancel_key.exists() {
        let hex: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
        write(&cancel_key, &format!("{hex}\n"), true, false)?;
    }
    let lifetime = days(args.days);
    let names: Vec<&str> = args.server_names.iter().map(String::as_str).collect();
    let server = ca.issue_server(&names, lifetime).into_diagnostic()?;
    save(&args.out, "server", &server, args.force)?;
    for user in &args.users {
        let client = ca.issue_client(user, lifetime).into_diagnostic()?;
        save(&args.out, &file_stem(user), &client, args.force)?;
    }
    #[allow(clippy::print_stdout, reason = "telling the person what was written is this command's job")]
    {
        println!(
            "wrote a CA, a server certificate for {} and {} client certificate(s) to {}",
            names.join(", "),
            args.users.len(),
            args.out.display()
        );
    }
    Ok(())
}

fn days(n: u64) -> Duration {
    Duration::from_secs(n * 24 * 3600)
}

/// A file name for a user: `alice@corp` becomes `alice@corp.crt`; path separators are replaced.
fn file_stem(user: &str) -> String {
    user.chars().map(|c| if c == '/' || c == '\\' || c.is_control() { '_' } else { c }).collect()
}

fn save(dir: &Path, stem: &str, issued: &Issued, force: bool) -> miette::Result<()> {
    write(&dir.join(format!("{stem}.crt")), &issued.cert_pem, false, force)?;
    write(&dir.join(format!("{stem}.key")), &issued.key_pem, true, force)
}

fn write(path: &Path, contents: &str, secret: bool, force: bool) -> miette::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    if secret {
        options.mode(0o600);
    }
    let mut file = options.open(path).into_diagnostic().wrap_err_with(|| {
        format!("cannot write {} (pass --force to replace existing files)", path.display())
    })?;
    file.write_all(contents.as_bytes()).into_diagnostic()
}
