# A stand-in for `import nixpkgs { system; overlays; }`: every package the flake names is a
# fake derivation that records its arguments, so nix/tests/shape.nix can check what the flake
# asks for. Nothing here builds.
{
  system,
  overlays ? [ ],
  config ? { },
}:
let
  lib = import ./lib.nix;

  fakeDrv =
    name: args:
    {
      type = "derivation";
      inherit name;
      outPath = "/nix/store/00000000000000000000000000000000-${name}";
      stubArgs = args;
    };

  platform =
    { system, isStatic }:
    let
      parts = builtins.split "-" system;
      cpu = builtins.elemAt parts 0;
      kernel = builtins.elemAt parts 2;
      isLinux = kernel == "linux";
      isDarwin = kernel == "darwin";
    in
    {
      inherit system isLinux isDarwin isStatic;
      rust.rustcTarget =
        if isDarwin then
          "${if cpu == "aarch64" then "aarch64" else "x86_64"}-apple-darwin"
        else if isStatic then
          "${cpu}-unknown-linux-musl"
        else
          "${cpu}-unknown-linux-gnu";
      canExecute = other: other.system == system;
    };

  mkPkgs =
    { isStatic }:
    let
      base =
        self:
        {
          inherit lib system;
          stdenv = {
            hostPlatform = platform { inherit system isStatic; };
            buildPlatform = platform {
              inherit system;
              isStatic = false;
            };
            isLinux = self.stdenv.hostPlatform.isLinux;
            isDarwin = self.stdenv.hostPlatform.isDarwin;
          };
          pkgsStatic =
            if isStatic then self else if self.stdenv.hostPlatform.isLinux then mkPkgs { isStatic = true; } else throw "pkgsStatic: no static libc on ${system}";

          fetchurl =
            args:
            assert args ? url && args ? hash;
            fakeDrv (args.name or (baseNameOf args.url)) args;
          runCommand = name: env: script: fakeDrv name { inherit env script; };

          dockerTools = {
            fakeNss =
              (fakeDrv "fake-nss" { })
              // {
                override = args: fakeDrv "fake-nss" args;
              };
            buildLayeredImage = args: fakeDrv "${args.name}.tar.gz" args // { imageName = args.name; imageTag = args.tag; };
          };
        }
        // lib.genAttrs [
          "cacert"
          "libiconv"
          "installShellFiles"
          "cargo-deny"
          "cargo-nextest"
          "git"
          "docker-client"
          "postgresql"
          "python3"
          "ruby"
          "mdbook"
        ] (name: fakeDrv name { });
      # Overlays apply as in nixpkgs: each sees the final set and the one before it.
      fix = f: let x = f x; in x;
    in
    fix (self: builtins.foldl' (prev: overlay: prev // overlay self prev) (base self) overlays);
in
mkPkgs { isStatic = false; }
