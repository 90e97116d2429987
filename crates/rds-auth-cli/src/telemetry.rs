//! Logging: one format and one filter for the whole process, on stderr.

use std::fmt;
use std::io::IsTerminal;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the span fields (`conn.id`, `db.user`, ...) included.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}: expected text or json")),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

const QUIET_AWS: &str = "aws_config=error,aws_smithy_runtime=error,aws_smithy_http_client=error,aws_sdk_sts=error,aws_sdk_sso=error";

/// Installs the global subscriber. `filter` uses `tracing_subscriber`'s directive syntax,
/// for example `info` or `info,rds_auth_server=debug`. Whatever it says, aws-sigv4 logs at
/// info at most, because its trace lines carry session tokens.
pub fn init(format: LogFormat, filter: &str) -> Result<(), String> {
    // The AWS SDK reports every step of its credential and region chains at warn level, raw
    // HTTP responses included; unless asked for, only its errors are shown.
    let mut directives =
        if filter.contains("aws") { filter.to_owned() } else { format!("{filter},{QUIET_AWS}") };
    // aws-sigv4 traces the canonical request it signs, which holds the session token of
    // temporary credentials. No filter may turn that on: its directives are replaced.
    directives = directives
        .split(',')
        .filter(|d| !d.trim_start().starts_with("aws_sigv4"))
        .collect::<Vec<_>>()
        .join(",");
    directives.push_str(",aws_sigv4=info");
    let filter =
        EnvFilter::try_new(&directives).map_err(|e| format!("invalid log filter {filter:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_span_events(FmtSpan::NONE)
            .try_init(),
    };
    result.map_err(|e| format!("cannot install the logger: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert!("xml".parse::<LogFormat>().is_err());
    }
}
