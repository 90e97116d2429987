# The part of nixpkgs' lib that flake.nix and nix/*.nix use, with the same meaning, written
# out so the flake can be evaluated where nixpkgs cannot be downloaded. Paths are never turned
# into strings: that would copy them into the store.
let
  lib = {
    inherit (builtins) mapAttrs;

    genAttrs = names: f: builtins.listToAttrs (map (name: { inherit name; value = f name; }) names);
    optionals = cond: list: if cond then list else [ ];
    optionalAttrs = cond: attrs: if cond then attrs else { };
    optionalString = cond: string: if cond then string else "";
    importTOML = path: builtins.fromTOML (builtins.readFile path);

    # nixpkgs' lib.fakeHash, byte for byte: a hash no download ever has.
    fakeHash = "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    licenses = {
      mit = { spdxId = "MIT"; };
      asl20 = { spdxId = "Apache-2.0"; };
    };

    # lib.fileset refuses paths that do not exist; so do these.
    fileset = {
      unions =
        sets:
        {
          _type = "fileset";
          paths = builtins.concatLists (map (set: if set ? _type then set.paths else [ (lib.fileset.path set) ]) sets);
        };
      path =
        path:
        if builtins.pathExists path then path else throw "lib.fileset: ${baseNameOf path} does not exist";
      toSource =
        { root, fileset }:
        {
          _type = "source";
          inherit root;
          paths = if fileset ? _type then fileset.paths else [ (lib.fileset.path fileset) ];
        };
    };
  };
in
lib
