# A stand-in for rust-overlay's overlay: rust-bin.fromRustupToolchain takes the arguments the
# real one takes (a rust-toolchain.toml key it does not know fails here too) and returns a
# fake toolchain that records them.
final: prev: {
  rust-bin = {
    fromRustupToolchain =
      {
        path ? null,
        channel ? null,
        profile ? null,
        components ? [ ],
        targets ? [ ],
      }:
      assert channel != null || throw "rust-overlay: `channel` is required";
      {
        type = "derivation";
        name = "rust-${channel}";
        outPath = "/nix/store/00000000000000000000000000000000-rust-${channel}";
        inherit
          channel
          profile
          components
          targets
          ;
      };
  };
}
