//! `cargo xtask dist`: release archives, their SHA-256 sums, and the Homebrew formula.
//!
//! The binaries are built in release mode for this machine's target (`rustc -vV`), and each
//! goes into `target/dist/<binary>-<version>-<target>.tar.gz` with its shell completions
//! (bash, zsh, fish), its man pages and the README, under one top-level directory. Other
//! targets are built by the same command on their own machines; archives of this version
//! copied into `target/dist` are picked up too, so one run can list every platform.
//!
//! `SHA256SUMS` covers every archive of this version in `target/dist`, and
//! `rds-auth-proxy.rb` is the client's formula for a `homebrew-tap` repository, rendered from
//! the client archives and their sums: a platform without an archive gets no URL, and the
//! formula says so with `depends_on`. The formula's `test do` signs a token with fake
//! credentials and `AWS_EC2_METADATA_DISABLED=true`; `check` runs that same invocation on
//! the archived binary, so the test neither fails nor stalls where there is no AWS.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use xshell::{Shell, cmd};

use crate::step;

/// The binaries released, each in an archive of its own.
const BINARIES: &[&str] = &["rds-auth-proxy", "rds-auth-proxy-server"];

/// The binary the Homebrew formula installs.
const CLIENT: &str = "rds-auth-proxy";

const FORMULA: &str = "rds-auth-proxy.rb";

/// `rds-auth-proxy token` as the formula's test runs it: a fixed endpoint, user and region,
/// an empty configuration file, and AWS credentials from these variables only.
const TOKEN_ARGS: &[&str] = &[
    "token",
    "--host",
    "db.example.us-east-1.rds.amazonaws.com",
    "--user",
    "alice",
    "--region",
    "us-east-1",
];
const TOKEN_ENV: &[(&str, &str)] = &[
    // The example key pair from AWS's documentation: signing needs no real one.
    ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
    ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
    // Without this the credential chain may wait on the instance metadata service.
    ("AWS_EC2_METADATA_DISABLED", "true"),
];
/// Variables from the caller's shell that could point the chain at real credentials.
const TOKEN_ENV_REMOVED: &[&str] =
    &["AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"];
/// What a token signed with `TOKEN_ENV` and `TOKEN_ARGS` must contain.
const TOKEN_EXPECTED: &[&str] = &["Action=connect&DBUser=alice", "X-Amz-Credential=AKIDEXAMPLE%2F"];
/// How long the token invocation may take before it counts as stalled.
const TOKEN_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct Options {
    /// Where the archives will be downloadable from; the formula's URLs start with it.
    base_url: Option<String>,
    /// Also run what CI checks.
    check: bool,
    /// Archive the debug binaries `cargo xtask ci` has already built, into `target/dist-dev`,
    /// instead of building release binaries into `target/dist`. The archives, sums and
    /// formula are made and checked the same way; only the optimisation differs. A release
    /// build takes about 25 minutes on two cores, which CI need not spend to check packaging.
    dev: bool,
}

/// What one run of dist produced.
#[derive(Debug)]
struct Dist {
    dir: PathBuf,
    target: String,
    /// Every archive of this version in the directory, sorted by name.
    archives: Vec<Archive>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Archive {
    binary: String,
    target: String,
    file_name: String,
    sha256: String,
    bytes: u64,
}

pub(crate) fn run(sh: &Shell, args: &[String]) -> anyhow::Result<()> {
    let Some(options) = parse(args)? else { return Ok(()) };
    let dist = dist(sh, &options)?;
    report(&dist);
    if options.check { check_dist(sh, &dist) } else { Ok(()) }
}

/// The part of this command that `cargo xtask ci` runs: `cargo xtask dist --check`.
pub(crate) fn check(sh: &Shell) -> anyhow::Result<()> {
    let dist = dist(sh, &Options { dev: true, ..Options::default() })?;
    report(&dist);
    check_dist(sh, &dist)
}

/// The formula is valid Ruby that names exactly the client archives with their sums,
/// SHA256SUMS lists every archive, and the token test the formula runs passes offline and in
/// time on the archived binary.
fn check_dist(sh: &Shell, dist: &Dist) -> anyhow::Result<()> {
    step("dist: check the Homebrew formula");
    let formula = dist.dir.join(FORMULA);
    cmd!(sh, "ruby --version").quiet().ignore_stdout().run().context(
        "`ruby` was not found: install Debian's ruby (`apt-get install ruby`; `cargo xtask setup` does)",
    )?;
    let syntax = cmd!(sh, "ruby -c {formula}").quiet().ignore_status().output()?;
    ensure!(
        syntax.status.success(),
        "{FORMULA} is not valid Ruby:\n{}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    let text = sh.read_file(&formula)?;
    let named = formula_archives(&text);
    let client_archives: Vec<&Archive> = dist.archives.iter().filter(|a| a.binary == CLIENT).collect();
    let mut wanted: Vec<(String, String)> =
        offered(&client_archives).into_iter().map(|(_, a)| (a.file_name.clone(), a.sha256.clone())).collect();
    wanted.sort();
    ensure!(
        named == wanted,
        "{FORMULA} does not name exactly the client archives:\n  formula: {named:?}\n  archives: {wanted:?}"
    );
    let sums = sh.read_file(dist.dir.join("SHA256SUMS"))?;
    for archive in &dist.archives {
        ensure!(
            sums.lines().any(|l| l == format!("{}  {}", archive.sha256, archive.file_name)),
            "SHA256SUMS lacks {}",
            archive.file_name
        );
    }
    #[allow(clippy::print_stderr, reason = "xtask reports on stderr")]
    {
        eprintln!("{}", String::from_utf8_lossy(&syntax.stdout).trim());
    }

    step("dist: the formula's install and test blocks on the archived client");
    let elapsed = formula_test(sh, dist)?;
    #[allow(clippy::print_stderr, reason = "xtask reports on stderr")]
    {
        eprintln!("the formula's test (--version, then `token` offline) took {elapsed:.0?}");
    }
    Ok(())
}

fn parse(args: &[String]) -> anyhow::Result<Option<Options>> {
    let mut options = Options::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => {
                #[allow(clippy::print_stdout, reason = "help goes to stdout")]
                {
                    println!(
                        "cargo xtask dist [--base-url URL] [--check] [--dev]\n\n\
                         Release archives for this machine's target, SHA256SUMS and the Homebrew formula,\n\
                         in target/dist. URL is where the archives will be downloadable from (default:\n\
                         the repository's GitHub release of this version). --check also runs what CI\n\
                         checks: ruby -c, the formula's archives and sums, and its token test. --dev\n\
                         archives the debug binaries into target/dist-dev instead (what CI runs)."
                    );
                }
                return Ok(None);
            }
            "--check" => options.check = true,
            "--dev" => options.dev = true,
            "--base-url" => {
                let url = args.next().context("--base-url needs a URL")?;
                options.base_url = Some(url.trim_end_matches('/').to_owned());
            }
            other => bail!("unexpected argument {other:?} for `cargo xtask dist`"),
        }
    }
    Ok(Some(options))
}

fn dist(sh: &Shell, options: &Options) -> anyhow::Result<Dist> {
    let root = crate::project_root();
    let manifest = sh.read_file(root.join("Cargo.toml"))?;
    let version = workspace_package_field(&manifest, "version").context("no [workspace.package] version")?;
    let repository =
        workspace_package_field(&manifest, "repository").context("no [workspace.package] repository")?;
    let base_url =
        options.base_url.clone().unwrap_or_else(|| format!("{repository}/releases/download/v{version}"));
    let target = host_target(sh)?;

    let started = Instant::now();
    let (built, dir) = if options.dev {
        // The same workspace-wide command as the test step, so nothing is rebuilt.
        step("dist: cargo build --workspace --all-targets (debug binaries, --dev)");
        cmd!(sh, "cargo build --workspace --all-targets --locked").run()?;
        (root.join("target/debug"), root.join("target/dist-dev"))
    } else {
        step("dist: cargo build --release");
        cmd!(sh, "cargo build --release --locked -p rds-auth-proxy -p rds-auth-proxy-server").run()?;
        (root.join("target/release"), root.join("target/dist"))
    };
    #[allow(clippy::print_stderr, reason = "xtask reports on stderr")]
    {
        eprintln!("build took {:.1?}", started.elapsed());
    }

    step("dist: archives");
    let stage = dir.join("stage");
    if stage.exists() {
        std::fs::remove_dir_all(&stage)?;
    }
    let epoch = source_date_epoch(sh)?;
    let gnu_tar =
        cmd!(sh, "tar --version").quiet().ignore_status().read().is_ok_and(|v| v.contains("GNU tar"));
    for binary in BINARIES {
        let stem = format!("{binary}-{version}-{target}");
        let top = stage.join(&stem);
        stage_binary(sh, &root, &built, binary, &top)?;
        let tar = dir.join(format!("{stem}.tar"));
        let gz = dir.join(format!("{stem}.tar.gz"));
        for old in [&tar, &gz] {
            if old.exists() {
                std::fs::remove_file(old)?;
            }
        }
        // GNU tar can make the archive reproducible: sorted names, one owner, and the last
        // commit's time. Other tars (macOS's bsdtar) make a correct archive without that.
        let reproducible: Vec<String> = if gnu_tar {
            vec![
                "--sort=name".into(),
                "--owner=0".into(),
                "--group=0".into(),
                "--numeric-owner".into(),
                format!("--mtime=@{epoch}"),
            ]
        } else {
            Vec::new()
        };
        cmd!(sh, "tar {reproducible...} -cf {tar} -C {stage} {stem}").run()?;
        cmd!(sh, "gzip -n -9 {tar}").run()?;
    }
    std::fs::remove_dir_all(&stage)?;

    let mut archives = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some((binary, archive_target)) = parse_archive_name(&name, &version) {
            let path = dir.join(&name);
            archives.push(Archive {
                binary,
                target: archive_target,
                sha256: sha256(sh, &path)?,
                bytes: std::fs::metadata(&path)?.len(),
                file_name: name,
            });
        }
    }
    archives.sort_by(|a, b| a.file_name.cmp(&b.file_name));

    let mut sums = String::new();
    for archive in &archives {
        writeln!(sums, "{}  {}", archive.sha256, archive.file_name)?;
    }
    sh.write_file(dir.join("SHA256SUMS"), sums)?;

    let client_archives: Vec<&Archive> = archives.iter().filter(|a| a.binary == CLIENT).collect();
    let formula = render_formula(&version, &repository, &base_url, &client_archives);
    sh.write_file(dir.join(FORMULA), formula)?;

    Ok(Dist { dir, target, archives })
}

/// Puts one binary, its completions, its man pages and the README under `top`.
fn stage_binary(sh: &Shell, root: &Path, built: &Path, binary: &str, top: &Path) -> anyhow::Result<()> {
    let built = built.join(binary);
    std::fs::create_dir_all(top.join("completions"))?;
    std::fs::create_dir_all(top.join("man"))?;
    std::fs::copy(&built, top.join(binary)).with_context(|| format!("copying {}", built.display()))?;
    for (shell, file) in [
        ("bash", format!("{binary}.bash")),
        ("zsh", format!("_{binary}")),
        ("fish", format!("{binary}.fish")),
    ] {
        let script = cmd!(sh, "{built} completions {shell}").quiet().read()?;
        sh.write_file(top.join("completions").join(file), script + "\n")?;
    }
    let man = top.join("man");
    cmd!(sh, "{built} manpages {man}").quiet().run()?;
    for extra in std::fs::read_dir(root)? {
        let extra = extra?;
        let name = extra.file_name().to_string_lossy().into_owned();
        if name == "README.md" || name.starts_with("LICENSE") {
            std::fs::copy(extra.path(), top.join(&name))?;
        }
    }
    Ok(())
}

/// Runs the formula's own `install` and `test do` blocks on the unpacked client archive of
/// this machine's target, under `FORMULA_HARNESS`, with nothing from this environment but
/// PATH; returns how long the test block took.
fn formula_test(sh: &Shell, dist: &Dist) -> anyhow::Result<Duration> {
    let archive = dist
        .archives
        .iter()
        .find(|a| a.binary == CLIENT && a.target == dist.target)
        .context("no client archive for this machine's target")?;
    let scratch = dist.dir.join("check");
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)?;
    }
    for dir in ["unpacked", "prefix", "testpath"] {
        std::fs::create_dir_all(scratch.join(dir))?;
    }
    let path = dist.dir.join(&archive.file_name);
    let unpacked = scratch.join("unpacked");
    cmd!(sh, "tar -xzf {path} -C {unpacked}").run()?;
    let harness = scratch.join("harness.rb");
    std::fs::write(&harness, FORMULA_HARNESS)?;

    let mut command = Command::new("ruby");
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", scratch.join("testpath"))
        .arg(&harness)
        .arg(dist.dir.join(FORMULA))
        .arg(unpacked.join(archive.file_name.trim_end_matches(".tar.gz")))
        .arg(scratch.join("prefix"))
        .arg(scratch.join("testpath"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command.spawn().context("running ruby")?;
    while child.try_wait()?.is_none() {
        if started.elapsed() > TOKEN_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the formula's test did not finish within {TOKEN_DEADLINE:?} without AWS: it would stall");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "the formula's install or test failed ({}):\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    #[allow(clippy::print_stderr, reason = "xtask reports on stderr")]
    {
        eprint!("{stdout}");
    }
    // The harness prints the URL the formula chose for this machine, and the test's duration.
    ensure!(
        stdout.lines().any(|l| l.starts_with("url: ") && l.ends_with(&format!("/{}", archive.file_name))),
        "the formula does not choose {} on this machine:\n{stdout}",
        archive.file_name
    );
    let seconds: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("test passed in "))
        .and_then(|l| l.trim_end_matches('s').parse().ok())
        .context("the harness did not report the test")?;
    Ok(Duration::from_secs_f64(seconds))
}

/// A stand-in for the part of Homebrew's formula DSL that the rendered formula uses, so its
/// `install` and `test do` blocks run here: `ruby harness.rb FORMULA UNPACKED PREFIX TESTPATH`.
/// It is not Homebrew (no sandbox, no audit), but it runs the formula's own Ruby.
const FORMULA_HARNESS: &str = r##"
require "fileutils"
require "pathname"
require "open3"

module OS
  def self.mac? = RUBY_PLATFORM.include?("darwin")
  def self.linux? = RUBY_PLATFORM.include?("linux")
end

module Hardware
  module CPU
    def self.arm? = RUBY_PLATFORM.start_with?("aarch64", "arm64")
    def self.intel? = RUBY_PLATFORM.start_with?("x86_64")
  end
end

class InstallDir < Pathname
  def install(*sources)
    mkpath
    sources.each do |source|
      if source.is_a?(Hash)
        source.each { |from, to| FileUtils.cp(from, join(to)) }
      else
        files = Array(source)
        raise "install of an empty list" if files.empty?
        files.each { |f| FileUtils.cp(f, join(File.basename(f)), preserve: true) }
      end
    end
  end
end

class Formula
  class << self
    attr_reader :chosen_url, :chosen_sha256, :test_block

    def desc(_text) = nil
    def homepage(_url) = nil
    def license(_spdx) = nil
    def depends_on(_requirement) = nil
    def version(number = nil) = number ? (@version = number) : @version
    def url(url) = (@chosen_url = url)
    def sha256(sum) = (@chosen_sha256 = sum)
    def on_macos = (yield if OS.mac?)
    def on_linux = (yield if OS.linux?)
    def on_arm = (yield if Hardware::CPU.arm?)
    def on_intel = (yield if Hardware::CPU.intel?)
    def test(&block) = (@test_block = block)
  end

  def initialize(prefix, testpath)
    @prefix = Pathname(prefix)
    @testpath = Pathname(testpath)
  end

  attr_reader :testpath

  def version = self.class.version
  def bin = InstallDir.new(@prefix/"bin")
  def man1 = InstallDir.new(@prefix/"share/man/man1")
  def bash_completion = InstallDir.new(@prefix/"etc/bash_completion.d")
  def zsh_completion = InstallDir.new(@prefix/"share/zsh/site-functions")
  def fish_completion = InstallDir.new(@prefix/"share/fish/vendor_completions.d")

  def shell_output(command, result = 0)
    output, status = Open3.capture2e(command)
    raise "`#{command}` exited #{status.exitstatus}, not #{result}:\n#{output}" if status.exitstatus != result
    output
  end

  def assert_match(expected, actual)
    ok = expected.is_a?(Regexp) ? expected.match?(actual) : actual.include?(expected)
    raise "expected #{expected.inspect} in #{actual.inspect}" unless ok
  end
end

formula_file, unpacked, prefix, testpath = ARGV
load formula_file
klass = Formula.subclasses.first or raise "no formula class in #{formula_file}"
raise "no URL for this machine" unless klass.chosen_url
puts "url: #{klass.chosen_url}"
formula = klass.new(prefix, testpath)
Dir.chdir(unpacked) { formula.install }
installed = Dir.glob("#{prefix}/**/*").select { |f| File.file?(f) }
puts "installed #{installed.length} files"
started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
Dir.chdir(testpath) { formula.instance_eval(&klass.test_block) }
puts format("test passed in %.3fs", Process.clock_gettime(Process::CLOCK_MONOTONIC) - started)
"##;

fn report(dist: &Dist) {
    #[allow(clippy::print_stderr, reason = "xtask reports on stderr")]
    {
        eprintln!("{}:", dist.dir.display());
        for archive in &dist.archives {
            eprintln!("  {:<64} {:>6.1} MiB  {}", archive.file_name, mib(archive.bytes), archive.sha256);
        }
        eprintln!("  SHA256SUMS\n  {FORMULA}");
        let client_archives: Vec<&Archive> = dist.archives.iter().filter(|a| a.binary == CLIENT).collect();
        let missing = missing_platforms(&client_archives);
        if !missing.is_empty() {
            eprintln!(
                "no client archive for {}: build them with `cargo xtask dist` on those machines (or with Nix)\n\
                 and copy them into target/dist before the last run; until then the formula does not offer them",
                missing.join(", ")
            );
        }
    }
}

#[allow(clippy::cast_precision_loss, reason = "a size in a report")]
fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The targets a formula can offer, with Homebrew's name for their platform. Where a platform
/// has both, the static musl archive wins over the glibc one.
const TARGETS: &[(&str, (Os, Arch))] = &[
    ("aarch64-apple-darwin", (Os::Macos, Arch::Arm)),
    ("x86_64-apple-darwin", (Os::Macos, Arch::Intel)),
    ("aarch64-unknown-linux-musl", (Os::Linux, Arch::Arm)),
    ("aarch64-unknown-linux-gnu", (Os::Linux, Arch::Arm)),
    ("x86_64-unknown-linux-musl", (Os::Linux, Arch::Intel)),
    ("x86_64-unknown-linux-gnu", (Os::Linux, Arch::Intel)),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Os {
    Macos,
    Linux,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arch {
    Arm,
    Intel,
}

const PLATFORMS: [(Os, Arch, &str); 4] = [
    (Os::Macos, Arch::Arm, "macOS arm64"),
    (Os::Macos, Arch::Intel, "macOS x86_64"),
    (Os::Linux, Arch::Arm, "Linux arm64"),
    (Os::Linux, Arch::Intel, "Linux x86_64"),
];

/// The archive a formula offers for each platform that has one: the first in TARGETS order.
fn offered<'a>(archives: &[&'a Archive]) -> Vec<((Os, Arch), &'a Archive)> {
    PLATFORMS
        .iter()
        .filter_map(|&(os, arch, _)| {
            TARGETS
                .iter()
                .filter(|(_, p)| *p == (os, arch))
                .find_map(|(t, _)| archives.iter().copied().find(|a| a.target == *t))
                .map(|a| ((os, arch), a))
        })
        .collect()
}

fn missing_platforms(archives: &[&Archive]) -> Vec<&'static str> {
    let offered = offered(archives);
    PLATFORMS
        .iter()
        .filter(|(os, arch, _)| !offered.iter().any(|(p, _)| *p == (*os, *arch)))
        .map(|(_, _, name)| *name)
        .collect()
}

/// Renders the client's Homebrew formula from its archives.
fn render_formula(version: &str, homepage: &str, base_url: &str, archives: &[&Archive]) -> String {
    let offered = offered(archives);
    let chosen = |os: Os, arch: Arch| offered.iter().find(|(p, _)| *p == (os, arch)).map(|(_, a)| *a);
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "# Generated by `cargo xtask dist` from the release archives of v{version}; do not edit."
    );
    let _ = writeln!(w, "# Copy to Formula/rds-auth-proxy.rb in the homebrew-tap repository.");
    let missing = missing_platforms(archives);
    if !missing.is_empty() {
        let _ = writeln!(w, "# No archive for {}: not offered.", missing.join(", "));
    }
    let _ = writeln!(w, "class RdsAuthProxy < Formula");
    let _ = writeln!(w, "  desc \"Reach private AWS RDS PostgreSQL with your IAM identity, no passwords\"");
    let _ = writeln!(w, "  homepage \"{homepage}\"");
    let _ = writeln!(w, "  version \"{version}\"");
    let _ = writeln!(w, "  license any_of: [\"MIT\", \"Apache-2.0\"]");
    // A formula without a URL for the machine fails obscurely; these make it say why.
    let has = |os: Os| chosen(os, Arch::Arm).is_some() || chosen(os, Arch::Intel).is_some();
    match (has(Os::Macos), has(Os::Linux)) {
        (true, false) => {
            let _ = writeln!(w, "\n  depends_on :macos");
        }
        (false, true) => {
            let _ = writeln!(w, "\n  depends_on :linux");
        }
        _ => {}
    }
    for (os, block) in [(Os::Macos, "on_macos"), (Os::Linux, "on_linux")] {
        let arm = chosen(os, Arch::Arm);
        let intel = chosen(os, Arch::Intel);
        if arm.is_none() && intel.is_none() {
            continue;
        }
        let _ = writeln!(w, "\n  {block} do");
        match (arm, intel) {
            (Some(_), None) => {
                let _ = writeln!(w, "    depends_on arch: :arm64");
            }
            (None, Some(_)) => {
                let _ = writeln!(w, "    depends_on arch: :x86_64");
            }
            _ => {}
        }
        for (archive, arch_block) in [(arm, "on_arm"), (intel, "on_intel")] {
            if let Some(archive) = archive {
                let _ = writeln!(w, "    {arch_block} do");
                let _ = writeln!(w, "      url \"{base_url}/{}\"", archive.file_name);
                let _ = writeln!(w, "      sha256 \"{}\"", archive.sha256);
                let _ = writeln!(w, "    end");
            }
        }
        let _ = writeln!(w, "  end");
    }

    let _ = writeln!(w, "\n  def install");
    let _ = writeln!(w, "    bin.install \"{CLIENT}\"");
    let _ = writeln!(w, "    bash_completion.install \"completions/{CLIENT}.bash\" => \"{CLIENT}\"");
    let _ = writeln!(w, "    zsh_completion.install \"completions/_{CLIENT}\"");
    let _ = writeln!(w, "    fish_completion.install \"completions/{CLIENT}.fish\"");
    let _ = writeln!(w, "    man1.install Dir[\"man/*.1\"]");
    let _ = writeln!(w, "  end");

    let _ = writeln!(w, "\n  test do");
    let _ = writeln!(w, "    assert_match version.to_s, shell_output(\"#{{bin}}/{CLIENT} --version\")");
    let _ = writeln!(w);
    let _ =
        writeln!(w, "    # A token is signed offline: fake credentials, no instance metadata, no AWS files.");
    for name in TOKEN_ENV_REMOVED {
        let _ = writeln!(w, "    ENV.delete(\"{name}\")");
    }
    for (name, value) in TOKEN_ENV {
        let _ = writeln!(w, "    ENV[\"{name}\"] = \"{value}\"");
    }
    let _ = writeln!(w, "    ENV[\"AWS_CONFIG_FILE\"] = (testpath/\"aws-config\").to_s");
    let _ = writeln!(w, "    ENV[\"AWS_SHARED_CREDENTIALS_FILE\"] = (testpath/\"aws-credentials\").to_s");
    let _ = writeln!(w, "    (testpath/\"config.toml\").write \"\"");
    // Two string literals keep the line within Homebrew's style limit.
    let _ = writeln!(
        w,
        "    token = shell_output(\"#{{bin}}/{CLIENT} --config #{{testpath}}/config.toml {} \" \\\n                         \"{}\")",
        TOKEN_ARGS[0],
        TOKEN_ARGS[1..].join(" ")
    );
    for expected in TOKEN_EXPECTED {
        let _ = writeln!(w, "    assert_match \"{expected}\", token");
    }
    let _ = writeln!(w, "  end");
    let _ = writeln!(w, "end");
    out
}

/// The archive names and sums a formula offers, sorted: each `url` with the `sha256` after it.
fn formula_archives(formula: &str) -> Vec<(String, String)> {
    let quoted = |line: &str, key: &str| -> Option<String> {
        let rest = line.trim().strip_prefix(key)?.trim();
        Some(rest.strip_prefix('"')?.strip_suffix('"')?.to_owned())
    };
    let mut found = Vec::new();
    let mut url = None;
    for line in formula.lines() {
        if let Some(u) = quoted(line, "url") {
            url = Some(u.rsplit('/').next().unwrap_or_default().to_owned());
        } else if let Some(sum) = quoted(line, "sha256")
            && let Some(name) = url.take()
        {
            found.push((name, sum));
        }
    }
    found.sort();
    found
}

/// `<binary>-<version>-<target>.tar.gz` for one of ours, as (binary, target).
fn parse_archive_name(name: &str, version: &str) -> Option<(String, String)> {
    let stem = name.strip_suffix(".tar.gz")?;
    // The longest binary name first: rds-auth-proxy is a prefix of rds-auth-proxy-server.
    let mut binaries = BINARIES.to_vec();
    binaries.sort_by_key(|b| std::cmp::Reverse(b.len()));
    binaries.iter().find_map(|binary| {
        let target =
            stem.strip_prefix(binary)?.strip_prefix('-')?.strip_prefix(version)?.strip_prefix('-')?;
        (!target.is_empty()).then(|| ((*binary).to_owned(), target.to_owned()))
    })
}

/// A `key = "value"` of `[workspace.package]` in the root manifest.
pub(crate) fn workspace_package_field(manifest: &str, key: &str) -> Option<String> {
    let mut in_section = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_section = line == "[workspace.package]";
            continue;
        }
        if !in_section {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else { continue };
        if name.trim() == key {
            return Some(value.trim().strip_prefix('"')?.strip_suffix('"')?.to_owned());
        }
    }
    None
}

fn host_target(sh: &Shell) -> anyhow::Result<String> {
    let info = cmd!(sh, "rustc -vV").quiet().read()?;
    info.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .context("`rustc -vV` names no host target")
}

/// The archives' timestamp: SOURCE_DATE_EPOCH, or the last commit's time.
fn source_date_epoch(sh: &Shell) -> anyhow::Result<String> {
    if let Ok(epoch) = std::env::var("SOURCE_DATE_EPOCH") {
        return Ok(epoch);
    }
    Ok(cmd!(sh, "git log -1 --format=%ct").quiet().read()?)
}

fn sha256(sh: &Shell, path: &Path) -> anyhow::Result<String> {
    let out = match cmd!(sh, "sha256sum {path}").quiet().ignore_stderr().read() {
        Ok(out) => out,
        // macOS has shasum instead.
        Err(_) => cmd!(sh, "shasum -a 256 {path}").quiet().read()?,
    };
    let hex = out.split_whitespace().next().unwrap_or_default();
    ensure!(hex.len() == 64, "no SHA-256 for {}: {out}", path.display());
    Ok(hex.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(binary: &str, target: &str, sum: char) -> Archive {
        Archive {
            binary: binary.to_owned(),
            target: target.to_owned(),
            file_name: format!("{binary}-0.2.0-{target}.tar.gz"),
            sha256: sum.to_string().repeat(64),
            bytes: 0,
        }
    }

    #[test]
    fn archive_names() {
        assert_eq!(
            parse_archive_name("rds-auth-proxy-server-0.2.0-x86_64-unknown-linux-gnu.tar.gz", "0.2.0"),
            Some(("rds-auth-proxy-server".to_owned(), "x86_64-unknown-linux-gnu".to_owned()))
        );
        assert_eq!(
            parse_archive_name("rds-auth-proxy-0.2.0-aarch64-apple-darwin.tar.gz", "0.2.0"),
            Some(("rds-auth-proxy".to_owned(), "aarch64-apple-darwin".to_owned()))
        );
        assert_eq!(parse_archive_name("rds-auth-proxy-0.1.0-aarch64-apple-darwin.tar.gz", "0.2.0"), None);
        assert_eq!(parse_archive_name("SHA256SUMS", "0.2.0"), None);
    }

    #[test]
    fn workspace_fields() {
        let manifest = "[workspace]\nversion = \"9\"\n[workspace.package]\nversion = \"0.3.1\"\nrepository = \"https://x/y\"\n[workspace.dependencies]\nversion = \"1\"\n";
        assert_eq!(workspace_package_field(manifest, "version").as_deref(), Some("0.3.1"));
        assert_eq!(workspace_package_field(manifest, "repository").as_deref(), Some("https://x/y"));
        assert_eq!(workspace_package_field(manifest, "license"), None);
    }

    #[test]
    fn formula_for_linux_only() {
        let a = archive(CLIENT, "x86_64-unknown-linux-gnu", 'a');
        let formula = render_formula("0.2.0", "https://h", "https://dl/v0.2.0", &[&a]);
        assert!(
            formula.contains("  on_linux do\n    depends_on arch: :x86_64\n    on_intel do\n"),
            "{formula}"
        );
        assert!(formula.contains("\n  depends_on :linux\n"), "{formula}");
        assert!(!formula.contains("on_macos"), "{formula}");
        assert!(formula.contains("# No archive for macOS arm64, macOS x86_64, Linux arm64: not offered."));
        assert_eq!(formula_archives(&formula), vec![(a.file_name.clone(), a.sha256.clone())]);
        assert!(
            formula
                .contains("url \"https://dl/v0.2.0/rds-auth-proxy-0.2.0-x86_64-unknown-linux-gnu.tar.gz\"")
        );
        assert!(formula.contains("ENV[\"AWS_EC2_METADATA_DISABLED\"] = \"true\""));
        assert!(formula.contains(concat!(
            "config.toml token \" \\\n",
            "                         \"--host db.example.us-east-1.rds.amazonaws.com --user alice --region us-east-1\")"
        )));
    }

    #[test]
    fn formula_for_every_platform_prefers_musl() {
        let all = [
            archive(CLIENT, "aarch64-apple-darwin", 'a'),
            archive(CLIENT, "x86_64-apple-darwin", 'b'),
            archive(CLIENT, "aarch64-unknown-linux-musl", 'c'),
            archive(CLIENT, "x86_64-unknown-linux-gnu", 'd'),
            archive(CLIENT, "x86_64-unknown-linux-musl", 'e'),
        ];
        let refs: Vec<&Archive> = all.iter().collect();
        let formula = render_formula("0.2.0", "https://h", "https://dl", &refs);
        assert!(!formula.contains("depends_on"), "{formula}");
        assert!(!formula.contains("No archive"), "{formula}");
        let names: Vec<String> = formula_archives(&formula).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "rds-auth-proxy-0.2.0-aarch64-apple-darwin.tar.gz",
                "rds-auth-proxy-0.2.0-aarch64-unknown-linux-musl.tar.gz",
                "rds-auth-proxy-0.2.0-x86_64-apple-darwin.tar.gz",
                "rds-auth-proxy-0.2.0-x86_64-unknown-linux-musl.tar.gz",
            ]
        );
    }
}
