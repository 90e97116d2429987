{
  description = "A stand-in for rust-overlay, for checking the flake's outputs without downloading it";
  # The real flake has this input, and flake.nix makes it follow our nixpkgs.
  inputs.nixpkgs.url = "path:../nixpkgs";
  outputs = { self, nixpkgs }: { overlays.default = import ./overlay.nix; };
}
