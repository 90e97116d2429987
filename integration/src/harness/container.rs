//! Test containers over the Docker API (bollard), with the API version negotiated.
//!
//! testcontainers 0.27 is not used: its bollard client always speaks Docker API 1.52 and never
//! negotiates, so Docker engines older than 29 (Debian bookworm's 20.10 speaks 1.41) refuse
//! every request with `client version 1.52 is too new`. This module does the little the tests
//! need: create a container from a local image with files copied in, published ports on
//! 127.0.0.1, a network with aliases and the test label; start it; wait for a line on stdout;
//! keep its log; and remove it on drop.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkConnectRequest, NetworkingConfig, PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures_util::StreamExt;
use tokio::sync::OnceCell;
use tokio::sync::watch;

use crate::harness::docker::{docker_runtime, docker_task};
use crate::harness::{HarnessError, TEST_LABEL_KEY};

/// The most container output kept in memory; later output is dropped with a note.
const MAX_LOG: usize = 8 << 20;

/// A file to put into a container before it starts.
#[derive(Debug, Clone)]
enum FileSource {
    Bytes(Vec<u8>),
    Host(PathBuf),
}

#[derive(Debug, Clone)]
struct CopyFile {
    path: String,
    mode: Option<u32>,
    source: FileSource,
}

/// What to run. Built with the `with_*` methods, started with [`Container::start`].
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    image: String,
    name_prefix: String,
    entrypoint: Option<Vec<String>>,
    cmd: Vec<String>,
    env: Vec<String>,
    files: Vec<CopyFile>,
    ports: Vec<u16>,
    network: Option<(String, Vec<String>)>,
    ready_line: Option<String>,
    startup_timeout: Duration,
    auto_remove: bool,
}

impl ContainerSpec {
    /// A container of the local image `image` (`name:tag`), named `rds-auth-test-…`, labelled
    /// [`TEST_LABEL`](crate::harness::TEST_LABEL), ready as soon as it runs, with 60 s to get
    /// there.
    pub fn new(image: &str) -> ContainerSpec {
        ContainerSpec {
            image: image.to_owned(),
            name_prefix: "rds-auth-test".to_owned(),
            entrypoint: None,
            cmd: Vec::new(),
            env: Vec::new(),
            files: Vec::new(),
            ports: Vec::new(),
            network: None,
            ready_line: None,
            startup_timeout: Duration::from_secs(60),
            auto_remove: false,
        }
    }

    /// The start of the container's name; a process id and a counter follow.
    pub fn with_name_prefix(mut self, prefix: &str) -> ContainerSpec {
        prefix.clone_into(&mut self.name_prefix);
        self
    }

    pub fn with_entrypoint(mut self, args: &[&str]) -> ContainerSpec {
        self.entrypoint = Some(args.iter().map(|a| (*a).to_owned()).collect());
        self
    }

    pub fn with_cmd(mut self, args: &[&str]) -> ContainerSpec {
        self.cmd = args.iter().map(|a| (*a).to_owned()).collect();
        self
    }

    pub fn with_env(mut self, name: &str, value: &str) -> ContainerSpec {
        self.env.push(format!("{name}={value}"));
        self
    }

    /// Puts `contents` at the absolute `path` in the container, owned by root, with `mode`.
    pub fn with_file(mut self, path: &str, contents: impl Into<Vec<u8>>, mode: u32) -> ContainerSpec {
        self.files.push(CopyFile {
            path: path.to_owned(),
            mode: Some(mode),
            source: FileSource::Bytes(contents.into()),
        });
        self
    }

    /// Copies the host file `source` to the absolute `path`, keeping its mode. The file is read
    /// when the container starts.
    pub fn with_host_file(mut self, path: &str, source: &Path) -> ContainerSpec {
        self.files.push(CopyFile {
            path: path.to_owned(),
            mode: None,
            source: FileSource::Host(source.to_owned()),
        });
        self
    }

    /// Publishes the TCP `port` on a random port of 127.0.0.1 ([`Container::host_port`]).
    pub fn with_port(mut self, port: u16) -> ContainerSpec {
        self.ports.push(port);
        self
    }

    /// Attaches the container to the user-defined network `name` (instead of Docker's default
    /// bridge), where the other containers on it reach it by `aliases`. Create the network
    /// first with [`ensure_network`](crate::harness::ensure_network).
    pub fn with_network(mut self, name: &str, aliases: &[&str]) -> ContainerSpec {
        self.network = Some((name.to_owned(), aliases.iter().map(|a| (*a).to_owned()).collect()));
        self
    }

    /// The container is ready once this exact line appears on its stdout.
    pub fn with_ready_line(mut self, line: &str) -> ContainerSpec {
        self.ready_line = Some(line.to_owned());
        self
    }

    pub fn with_startup_timeout(mut self, timeout: Duration) -> ContainerSpec {
        self.startup_timeout = timeout;
        self
    }

    /// Docker removes the container as soon as it exits (`docker run --rm`).
    pub fn with_auto_remove(mut self) -> ContainerSpec {
        self.auto_remove = true;
        self
    }
}

/// A started container. Dropping it removes the container (and waits for that).
#[derive(Debug)]
pub struct Container {
    id: String,
    name: String,
    host_ports: BTreeMap<u16, u16>,
    network_ip: Option<IpAddr>,
    log: Arc<Mutex<String>>,
    removed: bool,
}

/// Where the log follower is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    Starting,
    Ready,
    Ended,
}

impl Container {
    /// Creates and starts a container, then waits until it is ready. On failure the container
    /// is removed and the error carries its log.
    pub async fn start(spec: ContainerSpec) -> Result<Container, HarnessError> {
        docker_task(start(spec)).await
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host port a published container port is reachable on, on 127.0.0.1.
    pub fn host_port(&self, container_port: u16) -> Option<u16> {
        self.host_ports.get(&container_port).copied()
    }

    /// `127.0.0.1:<host port>` for a published container port.
    pub fn host_addr(&self, container_port: u16) -> Option<SocketAddr> {
        self.host_port(container_port).map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// The container's address on the network given with [`ContainerSpec::with_network`].
    pub fn network_ip(&self) -> Option<IpAddr> {
        self.network_ip
    }

    /// Attaches the running container to another network, where containers on it reach it by
    /// `aliases`, and returns its address there.
    pub async fn connect_network(&self, network: &str, aliases: &[&str]) -> Result<IpAddr, HarnessError> {
        let (id, network) = (self.id.clone(), network.to_owned());
        let aliases: Vec<String> = aliases.iter().map(|a| (*a).to_owned()).collect();
        docker_task(async move {
            let docker = client().await?;
            let endpoint = EndpointSettings { aliases: Some(aliases), ..Default::default() };
            let request = NetworkConnectRequest { container: id.clone(), endpoint_config: Some(endpoint) };
            docker
                .connect_network(&network, request)
                .await
                .map_err(|e| HarnessError::Docker(format!("cannot connect {id} to {network}: {e}")))?;
            let inspected = docker
                .inspect_container(&id, None)
                .await
                .map_err(|e| HarnessError::Docker(format!("cannot inspect {id}: {e}")))?;
            inspected
                .network_settings
                .and_then(|settings| settings.networks)
                .and_then(|networks| networks.get(&network).cloned())
                .and_then(|endpoint| endpoint.ip_address)
                .and_then(|ip| ip.parse().ok())
                .ok_or_else(|| HarnessError::Docker(format!("{id} has no address on {network}")))
        })
        .await
    }

    /// Sends a signal (`SIGTERM`, `SIGKILL`, ...) to the container's main process.
    pub async fn signal(&self, signal: &str) -> Result<(), HarnessError> {
        let (id, signal) = (self.id.clone(), signal.to_owned());
        docker_task(async move {
            let docker = client().await?;
            let options = KillContainerOptionsBuilder::default().signal(&signal).build();
            docker
                .kill_container(&id, Some(options))
                .await
                .map_err(|e| HarnessError::Docker(format!("cannot signal {id}: {e}")))
        })
        .await
    }

    /// Everything the container wrote to stdout and stderr so far, interleaved as it came.
    pub fn logs(&self) -> String {
        self.log.lock().map(|log| log.clone()).unwrap_or_default()
    }

    /// Waits until one line of the log contains every one of `parts`, and returns that line;
    /// on timeout the error carries the log.
    pub async fn wait_for_line(&self, parts: &[&str], timeout: Duration) -> Result<String, HarnessError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let log = self.logs();
            if let Some(line) = log.lines().find(|line| parts.iter().all(|part| line.contains(part))) {
                return Ok(line.to_owned());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(HarnessError::ContainerLog {
                    name: self.name.clone(),
                    needle: parts.join(" … "),
                    log,
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Removes the container now.
    pub async fn remove(mut self) -> Result<(), HarnessError> {
        self.removed = true;
        let id = self.id.clone();
        docker_task(async move { remove(&id).await }).await
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        let id = self.id.clone();
        let Ok(runtime) = docker_runtime() else { return };
        let on_docker_runtime =
            tokio::runtime::Handle::try_current().is_ok_and(|current| current.id() == runtime.handle().id());
        if on_docker_runtime {
            // Blocking here would stall the runtime the removal needs: let it run on its own.
            runtime.spawn(async move { remove(&id).await });
            return;
        }
        // Drop cannot await, and may run on a test's runtime thread, where blocking on another
        // runtime is refused: a plain thread waits for the removal instead.
        let removal = std::thread::spawn(move || runtime.block_on(remove(&id)));
        let _ = removal.join();
    }
}

/// The Docker client, with its API version lowered to the engine's, made once on the Docker
/// runtime.
pub(crate) async fn client() -> Result<Docker, HarnessError> {
    static CLIENT: OnceCell<Docker> = OnceCell::const_new();
    CLIENT
        .get_or_try_init(|| async {
            let unreachable = |e: DockerError| HarnessError::DockerUnreachable { reason: e.to_string() };
            Docker::connect_with_defaults()
                .map_err(unreachable)?
                .negotiate_version()
                .await
                .map_err(unreachable)
        })
        .await
        .cloned()
}

async fn start(spec: ContainerSpec) -> Result<Container, HarnessError> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let docker = client().await?;
    let name =
        format!("{}-{}-{}", spec.name_prefix, std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let archive = if spec.files.is_empty() { None } else { Some(tar(&spec.files)?) };

    let bindings = spec
        .ports
        .iter()
        .map(|port| {
            let binding =
                PortBinding { host_ip: Some("127.0.0.1".to_owned()), host_port: Some(String::new()) };
            (port_key(*port), Some(vec![binding]))
        })
        .collect();
    let mut host_config = HostConfig {
        port_bindings: Some(bindings),
        auto_remove: Some(spec.auto_remove),
        ..Default::default()
    };
    let mut networking_config = None;
    if let Some((network, aliases)) = &spec.network {
        host_config.network_mode = Some(network.clone());
        let endpoint = EndpointSettings { aliases: Some(aliases.clone()), ..Default::default() };
        networking_config =
            Some(NetworkingConfig { endpoints_config: Some(HashMap::from([(network.clone(), endpoint)])) });
    }
    let body = ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint: spec.entrypoint.clone(),
        cmd: (!spec.cmd.is_empty()).then(|| spec.cmd.clone()),
        env: Some(spec.env.clone()),
        labels: Some(HashMap::from([(TEST_LABEL_KEY.to_owned(), "1".to_owned())])),
        exposed_ports: Some(spec.ports.iter().copied().map(port_key).collect()),
        host_config: Some(host_config),
        networking_config,
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::new().name(&name).build();
    let id = match docker.create_container(Some(options), body).await {
        Ok(created) => created.id,
        Err(DockerError::DockerResponseServerError { status_code: 404, .. }) => {
            return Err(HarnessError::ImageMissing { image: spec.image });
        }
        Err(e) => return Err(HarnessError::Docker(format!("cannot create {name}: {e}"))),
    };
    let mut container = Container {
        id,
        name,
        host_ports: BTreeMap::new(),
        network_ip: None,
        log: Arc::new(Mutex::new(String::new())),
        removed: false,
    };
    match finish_start(&docker, &spec, archive, &mut container).await {
        Ok(()) => Ok(container),
        Err(reason) => {
            let error =
                HarnessError::ContainerStart { name: container.name.clone(), reason, log: container.logs() };
            // Removed here and awaited: a drop on this runtime could only schedule it.
            container.removed = true;
            let _ = remove(&container.id).await;
            Err(error)
        }
    }
}

/// Copies the files in, starts the container, waits until it is ready, and reads its ports and
/// address. The error is the reason, for [`HarnessError::ContainerStart`].
async fn finish_start(
    docker: &Docker,
    spec: &ContainerSpec,
    archive: Option<Vec<u8>>,
    container: &mut Container,
) -> Result<(), String> {
    let id = container.id.clone();
    if let Some(archive) = archive {
        let options = UploadToContainerOptionsBuilder::new().path("/").build();
        docker
            .upload_to_container(&id, Some(options), bollard::body_full(archive.into()))
            .await
            .map_err(|e| format!("cannot copy files in: {e}"))?;
    }
    docker.start_container(&id, None).await.map_err(|e| format!("cannot start: {e}"))?;

    let (progress_tx, mut progress) = watch::channel(Progress::Starting);
    if spec.ready_line.is_none() {
        progress_tx.send_replace(Progress::Ready);
    }
    tokio::spawn(follow_logs(
        docker.clone(),
        id.clone(),
        container.log.clone(),
        spec.ready_line.clone(),
        progress_tx,
    ));
    let waited = tokio::time::timeout(spec.startup_timeout, async {
        progress.wait_for(|p| *p != Progress::Starting).await.map(|p| *p)
    })
    .await;
    match waited {
        Ok(Ok(Progress::Ready)) => {}
        Ok(_) => return Err("it exited before it was ready".to_owned()),
        Err(_) => return Err(format!("not ready after {:?}", spec.startup_timeout)),
    }

    let inspected = docker.inspect_container(&id, None).await.map_err(|e| format!("cannot inspect: {e}"))?;
    let settings = inspected.network_settings.unwrap_or_default();
    let published = settings.ports.unwrap_or_default();
    for port in &spec.ports {
        let host_port = published
            .get(&port_key(*port))
            .and_then(|bindings| bindings.as_ref())
            .and_then(|bindings| bindings.iter().find_map(|b| b.host_port.as_deref()?.parse::<u16>().ok()))
            .ok_or_else(|| format!("port {port} was not published"))?;
        container.host_ports.insert(*port, host_port);
    }
    if let Some((network, _)) = &spec.network {
        container.network_ip = settings
            .networks
            .unwrap_or_default()
            .get(network)
            .and_then(|endpoint| endpoint.ip_address.as_deref()?.parse().ok());
    }
    Ok(())
}

fn port_key(port: u16) -> String {
    format!("{port}/tcp")
}

/// Appends the container's output to `log` until it ends, and reports when `ready_line`
/// appears on stdout, or that the output ended.
async fn follow_logs(
    docker: Docker,
    id: String,
    log: Arc<Mutex<String>>,
    ready_line: Option<String>,
    progress: watch::Sender<Progress>,
) {
    let options = LogsOptionsBuilder::new().follow(true).stdout(true).stderr(true).build();
    let mut stream = docker.logs(&id, Some(options));
    let mut stdout_line = String::new();
    while let Some(Ok(frame)) = stream.next().await {
        let (is_stdout, bytes) = match frame {
            LogOutput::StdOut { message } => (true, message),
            LogOutput::StdErr { message } | LogOutput::Console { message } => (false, message),
            LogOutput::StdIn { .. } => continue,
        };
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(mut log) = log.lock()
            && log.len() < MAX_LOG
        {
            log.push_str(&text);
            if log.len() >= MAX_LOG {
                log.push_str("\n[log truncated]\n");
            }
        }
        if is_stdout && let Some(ready) = &ready_line {
            stdout_line.push_str(&text);
            while let Some(end) = stdout_line.find('\n') {
                if stdout_line[..end].trim_end_matches('\r') == ready {
                    progress.send_replace(Progress::Ready);
                }
                stdout_line.drain(..=end);
            }
        }
    }
    progress.send_if_modified(|p| {
        let changed = *p == Progress::Starting;
        if changed {
            *p = Progress::Ended;
        }
        changed
    });
}

async fn remove(id: &str) -> Result<(), HarnessError> {
    let docker = client().await?;
    let options = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
    match docker.remove_container(id, Some(options)).await {
        // 404: already gone; 409: an auto-remove is already under way.
        Ok(()) | Err(DockerError::DockerResponseServerError { status_code: 404 | 409, .. }) => Ok(()),
        Err(e) => Err(HarnessError::Docker(format!("cannot remove container {id}: {e}"))),
    }
}

/// A ustar archive of `files`, with their parent directories, rooted at `/`.
fn tar(files: &[CopyFile]) -> Result<Vec<u8>, HarnessError> {
    let mut out = Vec::new();
    let mut dirs = BTreeSet::new();
    for file in files {
        let path = file.path.trim_start_matches('/');
        let mut parent = String::new();
        for component in path.split('/').rev().skip(1).collect::<Vec<_>>().into_iter().rev() {
            parent.push_str(component);
            parent.push('/');
            if dirs.insert(parent.clone()) {
                out.extend_from_slice(&tar_header(&parent, 0o755, 0, b'5')?);
            }
        }
        let (contents, mode) = match &file.source {
            FileSource::Bytes(bytes) => (bytes.clone(), file.mode.unwrap_or(0o644)),
            FileSource::Host(source) => {
                let contents = std::fs::read(source)
                    .map_err(HarnessError::io(format!("cannot read {}", source.display())))?;
                let mode = match file.mode {
                    Some(mode) => mode,
                    None => std::fs::metadata(source)
                        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
                        .map_err(HarnessError::io(format!("cannot stat {}", source.display())))?,
                };
                (contents, mode)
            }
        };
        out.extend_from_slice(&tar_header(path, mode, contents.len() as u64, b'0')?);
        out.extend_from_slice(&contents);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    out.resize(out.len() + 1024, 0);
    Ok(out)
}

/// One 512-byte ustar header for a file (`b'0'`) or directory (`b'5'`) owned by root.
fn tar_header(path: &str, mode: u32, size: u64, kind: u8) -> Result<[u8; 512], HarnessError> {
    if path.len() > 99 {
        return Err(HarnessError::Docker(format!("path too long for the archive: {path}")));
    }
    let mut header = [0u8; 512];
    let mut put = |offset: usize, bytes: &[u8]| header[offset..offset + bytes.len()].copy_from_slice(bytes);
    put(0, path.as_bytes());
    put(100, format!("{mode:07o}\0").as_bytes());
    put(108, b"0000000\0");
    put(116, b"0000000\0");
    put(124, format!("{size:011o}\0").as_bytes());
    put(136, b"00000000000\0");
    put(148, b"        ");
    put(156, &[kind]);
    put(257, b"ustar\0");
    put(263, b"00");
    let checksum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..156].copy_from_slice(format!("{checksum:06o}\0 ").as_bytes());
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_files_with_their_directories() {
        let files = [
            CopyFile {
                path: "/standin/a.sh".into(),
                mode: Some(0o755),
                source: FileSource::Bytes(b"#!/bin/sh\n".to_vec()),
            },
            CopyFile {
                path: "/standin/b".into(),
                mode: Some(0o600),
                source: FileSource::Bytes(vec![7; 513]),
            },
        ];
        let archive = tar(&files).unwrap();
        // A directory, two headers, 1 + 2 data blocks, two end blocks.
        assert_eq!(archive.len(), 512 * 8);
        assert_eq!(&archive[..8], b"standin/");
        assert_eq!(archive[156], b'5');
        assert_eq!(&archive[512..525], b"standin/a.sh\0");
        assert_eq!(&archive[512 + 100..512 + 108], b"0000755\0");
        assert_eq!(&archive[512 + 124..512 + 136], b"00000000012\0");
        // The checksum counts the header with its checksum field as spaces.
        let mut header = [0u8; 512];
        header.copy_from_slice(&archive[512..1024]);
        let stored = u32::from_str_radix(std::str::from_utf8(&header[148..154]).unwrap(), 8).unwrap();
        header[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, header.iter().map(|&b| u32::from(b)).sum::<u32>());
        assert!(archive[512 * 6..].iter().all(|&b| b == 0));
    }
}
