{
  description = "A stand-in for crane, for checking the flake's outputs without downloading it";
  outputs = { self }: { mkLib = import ./lib.nix; };
}
