//! rds-auth-upstream
