//! Configuration layering and configuration errors a person can act on.
//!
//! Values come from, lowest to highest: the program's defaults, a TOML file, environment
//! variables with the program's prefix (`__` separates levels, so
//! `RDS_AUTH_SERVER_LISTEN__ADDRESS` sets `listen.address`), then command-line flags.
//! Every error names the key and where its value came from; for values from the file it
//! points at the exact spot with a miette label.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::Value;
use miette::{NamedSource, SourceSpan};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A configuration mistake, ready for miette to render.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error(transparent)]
#[diagnostic(transparent)]
pub struct ConfigError(Box<ConfigProblem>);

/// The parts of a [`ConfigError`].
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("{message}")]
#[diagnostic(code(config))]
pub struct ConfigProblem {
    message: String,
    #[source_code]
    source_code: Option<NamedSource<String>>,
    #[label("{label}")]
    span: Option<SourceSpan>,
    label: String,
    #[help]
    help: Option<String>,
}

impl ConfigError {
    /// An error that is not about one key (a missing file, say).
    pub fn general(message: impl Into<String>, help: impl Into<String>) -> ConfigError {
        ConfigProblem {
            message: message.into(),
            source_code: None,
            span: None,
            label: String::new(),
            help: Some(help.into()),
        }
        .into()
    }

    pub fn message(&self) -> &str {
        &self.0.message
    }
}

impl From<ConfigProblem> for ConfigError {
    fn from(problem: ConfigProblem) -> ConfigError {
        ConfigError(Box::new(problem))
    }
}

/// The file a configuration was read from, if any.
#[derive(Debug, Clone)]
struct FileSource {
    path: PathBuf,
    text: String,
}

/// A loaded configuration and what is needed to point at its keys later.
#[derive(Debug)]
pub struct Loaded<T> {
    pub value: T,
    figment: Figment,
    file: Option<FileSource>,
    env_prefix: &'static str,
}

/// Where a key's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    File(PathBuf),
    Environment(String),
    Flag,
}

impl<T> Loaded<T> {
    /// The file that was read, if one existed.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_ref().map(|f| f.path.as_path())
    }

    /// Where the value at `key` (dotted, with array indexes as numbers: `targets.1.endpoint`)
    /// came from.
    pub fn origin(&self, key: &str) -> Origin {
        let lookup: Vec<&str> = key.split('.').take_while(|s| s.parse::<usize>().is_err()).collect();
        let Some(metadata) = self.figment.find_metadata(&lookup.join(".")) else { return Origin::Default };
        match &metadata.source {
            Some(figment::Source::File(path)) => Origin::File(path.clone()),
            _ if metadata.name.starts_with("environment")
                || metadata.name.contains("environment variable") =>
            {
                Origin::Environment(env_name(self.env_prefix, key))
            }
            _ if metadata.name == FLAGS => Origin::Flag,
            _ => Origin::Default,
        }
    }

    /// An error about the value at `key`, pointing at it in the file when it came from there.
    pub fn error_at(&self, key: &str, message: impl Into<String>, help: impl Into<String>) -> ConfigError {
        let message = message.into();
        let help = Some(help.into()).filter(|h: &String| !h.is_empty());
        let problem = match self.origin(key) {
            Origin::File(path) => {
                let file = self.file.as_ref().filter(|f| f.path == path);
                let span = file.and_then(|f| span_of(&f.text, key));
                ConfigProblem {
                    message: format!("invalid `{key}` in {}: {message}", path.display()),
                    source_code: file.map(|f| NamedSource::new(f.path.display().to_string(), f.text.clone())),
                    span: span.map(SourceSpan::from),
                    label: "this value".to_owned(),
                    help,
                }
            }
            Origin::Environment(var) => ConfigProblem {
                message: format!("invalid `{key}` from the environment variable {var}: {message}"),
                source_code: None,
                span: None,
                label: String::new(),
                help,
            },
            Origin::Flag => ConfigProblem {
                message: format!("invalid `{key}` from the command line: {message}"),
                source_code: None,
                span: None,
                label: String::new(),
                help,
            },
            Origin::Default => ConfigProblem {
                message: format!("invalid `{key}` (default value): {message}"),
                source_code: None,
                span: None,
                label: String::new(),
                help,
            },
        };
        problem.into()
    }
}

const FLAGS: &str = "command-line flags";

/// The environment variable that sets `key` under `prefix`.
pub fn env_name(prefix: &str, key: &str) -> String {
    format!("{prefix}{}", key.replace('.', "__").to_ascii_uppercase())
}

/// Loads `T` from its defaults, the TOML file at `path`, the environment under `env_prefix`,
/// and `flags` (fields left `None` are skipped by serde and override nothing). A missing
/// file is an error only when `required` (the user named it with `--config`).
pub fn load<T, F>(
    path: &Path,
    required: bool,
    env_prefix: &'static str,
    flags: &F,
) -> Result<Loaded<T>, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
    F: Serialize,
{
    let file = match std::fs::read_to_string(path) {
        Ok(text) => Some(FileSource { path: path.to_owned(), text }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => None,
        Err(e) => {
            return Err(ConfigError::general(
                format!("cannot read the configuration file {}: {e}", path.display()),
                "pass an existing file with --config, or create it",
            ));
        }
    };
    if let Some(file) = &file
        && let Err(e) = toml_edit::Document::parse(file.text.as_str())
    {
        return Err(ConfigProblem {
            message: format!("{} is not valid TOML: {}", file.path.display(), e.message()),
            source_code: Some(NamedSource::new(file.path.display().to_string(), file.text.clone())),
            span: e.span().map(SourceSpan::from),
            label: "here".to_owned(),
            help: Some("see docs/configuration.md for the format".to_owned()),
        }
        .into());
    }
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if file.is_some() {
        figment = figment.merge(Toml::file_exact(path));
    }
    let figment =
        figment.merge(Env::prefixed(env_prefix).split("__")).merge(Flags(Serialized::defaults(flags)));
    let mut loaded = Loaded { value: T::default(), figment, file, env_prefix };
    match loaded.figment.extract::<T>() {
        Ok(value) => {
            loaded.value = value;
            Ok(loaded)
        }
        Err(errors) => Err(from_figment(&loaded, errors)),
    }
}

/// The flags, under a name that lets [`Loaded::origin`] tell them apart.
struct Flags<F>(Serialized<F>);

impl<F: Serialize> figment::Provider for Flags<F> {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named(FLAGS)
    }

    fn data(&self) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        self.0.data()
    }
}

fn from_figment<T>(loaded: &Loaded<T>, errors: figment::Error) -> ConfigError {
    // Report the first error; fixing it usually reveals the next.
    let Some(error) = errors.into_iter().next() else {
        return ConfigError::general("the configuration is invalid", "see docs/configuration.md");
    };
    let key = error.path.join(".");
    let detail = error.kind.to_string();
    let help = "see docs/configuration.md for every key, its type and its default";
    if key.is_empty() {
        return ConfigError::general(format!("invalid configuration: {detail}"), help);
    }
    loaded.error_at(&key, detail, help)
}

/// The byte range of `key`'s value in a TOML document.
fn span_of(text: &str, key: &str) -> Option<std::ops::Range<usize>> {
    let doc = toml_edit::Document::parse(text).ok()?;
    let mut item = doc.as_item();
    for segment in key.split('.') {
        item = match segment.parse::<usize>() {
            Ok(index) => match item {
                toml_edit::Item::ArrayOfTables(tables) => {
                    let table = tables.get(index)?;
                    return descend_table(table, key.split('.').skip_while(|s| *s != segment).skip(1));
                }
                other => other.get(index)?,
            },
            Err(_) => item.get(segment)?,
        };
    }
    item.span()
}

fn descend_table<'a>(
    table: &toml_edit::Table,
    mut rest: impl Iterator<Item = &'a str>,
) -> Option<std::ops::Range<usize>> {
    let Some(first) = rest.next() else { return table.span() };
    let mut item = table.get(first)?;
    for segment in rest {
        item = match segment.parse::<usize>() {
            Ok(index) => item.get(index)?,
            Err(_) => item.get(segment)?,
        };
    }
    item.span()
}

/// The configuration as a figment value, for `config` subcommands that print it.
pub fn effective<T>(loaded: &Loaded<T>) -> Option<Value> {
    loaded.figment.find_value("").ok()
}

#[cfg(test)]
#[allow(clippy::result_large_err, reason = "figment::Jail's closures must return figment::Error")]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Settings {
        listen: Listen,
        targets: Vec<Target>,
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Listen {
        address: String,
        port: u16,
    }

    impl Default for Listen {
        fn default() -> Listen {
            Listen { address: "127.0.0.1".into(), port: 5432 }
        }
    }

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Target {
        endpoint: String,
    }

    #[derive(Debug, Default, Serialize)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        listen: Option<FlagListen>,
    }

    #[derive(Debug, Default, Serialize)]
    struct FlagListen {
        port: u16,
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("config.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn layers_and_origins() {
        figment::Jail::expect_with(|jail| {
            let path =
                write(jail.directory(), "[listen]\naddress = \"0.0.0.0\"\n[[targets]]\nendpoint = \"a:1\"\n");
            jail.set_env("TESTCFG_LISTEN__PORT", "6000");
            let loaded: Loaded<Settings> = load(&path, true, "TESTCFG_", &Flags::default()).unwrap();
            assert_eq!(loaded.value.listen, Listen { address: "0.0.0.0".into(), port: 6000 });
            assert_eq!(loaded.origin("listen.address"), Origin::File(path.clone()));
            assert_eq!(loaded.origin("listen.port"), Origin::Environment("TESTCFG_LISTEN__PORT".into()));

            let flags = Flags { listen: Some(FlagListen { port: 7000 }) };
            let loaded: Loaded<Settings> = load(&path, true, "TESTCFG_", &flags).unwrap();
            assert_eq!(loaded.value.listen.port, 7000);
            Ok(())
        });
    }

    #[test]
    fn errors_name_the_key_and_point_into_the_file() {
        figment::Jail::expect_with(|jail| {
            let path = write(jail.directory(), "[listen]\nport = \"many\"\n");
            let err = load::<Settings, _>(&path, true, "TESTCFG_", &Flags::default()).unwrap_err();
            assert!(err.message().contains("`listen.port`"), "{}", err.message());
            assert!(err.message().contains("config.toml"), "{}", err.message());
            let span = err.0.span.unwrap();
            assert_eq!(&"[listen]\nport = \"many\"\n"[span.offset()..span.offset() + span.len()], "\"many\"");

            let path =
                write(jail.directory(), "[[targets]]\nendpoint = \"a:1\"\n[[targets]]\nendpint = \"b\"\n");
            let err = load::<Settings, _>(&path, true, "TESTCFG_", &Flags::default()).unwrap_err();
            assert!(err.message().contains("unknown field: found `endpint`"), "{}", err.message());

            let path = write(jail.directory(), "[listen\nport = 1\n");
            let err = load::<Settings, _>(&path, true, "TESTCFG_", &Flags::default()).unwrap_err();
            assert!(err.message().contains("not valid TOML"), "{}", err.message());
            assert!(err.0.span.is_some());

            let loaded: Loaded<Settings> = load(
                &write(jail.directory(), "[[targets]]\nendpoint = \"a:1\"\n[[targets]]\nendpoint = \"b\"\n"),
                true,
                "TESTCFG_",
                &Flags::default(),
            )
            .unwrap();
            let err = loaded.error_at("targets.1.endpoint", "expected host:port", "");
            let span = err.0.span.unwrap();
            assert_eq!(span.len(), "\"b\"".len());
            Ok(())
        });
    }

    #[test]
    fn a_missing_file_is_fine_unless_named() {
        figment::Jail::expect_with(|jail| {
            let path = jail.directory().join("absent.toml");
            assert!(load::<Settings, _>(&path, false, "TESTCFG_", &Flags::default()).is_ok());
            let err = load::<Settings, _>(&path, true, "TESTCFG_", &Flags::default()).unwrap_err();
            assert!(err.message().contains("cannot read"));
            Ok(())
        });
    }
}
