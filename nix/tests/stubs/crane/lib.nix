# A stand-in for crane's mkLib: each builder returns a fake derivation recording its arguments
# and the toolchain and package set it was made with, and refuses what crane refuses.
pkgs:
let
  inherit (pkgs) lib;

  mkLib =
    toolchain:
    let
      fakeDrv =
        kind: args:
        assert args ? src || throw "crane.${kind}: src is required";
        {
          type = "derivation";
          name = "${args.pname or "workspace"}-${kind}";
          outPath = "/nix/store/00000000000000000000000000000000-${args.pname or "workspace"}-${kind}";
          stubArgs = args;
          inherit kind toolchain;
          hostPlatform = pkgs.stdenv.hostPlatform;
        };
      needsArtifacts =
        kind: args:
        assert args ? cargoArtifacts || throw "crane.${kind}: cargoArtifacts is required";
        fakeDrv kind args;
    in
    {
      inherit toolchain;

      # A function is called with the package set, as crane does to splice it.
      overrideToolchain = toolchain: mkLib (if builtins.isFunction toolchain then toolchain pkgs else toolchain);

      buildDepsOnly = fakeDrv "deps";
      buildPackage = fakeDrv "package";
      cargoClippy = needsArtifacts "clippy";
      cargoNextest = needsArtifacts "nextest";
      cargoFmt = fakeDrv "fmt";
      cargoDeny = fakeDrv "deny";
      devShell = args: {
        type = "derivation";
        name = "devshell";
        outPath = "/nix/store/00000000000000000000000000000000-devshell";
        stubArgs = args;
        inherit toolchain;
      };

      fileset.commonCargoSources = root: {
        _type = "fileset";
        paths = [
          (root + "/Cargo.toml")
          (root + "/Cargo.lock")
        ];
      };
    };
in
mkLib null
