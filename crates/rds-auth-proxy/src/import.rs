//! `rds-auth-proxy config import OLD.yaml`: converts the Go predecessor's YAML configuration
//! (`proxy`, `upstream_proxies`, `targets`, `target_acl`, `port_forward`) into this proxy's TOML.
//!
//! [`convert`] is a pure function from YAML text to TOML text plus notes; `run` only reads the
//! file, writes the result and prints the notes. Whatever the predecessor did that this proxy
//! does differently, or not at all, becomes a note naming the YAML key and the reason, printed on
//! stderr so the TOML on stdout can be redirected. Input that the predecessor could not have run
//! either (not YAML, a port that is not a number, an unknown TLS mode, a host without a port) is
//! an error that points at the key.
//!
//! It reads neither the files the YAML names nor AWS: the result is proved by loading it with
//! the same loader `connect` uses.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::IpAddr;
use std::ops::Range;
use std::path::PathBuf;

use miette::{NamedSource, SourceSpan};
use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

/// Arguments of `config import`.
#[derive(Debug, clap::Args)]
pub(crate) struct ImportArgs {
    /// The predecessor's YAML configuration file.
    pub(crate) path: PathBuf,
    /// Write the TOML to this file instead of stdout.
    #[arg(long, short, value_name = "PATH")]
    pub(crate) output: Option<PathBuf>,
    /// Replace the --output file if it exists.
    #[arg(long, requires = "output")]
    pub(crate) force: bool,
}

/// Configuration and usage errors exit with 64 (EX_USAGE), as everywhere in this binary.
const EX_USAGE: i32 = 64;

pub(crate) fn run(args: &ImportArgs) -> miette::Result<()> {
    let text = match std::fs::read_to_string(&args.path) {
        Ok(text) => text,
        Err(e) => usage_error(miette::miette!(
            help = "pass the predecessor's configuration, usually ~/.config/rds-auth-proxy/config.yaml",
            "cannot read {}: {e}",
            args.path.display()
        )),
    };
    let context = Context::from_env();
    let converted = match convert(&text, &args.path.display().to_string(), &context) {
        Ok(converted) => converted,
        Err(error) => usage_error(miette::Report::new(error)),
    };
    match &args.output {
        Some(path) => {
            let mut options = OpenOptions::new();
            options.write(true);
            if args.force {
                options.create(true).truncate(true);
            } else {
                options.create_new(true);
            }
            let mut file = match options.open(path) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => usage_error(miette::miette!(
                    help = "pass --force to replace it",
                    "refusing to overwrite {}",
                    path.display()
                )),
                Err(e) => return Err(miette::miette!("cannot create {}: {e}", path.display())),
            };
            file.write_all(converted.toml.as_bytes())
                .map_err(|e| miette::miette!("cannot write {}: {e}", path.display()))?;
        }
        None => {
            #[allow(clippy::print_stdout, reason = "the TOML on stdout is this command's output")]
            {
                print!("{}", converted.toml);
            }
        }
    }
    #[allow(clippy::print_stderr, reason = "the notes are for the person who ran the command")]
    {
        eprint!("{}", converted.report(&args.path.display().to_string(), args.output.as_deref()));
    }
    Ok(())
}

fn usage_error(report: miette::Report) -> ! {
    #[allow(clippy::print_stderr, reason = "the diagnostic is for the person who ran the command")]
    {
        eprintln!("{report:?}");
    }
    std::process::exit(EX_USAGE)
}

/// What the conversion takes from the environment, injected so tests are deterministic.
#[derive(Debug, Clone, Default)]
pub(crate) struct Context {
    /// `$HOME`, to expand `$HOME` and `~` in a kubeconfig path (kubectl expands neither).
    pub(crate) home: Option<String>,
    /// The AWS SDK's default region (`AWS_REGION`, `AWS_DEFAULT_REGION`): the predecessor's
    /// discovery searched it.
    pub(crate) region: Option<String>,
}

impl Context {
    fn from_env() -> Context {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Context { home: var("HOME"), region: var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")) }
    }
}

/// The TOML and what could not be carried over as it was.
#[derive(Debug)]
pub(crate) struct Converted {
    pub(crate) toml: String,
    pub(crate) notes: Vec<Note>,
}

/// Something the predecessor's file said that this proxy does differently or not at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Note {
    /// The YAML key, dotted (`upstream_proxies.default.ssl.mode`).
    pub(crate) key: String,
    /// Its line, 1-based; `None` for notes about the file as a whole.
    pub(crate) line: Option<usize>,
    pub(crate) text: String,
}

impl Converted {
    fn report(&self, source: &str, output: Option<&std::path::Path>) -> String {
        let mut report = match output {
            Some(path) => format!("wrote {}, converted from {source}\n", path.display()),
            None => String::new(),
        };
        if self.notes.is_empty() {
            report.push_str("everything was carried over\n");
            return report;
        }
        report.push_str(&format!(
            "{} thing(s) could not be carried over as they were; review them before `rds-auth-proxy connect`:\n",
            self.notes.len()
        ));
        for note in &self.notes {
            match note.line {
                Some(line) => report.push_str(&format!("  - {} (line {line}): {}\n", note.key, note.text)),
                None => report.push_str(&format!("  - {}: {}\n", note.key, note.text)),
            }
        }
        report
    }
}

/// A conversion failure, pointing at the YAML that caused it (boxed: it carries the source).
#[derive(Debug, miette::Diagnostic)]
#[diagnostic(transparent)]
pub(crate) struct ImportError(Box<ImportProblem>);

/// The parts of an [`ImportError`].
#[derive(Debug, miette::Diagnostic)]
#[diagnostic(code(config::import))]
pub(crate) struct ImportProblem {
    message: String,
    #[source_code]
    source_code: NamedSource<String>,
    #[label("{label}")]
    span: Option<SourceSpan>,
    label: String,
    #[help]
    help: Option<String>,
}

impl From<ImportProblem> for ImportError {
    fn from(problem: ImportProblem) -> ImportError {
        ImportError(Box::new(problem))
    }
}

impl fmt::Display for ImportProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ImportProblem {}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ImportError {}

/// The YAML, reduced to what the conversion needs: values with their byte ranges.
#[derive(Debug, Clone)]
struct Node {
    span: Range<usize>,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Map(Vec<Entry>),
    Seq(Vec<Node>),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Null,
}

#[derive(Debug, Clone)]
struct Entry {
    key: String,
    key_span: Range<usize>,
    value: Node,
}

/// Converts the predecessor's YAML (`source` names it in messages) into this proxy's TOML.
pub(crate) fn convert(text: &str, source: &str, context: &Context) -> Result<Converted, ImportError> {
    let mut converter = Converter { text, source, context, notes: Vec::new() };
    let root = converter.parse()?;
    let output = converter.convert(&root)?;
    let mut notes = converter.notes;
    // By line, notes about the whole file last; the sort is stable, so a key's notes keep
    // their order.
    notes.sort_by_key(|note| note.line.unwrap_or(usize::MAX));
    Ok(Converted { toml: output.render(source), notes })
}

struct Converter<'a> {
    text: &'a str,
    source: &'a str,
    context: &'a Context,
    notes: Vec<Note>,
}

/// A mapping whose keys were checked against the known ones, looked up case-insensitively as
/// viper did.
struct Fields<'n> {
    path: String,
    entries: Vec<&'n Entry>,
}

impl<'n> Fields<'n> {
    fn get(&self, name: &str) -> Option<&'n Entry> {
        self.entries.iter().copied().find(|e| e.key.eq_ignore_ascii_case(name))
    }

    fn key(&self, name: &str) -> String {
        join(&self.path, name)
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

impl Converter<'_> {
    fn parse(&self) -> Result<Node, ImportError> {
        let docs = MarkedYaml::load_from_str(self.text).map_err(|e| {
            let at = self.byte_offset(e.marker().index());
            self.error(at..at, format!("{} is not valid YAML: {}", self.source, e.info()), "here", "")
        })?;
        let mut docs = docs.iter();
        let root = match docs.next() {
            Some(doc) => self.lower(doc)?,
            None => Node { span: 0..0, kind: Kind::Null },
        };
        if let Some(extra) = docs.next() {
            let at = self.byte_offset(extra.span.start.index());
            return Err(self.error(
                at..at,
                format!("{} holds more than one YAML document", self.source),
                "a second document starts here",
                "the predecessor read one document; keep the configuration's",
            ));
        }
        Ok(root)
    }

    fn byte_offset(&self, char_index: usize) -> usize {
        self.text.char_indices().nth(char_index).map_or(self.text.len(), |(offset, _)| offset)
    }

    fn span_of(&self, node: &MarkedYaml<'_>) -> Range<usize> {
        let start = self.byte_offset(node.span.start.index());
        let end = self.byte_offset(node.span.end.index()).max(start);
        start..end
    }

    fn lower(&self, node: &MarkedYaml<'_>) -> Result<Node, ImportError> {
        let span = self.span_of(node);
        let kind = match &node.data {
            YamlData::Value(Scalar::String(s)) => Kind::Str(s.to_string()),
            YamlData::Representation(s, _, _) => Kind::Str(s.to_string()),
            YamlData::Value(Scalar::Integer(i)) => Kind::Int(*i),
            YamlData::Value(Scalar::FloatingPoint(f)) => Kind::Float(f.into_inner()),
            YamlData::Value(Scalar::Boolean(b)) => Kind::Bool(*b),
            YamlData::Value(Scalar::Null) => Kind::Null,
            YamlData::Tagged(_, inner) => return self.lower(inner),
            YamlData::Sequence(items) => {
                Kind::Seq(items.iter().map(|item| self.lower(item)).collect::<Result<_, _>>()?)
            }
            YamlData::Mapping(map) => {
                let mut entries = Vec::new();
                for (key, value) in map {
                    let key_span = self.span_of(key);
                    let name = match &key.data {
                        YamlData::Value(Scalar::String(s)) => s.to_string(),
                        YamlData::Value(Scalar::Integer(i)) => i.to_string(),
                        YamlData::Value(Scalar::Boolean(b)) => b.to_string(),
                        _ => {
                            return Err(self.error(
                                key_span,
                                "a key that is not a plain name",
                                "this key",
                                "the predecessor's keys are names",
                            ));
                        }
                    };
                    entries.push(Entry { key: name, key_span, value: self.lower(value)? });
                }
                Kind::Map(entries)
            }
            YamlData::Alias(_) | YamlData::BadValue => {
                return Err(self.error(span, "a value this tool cannot read", "this value", ""));
            }
        };
        Ok(Node { span, kind })
    }

    fn error(&self, span: Range<usize>, message: impl Into<String>, label: &str, help: &str) -> ImportError {
        ImportProblem {
            message: message.into(),
            source_code: NamedSource::new(self.source, self.text.to_owned()),
            span: Some(SourceSpan::from(span)),
            label: label.to_owned(),
            help: Some(help.to_owned()).filter(|h| !h.is_empty()),
        }
        .into()
    }

    fn line(&self, offset: usize) -> usize {
        self.text.get(..offset).map_or(1, |before| before.matches('\n').count() + 1)
    }

    fn note(&mut self, key: impl Into<String>, span: &Range<usize>, text: impl Into<String>) {
        let line = Some(self.line(span.start));
        self.notes.push(Note { key: key.into(), line, text: text.into() });
    }

    fn note_file(&mut self, key: impl Into<String>, text: impl Into<String>) {
        self.notes.push(Note { key: key.into(), line: None, text: text.into() });
    }

    /// Checks that `node` is a mapping (or empty) and notes keys outside `known`.
    fn fields<'n>(&mut self, node: &'n Node, path: &str, known: &[&str]) -> Result<Fields<'n>, ImportError> {
        let entries: Vec<&Entry> = match &node.kind {
            Kind::Map(entries) => entries.iter().collect(),
            Kind::Null => Vec::new(),
            _ => {
                return Err(self.error(
                    node.span.clone(),
                    format!("`{path}` must be a mapping"),
                    "expected keys and values here",
                    "",
                ));
            }
        };
        for entry in &entries {
            if !known.iter().any(|k| k.eq_ignore_ascii_case(&entry.key)) {
                self.note(
                    join(path, &entry.key),
                    &entry.key_span,
                    "unknown key, not carried over (the predecessor ignored it too)",
                );
            }
        }
        Ok(Fields { path: path.to_owned(), entries })
    }

    fn string(&self, entry: Option<&Entry>, key: &str) -> Result<Option<String>, ImportError> {
        let Some(entry) = entry else { return Ok(None) };
        match &entry.value.kind {
            Kind::Null => Ok(None),
            Kind::Str(s) => Ok(Some(s.clone())),
            Kind::Int(i) => Ok(Some(i.to_string())),
            Kind::Float(f) => Ok(Some(f.to_string())),
            Kind::Bool(b) => Ok(Some(b.to_string())),
            Kind::Map(_) | Kind::Seq(_) => Err(self.error(
                entry.value.span.clone(),
                format!("`{key}` must be a single value"),
                "expected a string",
                "",
            )),
        }
    }

    fn port(&self, entry: Option<&Entry>, key: &str) -> Result<Option<u16>, ImportError> {
        let Some(entry) = entry else { return Ok(None) };
        let parsed = match &entry.value.kind {
            Kind::Null => return Ok(None),
            Kind::Int(i) => u16::try_from(*i).ok(),
            Kind::Str(s) => s.trim().parse::<u16>().ok(),
            _ => None,
        };
        parsed.map(Some).ok_or_else(|| {
            self.error(
                entry.value.span.clone(),
                format!("`{key}` is not a port number"),
                "expected 0 to 65535",
                "",
            )
        })
    }

    fn boolean(&self, entry: Option<&Entry>, key: &str) -> Result<Option<bool>, ImportError> {
        let Some(entry) = entry else { return Ok(None) };
        match &entry.value.kind {
            Kind::Null => Ok(None),
            Kind::Bool(b) => Ok(Some(*b)),
            // viper read YAML 1.1, where these spell booleans too.
            Kind::Str(s) => match s.to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" => Ok(Some(true)),
                "false" | "no" | "off" => Ok(Some(false)),
                _ => Err(self.bool_error(entry, key)),
            },
            _ => Err(self.bool_error(entry, key)),
        }
    }

    fn bool_error(&self, entry: &Entry, key: &str) -> ImportError {
        self.error(entry.value.span.clone(), format!("`{key}` must be true or false"), "this value", "")
    }

    /// `host:port`, as the predecessor dialled it.
    fn host_port(&self, entry: &Entry, key: &str) -> Result<String, ImportError> {
        let value = self.string(Some(entry), key)?.unwrap_or_default();
        let valid = value
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
        if !valid {
            return Err(self.error(
                entry.value.span.clone(),
                format!("`{key}` must be host:port"),
                "no port here",
                "write the address with its port, for example db.example.com:5432",
            ));
        }
        Ok(value)
    }

    /// Both or neither of a certificate and its key.
    fn pair(
        &self,
        fields: &Fields<'_>,
        cert_names: &[&str],
        key_name: &str,
    ) -> Result<Option<(String, String)>, ImportError> {
        let cert_entry = cert_names.iter().find_map(|name| fields.get(name));
        let key_entry = fields.get(key_name);
        let cert = self.string(cert_entry, &fields.key(cert_names[0]))?;
        let key = self.string(key_entry, &fields.key(key_name))?;
        match (cert, key, cert_entry, key_entry) {
            (Some(cert), Some(key), _, _) => Ok(Some((cert, key))),
            (None, None, _, _) => Ok(None),
            (Some(_), None, Some(entry), _) => Err(self.error(
                entry.key_span.clone(),
                format!("`{}` is set without `{}`", fields.key(&entry.key), fields.key(key_name)),
                "a certificate without its key",
                "set both or neither, as the predecessor required",
            )),
            (None, Some(_), _, Some(entry)) => Err(self.error(
                entry.key_span.clone(),
                format!("`{}` is set without `{}`", fields.key(key_name), fields.key(cert_names[0])),
                "a key without its certificate",
                "set both or neither, as the predecessor required",
            )),
            _ => Ok(None),
        }
    }

    fn convert(&mut self, root: &Node) -> Result<Output, ImportError> {
        let top = self.fields(root, "", &["proxy", "upstream_proxies", "targets"])?;
        let mut output = Output::default();

        let Some(upstreams) = top.get("upstream_proxies") else {
            return Err(ImportProblem {
                message: format!("{} has no upstream_proxies: it is not a client configuration", self.source),
                source_code: NamedSource::new(self.source, self.text.to_owned()),
                span: None,
                label: String::new(),
                help: Some(
                    "config import converts the client's configuration; a server proxy's is rewritten \
                     by hand (docs/migrating.md has the table of keys)"
                        .to_owned(),
                ),
            }
            .into());
        };

        let mut client_identity = None;
        if let Some(proxy) = top.get("proxy") {
            client_identity = self.proxy(&proxy.value, &mut output)?;
        }
        self.discovery_region(&mut output);
        self.upstreams(upstreams, client_identity.as_ref(), &mut output)?;
        if let Some(targets) = top.get("targets") {
            self.targets(targets, &mut output)?;
        }
        Ok(output)
    }

    /// `proxy:`; returns the default client certificate and key for the upstreams.
    fn proxy(&mut self, node: &Node, output: &mut Output) -> Result<Option<(String, String)>, ImportError> {
        let proxy = self.fields(node, "proxy", &["listen_addr", "ssl", "target_acl"])?;
        if let Some(entry) = proxy.get("listen_addr") {
            self.listen_addr(entry, &proxy.key("listen_addr"), output)?;
        }
        let mut client_identity = None;
        if let Some(ssl) = proxy.get("ssl") {
            let ssl = self.fields(
                &ssl.value,
                "proxy.ssl",
                &["enabled", "certificate", "private_key", "client_certificate", "client_private_key"],
            )?;
            let enabled = self.boolean(ssl.get("enabled"), &ssl.key("enabled"))?.unwrap_or(false);
            let server_identity = self.pair(&ssl, &["certificate"], "private_key")?;
            if enabled {
                output.local_tls = Some(server_identity);
            } else if let (Some(_), Some(entry)) = (server_identity, ssl.get("certificate")) {
                let key = ssl.key("certificate");
                self.note(key, &entry.key_span, "not carried over: ssl.enabled is false, so it was unused");
            }
            client_identity = self.pair(&ssl, &["client_certificate"], "client_private_key")?;
        }
        if let Some(acl) = proxy.get("target_acl") {
            let acl =
                self.fields(&acl.value, "proxy.target_acl", &["allowed_rds_tags", "blocked_rds_tags"])?;
            output.allow_tags = self.tags(acl.get("allowed_rds_tags"), &acl.key("allowed_rds_tags"))?;
            output.block_tags = self.tags(acl.get("blocked_rds_tags"), &acl.key("blocked_rds_tags"))?;
        }
        Ok(client_identity)
    }

    fn listen_addr(&mut self, entry: &Entry, key: &str, output: &mut Output) -> Result<(), ImportError> {
        let value = self.string(Some(entry), key)?.unwrap_or_default();
        let Some((host, port)) = value.rsplit_once(':') else {
            return Err(self.error(
                entry.value.span.clone(),
                format!("`{key}` must be host:port"),
                "no port here",
                "the predecessor listened on host:port, for example 127.0.0.1:8001",
            ));
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let span = entry.key_span.clone();
        match host {
            "" | "0.0.0.0" | "::" => self.note(
                key,
                &span,
                "the predecessor listened on every interface, so anyone on the network could connect with \
                 your IAM identity; this proxy listens on 127.0.0.1 (proxy.listen_address)",
            ),
            "127.0.0.1" | "::1" | "localhost" => {}
            other => match other.parse::<IpAddr>() {
                Ok(ip) => {
                    output.listen_address = Some(ip);
                    self.note(
                        key,
                        &span,
                        format!(
                            "kept as proxy.listen_address = \"{ip}\": anyone who reaches it connects with your \
                             IAM identity; 127.0.0.1 is safer"
                        ),
                    );
                }
                Err(_) => self.note(
                    key,
                    &span,
                    format!(
                        "{other} is not an IP address, which proxy.listen_address needs; 127.0.0.1 is used"
                    ),
                ),
            },
        }
        if port.parse::<u16>().is_ok_and(|p| p != 0) {
            self.note(
                key,
                &span,
                format!(
                    "port {port}: this proxy opens one listener per target, on targets.<name>.local_port or a \
                     free port; give the target you used most local_port = {port} to keep saved connections"
                ),
            );
        }
        Ok(())
    }

    /// `allowed_rds_tags` / `blocked_rds_tags`: `{name, value}` pairs become `name=value` rules.
    fn tags(&mut self, entry: Option<&Entry>, key: &str) -> Result<Vec<String>, ImportError> {
        let Some(entry) = entry else { return Ok(Vec::new()) };
        let items = match &entry.value.kind {
            Kind::Seq(items) => items,
            Kind::Null => return Ok(Vec::new()),
            _ => {
                return Err(self.error(
                    entry.value.span.clone(),
                    format!("`{key}` must be a list of {{name, value}}"),
                    "expected a list",
                    "",
                ));
            }
        };
        let mut rules = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let item_key = format!("{key}[{i}]");
            let tag = self.fields(item, &item_key, &["name", "value"])?;
            let Some(name) = self.string(tag.get("name"), &tag.key("name"))? else {
                return Err(self.error(
                    item.span.clone(),
                    format!("`{item_key}` has no name"),
                    "this tag",
                    "write each tag as {name: KEY, value: VALUE}",
                ));
            };
            let value = self.string(tag.get("value"), &tag.key("value"))?.unwrap_or_default();
            if name.contains('=') {
                self.note(
                    item_key,
                    &item.span,
                    format!("tag key {name:?} holds `=`, which tag rules cannot express; dropped"),
                );
                continue;
            }
            let escaped = escape_glob(&value);
            if escaped != value {
                self.note(
                    item_key,
                    &item.span,
                    format!(
                        "the value {value:?} matched exactly; tag rules read values as globs, so its special \
                         characters are escaped"
                    ),
                );
            }
            rules.push(format!("{name}={escaped}"));
        }
        Ok(rules)
    }

    fn discovery_region(&mut self, output: &mut Output) {
        match &self.context.region {
            Some(region) => {
                output.region = Some(region.clone());
                self.note_file(
                    "(discovery)",
                    format!(
                        "the predecessor listed databases in the AWS SDK's default region; aws.regions = \
                         [\"{region}\"] comes from AWS_REGION or AWS_DEFAULT_REGION here"
                    ),
                );
            }
            None => self.note_file(
                "(discovery)",
                "the predecessor listed databases in the AWS SDK's default region; set aws.regions to the \
                 regions to search, or discovery stays off and only static targets are offered",
            ),
        }
    }

    fn upstreams(
        &mut self,
        entry: &Entry,
        client_identity: Option<&(String, String)>,
        output: &mut Output,
    ) -> Result<(), ImportError> {
        let Kind::Map(entries) = &entry.value.kind else {
            return Err(self.error(
                entry.value.span.clone(),
                "`upstream_proxies` must map names to server proxies",
                "expected a mapping",
                "",
            ));
        };
        if entries.is_empty() {
            return Err(self.error(
                entry.key_span.clone(),
                "`upstream_proxies` is empty",
                "no server proxy",
                "the client needs a server proxy to reach databases",
            ));
        }
        for upstream in entries {
            let converted = self.upstream(upstream, client_identity)?;
            output.upstreams.push(converted);
        }
        let names: Vec<&str> = output.upstreams.iter().map(|u| u.name.as_str()).collect();
        if !names.contains(&"default") {
            let first = names.first().map(|n| (*n).to_owned()).unwrap_or_default();
            self.note(
                "upstream_proxies",
                &entry.key_span,
                format!(
                    "no upstream is called default, which the predecessor used without --proxy-target; targets \
                     and discovered databases use {first:?} (discovery.default_upstream)"
                ),
            );
            output.default_upstream = Some(first);
        }
        if names.len() > 1 {
            self.note(
                "upstream_proxies",
                &entry.key_span,
                "the predecessor chose one upstream per run (--proxy-target); here each target names its own \
                 (targets.<name>.upstream), and discovered databases use discovery.default_upstream or their \
                 rds-auth-proxy:upstream tag",
            );
        }
        if output.upstreams.iter().any(|u| u.identity.is_some()) {
            self.note_file(
                "(client certificates)",
                "certificates made by the predecessor's gen-cert are server certificates only, which the server \
                 proxy refuses from clients; if yours came from there, issue new ones with \
                 `rds-auth-proxy-server gen-certs --user NAME`",
            );
        }
        Ok(())
    }

    fn upstream(
        &mut self,
        entry: &Entry,
        client_identity: Option<&(String, String)>,
    ) -> Result<UpstreamOut, ImportError> {
        let path = format!("upstream_proxies.{}", entry.key);
        let fields = self.fields(&entry.value, &path, &["host", "ssl", "port_forward"])?;
        let mut out =
            UpstreamOut { name: entry.key.clone(), address: None, ca: None, identity: None, tunnel: None };

        let port_forward = fields.get("port_forward").filter(|e| !matches!(e.value.kind, Kind::Null));
        let mut kube_config_set = false;
        if let Some(forward) = port_forward {
            let (tunnel, has_kube_config) = self.port_forward(forward, &fields.key("port_forward"))?;
            kube_config_set = has_kube_config;
            out.tunnel = Some(tunnel);
            if let Some(host) = fields.get("host") {
                self.note(
                    fields.key("host"),
                    &host.key_span,
                    "not carried over: port_forward is used, as before",
                );
            }
        } else if let Some(host) = fields.get("host") {
            out.address = Some(self.host_port(host, &fields.key("host"))?);
        } else {
            return Err(self.error(
                entry.key_span.clone(),
                format!("`{path}` has neither host nor port_forward"),
                "this upstream",
                "give the server proxy's host:port, or a port_forward",
            ));
        }

        let ssl_entry = fields.get("ssl");
        let ssl = match ssl_entry {
            Some(ssl) => Some(self.fields(
                &ssl.value,
                &fields.key("ssl"),
                &["mode", "client_certificate", "client_private_key", "root_certificate", "client_cert"],
            )?),
            None => None,
        };
        let mode_entry = ssl.as_ref().and_then(|s| s.get("mode"));
        let explicit_mode = match &ssl {
            Some(ssl) => self.string(mode_entry, &ssl.key("mode"))?,
            None => None,
        };
        let mode = explicit_mode.clone().unwrap_or_else(|| {
            if port_forward.is_some() && !kube_config_set {
                "disable".to_owned()
            } else {
                "require".to_owned()
            }
        });
        let mode_key = format!("{path}.ssl.mode");
        let mode_span = mode_entry.map_or_else(|| entry.key_span.clone(), |e| e.value.span.clone());
        match mode.as_str() {
            "verify-full" => {}
            "verify-ca" => self.note(
                &mode_key,
                &mode_span,
                "verify-ca: this proxy also checks the name on the server proxy's certificate (server_name, by \
                 default the host of address)",
            ),
            "require" | "preferred" | "allow" => self.note(
                &mode_key,
                &mode_span,
                format!(
                    "{mode} did not verify the server proxy's certificate; this proxy always does, against ca"
                ),
            ),
            "disable" => self.note(
                &mode_key,
                &mode_span,
                format!(
                    "{}: this proxy always speaks TLS 1.3 to the server proxy, so the server proxy needs a \
                     certificate (listen.cert and listen.key; `rds-auth-proxy-server gen-certs` makes them) and \
                     ca here must name its CA",
                    if explicit_mode.is_some() {
                        "disable (plaintext)"
                    } else {
                        "the predecessor spoke plaintext through the port-forward by default"
                    }
                ),
            ),
            other => {
                return Err(self.error(
                    mode_span,
                    format!("`{mode_key}` is {other:?}, which the predecessor did not know"),
                    "this mode",
                    "use disable, preferred, require, verify-ca or verify-full",
                ));
            }
        }

        if let Some(ssl) = &ssl {
            out.ca = self.string(ssl.get("root_certificate"), &ssl.key("root_certificate"))?;
            if let Some(alias) = ssl.get("client_cert") {
                self.note(
                    ssl.key("client_cert"),
                    &alias.key_span,
                    "the predecessor ignored client_cert (its key was client_certificate); carried over as cert",
                );
            }
            out.identity = self.pair(ssl, &["client_certificate", "client_cert"], "client_private_key")?;
        }
        if out.identity.is_none() {
            out.identity = client_identity.cloned();
        }
        if out.ca.is_none() {
            self.note(
                format!("{path}.ssl.root_certificate"),
                &entry.key_span,
                "ca is required and was not given: the predecessor trusted the system's roots; set ca to the CA \
                 that signs the server proxy's certificate (a placeholder path is written)",
            );
        }
        if out.identity.is_none() {
            self.note(
                format!("{path}.ssl.client_certificate"),
                &entry.key_span,
                "no client certificate: the server proxy requires one unless its listen.client_auth = \"none\"; \
                 `rds-auth-proxy-server gen-certs --user NAME` issues one",
            );
        }
        if out.tunnel.is_some() {
            self.note(
                &path,
                &entry.key_span,
                "with a tunnel, server_name must name the server proxy's certificate (gen-certs \
                 --server-name); it is left for you to fill in",
            );
        }
        Ok(out)
    }

    /// `port_forward:` becomes a kubectl tunnel; returns it and whether kube_config was set.
    fn port_forward(&mut self, entry: &Entry, path: &str) -> Result<(TunnelOut, bool), ImportError> {
        let fields = self.fields(
            &entry.value,
            path,
            &["kube_config", "context", "namespace", "deployment", "local_port", "remote_port"],
        )?;
        let missing = |this: &Self, name: &str| {
            this.error(
                entry.key_span.clone(),
                format!("`{path}` has no {name}"),
                "this port_forward",
                "the predecessor needed deployment and remote_port to forward",
            )
        };
        let deployment = self
            .string(fields.get("deployment"), &fields.key("deployment"))?
            .ok_or_else(|| missing(self, "deployment"))?;
        let remote_port = self
            .port(fields.get("remote_port"), &fields.key("remote_port"))?
            .filter(|p| *p != 0)
            .ok_or_else(|| missing(self, "remote_port"))?;
        let namespace = self.string(fields.get("namespace"), &fields.key("namespace"))?;
        let context = self.string(fields.get("context"), &fields.key("context"))?;
        let kube_config_entry = fields.get("kube_config");
        let kube_config = self.string(kube_config_entry, &fields.key("kube_config"))?;
        let kubeconfig = match (&kube_config, kube_config_entry) {
            (Some(path_text), Some(kube_entry)) => {
                self.kubeconfig(path_text, kube_entry, &fields.key("kube_config"))
            }
            _ => None,
        };
        if let Some(local) = fields.get("local_port")
            && self.port(Some(local), &fields.key("local_port"))?.is_some_and(|p| p != 0)
        {
            self.note(
                fields.key("local_port"),
                &local.key_span,
                "not carried over: kubectl picks the tunnel's local port, and the proxy follows it",
            );
        }
        self.note(
            fields.key("deployment"),
            &fields.get("deployment").map_or_else(|| entry.key_span.clone(), |e| e.key_span.clone()),
            format!(
                "the predecessor forwarded to a random running pod labelled app.kubernetes.io/name={deployment}; \
                 `kubectl port-forward deployment/{deployment}` picks a pod of that Deployment (svc/NAME works too)"
            ),
        );
        let tunnel = TunnelOut {
            resource: format!("deployment/{deployment}"),
            remote_port,
            namespace,
            context,
            kubeconfig,
        };
        Ok((tunnel, kube_config.is_some()))
    }

    /// kubectl expands neither `$HOME` nor `~`: expand them here; the predecessor's default is
    /// kubectl's own and is left out, so KUBECONFIG is honoured.
    fn kubeconfig(&mut self, path_text: &str, entry: &Entry, key: &str) -> Option<String> {
        let rest = path_text.strip_prefix("$HOME/").or_else(|| path_text.strip_prefix("~/"));
        let Some(rest) = rest else { return Some(path_text.to_owned()) };
        if rest == ".kube/config" {
            return None;
        }
        match &self.context.home {
            Some(home) => {
                let expanded = format!("{}/{rest}", home.trim_end_matches('/'));
                self.note(
                    key,
                    &entry.key_span,
                    format!("expanded to {expanded}: kubectl does not expand it"),
                );
                Some(expanded)
            }
            None => {
                self.note(
                    key,
                    &entry.key_span,
                    "kept as written; kubectl does not expand $HOME or ~, and HOME is unset",
                );
                Some(path_text.to_owned())
            }
        }
    }

    fn targets(&mut self, entry: &Entry, output: &mut Output) -> Result<(), ImportError> {
        let entries = match &entry.value.kind {
            Kind::Map(entries) => entries,
            Kind::Null => return Ok(()),
            _ => {
                return Err(self.error(
                    entry.value.span.clone(),
                    "`targets` must map names to databases",
                    "expected a mapping",
                    "",
                ));
            }
        };
        for target in entries {
            let converted = self.target(target, output.default_upstream.as_deref())?;
            output.targets.push(converted);
        }
        Ok(())
    }

    fn target(&mut self, entry: &Entry, upstream: Option<&str>) -> Result<TargetOut, ImportError> {
        let path = format!("targets.{}", entry.key);
        let fields = self.fields(
            &entry.value,
            &path,
            &["host", "database", "local_port", "ssl", "region", "isrds", "name"],
        )?;
        let Some(host) = fields.get("host") else {
            return Err(self.error(
                entry.key_span.clone(),
                format!("`{path}` has no host"),
                "this target",
                "give the database's host:port",
            ));
        };
        let endpoint = self.host_port(host, &fields.key("host"))?;
        let database = self.string(fields.get("database"), &fields.key("database"))?;
        let local_port = self.port(fields.get("local_port"), &fields.key("local_port"))?.filter(|p| *p != 0);
        let region = self.string(fields.get("region"), &fields.key("region"))?;
        let is_rds = self.boolean(fields.get("isrds"), &fields.key("isrds"))?.unwrap_or(false);
        if let Some(ssl) = fields.get("ssl") {
            self.note(
                fields.key("ssl"),
                &ssl.key_span,
                "not carried over: TLS to databases is the server proxy's business (its upstream.ca_file)",
            );
        }
        if let Some(name) = fields.get("name") {
            self.note(fields.key("name"), &name.key_span, "not carried over: the key names the target");
        }
        let iam = is_rds && region.is_some();
        if !iam {
            self.note(
                &path,
                &entry.key_span,
                "the predecessor sent no IAM token for static targets, so the client answered the database's \
                 password request: kept as auth = \"passthrough\"; remove it to sign IAM tokens",
            );
        }
        Ok(TargetOut {
            name: entry.key.clone(),
            endpoint,
            region,
            database,
            local_port,
            passthrough: !iam,
            upstream: upstream.map(str::to_owned),
        })
    }
}

/// Backslash-escapes glob metacharacters, so a value matches only itself.
fn escape_glob(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The converted configuration, before rendering.
#[derive(Debug, Default)]
struct Output {
    listen_address: Option<IpAddr>,
    /// `Some` when local TLS is on, with the certificate and key if given.
    local_tls: Option<Option<(String, String)>>,
    region: Option<String>,
    allow_tags: Vec<String>,
    block_tags: Vec<String>,
    default_upstream: Option<String>,
    upstreams: Vec<UpstreamOut>,
    targets: Vec<TargetOut>,
}

#[derive(Debug)]
struct UpstreamOut {
    name: String,
    address: Option<String>,
    ca: Option<String>,
    identity: Option<(String, String)>,
    tunnel: Option<TunnelOut>,
}

#[derive(Debug)]
struct TunnelOut {
    resource: String,
    remote_port: u16,
    namespace: Option<String>,
    context: Option<String>,
    kubeconfig: Option<String>,
}

#[derive(Debug)]
struct TargetOut {
    name: String,
    endpoint: String,
    region: Option<String>,
    database: Option<String>,
    local_port: Option<u16>,
    passthrough: bool,
    upstream: Option<String>,
}

/// Where `ca` points when the predecessor's file named no CA.
const CA_PLACEHOLDER: &str = "~/.config/rds-auth-proxy/ca.crt";

impl Output {
    fn render(&self, source: &str) -> String {
        let mut toml = Toml::default();
        toml.comment(&format!(
            "rds-auth-proxy client configuration, converted from {source} by `rds-auth-proxy config import`."
        ));
        toml.comment(
            "The notes printed with it say what changed; docs/configuration.md describes every key.",
        );

        if let Some(ip) = self.listen_address {
            toml.blank();
            toml.table("proxy");
            toml.string("listen_address", &ip.to_string());
        }
        if let Some(identity) = &self.local_tls {
            toml.blank();
            toml.table("proxy.local_tls");
            toml.raw("enabled", "true");
            if let Some((cert, key)) = identity {
                toml.string("cert", cert);
                toml.string("key", key);
            }
        }

        toml.blank();
        toml.table("aws");
        match &self.region {
            Some(region) => toml.raw("regions", &list(std::slice::from_ref(region))),
            None => {
                toml.comment("The regions discovery searches; without any, only static targets are offered.");
                toml.comment("regions = [\"us-east-1\"]");
            }
        }

        if !self.allow_tags.is_empty() || !self.block_tags.is_empty() || self.default_upstream.is_some() {
            toml.blank();
            toml.table("discovery");
            if !self.allow_tags.is_empty() {
                toml.raw("allow_tags", &list(&self.allow_tags));
            }
            if !self.block_tags.is_empty() {
                toml.raw("block_tags", &list(&self.block_tags));
            }
            if let Some(upstream) = &self.default_upstream {
                toml.string("default_upstream", upstream);
            }
        }

        for upstream in &self.upstreams {
            toml.blank();
            toml.comment(&format!("From upstream_proxies.{}.", upstream.name));
            toml.table(&format!("upstreams.{}", key(&upstream.name)));
            if let Some(address) = &upstream.address {
                toml.string("address", address);
            }
            match &upstream.ca {
                Some(ca) => toml.string("ca", ca),
                None => {
                    toml.comment("TODO: the CA that signs the server proxy's certificate.");
                    toml.string("ca", CA_PLACEHOLDER);
                }
            }
            if let Some((cert, private_key)) = &upstream.identity {
                toml.string("cert", cert);
                toml.string("key", private_key);
            }
            if let Some(tunnel) = &upstream.tunnel {
                let mut fields = vec![
                    ("kind".to_owned(), string("kubectl")),
                    ("resource".to_owned(), string(&tunnel.resource)),
                    ("remote_port".to_owned(), tunnel.remote_port.to_string()),
                ];
                for (name, value) in [
                    ("namespace", &tunnel.namespace),
                    ("context", &tunnel.context),
                    ("kubeconfig", &tunnel.kubeconfig),
                ] {
                    if let Some(value) = value {
                        fields.push((name.to_owned(), string(value)));
                    }
                }
                let inline: Vec<String> = fields.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                toml.raw("tunnel", &format!("{{ {} }}", inline.join(", ")));
                toml.comment("TODO: a name on the server proxy's certificate.");
                toml.comment("server_name = \"rds-auth-proxy.example.com\"");
            }
        }

        for target in &self.targets {
            toml.blank();
            toml.table(&format!("targets.{}", key(&target.name)));
            toml.string("endpoint", &target.endpoint);
            if let Some(region) = &target.region {
                toml.string("region", region);
            }
            if let Some(database) = &target.database {
                toml.string("database", database);
            }
            if let Some(port) = target.local_port {
                toml.raw("local_port", &port.to_string());
            }
            if target.passthrough {
                toml.string("auth", "passthrough");
            }
            if let Some(upstream) = &target.upstream {
                toml.string("upstream", upstream);
            }
        }
        toml.text
    }
}

/// A small TOML writer: the output is a handful of tables of strings, so a writer that quotes
/// correctly is all it takes, and it keeps the comments where they belong.
#[derive(Debug, Default)]
struct Toml {
    text: String,
}

impl Toml {
    fn table(&mut self, path: &str) {
        self.text.push_str(&format!("[{path}]\n"));
    }

    /// Starts a section: one empty line after whatever came before.
    fn blank(&mut self) {
        if !self.text.is_empty() && !self.text.ends_with("\n\n") {
            self.text.push('\n');
        }
    }

    fn comment(&mut self, text: &str) {
        self.text.push_str(&format!("# {text}\n"));
    }

    fn string(&mut self, name: &str, value: &str) {
        self.raw(name, &string(value));
    }

    fn raw(&mut self, name: &str, value: &str) {
        self.text.push_str(&format!("{} = {value}\n", key(name)));
    }
}

/// A TOML basic string.
fn string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML key: bare when it can be, quoted otherwise.
fn key(name: &str) -> String {
    if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        name.to_owned()
    } else {
        string(name)
    }
}

fn list(values: &[String]) -> String {
    format!("[{}]", values.iter().map(|v| string(v)).collect::<Vec<_>>().join(", "))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::{AuthSetting, FlagOverrides, Settings, TunnelSettings, UpstreamKind};

    fn context() -> Context {
        Context { home: Some("/home/alice".to_owned()), region: None }
    }

    fn convert_ok(yaml: &str) -> Converted {
        match convert(yaml, "old.yaml", &context()) {
            Ok(converted) => converted,
            Err(e) => panic!("{:?}", miette::Report::new(e)),
        }
    }

    /// Loads the TOML with the loader `connect` uses, from a file as a person would.
    fn load(toml: &str) -> Settings {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!("rds-auth-proxy-import-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path: PathBuf =
            dir.join(format!("config-{}.toml", N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
        std::fs::write(&path, toml).unwrap();
        let loaded = rds_auth_cli::config::load::<Settings, _>(
            &path,
            true,
            "RDS_AUTH_PROXY_IMPORT_TEST_",
            &FlagOverrides::default(),
        );
        match loaded {
            Ok(loaded) => loaded.value,
            Err(e) => panic!("the converted TOML does not load: {:?}\n{toml}", miette::Report::new(e)),
        }
    }

    fn notes_about<'a>(converted: &'a Converted, key: &str) -> Vec<&'a str> {
        converted.notes.iter().filter(|n| n.key == key).map(|n| n.text.as_str()).collect()
    }

    /// The predecessor's quickstart: a port-forward in plaintext, and a tag rule.
    const QUICKSTART: &str = r#"
proxy:
  listen_addr: "0.0.0.0:8001"
  ssl:
    enabled: false
  target_acl:
    allowed_rds_tags:
      - name: rds_proxy_enabled
        value: "true"
    blocked_rds_tags: []

upstream_proxies:
  default:
    port_forward:
      # context: some-other-kube-context
      deployment: rds-auth-proxy
      namespace: rds-auth-proxy
      local_port: "8000"
      remote_port: "8000"
    ssl:
      mode: "disable"
"#;

    #[test]
    fn quickstart() {
        let converted = convert_ok(QUICKSTART);
        assert_eq!(
            converted.toml,
            r#"# rds-auth-proxy client configuration, converted from old.yaml by `rds-auth-proxy config import`.
# The notes printed with it say what changed; docs/configuration.md describes every key.

[aws]
# The regions discovery searches; without any, only static targets are offered.
# regions = ["us-east-1"]

[discovery]
allow_tags = ["rds_proxy_enabled=true"]

# From upstream_proxies.default.
[upstreams.default]
# TODO: the CA that signs the server proxy's certificate.
ca = "~/.config/rds-auth-proxy/ca.crt"
tunnel = { kind = "kubectl", resource = "deployment/rds-auth-proxy", remote_port = 8000, namespace = "rds-auth-proxy" }
# TODO: a name on the server proxy's certificate.
# server_name = "rds-auth-proxy.example.com"
"#
        );
        let settings = load(&converted.toml);
        assert_eq!(settings.proxy.listen_address, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(settings.discovery.allow_tags, ["rds_proxy_enabled=true"]);
        let upstream = &settings.upstreams["default"];
        assert_eq!(upstream.kind, UpstreamKind::ServerProxy);
        match &upstream.tunnel {
            Some(TunnelSettings::Kubectl { resource, remote_port, namespace, .. }) => {
                assert_eq!(resource, "deployment/rds-auth-proxy");
                assert_eq!(*remote_port, 8000);
                assert_eq!(namespace.as_deref(), Some("rds-auth-proxy"));
            }
            other => panic!("{other:?}"),
        }

        let listen = notes_about(&converted, "proxy.listen_addr");
        assert!(listen[0].contains("every interface"), "{listen:?}");
        assert!(listen[1].contains("local_port = 8001"), "{listen:?}");
        assert!(notes_about(&converted, "upstream_proxies.default.ssl.mode")[0].starts_with("disable"));
        assert!(!notes_about(&converted, "upstream_proxies.default.port_forward.local_port").is_empty());
        assert!(!notes_about(&converted, "upstream_proxies.default.ssl.root_certificate").is_empty());
        assert!(!notes_about(&converted, "upstream_proxies.default").is_empty(), "server_name is asked for");
    }

    /// The predecessor's full client reference: two upstreams, a documented-but-ignored
    /// `client_cert`, inherited client certificates, and a static target.
    const REFERENCE: &str = r#"
proxy:
  listen_addr: 0.0.0.0:8001
  ssl:
    enabled: false
    certificate: ~/.config/rds-auth-proxy/server-cert.pem
    private_key: ~/.config/rds-auth-proxy/server-key.pem
    client_certificate: ~/.config/rds-auth-proxy/client-cert.pem
    client_private_key: ~/.config/rds-auth-proxy/client-key.pem
  target_acl:
    allowed_rds_tags:
      - name: "rds_proxy_enabled"
        value: "true"
    blocked_rds_tags:
      - name: "rds_proxy_disabled"
        value: "true"
upstream_proxies:
  default:
    port_forward:
      kube_config: ~/.config/kube/kube_config
      context: development
      deployment: rds-auth-proxy
      namespace: rds-auth-proxy
      local_port: 8000
      remote_port: 8000
    ssl:
      mode: "disable"
  with_ssl:
    host: example.com:8000
    ssl:
      mode: "verify-full"
      root_certificate: ~/.config/rds-auth-proxy/root-ca.pem
      client_cert: ~/.config/rds-auth-proxy/my-client-cert.pem
      client_private_key: ~/.config/rds-auth-proxy/my-client-key.pem
targets:
  in-cluster-postgres:
    host: postgres:5432
"#;

    #[test]
    fn reference() {
        let converted = convert_ok(REFERENCE);
        let settings = load(&converted.toml);
        assert_eq!(settings.discovery.allow_tags, ["rds_proxy_enabled=true"]);
        assert_eq!(settings.discovery.block_tags, ["rds_proxy_disabled=true"]);
        assert_eq!(settings.discovery.default_upstream, "default");

        let default = &settings.upstreams["default"];
        assert_eq!(
            default.cert.as_deref(),
            Some(std::path::Path::new("~/.config/rds-auth-proxy/client-cert.pem"))
        );
        assert_eq!(
            default.key.as_deref(),
            Some(std::path::Path::new("~/.config/rds-auth-proxy/client-key.pem"))
        );
        match &default.tunnel {
            Some(TunnelSettings::Kubectl { context, kubeconfig, .. }) => {
                assert_eq!(context.as_deref(), Some("development"));
                assert_eq!(kubeconfig.as_deref(), Some("/home/alice/.config/kube/kube_config"));
            }
            other => panic!("{other:?}"),
        }

        let with_ssl = &settings.upstreams["with_ssl"];
        assert_eq!(with_ssl.address.as_deref(), Some("example.com:8000"));
        assert_eq!(with_ssl.ca, PathBuf::from("~/.config/rds-auth-proxy/root-ca.pem"));
        assert_eq!(
            with_ssl.cert.as_deref(),
            Some(std::path::Path::new("~/.config/rds-auth-proxy/my-client-cert.pem"))
        );
        assert!(with_ssl.tunnel.is_none());

        let target = &settings.targets["in-cluster-postgres"];
        assert_eq!(target.endpoint, "postgres:5432");
        assert_eq!(target.auth, AuthSetting::Passthrough);
        assert_eq!(target.upstream, "default");

        assert!(!notes_about(&converted, "proxy.ssl.certificate").is_empty(), "unused server cert");
        assert!(!notes_about(&converted, "upstream_proxies.with_ssl.ssl.client_cert").is_empty());
        assert!(notes_about(&converted, "upstream_proxies.with_ssl.ssl.mode").is_empty(), "verify-full maps");
        assert!(notes_about(&converted, "upstream_proxies")[0].contains("one upstream per run"));
        assert!(!notes_about(&converted, "(client certificates)").is_empty());
        assert!(notes_about(&converted, "targets.in-cluster-postgres")[0].contains("passthrough"));
    }

    /// A repository sample: an upstream by address with unverified TLS, a target with a
    /// database, RDS targets marked the undocumented way, and no upstream called default.
    #[test]
    fn address_upstream_and_targets() {
        let yaml = r#"
proxy:
  listen_addr: 127.0.0.1:8002
upstream_proxies:
  Shared:
    host: rds-proxy-server:8000
    ssl:
      mode: require
      root_certificate: /etc/ca.pem
targets:
  postgres:
    host: postgres:5432
    database: postgres
    local_port: 7001
    ssl:
      mode: disable
  orders:
    host: orders.c1x2y3z4.eu-west-1.rds.amazonaws.com:5432
    region: eu-west-1
    isrds: true
    name: ignored
"#;
        let converted = convert(yaml, "old.yaml", &Context { home: None, region: Some("eu-west-1".into()) })
            .unwrap_or_else(|e| panic!("{:?}", miette::Report::new(e)));
        let settings = load(&converted.toml);
        assert_eq!(settings.aws.regions, ["eu-west-1"]);
        assert_eq!(settings.discovery.default_upstream, "Shared");
        assert_eq!(settings.upstreams["Shared"].address.as_deref(), Some("rds-proxy-server:8000"));
        let postgres = &settings.targets["postgres"];
        assert_eq!(postgres.database.as_deref(), Some("postgres"));
        assert_eq!(postgres.local_port, Some(7001));
        assert_eq!(postgres.upstream, "Shared");
        assert_eq!(postgres.auth, AuthSetting::Passthrough);
        let orders = &settings.targets["orders"];
        assert_eq!(orders.auth, AuthSetting::Iam);
        assert_eq!(orders.region.as_deref(), Some("eu-west-1"));

        assert!(notes_about(&converted, "proxy.listen_addr")[0].contains("local_port = 8002"));
        assert!(notes_about(&converted, "upstream_proxies.Shared.ssl.mode")[0].contains("did not verify"));
        assert!(!notes_about(&converted, "targets.postgres.ssl").is_empty());
        assert!(!notes_about(&converted, "targets.orders.name").is_empty());
        assert!(notes_about(&converted, "upstream_proxies")[0].contains("\"Shared\""));
        assert!(notes_about(&converted, "(discovery)")[0].contains("AWS_REGION"));
    }

    #[test]
    fn unknown_keys_odd_tags_and_quoting() {
        let yaml = r#"
proxy:
  listen_addr: "10.1.2.3:0"
  ssl:
    enabled: "yes"
  target_acl:
    allowed_rds_tags:
      - name: team
        value: "data*"
      - name: "a=b"
        value: x
  colour: blue
upstream_proxies:
  "my proxy":
    host: "proxy.example.com:5432"
    ssl:
      mode: verify-ca
      root_certificate: "C:\\certs\\ca \"new\".pem"
      client_certificate: /c.pem
      client_private_key: /c.key
targets:
  "db.one":
    host: db1.internal:5432
extra: 1
"#;
        let converted = convert_ok(yaml);
        let settings = load(&converted.toml);
        assert_eq!(settings.proxy.listen_address, IpAddr::from([10, 1, 2, 3]));
        assert!(settings.proxy.local_tls.enabled);
        assert_eq!(settings.discovery.allow_tags, ["team=data\\*"]);
        assert_eq!(settings.upstreams["my proxy"].ca, PathBuf::from("C:\\certs\\ca \"new\".pem"));
        assert_eq!(settings.targets["db.one"].upstream, "my proxy");
        assert!(!notes_about(&converted, "proxy.colour").is_empty());
        assert!(!notes_about(&converted, "extra").is_empty());
        assert!(notes_about(&converted, "proxy.target_acl.allowed_rds_tags[0]")[0].contains("escaped"));
        assert!(notes_about(&converted, "proxy.target_acl.allowed_rds_tags[1]")[0].contains("dropped"));
        assert!(notes_about(&converted, "upstream_proxies.my proxy.ssl.mode")[0].contains("verify-ca"));
        assert!(notes_about(&converted, "proxy.listen_addr")[0].contains("kept"));
    }

    #[test]
    fn the_default_kubeconfig_is_left_to_kubectl() {
        let yaml = "upstream_proxies:\n  default:\n    port_forward:\n      kube_config: $HOME/.kube/config\n      deployment: p\n      remote_port: 5432\n    ssl:\n      mode: verify-full\n      root_certificate: /ca.pem\n";
        let converted = convert_ok(yaml);
        assert!(!converted.toml.contains("kubeconfig"), "{}", converted.toml);
        load(&converted.toml);
    }

    fn error(yaml: &str) -> (String, String, Option<usize>) {
        let error = match convert(yaml, "old.yaml", &context()) {
            Ok(converted) => panic!("converted:\n{}", converted.toml),
            Err(error) => error,
        };
        let problem = &error.0;
        let pointed = problem.span.map(|span| yaml[span.offset()..span.offset() + span.len()].to_owned());
        (problem.message.clone(), pointed.unwrap_or_default(), problem.span.map(|s| s.offset()))
    }

    #[test]
    fn errors_point_at_the_yaml() {
        let (message, _, at) = error("proxy:\n  listen_addr: [\n");
        assert!(message.starts_with("old.yaml is not valid YAML"), "{message}");
        assert!(at.is_some());

        let (message, pointed, _) = error("upstream_proxies:\n  default:\n    host: proxy.example.com\n");
        assert_eq!(message, "`upstream_proxies.default.host` must be host:port");
        assert_eq!(pointed, "proxy.example.com");

        let (message, pointed, _) = error(
            "upstream_proxies:\n  default:\n    port_forward:\n      deployment: p\n      remote_port: eighty\n",
        );
        assert_eq!(message, "`upstream_proxies.default.port_forward.remote_port` is not a port number");
        assert_eq!(pointed, "eighty");

        let (message, pointed, _) =
            error("upstream_proxies:\n  default:\n    host: p:1\n    ssl:\n      mode: prefer\n");
        assert!(message.contains("\"prefer\", which the predecessor did not know"), "{message}");
        assert_eq!(pointed, "prefer");

        let (message, pointed, _) = error("upstream_proxies:\n  default:\n    ssl: {}\n");
        assert_eq!(message, "`upstream_proxies.default` has neither host nor port_forward");
        assert_eq!(pointed, "default");

        let (message, pointed, _) =
            error("upstream_proxies:\n  default:\n    host: p:1\ntargets:\n  - host: db:5432\n");
        assert_eq!(message, "`targets` must map names to databases");
        assert!(pointed.starts_with("- host"), "{pointed:?}");

        let (message, pointed, _) = error(
            "proxy:\n  ssl:\n    client_certificate: /c.pem\nupstream_proxies:\n  default:\n    host: p:1\n",
        );
        assert!(message.contains("without `proxy.ssl.client_private_key`"), "{message}");
        assert_eq!(pointed, "client_certificate");

        let (message, _, _) =
            error("proxy:\n  listen_addr: 0.0.0.0:8000\ntargets:\n  db:\n    host: db:5432\n");
        assert!(message.contains("no upstream_proxies"), "{message}");
    }

    #[test]
    fn spans_count_bytes_not_characters() {
        let (_, pointed, _) = error("# é ü ß\nupstream_proxies:\n  défaut:\n    host: hôte\n");
        assert_eq!(pointed, "hôte");
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(string("a\"b\\c\n\u{1}"), r#""a\"b\\c\n\u0001""#);
        assert_eq!(key("plain_key-1"), "plain_key-1");
        assert_eq!(key("has space"), "\"has space\"");
        assert_eq!(key(""), "\"\"");
    }
}
