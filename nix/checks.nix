# What `nix flake check` runs: the packages, clippy, rustfmt, the tests that need no Docker,
# and cargo-deny. All but rustfmt and cargo-deny reuse the one dependency artifact.
{ build }:
let
  inherit (build) craneLib commonArgs cargoArtifacts src;
in
{
  inherit (build) client server;

  clippy = craneLib.cargoClippy (
    commonArgs
    // {
      inherit cargoArtifacts;
      cargoClippyExtraArgs = "--workspace --all-targets --locked -- --deny warnings";
    }
  );

  fmt = craneLib.cargoFmt { inherit src; };

  # Unit, property and in-process tests. The end-to-end tests in rds-auth-integration need a
  # Docker engine, which the Nix sandbox does not have; `cargo xtask ci` runs them.
  tests = craneLib.cargoNextest (
    commonArgs
    // {
      inherit cargoArtifacts;
      cargoNextestExtraArgs = "--workspace --exclude rds-auth-integration --locked";
      partitions = 1;
      partitionType = "count";
    }
  );

  # The advisories check needs the network (the RustSec database); bans, licenses and sources
  # run offline against deny.toml.
  deny = craneLib.cargoDeny {
    inherit src;
    cargoDenyChecks = "bans licenses sources";
  };
}
