//! `cargo xtask docs`: builds the documentation site (an mdBook in `docs/`) into
//! `target/book` and checks that every internal link and anchor in it resolves.
//!
//! The link check reads the generated HTML, so it sees links exactly as a browser does:
//! `page.md#anchor` rewritten to `page.html#anchor`, and files such as `deploy/...` copied
//! beside the pages. External links are not followed (CI has no network).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail, ensure};
use xshell::{Shell, cmd};

use crate::step;

/// The mdBook release the site is built with; `cargo xtask setup` installs it.
pub(crate) const MDBOOK_VERSION: &str = "0.5.4";

pub(crate) fn run(sh: &Shell, args: &[String]) -> anyhow::Result<()> {
    if let Some(arg) = args.first() {
        if arg == "--help" || arg == "-h" {
            #[allow(clippy::print_stdout, reason = "help goes to stdout")]
            {
                println!(
                    "cargo xtask docs\n\n  builds the mdBook in docs/ into target/book and checks every internal link and anchor"
                );
            }
            return Ok(());
        }
        bail!("unexpected argument {arg:?} for `cargo xtask docs`");
    }
    check(sh)?;
    let index = crate::project_root().join("target/book/index.html");
    #[allow(clippy::print_stderr, reason = "xtask reports progress on stderr")]
    {
        eprintln!("the site is in {}", index.display());
    }
    Ok(())
}

/// The part of this command that `cargo xtask ci` runs.
pub(crate) fn check(sh: &Shell) -> anyhow::Result<()> {
    step("docs: mdbook build and link check");
    require_mdbook(sh)?;
    let root = crate::project_root();
    let book = root.join("target/book");
    // A page removed from docs/ must not linger in the output and satisfy a link.
    if book.exists() {
        std::fs::remove_dir_all(&book).with_context(|| format!("cannot clear {}", book.display()))?;
    }
    let docs = root.join("docs");
    cmd!(sh, "mdbook build {docs}").quiet().run().context("mdbook build failed")?;
    let problems = check_links(&book)?;
    ensure!(
        problems.is_empty(),
        "{} broken link(s) in the documentation site:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
    Ok(())
}

fn require_mdbook(sh: &Shell) -> anyhow::Result<()> {
    let Ok(version) = cmd!(sh, "mdbook --version").quiet().ignore_stderr().read() else {
        bail!("mdbook is not installed: `cargo xtask setup` installs mdbook {MDBOOK_VERSION}");
    };
    ensure!(
        version.trim() == format!("mdbook v{MDBOOK_VERSION}"),
        "found {}, but the site is built with mdbook {MDBOOK_VERSION}: `cargo xtask setup` installs it",
        version.trim()
    );
    Ok(())
}

/// Every broken internal link in the built site, as `page: href (why)`.
fn check_links(book: &Path) -> anyhow::Result<Vec<String>> {
    let mut pages = BTreeMap::new();
    for file in files(book)? {
        // print.html repeats every page with its links rewritten; the pages themselves are
        // what readers follow.
        if file.extension().is_some_and(|e| e == "html") && !file.ends_with("print.html") {
            let text =
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            pages.insert(file, text);
        }
    }
    ensure!(pages.len() > 1, "mdbook wrote no pages into {}", book.display());
    let mut ids: BTreeMap<&Path, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in &pages {
        ids.insert(path, attribute_values(text, "id").into_iter().collect());
    }
    let mut problems = Vec::new();
    for (page, text) in &pages {
        let shown = page.strip_prefix(book).unwrap_or(page).display().to_string();
        for href in attribute_values(text, "href").into_iter().chain(attribute_values(text, "src")) {
            if is_external(&href) {
                continue;
            }
            let (target, anchor) = match href.split_once('#') {
                Some((target, anchor)) => (target, Some(anchor)),
                None => (href.as_str(), None),
            };
            let target = target.split_once('?').map_or(target, |(path, _)| path);
            let resolved = if target.is_empty() {
                page.clone()
            } else if let Some(from_root) = target.strip_prefix('/') {
                // Site-absolute, as 404.html writes them: the book is served from its root.
                normalize(&book.join(from_root))
            } else {
                normalize(&page.parent().unwrap_or(book).join(target))
            };
            if !resolved.starts_with(book) {
                problems.push(format!("{shown}: {href} (leaves the site)"));
                continue;
            }
            let file = if resolved.is_dir() { resolved.join("index.html") } else { resolved };
            if !file.is_file() {
                problems.push(format!("{shown}: {href} (no such page or file)"));
                continue;
            }
            if let Some(anchor) = anchor.filter(|a| !a.is_empty()) {
                let anchor = percent_decode(anchor);
                match ids.get(file.as_path()) {
                    Some(known) if known.contains(&anchor) => {}
                    Some(_) => problems.push(format!("{shown}: {href} (no heading or id {anchor:?} there)")),
                    None => {
                        problems.push(format!("{shown}: {href} (an anchor into a file that is not a page)"))
                    }
                }
            }
        }
    }
    Ok(problems)
}

fn is_external(href: &str) -> bool {
    href.starts_with("//")
        || href.split_once(':').is_some_and(|(scheme, _)| {
            !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        })
}

/// The values of `name="..."` attributes in an HTML text, entities decoded.
fn attribute_values(html: &str, name: &str) -> Vec<String> {
    let needle = format!(" {name}=\"");
    let mut values = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find(&needle) {
        rest = &rest[at + needle.len()..];
        if let Some(end) = rest.find('"') {
            values.push(rest[..end].replace("&amp;", "&").replace("&quot;", "\"").replace("&#39;", "'"));
            rest = &rest[end..];
        }
    }
    values
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `a/b/../c` as `a/c`, without touching the filesystem.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_broken_links_and_anchors() {
        let book = std::env::temp_dir().join(format!("xtask-docs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&book);
        std::fs::create_dir_all(book.join("deploy")).unwrap();
        std::fs::write(book.join("deploy/a.yaml"), "kind: x\n").unwrap();
        std::fs::write(
            book.join("index.html"),
            r##"<h1 id="top">x</h1><a href="page.html#it%27s">ok</a> <a href="page.html#nope">bad</a>
               <a href="missing.html">bad</a> <a href="deploy/a.yaml">ok</a> <a href="#top">ok</a>
               <a href="https://example.com/x">external</a> <a href="mailto:a@b">external</a>
               <a href="../outside.html">bad</a>"##,
        )
        .unwrap();
        std::fs::write(book.join("page.html"), r#"<h2 id="it's">y</h2>"#).unwrap();
        let problems = check_links(&book).unwrap();
        std::fs::remove_dir_all(&book).unwrap();
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(problems[0].contains("page.html#nope"));
        assert!(problems[1].contains("missing.html"));
        assert!(problems[2].contains("leaves the site"));
    }
}
