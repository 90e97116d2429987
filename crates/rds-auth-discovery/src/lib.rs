//! rds-auth-discovery
