//! rds-auth-integration
