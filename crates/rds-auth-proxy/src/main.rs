//! rds-auth-proxy: placeholder until the proxies issue.

fn main() {}
