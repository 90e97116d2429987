//! Shell completions and man pages, generated from a binary's clap definition so they can
//! never disagree with the flags the binary accepts. `cargo xtask dist` ships both.

use std::io::Write;
use std::path::Path;

pub use clap_complete::Shell;

/// Writes the completion script for `shell` to `out`.
pub fn completions(mut command: clap::Command, shell: Shell, out: &mut dyn Write) {
    let name = command.get_name().to_owned();
    clap_complete::generate(shell, &mut command, name, out);
}

/// Writes `NAME.1` and one `NAME-SUBCOMMAND.1` per visible subcommand into `dir`.
pub fn manpages(command: clap::Command, dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut command = command;
    command.build();
    let mut written = Vec::new();
    let name = command.get_name().to_owned();
    written.push(render(&command, &name, dir)?);
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        let page = format!("{name}-{}", sub.get_name());
        let sub = sub.clone().name(page.clone()).bin_name(format!("{name} {}", sub.get_name()));
        written.push(render(&sub, &page, dir)?);
    }
    Ok(written)
}

fn render(command: &clap::Command, page: &str, dir: &Path) -> std::io::Result<std::path::PathBuf> {
    let mut buffer = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut buffer)?;
    let path = dir.join(format!("{page}.1"));
    std::fs::write(&path, buffer)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> clap::Command {
        clap::Command::new("tool")
            .about("A sample")
            .subcommand(clap::Command::new("run").about("Run it"))
            .subcommand(clap::Command::new("secret").hide(true))
    }

    #[test]
    fn completions_name_the_binary_and_its_subcommands() {
        let mut out = Vec::new();
        completions(sample(), Shell::Bash, &mut out);
        let script = String::from_utf8(out).unwrap();
        assert!(script.contains("_tool()"), "{script}");
        assert!(script.contains("run"), "{script}");
    }

    #[test]
    fn one_page_per_visible_subcommand() {
        let dir = std::env::temp_dir().join(format!("rds-auth-man-{}", std::process::id()));
        let written = manpages(sample(), &dir).unwrap();
        let names: Vec<_> =
            written.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["tool.1", "tool-run.1"]);
        let page = std::fs::read_to_string(dir.join("tool-run.1")).unwrap();
        assert!(page.contains(".TH tool-run 1"), "{page}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
