# Evaluates flake.nix's outputs function with the stubs as its inputs, without the flake
# machinery, and checks them with ./expect.nix:
#
#   nix-instantiate --eval --strict --json nix/tests/shape.nix
#
# `cargo xtask nix` runs this on a copy of the flake's files (so no path can drag target/ into
# the store), then the same expectations through `nix eval` with the stubs as overridden
# flake inputs.
let
  root = ../..;
  flake = import (root + "/flake.nix");
  stub = name: { outPath = ./stubs + "/${name}"; };
  inputs = {
    nixpkgs = stub "nixpkgs" // {
      lib = import ./stubs/nixpkgs/lib.nix;
    };
    crane = stub "crane" // {
      mkLib = import ./stubs/crane/lib.nix;
    };
    rust-overlay = stub "rust-overlay" // {
      overlays.default = import ./stubs/rust-overlay/overlay.nix;
    };
    self = outputs // {
      outPath = root;
    };
  };
  outputs = flake.outputs inputs;
in
import ./expect.nix { inherit flake outputs root; }
