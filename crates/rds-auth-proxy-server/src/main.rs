//! rds-auth-proxy-server: placeholder until the proxies issue.

fn main() {}
