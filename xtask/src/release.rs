//! `cargo xtask release [--dry-run] [--bump major|minor|patch]`: the next version from
//! conventional commits, CHANGELOG.md, the version bump, a commit and a tag.
//!
//! The commits since the last `vX.Y.Z` tag (every commit, for the first release) decide the
//! version, following semver with the 0.x rules Cargo uses, where the minor number is the
//! breaking one:
//!
//! - `fix:`, `perf:`, `docs:` and anything else that is not below: patch (0.4.1 → 0.4.2);
//! - `feat:`: minor (0.4.1 → 0.5.0; 1.4.1 → 1.5.0);
//! - a breaking change (`feat!:`, `BREAKING CHANGE:`): minor while the major version is 0
//!   (0.4.1 → 0.5.0), major from 1.0.0 on. Going to 1.0.0 is a decision, not a commit type:
//!   `--bump major`.
//! - The first release is the version already in Cargo.toml.
//!
//! git-cliff's library (`git-cliff-core`) parses the commits, computes the version and renders
//! the changelog; the commits come from `git log`, so git2 is not needed. It is about 100
//! crates, so it sits behind xtask's `changelog` feature and this command, built without it,
//! runs itself again with it. A real release needs a clean tree; it writes CHANGELOG.md,
//! bumps `[workspace.package] version` and Cargo.lock, commits `chore(release): vX.Y.Z` and
//! tags `vX.Y.Z`. Nothing is pushed. `--dry-run` prints the version and the changelog and
//! changes nothing.

use xshell::Shell;

#[cfg(not(feature = "changelog"))]
pub(crate) fn run(sh: &Shell, args: &[String]) -> anyhow::Result<()> {
    use anyhow::Context;

    crate::step("release: building xtask with git-cliff (feature `changelog`)");
    xshell::cmd!(sh, "cargo run --quiet --locked --package xtask --features changelog -- release {args...}")
        .run()
        .context("`cargo xtask release` failed")?;
    Ok(())
}

#[cfg(feature = "changelog")]
pub(crate) fn run(sh: &Shell, args: &[String]) -> anyhow::Result<()> {
    imp::run(sh, args)
}

#[cfg(feature = "changelog")]
mod imp {
    use anyhow::{Context, bail, ensure};
    use git_cliff_core::changelog::Changelog;
    use git_cliff_core::commit::{Commit, Signature};
    use git_cliff_core::config::{BumpType, Config};
    use git_cliff_core::release::Release;
    use xshell::{Shell, cmd};

    use crate::dist::workspace_package_field;

    /// How git-cliff groups and renders the commits. Group order is the parsers' order.
    const CLIFF_TOML: &str = r#"
[changelog]
header = """
# Changelog

All notable changes to rds-auth-proxy. The format follows [Keep a Changelog](https://keepachangelog.com/en/1.1.0/),
and the versions [Semantic Versioning](https://semver.org/spec/v2.0.0.html) with Cargo's 0.x rules.
`cargo xtask release` writes this file from the commit messages.

"""
body = """
## [{{ version | trim_start_matches(pat="v") }}] - {{ timestamp | date(format="%Y-%m-%d") }}
{% for entry in commits | commit_groups(groups=commit_parsers_groups) %}
### {{ entry.group }}
{% for commit in entry.commits %}
- {% if commit.breaking %}**Breaking:** {% endif %}{% if commit.scope %}{{ commit.scope }}: {% endif %}{{ commit.message | upper_first }}
{%- endfor %}
{% endfor %}
"""
trim = true
footer = ""

[git]
conventional_commits = true
filter_unconventional = false
split_commits = false
protect_breaking_commits = true
filter_commits = false
sort_commits = "oldest"
commit_parsers = [
  { message = "^chore\\(release\\)", skip = true },
  { message = "^feat", group = "Features" },
  { message = "^fix", group = "Bug fixes" },
  { message = "^perf", group = "Performance" },
  { message = "^docs?", group = "Documentation" },
  { message = "^(build|ci)", group = "Build and packaging" },
  { message = "^test", group = "Tests" },
  { message = "^refactor", group = "Refactoring" },
  { message = ".*", group = "Other changes" },
]
"#;

    /// Separates the fields and the records of `git log --format`.
    const FIELD: char = '\u{1f}';
    const RECORD: char = '\u{1e}';

    #[derive(Debug, Default)]
    struct Args {
        dry_run: bool,
        bump: Option<BumpType>,
    }

    /// What a release would do.
    #[derive(Debug)]
    pub(super) struct Plan {
        pub(super) previous_tag: Option<String>,
        /// The new version, without the `v`.
        pub(super) version: String,
        /// CHANGELOG.md as it will be.
        pub(super) changelog: String,
    }

    pub(super) fn run(sh: &Shell, args: &[String]) -> anyhow::Result<()> {
        let Some(args) = parse(args)? else { return Ok(()) };
        let dirty = cmd!(sh, "git status --porcelain").quiet().read()?;
        if !dirty.is_empty() && !args.dry_run {
            bail!(
                "the working tree has changes; a release needs a clean tree (commit or stash them):\n{dirty}"
            );
        }
        let plan = plan(sh, args.bump)?;
        #[allow(
            clippy::print_stdout,
            clippy::print_stderr,
            reason = "the release plan is this command's output"
        )]
        {
            let since = plan
                .previous_tag
                .as_deref()
                .map_or_else(|| "first release".to_owned(), |t| format!("since {t}"));
            println!("next version: {} ({since})\n", plan.version);
            println!("{}", plan.changelog.trim_end());
            if args.dry_run {
                if !dirty.is_empty() {
                    eprintln!("\nnote: the working tree has changes; a real release would refuse to run");
                }
                eprintln!("\ndry run: nothing was changed");
                return Ok(());
            }
        }
        apply(sh, &plan)?;
        #[allow(clippy::print_stderr, reason = "xtask reports on stderr")]
        {
            let tag = format!("v{}", plan.version);
            eprintln!(
                "\ncommitted and tagged {tag}. Next (docs/releasing.md):\n  git push origin HEAD {tag}\n  \
                 cargo xtask dist   # on each platform; then the GitHub release, the tap and the image"
            );
        }
        Ok(())
    }

    fn parse(args: &[String]) -> anyhow::Result<Option<Args>> {
        let mut parsed = Args::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--dry-run" => parsed.dry_run = true,
                "--bump" => {
                    parsed.bump = Some(match args.next().map(String::as_str) {
                        Some("major") => BumpType::Major,
                        Some("minor") => BumpType::Minor,
                        Some("patch") => BumpType::Patch,
                        other => bail!("--bump takes major, minor or patch, not {other:?}"),
                    });
                }
                "-h" | "--help" => {
                    #[allow(clippy::print_stdout, reason = "help goes to stdout")]
                    {
                        println!(
                            "cargo xtask release [--dry-run] [--bump major|minor|patch]\n\n\
                             The next version from the conventional commits since the last vX.Y.Z tag,\n\
                             CHANGELOG.md, the version in Cargo.toml and Cargo.lock, a commit and a tag.\n\
                             --dry-run prints the version and the changelog and changes nothing.\n\
                             --bump overrides the computed increment (1.0.0 is `--bump major`)."
                        );
                    }
                    return Ok(None);
                }
                other => bail!("unexpected argument {other:?} for `cargo xtask release`"),
            }
        }
        Ok(Some(parsed))
    }

    /// Computes the release from the repository in the shell's directory; changes nothing.
    pub(super) fn plan(sh: &Shell, bump: Option<BumpType>) -> anyhow::Result<Plan> {
        let manifest = sh.read_file("Cargo.toml")?;
        let current =
            workspace_package_field(&manifest, "version").context("no [workspace.package] version")?;
        let previous_tag = cmd!(sh, "git describe --tags --abbrev=0 --match v[0-9]*.[0-9]*.[0-9]* HEAD")
            .quiet()
            .ignore_stderr()
            .read()
            .ok();
        let range = previous_tag.as_ref().map_or_else(|| "HEAD".to_owned(), |tag| format!("{tag}..HEAD"));
        let format = format!(
            "--format=%H{FIELD}%an{FIELD}%ae{FIELD}%at{FIELD}%cn{FIELD}%ce{FIELD}%ct{FIELD}%B{RECORD}"
        );
        let log = cmd!(sh, "git log --no-merges --reverse {format} {range}").quiet().read()?;
        let commits = parse_log(&log)?;
        if commits.is_empty() {
            bail!("nothing to release: no commits since {}", previous_tag.as_deref().unwrap_or("the start"));
        }
        let existing = sh.read_file("CHANGELOG.md").ok();
        let (version, changelog) = render(&current, previous_tag.as_deref(), commits, bump, existing)?;
        if let (Some(new), Some(old)) = (numbers(&version), numbers(&current)) {
            ensure!(
                previous_tag.is_none() || new > old,
                "the next version {version} is not above Cargo.toml's {current}: fix the version or the tags"
            );
        }
        Ok(Plan { previous_tag, version, changelog })
    }

    /// Writes the plan: CHANGELOG.md, the version in Cargo.toml and Cargo.lock, a commit, a tag.
    pub(super) fn apply(sh: &Shell, plan: &Plan) -> anyhow::Result<()> {
        let tag = format!("v{}", plan.version);
        let exists =
            cmd!(sh, "git rev-parse -q --verify refs/tags/{tag}").quiet().ignore_stdout().run().is_ok();
        ensure!(!exists, "the tag {tag} exists already");

        sh.write_file("CHANGELOG.md", &plan.changelog)?;
        let manifest = sh.read_file("Cargo.toml")?;
        let bumped = set_workspace_version(&manifest, &plan.version)?;
        if bumped != manifest {
            sh.write_file("Cargo.toml", bumped)?;
        }
        let mut paths = vec!["CHANGELOG.md", "Cargo.toml"];
        if sh.current_dir().join("Cargo.lock").exists() {
            // Rewrites the workspace members' versions in the lock file and nothing else.
            cmd!(sh, "cargo update --workspace --offline --quiet").run()?;
            paths.push("Cargo.lock");
        }
        cmd!(sh, "git add -- {paths...}").run()?;
        let message = format!("chore(release): {tag}");
        cmd!(sh, "git commit --quiet -m {message}").run()?;
        cmd!(sh, "git tag -a {tag} -m {tag}").run()?;
        Ok(())
    }

    /// Runs git-cliff over one release's commits: the version (without `v`) and the changelog,
    /// prepended to `existing` when there is one.
    pub(super) fn render(
        current: &str,
        previous_tag: Option<&str>,
        commits: Vec<Commit<'static>>,
        bump: Option<BumpType>,
        existing: Option<String>,
    ) -> anyhow::Result<(String, String)> {
        let mut config: Config = CLIFF_TOML.parse().context("the git-cliff configuration")?;
        config.bump.features_always_bump_minor = Some(true);
        config.bump.breaking_always_bump_major = Some(false);
        config.bump.initial_tag = Some(format!("v{current}"));
        config.bump.bump_type = bump;
        config.remote.offline = true;
        let release = Release {
            version: None,
            commits,
            previous: previous_tag
                .map(|tag| Box::new(Release { version: Some(tag.to_owned()), ..Release::default() })),
            ..Release::default()
        };
        let mut changelog = Changelog::new(vec![release], config, None)?;
        let tag = changelog.bump_version()?.context("no commits to release")?;
        let version = tag.trim_start_matches('v').to_owned();
        let mut out = Vec::new();
        match existing {
            Some(existing) => changelog.prepend(existing, &mut out)?,
            None => changelog.generate(&mut out)?,
        }
        Ok((version, String::from_utf8(out)?))
    }

    fn parse_log(log: &str) -> anyhow::Result<Vec<Commit<'static>>> {
        let mut commits = Vec::new();
        for record in log.split(RECORD) {
            let record = record.trim_start_matches('\n');
            if record.trim().is_empty() {
                continue;
            }
            let fields: Vec<&str> = record.splitn(8, FIELD).collect();
            let [id, author, author_email, author_time, committer, committer_email, committer_time, message] =
                fields[..]
            else {
                bail!("unexpected `git log` record: {record:?}");
            };
            let mut commit = Commit::new(id.to_owned(), message.trim_end().to_owned());
            commit.author = Signature {
                name: Some(author.to_owned()),
                email: Some(author_email.to_owned()),
                timestamp: author_time.parse()?,
            };
            commit.committer = Signature {
                name: Some(committer.to_owned()),
                email: Some(committer_email.to_owned()),
                timestamp: committer_time.parse()?,
            };
            commits.push(commit);
        }
        Ok(commits)
    }

    /// Commits from bare messages, for tests.
    #[cfg(test)]
    pub(super) fn parse_messages(messages: &[String]) -> Vec<Commit<'static>> {
        messages.iter().enumerate().map(|(n, m)| Commit::new(format!("{n:040x}"), m.clone())).collect()
    }

    /// Replaces `version` in `[workspace.package]`, keeping everything else byte for byte.
    pub(super) fn set_workspace_version(manifest: &str, version: &str) -> anyhow::Result<String> {
        let mut in_section = false;
        let mut done = false;
        let mut out = String::with_capacity(manifest.len());
        for line in manifest.split_inclusive('\n') {
            let trimmed = line.trim();
            if trimmed.starts_with('[') {
                in_section = trimmed == "[workspace.package]";
            } else if in_section && !done && trimmed.split('=').next().is_some_and(|k| k.trim() == "version")
            {
                let ending = if line.ends_with('\n') { "\n" } else { "" };
                out.push_str(&format!("version = \"{version}\"{ending}"));
                done = true;
                continue;
            }
            out.push_str(line);
        }
        ensure!(done, "no version in [workspace.package]");
        Ok(out)
    }

    /// `X.Y.Z` as numbers, for comparing; None for anything else.
    fn numbers(version: &str) -> Option<(u64, u64, u64)> {
        let mut parts = version.split('.').map(str::parse::<u64>);
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(Ok(a)), Some(Ok(b)), Some(Ok(c)), None) => Some((a, b, c)),
            _ => None,
        }
    }
}

#[cfg(test)]
#[cfg(feature = "changelog")]
mod tests {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use git_cliff_core::config::BumpType;
    use xshell::{Shell, cmd};

    use super::imp::{apply, parse_messages, plan, render, set_workspace_version};

    fn next(current: &str, previous: Option<&str>, messages: &[&str], bump: Option<BumpType>) -> String {
        let messages: Vec<String> = messages.iter().map(|m| (*m).to_owned()).collect();
        render(current, previous, parse_messages(&messages), bump, None).unwrap().0
    }

    #[test]
    fn versions_follow_cargo_0x_rules() {
        let at = Some("v0.4.1");
        assert_eq!(next("0.4.1", at, &["fix: a"], None), "0.4.2");
        assert_eq!(next("0.4.1", at, &["docs: a", "chore: b", "not conventional"], None), "0.4.2");
        assert_eq!(next("0.4.1", at, &["fix: a", "feat(client): b"], None), "0.5.0");
        assert_eq!(next("0.4.1", at, &["fix!: a"], None), "0.5.0");
        assert_eq!(next("0.4.1", at, &["fix: a\n\nBREAKING CHANGE: b"], None), "0.5.0");
        assert_eq!(next("1.4.1", Some("v1.4.1"), &["feat: a"], None), "1.5.0");
        assert_eq!(next("1.4.1", Some("v1.4.1"), &["feat!: a"], None), "2.0.0");
        assert_eq!(next("0.4.1", at, &["fix: a"], Some(BumpType::Major)), "1.0.0");
        // The first release is the version already in Cargo.toml.
        assert_eq!(next("0.1.0", None, &["feat: a", "fix: b"], None), "0.1.0");
    }

    #[test]
    fn changelog_groups_commits() {
        let messages: Vec<String> = [
            "feat(client): the picker",
            "fix: a crash\n\nWith a body that stays out.",
            "build: the flake",
            "feat!: a new wire format",
            "chore(release): v0.1.0",
        ]
        .iter()
        .map(|m| (*m).to_owned())
        .collect();
        let (version, text) = render("0.1.0", Some("v0.1.0"), parse_messages(&messages), None, None).unwrap();
        assert_eq!(version, "0.2.0");
        assert!(text.starts_with("# Changelog\n"), "{text}");
        assert!(text.contains("## [0.2.0] - "), "{text}");
        let features = text.find("### Features").unwrap();
        let fixes = text.find("### Bug fixes").unwrap();
        let build = text.find("### Build and packaging").unwrap();
        assert!(features < fixes && fixes < build, "{text}");
        assert!(text.contains("- client: The picker\n"), "{text}");
        assert!(text.contains("- **Breaking:** A new wire format\n"), "{text}");
        assert!(!text.contains("With a body"), "{text}");
        assert!(!text.contains("chore(release)"), "{text}");
    }

    #[test]
    fn only_the_workspace_version_changes() {
        let manifest = "[workspace]\nmembers = []\n\n[workspace.package]\nedition = \"2024\"\nversion = \"0.1.0\" \n\n[workspace.dependencies]\nfoo = { version = \"1\" }\n";
        let bumped = set_workspace_version(manifest, "0.2.0").unwrap();
        assert_eq!(bumped, manifest.replace("version = \"0.1.0\" ", "version = \"0.2.0\""));
    }

    /// A throwaway repository: a one-crate workspace at 0.1.0, with a lock file.
    struct Repo {
        dir: PathBuf,
        sh: Shell,
    }

    impl Repo {
        fn new() -> Repo {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "xtask-release-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            let sh = Shell::new().unwrap();
            sh.create_dir(dir.join("demo/src")).unwrap();
            sh.change_dir(&dir);
            for (name, value) in [
                ("GIT_AUTHOR_NAME", "Release Test"),
                ("GIT_AUTHOR_EMAIL", "release@example.invalid"),
                ("GIT_COMMITTER_NAME", "Release Test"),
                ("GIT_COMMITTER_EMAIL", "release@example.invalid"),
                ("GIT_CONFIG_GLOBAL", "/dev/null"),
                ("GIT_CONFIG_NOSYSTEM", "1"),
            ] {
                sh.set_var(name, value);
            }
            sh.write_file(
                "Cargo.toml",
                "[workspace]\nresolver = \"3\"\nmembers = [\"demo\"]\n\n[workspace.package]\nversion = \"0.1.0\"\nedition = \"2024\"\n",
            )
            .unwrap();
            sh.write_file(
                "demo/Cargo.toml",
                "[package]\nname = \"demo\"\nversion.workspace = true\nedition.workspace = true\n",
            )
            .unwrap();
            sh.write_file("demo/src/lib.rs", "").unwrap();
            cmd!(sh, "cargo generate-lockfile --offline --quiet").run().unwrap();
            cmd!(sh, "git init --quiet --initial-branch main").run().unwrap();
            cmd!(sh, "git add .").run().unwrap();
            let message = "build: the workspace";
            cmd!(sh, "git commit --quiet -m {message}").run().unwrap();
            Repo { dir, sh }
        }

        fn commit(&self, message: &str) {
            let sh = &self.sh;
            let file = format!("f{}", sh.read_dir(".").unwrap().len());
            sh.write_file(&file, message).unwrap();
            cmd!(sh, "git add {file}").run().unwrap();
            cmd!(sh, "git commit --quiet -m {message}").run().unwrap();
        }

        fn git(&self, args: &[&str]) -> String {
            let sh = &self.sh;
            cmd!(sh, "git {args...}").read().unwrap()
        }
    }

    impl Drop for Repo {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn first_release_then_a_feature_in_a_repository() {
        let repo = Repo::new();
        repo.commit("feat: the first thing");

        let first = plan(&repo.sh, None).unwrap();
        assert_eq!((first.previous_tag.as_deref(), first.version.as_str()), (None, "0.1.0"));
        let head = repo.git(&["rev-parse", "HEAD"]);
        assert_eq!(repo.git(&["status", "--porcelain"]), "", "planning changed the tree");
        apply(&repo.sh, &first).unwrap();
        assert_eq!(repo.git(&["describe", "--tags"]), "v0.1.0");
        assert_eq!(repo.git(&["log", "-1", "--format=%s"]), "chore(release): v0.1.0");
        assert_eq!(repo.git(&["rev-parse", "HEAD~1"]), head);

        repo.commit("fix: a bug");
        repo.commit("feat(client): a second thing");
        let second = plan(&repo.sh, None).unwrap();
        assert_eq!((second.previous_tag.as_deref(), second.version.as_str()), (Some("v0.1.0"), "0.2.0"));
        apply(&repo.sh, &second).unwrap();
        assert_eq!(repo.git(&["describe", "--tags"]), "v0.2.0");
        assert_eq!(repo.git(&["status", "--porcelain"]), "");
        let manifest = repo.sh.read_file("Cargo.toml").unwrap();
        assert!(manifest.contains("version = \"0.2.0\""), "{manifest}");
        let lock = repo.sh.read_file("Cargo.lock").unwrap();
        assert!(lock.contains("name = \"demo\"\nversion = \"0.2.0\""), "{lock}");
        let changelog = repo.sh.read_file("CHANGELOG.md").unwrap();
        let newest = changelog.find("## [0.2.0]").unwrap();
        let oldest = changelog.find("## [0.1.0]").unwrap();
        assert!(newest < oldest, "{changelog}");
        assert_eq!(changelog.matches("# Changelog").count(), 1, "{changelog}");
        assert!(changelog.contains("- client: A second thing"), "{changelog}");

        let nothing = plan(&repo.sh, None).unwrap_err().to_string();
        assert!(nothing.contains("nothing to release"), "{nothing}");
    }

    #[test]
    fn dry_run_changes_nothing_and_a_dirty_tree_is_refused() {
        let repo = Repo::new();
        repo.commit("fix: something");
        let before = (repo.git(&["rev-parse", "HEAD"]), repo.git(&["tag"]));
        super::imp::run(&repo.sh, &["--dry-run".to_owned()]).unwrap();
        assert_eq!((repo.git(&["rev-parse", "HEAD"]), repo.git(&["tag"])), before);
        assert_eq!(repo.git(&["status", "--porcelain"]), "");

        repo.sh.write_file("untracked", "x").unwrap();
        let refused = super::imp::run(&repo.sh, &[]).unwrap_err().to_string();
        assert!(refused.contains("clean tree"), "{refused}");
        assert_eq!(repo.git(&["tag"]), "");
    }
}
