//! The interactive picker `connect` opens on a terminal when no target is named: fuzzy,
//! filtered as you type, several choices at once.

use std::fmt;

use inquire::MultiSelect;

use crate::catalog::Entry;

/// One line of the picker.
struct Choice<'a>(&'a Entry);

impl fmt::Display for Choice<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entry = self.0;
        let engine = if entry.engine.is_empty() {
            "static".to_owned()
        } else {
            format!("{} {}", entry.engine, entry.engine_version)
        };
        write!(f, "{:<28} {:<24} {:<14} {}", entry.name, engine, entry.region, entry.endpoint)?;
        match entry.local_port {
            Some(port) => write!(f, "  local port {port}"),
            None => Ok(()),
        }
    }
}

/// Asks which targets to connect to. `entries` are sorted by name already.
pub(crate) fn pick(entries: &[&Entry]) -> Result<Vec<Entry>, String> {
    let choices: Vec<Choice<'_>> = entries.iter().map(|e| Choice(e)).collect();
    let picked =
        MultiSelect::new("Targets to connect to (type to filter, space to select, enter to go):", choices)
            .with_page_size(15)
            .prompt()
            .map_err(|e| format!("no target picked: {e}"))?;
    if picked.is_empty() {
        return Err("no target picked".to_owned());
    }
    Ok(picked.into_iter().map(|c| c.0.clone()).collect())
}
