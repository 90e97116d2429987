# One system's outputs: the packages, apps, checks and development shell that flake.nix
# exposes. `pkgs` carries rust-overlay; `root` is the repository.
{
  pkgs,
  crane,
  root,
}:
let
  inherit (pkgs) lib;
  build = import ./crane.nix { inherit pkgs crane root; };
  # dockerTools images are Linux root file systems: no server-image on macOS.
  images = lib.optionalAttrs pkgs.stdenv.hostPlatform.isLinux {
    server-image = import ./images.nix {
      inherit pkgs;
      inherit (build) server version;
    };
  };
  checks = import ./checks.nix { inherit build; };
  app = drv: binary: description: {
    type = "app";
    program = "${drv}/bin/${binary}";
    meta = { inherit description; };
  };
in
{
  packages = {
    inherit (build) client server;
    default = build.client;
  }
  // images;

  apps = {
    client = app build.client "rds-auth-proxy" "The client proxy for laptops";
    server = app build.server "rds-auth-proxy-server" "The server proxy, run in the VPC";
  };

  inherit checks;

  devShells.default = import ./devshell.nix { inherit pkgs build checks; };
}
