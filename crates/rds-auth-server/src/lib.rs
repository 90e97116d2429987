//! rds-auth-server
