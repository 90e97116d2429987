{
  description = "A stand-in for nixpkgs, for checking the flake's outputs without downloading it";
  outputs = { self }: { lib = import ./lib.nix; };
}
