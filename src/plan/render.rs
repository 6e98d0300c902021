//! Plans for people (Terraform/Nomad style, with a diff of each changed spec) and
//! for machines (versioned JSON).

use std::collections::HashMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use similar::{ChangeTag, TextDiff};

use super::{Action, ChangeKind, ConfigDiff, Plan, Step};
use crate::manifest::ServiceSpec;
use crate::style::Palette;

/// Bumped when the JSON format (of `plan --json` and of saved plans) changes
/// incompatibly.
pub const PLAN_FORMAT_VERSION: u32 = 1;

/// A plan saved by `wharf plan -o FILE`, applied by `wharf apply FILE`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SavedPlan {
    pub format_version: u32,
    pub dir: PathBuf,
    pub prune: bool,
    pub allow_empty: bool,
    /// Of what the plan was made from: applied only if it is unchanged.
    pub fingerprint: String,
    pub steps: Vec<Step>,
}

/// Larger than any plan wharf writes (a plan file is input like any other).
const MAX_SAVED_PLAN: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SavedPlanError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: crate::bounded_read::ReadError,
    },
    #[error("{} is not a plan saved by `wharf plan -o`: {source}", path.display())]
    NotAPlan {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{} has plan format {found}; this wharf reads format {PLAN_FORMAT_VERSION}", path.display())]
    Format { path: PathBuf, found: u32 },
}

impl SavedPlan {
    /// Reads a plan file written by `wharf plan -o`.
    pub fn read(path: &std::path::Path) -> Result<SavedPlan, SavedPlanError> {
        let bytes = crate::bounded_read::read_regular(path, MAX_SAVED_PLAN).map_err(|source| {
            SavedPlanError::Read {
                path: path.to_owned(),
                source,
            }
        })?;
        let saved: SavedPlan =
            serde_json::from_slice(&bytes).map_err(|source| SavedPlanError::NotAPlan {
                path: path.to_owned(),
                source,
            })?;
        if saved.format_version != PLAN_FORMAT_VERSION {
            return Err(SavedPlanError::Format {
                path: path.to_owned(),
                found: saved.format_version,
            });
        }
        Ok(saved)
    }
}

pub fn render_human(plan: &Plan, palette: &Palette) -> String {
    let mut out = String::new();
    let steps: HashMap<&str, Vec<&Step>> = plan.steps_by_service().into_iter().collect();
    for change in &plan.changes {
        let (mark, paint): (&str, fn(&Palette, &str) -> String) = match change.kind {
            ChangeKind::Create => ("+", Palette::green),
            ChangeKind::Remove => ("-", Palette::red),
            ChangeKind::Update => ("~", Palette::yellow),
            ChangeKind::Replace => ("-/+", Palette::yellow),
        };
        let mut header = format!("{} {}", paint(palette, mark), palette.bold(&change.service));
        let (from, to) = change.replicas;
        if change.kind == ChangeKind::Update && from != to {
            header.push_str(&format!(": replicas {from} -> {to}"));
        }
        let mut notes = Vec::new();
        if !change.forced_by.is_empty() {
            notes.push(format!("forced by {}", change.forced_by.join(", ")));
        }
        if !change.waits_for.is_empty() && change.kind != ChangeKind::Remove {
            notes.push(format!("after {}", change.waits_for.join(", ")));
        }
        if !notes.is_empty() {
            header.push_str(&format!(" ({})", notes.join("; ")));
        }
        out.push_str(&header);
        out.push('\n');
        if change.kind == ChangeKind::Replace {
            if let (Some(before), Some(after)) = (&change.before, &change.after) {
                out.push_str(&spec_diff(before, after, palette));
            }
            for config in &change.config_diffs {
                out.push_str(&config_diff(config, palette));
            }
        }
        for step in steps.get(change.service.as_str()).into_iter().flatten() {
            out.push_str(&format!("    {}\n", render_step(step, palette)));
        }
    }
    for (job, schedule) in &plan.scheduled {
        out.push_str(&format!(
            "note: {job} runs on its schedule ({schedule}, the host's local time); only `wharf agent` runs schedules\n"
        ));
    }
    for service in &plan.not_pruned {
        out.push_str(&format!(
            "note: {service} is no longer in the manifests; `wharf apply --prune` removes it\n"
        ));
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(&summary(plan));
    out.push('\n');
    out
}

fn render_step(step: &Step, palette: &Palette) -> String {
    let (mark, word) = match step.action {
        Action::Create => (palette.green("+"), "create"),
        Action::Remove => (palette.red("-"), "remove"),
        Action::Replace => (palette.yellow("-/+"), "replace"),
        Action::Restart => (palette.yellow("~"), "restart"),
        Action::Join => (palette.green("~"), "join rotation"),
        Action::Run if step.before.is_some() => (palette.yellow("-/+"), "run again"),
        Action::Run => (palette.green("+"), "run"),
    };
    if step.action == Action::Run {
        return format!("{mark} {}  {word}: {}", step.service, step.reason);
    }
    format!(
        "{mark} {}/{}  {word}: {}",
        step.service, step.slot, step.reason
    )
}

/// `Plan: 2 to create, 1 to replace, 3 to remove.` or the no-change line.
pub fn summary(plan: &Plan) -> String {
    if plan.is_empty() {
        return "No changes. Containers match the manifests.".into();
    }
    let parts: Vec<String> = [
        (Action::Create, "to create"),
        (Action::Replace, "to replace"),
        (Action::Restart, "to restart"),
        (Action::Join, "to join rotation"),
        (Action::Run, "to run"),
        (Action::Remove, "to remove"),
    ]
    .iter()
    .filter_map(|(action, words)| {
        let n = plan.count(*action);
        (n > 0).then(|| format!("{n} {words}"))
    })
    .collect();
    format!("Plan: {}.", parts.join(", "))
}

/// A unified diff of two specs as YAML, indented under the service header.
fn spec_diff(before: &ServiceSpec, after: &ServiceSpec, palette: &Palette) -> String {
    let yaml = |spec: &ServiceSpec| serde_yaml::to_string(spec).unwrap_or_default();
    text_diff(&yaml(before), &yaml(after), palette)
}

/// `config app.conf:` and a diff of its content; sizes only for binary content or
/// when the earlier content is no longer stored.
fn config_diff(config: &ConfigDiff, palette: &Palette) -> String {
    let mut out = format!("      config {}:\n", config.source);
    let text = |bytes: &[u8]| std::str::from_utf8(bytes).ok().map(str::to_owned);
    match (
        config.before.as_deref().map(|b| text(b)),
        text(&config.after),
    ) {
        (Some(Some(old)), Some(new)) => out.push_str(&text_diff(&old, &new, palette)),
        (before, _) => {
            let before = match (before, config.before.as_deref()) {
                (Some(_), Some(bytes)) => format!("{} bytes", bytes.len()),
                _ => "content no longer stored".to_owned(),
            };
            out.push_str(&format!(
                "        {before} -> {} bytes (not shown: not text, or unknown before)\n",
                config.after.len()
            ));
        }
    }
    out
}

/// `line` with control characters (but tabs) escaped: a config file must not clear
/// the operator's screen or hide lines of the diff.
fn printable(line: &str) -> std::borrow::Cow<'_, str> {
    if !line.contains(|c: char| c.is_control() && c != '\t') {
        return line.into();
    }
    line.chars()
        .map(|c| match c {
            '\t' => c.to_string(),
            c if c.is_control() => c.escape_unicode().to_string(),
            c => c.to_string(),
        })
        .collect::<String>()
        .into()
}

/// A unified diff of two texts (2 lines of context), indented under the header.
fn text_diff(old: &str, new: &str, palette: &Palette) -> String {
    let diff = TextDiff::from_lines(old, new);
    let mut out = String::new();
    for group in diff.grouped_ops(2) {
        for op in group {
            for change in diff.iter_changes(&op) {
                let line = printable(change.value().trim_end_matches('\n'));
                out.push_str(&match change.tag() {
                    ChangeTag::Delete => format!("      {}\n", palette.red(&format!("- {line}"))),
                    ChangeTag::Insert => format!("      {}\n", palette.green(&format!("+ {line}"))),
                    ChangeTag::Equal => format!("        {line}\n"),
                });
            }
        }
    }
    out
}

#[derive(Serialize)]
struct JsonPlan<'a> {
    format_version: u32,
    changed: bool,
    summary: JsonSummary,
    steps: &'a [Step],
    not_pruned: &'a [String],
}

#[derive(Serialize)]
struct JsonSummary {
    create: usize,
    replace: usize,
    restart: usize,
    join: usize,
    run: usize,
    remove: usize,
}

pub fn render_json(plan: &Plan) -> String {
    let json = JsonPlan {
        format_version: PLAN_FORMAT_VERSION,
        changed: !plan.is_empty(),
        summary: JsonSummary {
            create: plan.count(Action::Create),
            replace: plan.count(Action::Replace),
            restart: plan.count(Action::Restart),
            join: plan.count(Action::Join),
            run: plan.count(Action::Run),
            remove: plan.count(Action::Remove),
        },
        steps: &plan.steps,
        not_pruned: &plan.not_pruned,
    };
    serde_json::to_string_pretty(&json).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_of_a_config_are_shown_escaped_not_sent_to_the_terminal() {
        let config = ConfigDiff {
            source: "app.conf".into(),
            before: Some(std::sync::Arc::new(b"a\n".to_vec())),
            after: std::sync::Arc::new(b"a\n\x1b[2Jhidden\tTAB\n".to_vec()),
        };
        let shown = config_diff(&config, &Palette::new(false));
        assert!(!shown.contains('\x1b'), "{shown:?}");
        assert!(shown.contains("+ \\u{1b}[2Jhidden\tTAB"), "{shown:?}");
    }
}
