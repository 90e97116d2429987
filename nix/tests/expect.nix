# What flake.nix must provide, checked against its outputs evaluated with the stubs in
# ./stubs (nixpkgs, crane and rust-overlay cannot be downloaded where CI runs). A broken
# expectation throws and names itself; otherwise the result is a summary for the log.
#
# This checks the shape and the arguments the flake hands to nixpkgs and crane, not that
# anything builds: that needs the real inputs (docs/releasing.md).
{
  flake,
  outputs,
  root,
}:
let
  lib = import ./stubs/nixpkgs/lib.nix;
  stubPkgs = import ./stubs/nixpkgs { system = "x86_64-linux"; };

  inherit (builtins)
    attrNames
    all
    elem
    toJSON
    match
    ;

  version = (lib.importTOML (root + "/Cargo.toml")).workspace.package.version;
  toolchain = (lib.importTOML (root + "/rust-toolchain.toml")).toolchain;

  linux = [
    "x86_64-linux"
    "aarch64-linux"
  ];
  darwin = [
    "x86_64-darwin"
    "aarch64-darwin"
  ];
  systems = linux ++ darwin;

  expect = what: cond: if cond then true else throw "nix/tests/expect.nix: expected ${what}";
  names =
    what: attrs: wanted:
    let
      sorted = builtins.sort builtins.lessThan wanted;
    in
    expect "${what} to be ${toJSON sorted}, got ${toJSON (attrNames attrs)}" (attrNames attrs == sorted);
  contains = what: string: needle: expect "${what} to contain `${needle}`, got `${string}`" (match ".*${needle}.*" string != null);
  hasItem = what: list: item: expect "${what} to include ${toJSON item}" (elem item list);

  forSystem =
    system:
    let
      isLinux = elem system linux;
      packages = outputs.packages.${system};
      apps = outputs.apps.${system};
      checks = outputs.checks.${system};
      shell = outputs.devShells.${system}.default;
      cpu = builtins.head (builtins.split "-" system);

      binary =
        name: drv:
        let
          args = drv.stubArgs;
        in
        [
          (expect "${system} ${name} to be a crane package" (drv.kind == "package"))
          (expect "${system} ${name} to have pname ${name}" (args.pname == name))
          (expect "${system} ${name} to build only its binary" (args.cargoExtraArgs == "--locked -p ${name} --bin ${name}"))
          (expect "${system} ${name} to have the workspace version ${version}" (args.version == version))
          (expect "${system} ${name} to leave its tests to checks.tests" (args.doCheck == false))
          (expect "${system} ${name} to reuse a dependency build" (args.cargoArtifacts.kind == "deps"))
          (expect "${system} ${name} to be static exactly on Linux" (drv.hostPlatform.isStatic == isLinux))
          (expect "${system} ${name} to use the channel of rust-toolchain.toml" (drv.toolchain.channel == toolchain.channel))
          (expect "${system} ${name} to use the components of rust-toolchain.toml" (drv.toolchain.components == toolchain.components))
          (expect "${system} ${name} to add the standard library it links" (
            drv.toolchain.targets == [ drv.hostPlatform.rust.rustcTarget ]
          ))
          (expect "${system} ${name} to be built for musl on Linux" (
            !isLinux || drv.hostPlatform.rust.rustcTarget == "${cpu}-unknown-linux-musl"
          ))
          (contains "${system} ${name} postInstall" args.postInstall "completions bash")
          (contains "${system} ${name} postInstall" args.postInstall "completions zsh")
          (contains "${system} ${name} postInstall" args.postInstall "completions fish")
          (contains "${system} ${name} postInstall" args.postInstall "manpages man")
          (hasItem "${system} ${name} sources" args.src.paths (root + "/docs/configuration.md"))
          (hasItem "${system} ${name} sources" args.src.paths (root + "/integration/docker"))
          (hasItem "${system} ${name} sources" args.src.paths (root + "/Cargo.lock"))
        ];

      image =
        let
          args = packages.server-image.stubArgs;
          config = args.config;
        in
        [
          (expect "${system} server-image to be named rds-auth-proxy-server:${version}" (
            args.name == "rds-auth-proxy-server" && args.tag == version
          ))
          (expect "${system} server-image to contain the server package" (
            elem packages.server.name (map (drv: drv.name) args.contents)
          ))
          (expect "${system} server-image to contain CA certificates" (elem "cacert" (map (drv: drv.name) args.contents)))
          (expect "${system} server-image to name its non-root user" (
            elem "fake-nss" (map (drv: drv.name) args.contents)
          ))
          (contains "${system} server-image extraCommands" args.extraCommands "etc/rds-auth-proxy/rds-global-bundle.pem")
          (expect "${system} server-image Entrypoint" (config.Entrypoint == [ "/bin/rds-auth-proxy-server" ]))
          (expect "${system} server-image Cmd to be run" (config.Cmd == [ "run" ]))
          (expect "${system} server-image to run as 65532:65532" (config.User == "65532:65532"))
          (names "${system} server-image ExposedPorts" config.ExposedPorts [
            "5432/tcp"
            "9090/tcp"
          ])
          (hasItem "${system} server-image Env" config.Env "RDS_AUTH_SERVER_HEALTH__ADDRESS=0.0.0.0:9090")
          (expect "${system} server-image Env to set SSL_CERT_FILE" (
            builtins.any (e: match "SSL_CERT_FILE=.*/etc/ssl/certs/ca-bundle.crt" e != null) config.Env
          ))
        ];
    in
    [
      (names "${system} packages" packages (
        [
          "client"
          "default"
          "server"
        ]
        ++ lib.optionals isLinux [ "server-image" ]
      ))
      (expect "${system} default package to be the client" (packages.default.name == packages.client.name))
      (names "${system} apps" apps [
        "client"
        "server"
      ])
      (expect "${system} apps.client to run rds-auth-proxy" (
        apps.client.type == "app" && apps.client.program == "${packages.client}/bin/rds-auth-proxy"
      ))
      (expect "${system} apps.server to run rds-auth-proxy-server" (
        apps.server.type == "app" && apps.server.program == "${packages.server}/bin/rds-auth-proxy-server"
      ))
      (names "${system} checks" checks [
        "client"
        "clippy"
        "deny"
        "fmt"
        "server"
        "tests"
      ])
      (contains "${system} clippy arguments" checks.clippy.stubArgs.cargoClippyExtraArgs "--workspace --all-targets")
      (contains "${system} clippy arguments" checks.clippy.stubArgs.cargoClippyExtraArgs "--deny warnings")
      (expect "${system} clippy and tests to share one dependency build" (
        checks.clippy.stubArgs.cargoArtifacts.name == checks.tests.stubArgs.cargoArtifacts.name
      ))
      (expect "${system} checks to build natively" (!checks.tests.hostPlatform.isStatic))
      (contains "${system} test arguments" checks.tests.stubArgs.cargoNextestExtraArgs "--exclude rds-auth-integration")
      (expect "${system} cargo-deny to run the offline checks" (checks.deny.stubArgs.cargoDenyChecks == "bans licenses sources"))
      (names "${system} devShells" outputs.devShells.${system} [ "default" ])
      (names "${system} devShell checks" shell.stubArgs.checks [
        "clippy"
        "deny"
        "fmt"
        "tests"
      ])
      (expect "${system} devShell to bring ruby, cargo-deny and cargo-nextest" (
        all (tool: elem tool (map (drv: drv.name) shell.stubArgs.packages)) [
          "ruby"
          "cargo-deny"
          "cargo-nextest"
        ]
      ))
    ]
    ++ binary "rds-auth-proxy" packages.client
    ++ binary "rds-auth-proxy-server" packages.server
    ++ lib.optionals isLinux image;

  rdsBundle = import (root + "/nix/rds-ca.nix") { pkgs = stubPkgs; };

  results =
    [
      (names "flake inputs" flake.inputs [
        "crane"
        "nixpkgs"
        "rust-overlay"
      ])
      (expect "rust-overlay to follow our nixpkgs" (flake.inputs.rust-overlay.inputs.nixpkgs.follows == "nixpkgs"))
      (names "the outputs" outputs [
        "apps"
        "checks"
        "devShells"
        "packages"
      ])
      (names "packages' systems" outputs.packages systems)
      (expect "the RDS bundle to come from AWS's trust store" (
        rdsBundle.stubArgs.url == "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"
      ))
    ]
    ++ builtins.concatMap forSystem systems;
in
assert all (ok: ok) results;
{
  inherit version;
  toolchain = toolchain.channel;
  expectations = builtins.length results;
  packages = lib.mapAttrs (_: attrNames) outputs.packages;
  rdsBundleHash = if rdsBundle.stubArgs.hash == lib.fakeHash then "placeholder (lib.fakeHash)" else rdsBundle.stubArgs.hash;
}
