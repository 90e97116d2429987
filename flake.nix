{
  # A stub until the packaging issue: the crane build, the server image and the checks land
  # in nix/*.nix then. See docs/ARCHITECTURE.md.
  description = "rds-auth-proxy: reach private RDS PostgreSQL with IAM, no passwords";
  outputs = { self }: { };
}
