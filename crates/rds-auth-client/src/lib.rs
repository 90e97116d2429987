//! rds-auth-client
