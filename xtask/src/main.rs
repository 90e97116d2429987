//! `cargo xtask`: the project's only build script. Each command is a module with a `run`
//! function; `cargo xtask --help` lists them.

mod bench;
mod ci;
mod dist;
mod docs;
mod flags;
mod fuzz;
mod images;
mod nix;
mod release;
mod setup;

use std::path::PathBuf;

use xshell::Shell;

fn main() -> anyhow::Result<()> {
    let command = flags::parse(std::env::args().skip(1).collect())?;
    let sh = Shell::new()?;
    sh.change_dir(project_root());
    match command {
        flags::Command::Help => {
            flags::print_help();
            Ok(())
        }
        flags::Command::Ci => ci::ci(&sh),
        flags::Command::Fmt => ci::fmt(&sh),
        flags::Command::Lint => ci::lint(&sh),
        flags::Command::Tidy => ci::tidy(&sh),
        flags::Command::Deps => ci::deps(&sh),
        flags::Command::Test => ci::test(&sh),
        flags::Command::Images => images::build(&sh).and_then(|()| images::server_image(&sh, "debug")),
        flags::Command::Demo => ci::demo(&sh),
        flags::Command::Bench(args) => bench::run(&sh, &args),
        flags::Command::Fuzz(args) => fuzz::run(&sh, &args),
        flags::Command::Dist(args) => dist::run(&sh, &args),
        flags::Command::Release(args) => release::run(&sh, &args),
        flags::Command::Docs(args) => docs::run(&sh, &args),
        flags::Command::Nix(args) => nix::run(&sh, &args),
        flags::Command::Setup(args) => setup::run(&sh, &args),
    }
}

/// The workspace root, found from this crate's manifest so xtask works from any directory.
pub(crate) fn project_root() -> PathBuf {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
    PathBuf::from(dir).parent().map(PathBuf::from).unwrap_or_default()
}

/// Prints a step header so CI logs show where time goes.
pub(crate) fn step(name: &str) {
    #[allow(clippy::print_stderr, reason = "xtask reports progress on stderr")]
    {
        eprintln!("\n==> {name}");
    }
}
