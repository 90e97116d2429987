# The server proxy's OCI image, `nix build .#server-image` then `docker load < result`.
#
# A layered image (dockerTools.buildLayeredImage) with no shell and no package manager:
# - /bin/rds-auth-proxy-server, the static binary, as the entrypoint (`run` is its default
#   command; `healthcheck` probes the health server for runtimes that exec a command);
# - CA certificates (SSL_CERT_FILE) for the AWS APIs, and the AWS RDS global bundle
#   (pinned in nix/rds-ca.nix) at
#   /etc/rds-auth-proxy/rds-global-bundle.pem, the default `upstream.ca_file`;
# - /etc/passwd and /etc/group naming the non-root user 65532 (`nonroot`) it runs as;
# - port 5432 for client proxies and 9090 for /startup, /liveness, /readiness and /metrics.
#   The health server listens on loopback unless told otherwise, so the image sets
#   RDS_AUTH_SERVER_HEALTH__ADDRESS=0.0.0.0:9090 for probes from outside the container.
{
  pkgs,
  server,
  version,
}:
let
  uid = 65532;

  rdsGlobalBundle = import ./rds-ca.nix { inherit pkgs; };

  nss = pkgs.dockerTools.fakeNss.override {
    extraPasswdLines = [ "nonroot:x:${toString uid}:${toString uid}:nonroot:/var/empty:/bin/false" ];
    extraGroupLines = [ "nonroot:x:${toString uid}:" ];
  };
in
pkgs.dockerTools.buildLayeredImage {
  name = "rds-auth-proxy-server";
  tag = version;

  contents = [
    server
    pkgs.cacert
    nss
  ];

  # Real directories, not links into the store: /etc/rds-auth-proxy is where deployments
  # mount server.toml and the TLS files, and /tmp is the only writable place a process may
  # expect.
  extraCommands = ''
    mkdir -p etc/rds-auth-proxy
    cp ${rdsGlobalBundle} etc/rds-auth-proxy/rds-global-bundle.pem
    chmod 0444 etc/rds-auth-proxy/rds-global-bundle.pem
    mkdir -m 1777 tmp
  '';

  config = {
    Entrypoint = [ "/bin/rds-auth-proxy-server" ];
    Cmd = [ "run" ];
    User = "${toString uid}:${toString uid}";
    WorkingDir = "/";
    ExposedPorts = {
      "5432/tcp" = { };
      "9090/tcp" = { };
    };
    Env = [
      "SSL_CERT_FILE=${pkgs.cacert}/etc/ssl/certs/ca-bundle.crt"
      "RDS_AUTH_SERVER_HEALTH__ADDRESS=0.0.0.0:9090"
    ];
    Labels = {
      "org.opencontainers.image.title" = "rds-auth-proxy-server";
      "org.opencontainers.image.description" = "The server proxy of rds-auth-proxy: mTLS in, verified TLS and IAM to RDS out";
      "org.opencontainers.image.version" = version;
      "org.opencontainers.image.source" = "https://github.com/rds-auth-proxy/rds-auth-proxy";
      "org.opencontainers.image.licenses" = "MIT OR Apache-2.0";
    };
  };
}
