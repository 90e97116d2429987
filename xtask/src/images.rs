//! `cargo xtask images`: the local container images the end-to-end tests run, built without a
//! registry.
//!
//! Each image is a Debian bookworm root file system made by `mmdebstrap` and piped into
//! `docker import`. An image is rebuilt only when its recipe changes: the recipe's hash is
//! stored in the label `rds-auth-proxy.recipe`, and a tag whose label matches is kept.
//!
//! The images hold packages only. Everything that changes with the code (the RDS stand-in
//! binary, its configuration, certificates and scripts) is copied into each container when the
//! tests create it, so editing the stand-in never needs a rebuild.

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use xshell::{Shell, cmd};

use crate::step;

/// The label every test container and network carries, so leftovers can be found and removed.
pub(crate) const TEST_LABEL: &str = "rds-auth-proxy.test=1";

/// The label holding a recipe's hash.
const RECIPE_LABEL: &str = "rds-auth-proxy.recipe";

/// Bump to force a rebuild of every image, for example after changing how images are made.
const RECIPE_VERSION: u32 = 1;

/// What goes into one image.
struct Recipe {
    tag: &'static str,
    suite: &'static str,
    packages: &'static [&'static str],
    /// `docker import -c` instructions (`ENV`, `USER`, `ENTRYPOINT`, `CMD`).
    changes: &'static [&'static str],
}

/// Drops documentation, manual pages and translations: the images stay smaller, and Postgres
/// reports its messages in English, which the tests compare against.
const DPKG_EXCLUDES: &[&str] = &[
    "path-exclude=/usr/share/doc/*",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/doc/*/copyright",
];

const PATH: &str =
    "ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const RECIPES: &[Recipe] = &[
    // Postgres behind the RDS stand-in (integration/docker/standin/entrypoint.sh).
    Recipe {
        tag: "rds-auth-proxy-test/postgres:15",
        suite: "bookworm",
        packages: &[
            "postgresql-15",
            "libpam-modules",
            "openssl",
            "ca-certificates",
            "iproute2",
            "netcat-openbsd",
            "procps",
        ],
        changes: &["ENV LANG=C.UTF-8", PATH],
    },
    // The base of the server-proxy image, and a probe container for network checks.
    Recipe {
        tag: "rds-auth-proxy-test/base:bookworm",
        suite: "bookworm",
        packages: &["ca-certificates", "netcat-openbsd", "iproute2", "curl"],
        changes: &["ENV LANG=C.UTF-8", "CMD [\"/bin/sh\"]"],
    },
];

impl Recipe {
    /// A stable hash of everything that shapes the image (FNV-1a, 64 bits).
    fn hash(&self) -> String {
        let mut text = format!("version {RECIPE_VERSION}\nsuite {}\nvariant apt\n", self.suite);
        for line in self.packages.iter().chain(DPKG_EXCLUDES).chain(self.changes) {
            text.push_str(line);
            text.push('\n');
        }
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in text.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{hash:016x}")
    }
}

/// Builds every image whose tag is missing or whose recipe changed.
pub(crate) fn build(sh: &Shell) -> anyhow::Result<()> {
    step("images");
    check_docker(sh)?;
    for recipe in RECIPES {
        let hash = recipe.hash();
        if current_hash(sh, recipe.tag).as_deref() == Some(hash.as_str()) {
            step(&format!("{} is up to date (recipe {hash})", recipe.tag));
            continue;
        }
        ensure_mmdebstrap(sh)?;
        step(&format!("building {} (recipe {hash})", recipe.tag));
        let started = Instant::now();
        import(recipe, &hash)?;
        step(&format!("built {} in {:.0?}", recipe.tag, started.elapsed()));
    }
    Ok(())
}

fn check_docker(sh: &Shell) -> anyhow::Result<()> {
    let ok = cmd!(sh, "docker info").quiet().ignore_stdout().ignore_stderr().run().is_ok();
    ensure!(
        ok,
        "no Docker engine is reachable: `docker info` failed. The end-to-end tests need one: start \
         dockerd (or point DOCKER_HOST at an engine) and check that `docker info` works"
    );
    Ok(())
}

/// The recipe hash of the image behind `tag`, if it exists.
fn current_hash(sh: &Shell, tag: &str) -> Option<String> {
    let format = format!("{{{{ index .Config.Labels \"{RECIPE_LABEL}\" }}}}");
    let out = cmd!(sh, "docker image inspect --format {format} {tag}").quiet().ignore_stderr().read().ok()?;
    let out = out.trim();
    (!out.is_empty() && out != "<no value>").then(|| out.to_owned())
}

fn ensure_mmdebstrap(sh: &Shell) -> anyhow::Result<()> {
    if cmd!(sh, "mmdebstrap --version").quiet().ignore_stdout().ignore_stderr().run().is_ok() {
        return Ok(());
    }
    let root = cmd!(sh, "id -u").quiet().read().map(|uid| uid.trim() == "0").unwrap_or(false);
    let apt = cmd!(sh, "apt-get --version").quiet().ignore_stdout().ignore_stderr().run().is_ok();
    if !(root && apt) {
        bail!("mmdebstrap is missing; install it with `sudo apt-get install -y mmdebstrap` and rerun");
    }
    step("apt-get install -y mmdebstrap");
    if cmd!(sh, "apt-get install -y mmdebstrap").run().is_err() {
        // A fresh machine may not have package lists yet.
        cmd!(sh, "apt-get update").run()?;
        cmd!(sh, "apt-get install -y mmdebstrap").run().context("cannot install mmdebstrap")?;
    }
    Ok(())
}

/// `mmdebstrap ... - | docker import -c ... - <tag>`.
fn import(recipe: &Recipe, hash: &str) -> anyhow::Result<()> {
    let mut bootstrap = Command::new("mmdebstrap");
    bootstrap.args(["--variant=apt", "--quiet", "--format=tar"]);
    bootstrap.arg(format!("--include={}", recipe.packages.join(",")));
    for exclude in DPKG_EXCLUDES {
        bootstrap.arg(format!("--dpkgopt={exclude}"));
    }
    bootstrap.args([recipe.suite, "-"]).stdout(Stdio::piped());
    let mut bootstrap = bootstrap.spawn().context("cannot run mmdebstrap")?;
    let rootfs = bootstrap.stdout.take().context("mmdebstrap has no stdout")?;

    let mut import = Command::new("docker");
    import.arg("import");
    for change in recipe.changes {
        import.args(["-c", change]);
    }
    import.args(["-c", &format!("LABEL {RECIPE_LABEL}={hash}")]);
    import.args(["-", recipe.tag]).stdin(Stdio::from(rootfs)).stdout(Stdio::null());
    let imported = import.status().context("cannot run docker import")?;
    let bootstrapped = bootstrap.wait().context("mmdebstrap did not finish")?;
    ensure!(bootstrapped.success(), "mmdebstrap failed ({bootstrapped}) while building {}", recipe.tag);
    ensure!(imported.success(), "docker import failed ({imported}) while building {}", recipe.tag);
    Ok(())
}

/// Removes containers and networks the end-to-end tests left behind (a test binary that was
/// killed, or a shared container that outlived its process), found by [`TEST_LABEL`].
/// The server-proxy image the tests run.
pub(crate) const SERVER_IMAGE: &str = "rds-auth-proxy-test/server:latest";
/// The label holding the SHA-256 of the server binary an image was built from; the test
/// harness refuses an image whose label does not match the binary on disk.
const BINARY_LABEL: &str = "rds-auth-proxy.binary-sha256";

/// Builds the server-proxy image from the binary just compiled, on the cached base image, so
/// a stale binary is never tested. It takes a second: one layer with one file.
pub(crate) fn server_image(sh: &Shell, profile: &str) -> anyhow::Result<()> {
    let binary = crate::project_root().join("target").join(profile).join("rds-auth-proxy-server");
    ensure!(
        binary.exists(),
        "{} is missing: build it first (cargo build --workspace --all-targets)",
        binary.display()
    );
    let sha = cmd!(sh, "sha256sum {binary}").read()?;
    let sha = sha.split_whitespace().next().unwrap_or_default().to_owned();
    let format = format!("{{{{index .Config.Labels \"{BINARY_LABEL}\"}}}}");
    let current = cmd!(sh, "docker image inspect --format {format} {SERVER_IMAGE}")
        .quiet()
        .ignore_stderr()
        .read()
        .unwrap_or_default();
    if current.trim() == sha {
        step(&format!("{SERVER_IMAGE} is up to date"));
        return Ok(());
    }
    step(&format!("building {SERVER_IMAGE}"));
    let context = sh.create_temp_dir()?;
    let dir = context.path();
    sh.copy_file(&binary, dir.join("rds-auth-proxy-server"))?;
    sh.write_file(
        dir.join("Dockerfile"),
        format!(
            "FROM rds-auth-proxy-test/base:bookworm\n\
             COPY rds-auth-proxy-server /usr/local/bin/rds-auth-proxy-server\n\
             LABEL {BINARY_LABEL}={sha} {TEST_LABEL}\n\
             USER 65532:65532\n\
             EXPOSE 5432 9090\n\
             ENTRYPOINT [\"/usr/local/bin/rds-auth-proxy-server\"]\n"
        ),
    )?;
    cmd!(sh, "docker build --quiet --tag {SERVER_IMAGE} {dir}").quiet().ignore_stdout().run()?;
    Ok(())
}

pub(crate) fn remove_leftover_containers(sh: &Shell) -> anyhow::Result<()> {
    let filter = format!("label={TEST_LABEL}");
    let containers = cmd!(sh, "docker ps --all --quiet --filter {filter}").quiet().ignore_stderr().read()?;
    let containers: Vec<&str> = containers.split_whitespace().collect();
    if !containers.is_empty() {
        step(&format!("removing {} leftover test container(s)", containers.len()));
        // Containers that remove themselves may already be on their way out: not an error.
        let _ = cmd!(sh, "docker rm --force --volumes {containers...}")
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
            .run();
    }
    let networks = cmd!(sh, "docker network ls --quiet --filter {filter}").quiet().ignore_stderr().read()?;
    let networks: Vec<&str> = networks.split_whitespace().collect();
    if !networks.is_empty() {
        cmd!(sh, "docker network rm {networks...}").quiet().ignore_stdout().ignore_stderr().run()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipe_hashes_are_stable_and_distinct() {
        let hashes: Vec<String> = RECIPES.iter().map(Recipe::hash).collect();
        assert_eq!(hashes[0], RECIPES[0].hash());
        assert_ne!(hashes[0], hashes[1]);
        assert!(hashes.iter().all(|h| h.len() == 16));
    }
}
