//! `list`: every target as a table or JSON, with `--all` the databases discovery found but
//! does not offer, and why.

use clap::Args;
use comfy_table::{Table, presets};
use miette::{IntoDiagnostic, miette};
use rds_auth_cli::config::Loaded;

use crate::config::Settings;
use crate::{usage_error, workspace};

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// JSON, for scripts.
    #[arg(long)]
    json: bool,
    /// Include databases that are not targets (IAM off, tag rules), with the reason.
    #[arg(long)]
    all: bool,
    /// Ask AWS again instead of using the cache.
    #[arg(long)]
    refresh: bool,
}

pub(crate) fn run(loaded: &Loaded<Settings>, args: &ListArgs) -> miette::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().into_diagnostic()?;
    let (entries, cache) = runtime.block_on(async {
        let workspace = workspace::Workspace::new(loaded).await.unwrap_or_else(|e| usage_error(e));
        workspace.catalog(loaded, args.refresh).await.unwrap_or_else(|e| usage_error(e))
    });
    let entries: Vec<_> = entries.into_iter().filter(|e| args.all || e.is_target()).collect();
    #[allow(clippy::print_stdout, reason = "printing the list is this command's job")]
    {
        if args.json {
            println!("{}", serde_json::to_string_pretty(&entries).into_diagnostic()?);
            return Ok(());
        }
        let mut table = Table::new();
        table.load_style(presets::NOTHING);
        let mut header =
            vec!["NAME", "KIND", "ENGINE", "REGION", "ENDPOINT", "IAM", "LOCAL PORT", "UPSTREAM"];
        if args.all {
            header.push("NOT A TARGET BECAUSE");
        }
        table.set_header(header);
        for entry in &entries {
            let engine = if entry.engine.is_empty() {
                "-".to_owned()
            } else {
                format!("{} {}", entry.engine, entry.engine_version)
            };
            let mut row = vec![
                entry.name.clone(),
                entry.kind.clone(),
                engine,
                entry.region.clone(),
                entry.endpoint.clone(),
                if entry.iam { "on" } else { "off" }.to_owned(),
                entry.local_port.map(|p| p.to_string()).unwrap_or_else(|| "-".to_owned()),
                entry.upstream.clone(),
            ];
            if args.all {
                row.push(entry.excluded.clone().unwrap_or_default());
            }
            table.add_row(row);
        }
        println!("{table}");
    }
    if let Some(cache) = cache {
        for failure in &cache.failures {
            #[allow(clippy::print_stderr, reason = "a partial failure is worth telling the person")]
            {
                eprintln!("warning: discovery failed for {failure}");
            }
        }
    } else if entries.is_empty() {
        return Err(miette!(
            help = "add targets or discovery regions (see docs/configuration.md)",
            "no targets"
        ));
    }
    Ok(())
}
