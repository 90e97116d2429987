# The AWS RDS global bundle: every region's RDS certificate authorities in one file, which the
# server image ships as the default `upstream.ca_file`. Pinned by hash, so that a changed
# bundle fails the build instead of entering the image unnoticed.
#
# NOT PINNED YET. The machine this was written on cannot download the bundle, and no hash was
# made up: lib.fakeHash below is nixpkgs' placeholder, which makes `nix build .#server-image`
# stop with "hash mismatch ... got: sha256-...". Compute the real hash with the command in
# docs/releasing.md ("Pin the RDS bundle"), put it here, and commit. When AWS adds a
# certificate authority to the bundle the same mismatch appears; repeat the step then.
{ pkgs }:
pkgs.fetchurl {
  name = "rds-global-bundle.pem";
  url = "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem";
  hash = pkgs.lib.fakeHash;
}
