//! The Docker rules every test container follows: one runtime for Docker calls, one label, and
//! loud failures with a hint when Docker or an image is missing.

use std::collections::HashMap;
use std::future::Future;
use std::sync::LazyLock;

use bollard::errors::Error as DockerError;
use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::PruneNetworksOptionsBuilder;
use tokio::runtime::Runtime;

use crate::harness::HarnessError;
use crate::harness::container::client;

/// The label every test container and network carries; `cargo xtask test` removes leftovers
/// by it (`docker ps --filter label=rds-auth-proxy.test=1`).
pub const TEST_LABEL: &str = "rds-auth-proxy.test=1";
/// [`TEST_LABEL`]'s key; its value is `1`.
pub const TEST_LABEL_KEY: &str = "rds-auth-proxy.test";

/// The runtime every Docker call runs on. It lives as long as the process, so connections the
/// Docker client pools, and the log followers of containers, outlive each test's own runtime.
static DOCKER_RUNTIME: LazyLock<Result<Runtime, String>> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("rds-auth-test-docker")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
});

/// Runs `work` on the harness's Docker runtime and waits for it from any runtime.
///
/// Every Docker call of the harness goes through this: each `#[tokio::test]` has its own
/// runtime, and a Docker connection opened on one dies with it, which would break the next
/// test that reuses the shared client.
pub async fn docker_task<F, T>(work: F) -> Result<T, HarnessError>
where
    F: Future<Output = Result<T, HarnessError>> + Send + 'static,
    T: Send + 'static,
{
    match docker_runtime()?.spawn(work).await {
        Ok(result) => result,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => Err(HarnessError::Docker(format!("the Docker task was cancelled: {e}"))),
        },
    }
}

/// The runtime of [`docker_task`].
pub(crate) fn docker_runtime() -> Result<&'static Runtime, HarnessError> {
    DOCKER_RUNTIME.as_ref().map_err(|e| HarnessError::Docker(format!("cannot start the Docker runtime: {e}")))
}

/// Fails with a hint unless a Docker engine answers and `image` (`name:tag`) exists locally.
pub async fn check_docker(image: &str) -> Result<(), HarnessError> {
    let image = image.to_owned();
    docker_task(async move {
        let docker = client().await?;
        docker.ping().await.map_err(|e| HarnessError::DockerUnreachable { reason: e.to_string() })?;
        match docker.inspect_image(&image).await {
            Ok(_) => Ok(()),
            Err(DockerError::DockerResponseServerError { status_code: 404, .. }) => {
                Err(HarnessError::ImageMissing { image })
            }
            Err(e) => Err(HarnessError::Docker(format!("cannot inspect {image}: {e}"))),
        }
    })
    .await
}

/// Creates the bridge network `name`, labelled [`TEST_LABEL`], unless it exists. Networks stay until `cargo xtask test` removes them: containers of several
/// tests may share one, and Docker refuses to remove a network still in use.
pub async fn ensure_network(name: &str) -> Result<(), HarnessError> {
    let name = name.to_owned();
    docker_task(async move { create_network(&name, false).await }).await
}

/// Like [`ensure_network`], for an internal network: containers on it reach each other, and
/// nothing else. No port can be published from it; on Linux the host still reaches its
/// containers by address.
pub async fn ensure_internal_network(name: &str) -> Result<(), HarnessError> {
    let name = name.to_owned();
    docker_task(async move { create_network(&name, true).await }).await
}

async fn create_network(name: &str, internal: bool) -> Result<(), HarnessError> {
    let docker = client().await?;
    // Test binaries that were not run by `cargo xtask test` leave their networks behind, and
    // Docker runs out of address pools after about thirty. Networks in use are never pruned;
    // the age keeps a network another test binary just created for its next container.
    let filters = HashMap::from([("label", vec![TEST_LABEL]), ("until", vec!["10m"])]);
    let _ = docker.prune_networks(Some(PruneNetworksOptionsBuilder::new().filters(&filters).build())).await;
    match docker.inspect_network(name, None).await {
        Ok(_) => return Ok(()),
        Err(DockerError::DockerResponseServerError { status_code: 404, .. }) => {}
        Err(e) => return Err(HarnessError::Docker(format!("cannot inspect network {name}: {e}"))),
    }
    let request = NetworkCreateRequest {
        name: name.to_owned(),
        driver: Some("bridge".to_owned()),
        internal: Some(internal),
        labels: Some(HashMap::from([(TEST_LABEL_KEY.to_owned(), "1".to_owned())])),
        ..Default::default()
    };
    match docker.create_network(request).await {
        // 409: another test created it first.
        Ok(_) | Err(DockerError::DockerResponseServerError { status_code: 409, .. }) => Ok(()),
        Err(e) => Err(HarnessError::Docker(format!("cannot create network {name}: {e}"))),
    }
}
