//! Logging: one format and one filter for the whole process, on stderr.

use std::fmt;
use std::io::IsTerminal;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tracing::Level;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

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
/// info at most, because its trace lines carry session tokens: a second filter, which no
/// directive (span-scoped ones included) can override, drops them.
pub fn init(format: LogFormat, filter: &str) -> Result<(), String> {
    // The AWS SDK reports every step of its credential and region chains at warn level, raw
    // HTTP responses included; unless asked for, only its errors are shown.
    let directives = if filter.contains("aws") { filter.to_owned() } else { format!("{filter},{QUIET_AWS}") };
    let env_filter =
        EnvFilter::try_new(&directives).map_err(|e| format!("invalid log filter {filter:?}: {e}"))?;
    let no_signing_traces =
        filter_fn(|meta| !(meta.target().starts_with("aws_sigv4") && *meta.level() > Level::INFO));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let layer = match format {
        LogFormat::Text => layer.with_target(false).boxed(),
        LogFormat::Json => layer
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_span_events(FmtSpan::NONE)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(layer.with_filter(env_filter).with_filter(no_signing_traces))
        .try_init()
        .map_err(|e| format!("cannot install the logger: {e}"))
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
