{
  # Thin on purpose: the inputs, then one evaluation per system of the modules in nix/.
  # nix/crane.nix builds the binaries, nix/images.nix the server image, nix/checks.nix what
  # `nix flake check` runs, nix/devshell.nix the development shell. What has been verified
  # where, and how to produce flake.lock: docs/releasing.md.
  description = "rds-auth-proxy: reach private RDS PostgreSQL with IAM, no passwords";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    crane.url = "github:ipetkov/crane";
    # The toolchain comes from rust-toolchain.toml, read through rust-overlay.
    rust-overlay = {
      url = "github:oxalica/rust-overlay";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs =
    {
      self,
      nixpkgs,
      crane,
      rust-overlay,
    }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "x86_64-darwin"
        "aarch64-darwin"
      ];
      perSystem = lib.genAttrs systems (
        system:
        import ./nix/outputs.nix {
          inherit crane;
          pkgs = import nixpkgs {
            inherit system;
            overlays = [ rust-overlay.overlays.default ];
          };
          root = ./.;
        }
      );
      pick = name: lib.mapAttrs (_system: outputs: outputs.${name}) perSystem;
    in
    {
      packages = pick "packages";
      apps = pick "apps";
      checks = pick "checks";
      devShells = pick "devShells";
    };
}
