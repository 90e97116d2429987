# The crane build, after crane's quick-start-workspace: the toolchain from rust-toolchain.toml,
# one dependency artifact shared by every check, and a package per binary with its tests
# left to the checks (doCheck = false).
#
# The packages are static where the platform allows: on Linux they are built against
# pkgsStatic (musl, crt-static; crane sets up the cross toolchain and aws-lc's C compiler), so
# the server image needs no libc and the client runs on any distribution. macOS has no static
# libc; there they link libSystem like every macOS program.
{
  pkgs,
  crane,
  root,
}:
let
  inherit (pkgs) lib;

  version = (lib.importTOML (root + "/Cargo.toml")).workspace.package.version;

  # rust-overlay picks the same channel, profile and components as rustup does from
  # rust-toolchain.toml; `targets` adds the standard library of the platform built for.
  toolchainSpec = (lib.importTOML (root + "/rust-toolchain.toml")).toolchain;
  toolchainFor =
    targetPkgs: p:
    p.rust-bin.fromRustupToolchain (
      toolchainSpec // { targets = [ targetPkgs.stdenv.hostPlatform.rust.rustcTarget ]; }
    );

  static = pkgs.stdenv.hostPlatform.isLinux;
  binaryPkgs = if static then pkgs.pkgsStatic else pkgs;
  canRun = pkgs.stdenv.buildPlatform.canExecute binaryPkgs.stdenv.hostPlatform;

  # The native library runs the checks and the dev shell; the binary library builds the
  # packages (the same one on macOS).
  craneLib = (crane.mkLib pkgs).overrideToolchain (toolchainFor pkgs);
  binaryCraneLib = (crane.mkLib binaryPkgs).overrideToolchain (toolchainFor binaryPkgs);

  # cleanCargoSource keeps only Cargo's files, so the files that tests and include_str! read
  # are added back: docs/configuration.md (the configuration reference tests) and the RDS
  # stand-in's scripts (compiled into the integration crate).
  src = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.unions [
      (craneLib.fileset.commonCargoSources root)
      (root + "/docs/configuration.md")
      (root + "/integration/docker")
    ];
  };

  commonArgs = {
    inherit src version;
    pname = "rds-auth-proxy-workspace";
    strictDeps = true;
    buildInputs = lib.optionals pkgs.stdenv.hostPlatform.isDarwin [ pkgs.libiconv ];
  };

  # One dependency build for the whole workspace, which clippy and the tests reuse.
  cargoArtifacts = craneLib.buildDepsOnly commonArgs;
  # On Linux the static packages have a dependency build of their own, for musl, limited to
  # the two binaries' dependencies.
  binaryArtifacts =
    if static then
      binaryCraneLib.buildDepsOnly (
        commonArgs
        // {
          pname = "rds-auth-proxy-static";
          cargoExtraArgs = "--locked -p rds-auth-proxy -p rds-auth-proxy-server";
          doCheck = false;
        }
      )
    else
      cargoArtifacts;

  binary =
    pname: description:
    binaryCraneLib.buildPackage (
      commonArgs
      // {
        inherit pname;
        cargoArtifacts = binaryArtifacts;
        cargoExtraArgs = "--locked -p ${pname} --bin ${pname}";
        # The tests run once, in checks.tests.
        doCheck = false;
        # Completions and man pages come from the binary itself (clap_complete, clap_mangen),
        # as in the release archives; skipped when the build machine cannot run the binary.
        nativeBuildInputs = [ pkgs.installShellFiles ];
        postInstall = lib.optionalString canRun ''
          installShellCompletion --cmd ${pname} \
            --bash <($out/bin/${pname} completions bash) \
            --zsh <($out/bin/${pname} completions zsh) \
            --fish <($out/bin/${pname} completions fish)
          mkdir -p man
          $out/bin/${pname} manpages man
          installManPage man/*
        '';
        meta = {
          inherit description;
          mainProgram = pname;
          license = with lib.licenses; [
            mit
            asl20
          ];
        };
      }
    );
in
{
  inherit
    craneLib
    commonArgs
    cargoArtifacts
    src
    version
    static
    ;

  client = binary "rds-auth-proxy" "The client proxy for laptops: reach private RDS PostgreSQL with IAM, no passwords";
  server = binary "rds-auth-proxy-server" "The server proxy, run in the VPC: mTLS in, verified TLS and IAM to RDS out";
}
