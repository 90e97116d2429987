//! moto, the fake AWS API from PyPI, for the discovery tests: one server per caller, and helpers
//! that seed it with RDS instances, Aurora clusters and custom endpoints in any account and
//! region.
//!
//! moto keeps its state per process and port and shares nothing, so each test starts its own
//! [`Moto`] (about a second) or calls [`Moto::reset`]. It is installed with the other Python
//! clients in `target/e2e-venv` (`integration/python/requirements.txt`).
//!
//! moto 5.2 does not implement DescribeDBClusterEndpoints or CreateDBClusterEndpoint, so the
//! server is started through [`LAUNCHER`], which adds both (with the API's filters) and the
//! `CustomEndpoints` field of DescribeDBClusters before running moto's own `moto_server` entry
//! point. It also routes presigned STS requests (query-string SigV4, the server proxy's identity
//! check) to moto's STS, where moto 5.2 would send them to S3. Everything else is moto as
//! released.
//!
//! Accounts: requests signed with the fixed test key land in moto's default account
//! [`DEFAULT_ACCOUNT_ID`]; credentials from STS AssumeRole of `arn:aws:iam::<id>:role/<name>`
//! land in account `<id>`, which is how [`Moto::rds_in_account`] seeds a second account.
//! Credentials are always passed explicitly, never through the process environment.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_rds::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_rds::types::Tag;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{HarnessError, scratch_dir, target_dir};

/// The account moto puts resources in when the caller's key is not an assumed role's.
pub const DEFAULT_ACCOUNT_ID: &str = "123456789012";
/// The access key the seeding clients sign with; moto accepts any key.
pub const ACCESS_KEY_ID: &str = "AKIAMOTOTESTKEY00001";
/// The secret that goes with [`ACCESS_KEY_ID`].
pub const SECRET_ACCESS_KEY: &str = "moto-test-secret-not-a-real-one";

/// How long moto may take to answer after its process started.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Python run in place of `moto_server`: moto with DescribeDBClusterEndpoints,
/// CreateDBClusterEndpoint and `DBCluster.CustomEndpoints`, which moto 5.2 lacks, then moto's
/// own server entry point with the command-line arguments. It also exits when its stdin
/// closes, so a test process that dies does not leave moto behind.
pub const LAUNCHER: &str = r#"
import os
import sys
import threading

from moto.core.responses import ActionResult
from moto.rds.exceptions import DBClusterNotFoundError
from moto.rds.models import DBCluster
from moto.rds.responses import RDSResponse


def _custom_endpoints(backend):
    # Kept in the backend's own dict, so /moto-api/reset forgets them with the rest.
    return backend.__dict__.setdefault("_rds_auth_custom_endpoints", {})


class _CustomEndpoint:
    def __init__(self, cluster, identifier, custom_type, static_members, excluded_members):
        self.db_cluster_endpoint_identifier = identifier
        self.db_cluster_identifier = cluster.db_cluster_identifier
        self.db_cluster_endpoint_resource_identifier = "cluster-endpoint-" + identifier
        self.endpoint = (
            f"{identifier}.cluster-custom-{cluster.url_identifier}.{cluster.region}.rds.amazonaws.com"
        )
        self.status = "available"
        self.endpoint_type = "CUSTOM"
        self.custom_endpoint_type = custom_type
        self.static_members = static_members
        self.excluded_members = excluded_members
        self.db_cluster_endpoint_arn = (
            f"arn:aws:rds:{cluster.region}:{cluster.account_id}:cluster-endpoint:{identifier}"
        )


class _BuiltinEndpoint:
    def __init__(self, cluster, endpoint_type, endpoint):
        self.db_cluster_endpoint_identifier = cluster.db_cluster_identifier
        self.db_cluster_identifier = cluster.db_cluster_identifier
        self.db_cluster_endpoint_resource_identifier = cluster.db_cluster_resource_id
        self.endpoint = endpoint
        self.status = "available"
        self.endpoint_type = endpoint_type


def _cluster_custom_endpoints(self):
    return [
        e.endpoint
        for e in _custom_endpoints(self.backend).values()
        if e.db_cluster_identifier == self.db_cluster_identifier
    ]


def create_db_cluster_endpoint(self):
    cluster_id = self.params["DBClusterIdentifier"].lower()
    cluster = self.backend.clusters.get(cluster_id)
    if cluster is None:
        raise DBClusterNotFoundError(cluster_id)
    endpoint = _CustomEndpoint(
        cluster,
        self.params["DBClusterEndpointIdentifier"].lower(),
        self.params["EndpointType"],
        self.params.get("StaticMembers") or [],
        self.params.get("ExcludedMembers") or [],
    )
    _custom_endpoints(self.backend)[endpoint.db_cluster_endpoint_identifier] = endpoint
    return ActionResult(endpoint)


def describe_db_cluster_endpoints(self):
    # As RDS: the writer and reader endpoints of every cluster, then the custom ones, narrowed
    # by DBClusterIdentifier, DBClusterEndpointIdentifier and the four documented filters.
    found = []
    for cluster in self.backend.clusters.values():
        found.append(_BuiltinEndpoint(cluster, "WRITER", cluster.endpoint))
        found.append(_BuiltinEndpoint(cluster, "READER", cluster.reader_endpoint))
    found.extend(_custom_endpoints(self.backend).values())
    filters = {
        f["Name"]: [value.lower() for value in f["Values"]] for f in self.params.get("Filters") or []
    }
    cluster_id = (self.params.get("DBClusterIdentifier") or "").lower()
    endpoint_id = (self.params.get("DBClusterEndpointIdentifier") or "").lower()

    def keep(e):
        if cluster_id and e.db_cluster_identifier != cluster_id:
            return False
        if endpoint_id and e.db_cluster_endpoint_identifier != endpoint_id:
            return False
        fields = {
            "db-cluster-endpoint-type": e.endpoint_type.lower(),
            "db-cluster-endpoint-custom-type": (getattr(e, "custom_endpoint_type", "") or "").lower(),
            "db-cluster-endpoint-id": e.db_cluster_endpoint_identifier,
            "db-cluster-endpoint-status": e.status,
        }
        return all(fields.get(name) in values for name, values in filters.items())

    return ActionResult({"DBClusterEndpoints": [e for e in found if keep(e)]})


DBCluster.custom_endpoints = property(_cluster_custom_endpoints)
RDSResponse.create_db_cluster_endpoint = create_db_cluster_endpoint
RDSResponse.describe_db_cluster_endpoints = describe_db_cluster_endpoints

# moto routes a request without an Authorization header by its Host, and falls back to S3 for
# 127.0.0.1. A presigned sts:GetCallerIdentity (the identity proof the server proxy replays)
# carries its credential scope in the query string instead, so route it by that scope, as
# moto already does for a header-signed request.
from moto.moto_server.werkzeug_app import DomainDispatcherApplication  # noqa: E402

_infer = DomainDispatcherApplication.infer_service_region_host


def _infer_presigned(self, environ, path):
    query = environ.get("QUERY_STRING", "")
    if not environ.get("HTTP_AUTHORIZATION") and "X-Amz-Credential=" in query:
        from urllib.parse import parse_qs

        scope = parse_qs(query).get("X-Amz-Credential", [""])[0].split("/")
        if len(scope) == 5 and scope[3] == "sts":
            return f"sts.{scope[2]}.amazonaws.com"
    return _infer(self, environ, path)


DomainDispatcherApplication.infer_service_region_host = _infer_presigned


def _exit_with_parent():
    # stdin is a pipe from the test process: when it closes, even after a SIGKILL, so does moto.
    sys.stdin.read()
    os._exit(0)


threading.Thread(target=_exit_with_parent, daemon=True).start()

from moto.server import main  # noqa: E402

main(sys.argv[1:])
"#;

/// Starting, seeding or resetting moto failed.
#[derive(Debug, thiserror::Error)]
pub enum MotoError {
    #[error(
        "moto is not installed in {}; run `cargo xtask test`, which installs \
         integration/python/requirements.txt there, or `{}/bin/pip install -r \
         integration/python/requirements.txt`",
        venv.display(),
        venv.display()
    )]
    NotInstalled { venv: PathBuf },
    #[error("moto did not start: {reason}\n--- moto log ---\n{log}")]
    Start { reason: String, log: String },
    #[error("{call} failed on moto: {reason}")]
    Call { call: &'static str, reason: String },
    #[error(transparent)]
    Harness(#[from] HarnessError),
}

/// A moto server on 127.0.0.1, killed when dropped.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    port: u16,
    endpoint_url: String,
    log: PathBuf,
}

impl Moto {
    /// Starts moto on a free port and waits until it answers.
    pub async fn start() -> Result<Moto, MotoError> {
        let venv = target_dir().join("e2e-venv");
        let python = venv.join("bin/python");
        if !venv.join("bin/moto_server").is_file() || !python.is_file() {
            return Err(MotoError::NotInstalled { venv });
        }
        let dir = scratch_dir("moto")?;
        let mut last_error = None;
        // A port found free can be taken before moto binds it; try a few.
        for attempt in 0..3 {
            let port = free_port()?;
            let log = dir.join(format!("moto-{attempt}.log"));
            let child = spawn(&python, port, &log)?;
            let mut moto = Moto { child, port, endpoint_url: format!("http://127.0.0.1:{port}"), log };
            match moto.wait_ready().await {
                Ok(()) => return Ok(moto),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error
            .unwrap_or_else(|| MotoError::Start { reason: "no attempt".to_owned(), log: String::new() }))
    }

    /// The URL to point AWS clients at.
    pub fn endpoint_url(&self) -> &str {
        &self.endpoint_url
    }

    /// Forgets every resource in every account and region.
    pub async fn reset(&self) -> Result<(), MotoError> {
        let status = http_status(self.addr(), "POST", "/moto-api/reset")
            .await
            .map_err(|reason| MotoError::Call { call: "reset", reason })?;
        if status != 200 {
            return Err(MotoError::Call { call: "reset", reason: format!("HTTP {status}") });
        }
        Ok(())
    }

    /// What moto has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An RDS seeding client for `region` of the default account.
    pub fn rds(&self, region: &str) -> MotoRds {
        MotoRds::new(self, region, Credentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY, None, None, "moto"))
    }

    /// An RDS seeding client for `region` of account `account_id`, through STS AssumeRole of
    /// `arn:aws:iam::<account_id>:role/moto-seed`.
    pub async fn rds_in_account(&self, account_id: &str, region: &str) -> Result<MotoRds, MotoError> {
        let credentials = self.assume_role(&format!("arn:aws:iam::{account_id}:role/moto-seed")).await?;
        Ok(MotoRds::new(self, region, credentials))
    }

    /// Temporary credentials for `role_arn`; moto files what they create under the role's
    /// account.
    pub async fn assume_role(&self, role_arn: &str) -> Result<Credentials, MotoError> {
        let config = aws_sdk_sts::Config::builder()
            .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
            .region(aws_sdk_sts::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sts::config::Credentials::new(
                ACCESS_KEY_ID,
                SECRET_ACCESS_KEY,
                None,
                None,
                "moto",
            ))
            .endpoint_url(&self.endpoint_url)
            .build();
        let output = aws_sdk_sts::Client::from_conf(config)
            .assume_role()
            .role_arn(role_arn)
            .role_session_name("moto-seed")
            .send()
            .await
            .map_err(|e| sdk_error("AssumeRole", e))?;
        let Some(credentials) = output.credentials() else {
            return Err(MotoError::Call {
                call: "AssumeRole",
                reason: "no credentials in the answer".to_owned(),
            });
        };
        Ok(Credentials::new(
            credentials.access_key_id(),
            credentials.secret_access_key(),
            Some(credentials.session_token().to_owned()),
            None,
            "moto-assumed",
        ))
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    async fn wait_ready(&mut self) -> Result<(), MotoError> {
        let addr = self.addr();
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(MotoError::Start {
                    reason: format!("the process ended with {status}"),
                    log: self.log(),
                });
            }
            if http_status(addr, "GET", "/moto-api/").await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(MotoError::Start {
                    reason: format!("no answer on {addr} within {STARTUP_TIMEOUT:?}"),
                    log: self.log(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16, MotoError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(HarnessError::io("cannot bind a port on 127.0.0.1 for moto"))?;
    let port = listener.local_addr().map_err(HarnessError::io("cannot read the port"))?.port();
    Ok(port)
}

fn spawn(python: &Path, port: u16, log: &Path) -> Result<Child, MotoError> {
    let stdout =
        std::fs::File::create(log).map_err(HarnessError::io(format!("cannot create {}", log.display())))?;
    let stderr = stdout.try_clone().map_err(HarnessError::io("cannot share the moto log"))?;
    let child = Command::new(python)
        .args(["-c", LAUNCHER, "-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(HarnessError::io(format!("cannot run {}", python.display())))?;
    Ok(child)
}

/// One HTTP/1.1 request without a body; the status code of the answer.
async fn http_status(addr: SocketAddr, method: &str, path: &str) -> Result<u16, String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.map_err(|e| e.to_string())?;
        let answer = String::from_utf8_lossy(&answer);
        let status =
            answer.strip_prefix("HTTP/1.").and_then(|rest| rest.get(2..5)).and_then(|s| s.parse().ok());
        status.ok_or_else(|| format!("not an HTTP answer: {:?}", answer.lines().next().unwrap_or_default()))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange).await.map_err(|_| "timed out".to_owned())?
}

/// An instance to create: an identifier, an engine and the settings discovery reads.
#[derive(Clone, Debug)]
pub struct InstanceSpec {
    pub id: String,
    pub engine: String,
    pub iam: bool,
    pub tags: Vec<(String, String)>,
    /// The Aurora cluster it joins; its engine must be the cluster's.
    pub cluster: Option<String>,
}

impl InstanceSpec {
    /// A `postgres` instance with IAM authentication on and no tags.
    pub fn postgres(id: &str) -> InstanceSpec {
        InstanceSpec {
            id: id.to_owned(),
            engine: "postgres".to_owned(),
            iam: true,
            tags: Vec::new(),
            cluster: None,
        }
    }

    pub fn engine(mut self, engine: &str) -> InstanceSpec {
        engine.clone_into(&mut self.engine);
        self
    }

    pub fn iam(mut self, iam: bool) -> InstanceSpec {
        self.iam = iam;
        self
    }

    pub fn tag(mut self, key: &str, value: &str) -> InstanceSpec {
        self.tags.push((key.to_owned(), value.to_owned()));
        self
    }

    /// A member of `cluster`, with the engine `aurora-postgresql`.
    pub fn in_cluster(mut self, cluster: &str) -> InstanceSpec {
        self.cluster = Some(cluster.to_owned());
        "aurora-postgresql".clone_into(&mut self.engine);
        self
    }
}

/// An Aurora cluster to create.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    pub id: String,
    pub engine: String,
    pub iam: bool,
    pub tags: Vec<(String, String)>,
}

impl ClusterSpec {
    /// An `aurora-postgresql` cluster with IAM authentication on and no tags.
    pub fn aurora_postgres(id: &str) -> ClusterSpec {
        ClusterSpec { id: id.to_owned(), engine: "aurora-postgresql".to_owned(), iam: true, tags: Vec::new() }
    }

    pub fn engine(mut self, engine: &str) -> ClusterSpec {
        engine.clone_into(&mut self.engine);
        self
    }

    pub fn iam(mut self, iam: bool) -> ClusterSpec {
        self.iam = iam;
        self
    }

    pub fn tag(mut self, key: &str, value: &str) -> ClusterSpec {
        self.tags.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// An RDS client bound to one moto, account and region, with seeding helpers.
#[derive(Clone, Debug)]
pub struct MotoRds {
    client: aws_sdk_rds::Client,
}

impl MotoRds {
    fn new(moto: &Moto, region: &str, credentials: Credentials) -> MotoRds {
        let config = aws_sdk_rds::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .credentials_provider(credentials)
            .endpoint_url(moto.endpoint_url())
            .build();
        MotoRds { client: aws_sdk_rds::Client::from_conf(config) }
    }

    /// The SDK client, for calls the helpers do not cover.
    pub fn client(&self) -> &aws_sdk_rds::Client {
        &self.client
    }

    pub async fn create_instance(&self, spec: &InstanceSpec) -> Result<(), MotoError> {
        let mut request = self
            .client
            .create_db_instance()
            .db_instance_identifier(&spec.id)
            .db_instance_class("db.t3.micro")
            .engine(&spec.engine)
            .enable_iam_database_authentication(spec.iam)
            .set_tags(Some(tags(&spec.tags)));
        request = match &spec.cluster {
            Some(cluster) => request.db_cluster_identifier(cluster),
            None => request
                .master_username("postgres")
                .master_user_password("moto-password")
                .allocated_storage(20),
        };
        request.send().await.map_err(|e| sdk_error("CreateDBInstance", e))?;
        Ok(())
    }

    /// Creates many instances, a few requests at a time.
    pub async fn create_instances(&self, specs: &[InstanceSpec]) -> Result<(), MotoError> {
        let results: Vec<_> = futures_util::stream::iter(specs)
            .map(|spec| self.create_instance(spec))
            .buffer_unordered(8)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// Creates a cluster and reads it back once: moto reports a new cluster as `creating` on
    /// the first read and `available` from then on.
    pub async fn create_cluster(&self, spec: &ClusterSpec) -> Result<(), MotoError> {
        self.client
            .create_db_cluster()
            .db_cluster_identifier(&spec.id)
            .engine(&spec.engine)
            .master_username("postgres")
            .master_user_password("moto-password")
            .enable_iam_database_authentication(spec.iam)
            .set_tags(Some(tags(&spec.tags)))
            .send()
            .await
            .map_err(|e| sdk_error("CreateDBCluster", e))?;
        self.settle_cluster(&spec.id).await
    }

    /// Adds a custom endpoint (`custom_type` `READER` or `ANY`) to a cluster.
    pub async fn create_cluster_endpoint(
        &self,
        cluster: &str,
        endpoint: &str,
        custom_type: &str,
    ) -> Result<(), MotoError> {
        self.client
            .create_db_cluster_endpoint()
            .db_cluster_identifier(cluster)
            .db_cluster_endpoint_identifier(endpoint)
            .endpoint_type(custom_type)
            .send()
            .await
            .map_err(|e| sdk_error("CreateDBClusterEndpoint", e))?;
        Ok(())
    }

    pub async fn stop_instance(&self, id: &str) -> Result<(), MotoError> {
        self.client
            .stop_db_instance()
            .db_instance_identifier(id)
            .send()
            .await
            .map_err(|e| sdk_error("StopDBInstance", e))?;
        Ok(())
    }

    pub async fn stop_cluster(&self, id: &str) -> Result<(), MotoError> {
        self.client
            .stop_db_cluster()
            .db_cluster_identifier(id)
            .send()
            .await
            .map_err(|e| sdk_error("StopDBCluster", e))?;
        Ok(())
    }

    async fn settle_cluster(&self, id: &str) -> Result<(), MotoError> {
        self.client
            .describe_db_clusters()
            .db_cluster_identifier(id)
            .send()
            .await
            .map_err(|e| sdk_error("DescribeDBClusters", e))?;
        Ok(())
    }
}

fn tags(pairs: &[(String, String)]) -> Vec<Tag> {
    pairs.iter().map(|(key, value)| Tag::builder().key(key).value(value).build()).collect()
}

fn sdk_error<E: std::error::Error + 'static>(call: &'static str, error: E) -> MotoError {
    MotoError::Call { call, reason: aws_sdk_rds::error::DisplayErrorContext(error).to_string() }
}
