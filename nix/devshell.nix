# `nix develop`: the toolchain from rust-toolchain.toml, everything the checks build with, and
# the programs `cargo xtask` runs.
{
  pkgs,
  build,
  checks,
}:
build.craneLib.devShell {
  # The native checks only: the static packages would bring the musl cross compilers in.
  checks = builtins.removeAttrs checks [
    "client"
    "server"
  ];
  packages = [
    pkgs.cargo-deny
    pkgs.cargo-nextest
    pkgs.git
    # The local images and the end-to-end tests: the Docker CLI (the engine runs outside),
    # psql and pgbench, and Python for the cancel tests' drivers.
    pkgs.docker-client
    pkgs.postgresql
    pkgs.python3
    # `cargo xtask dist` checks the Homebrew formula with `ruby -c`.
    pkgs.ruby
    # `cargo xtask docs`.
    pkgs.mdbook
  ];
  # `cargo xtask images` also needs mmdebstrap, which builds Debian root file systems with the
  # host's apt: install it from the distribution (.ci/run does on Debian).
}
