//! rds-auth-token: lands in a following commit.
