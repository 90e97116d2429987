//! rds-auth-startup: lands in a following commit.
