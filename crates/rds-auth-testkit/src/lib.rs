//! rds-auth-testkit
