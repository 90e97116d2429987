//! rds-auth-io: lands in a following commit.
