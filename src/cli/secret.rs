use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde::Serialize;

use super::{exit, output::human_bytes, Session};
use crate::files::{SecretStore, SetOutcome, MAX_SECRET_BYTES};
use crate::manifest::check_secret_name;
use crate::reconcile::{drop_unused_files, ReconcileLock};
use crate::state::StateView;

/// Manage secrets: values kept root-only under --root, mounted into containers from
/// memory (`secrets:` in a manifest) or given as env values (`{secret: NAME}`).
/// Values are never printed.
#[derive(Debug, Parser)]
#[command(
    after_help = "Examples:\n  printf %s 'hunter2' | wharf secret set dbpass\n  wharf secret set tls-key server.key\n  wharf secret ls\n  wharf secret rm dbpass\n\nA new value replaces the containers of the services that use it at the next apply (at once under the agent)."
)]
pub struct Args {
    #[command(subcommand)]
    pub command: SecretCommand,
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Set a secret's value from FILE, or from standard input when FILE is absent or
    /// `-` (at most 1 MiB). Setting the current value again changes nothing.
    Set {
        /// Letters, digits, '_', '.' and '-', starting with a letter or digit.
        name: String,
        file: Option<PathBuf>,
    },
    /// List the secrets: name, size, when set and which services use them.
    Ls {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a secret; refused while a service uses it, unless --force.
    Rm {
        name: String,
        /// Remove it even though services use it (their running containers keep
        /// their copy; creating new ones fails until it is set again).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Serialize)]
struct Row<'a> {
    name: &'a str,
    size: u64,
    set_at: String,
    used_by: Vec<&'a str>,
}

/// A secret's store changes under the reconcile lock: an apply that drops unused
/// values never sees a value whose record is not written yet.
const LOCK_WAIT: Duration = Duration::from_secs(60);

pub fn run(session: &Session, args: &Args) -> u8 {
    let store = match SecretStore::open(&session.root) {
        Ok(store) => store,
        Err(err) => return session.fail(&err),
    };
    match &args.command {
        SecretCommand::Set { name, file } => {
            if let Err(message) = check_secret_name(name) {
                return session.fail_with(message);
            }
            let value = match read_value(file.as_ref()) {
                Ok(value) => value,
                Err(message) => return session.fail_with(message),
            };
            let _lock = match ReconcileLock::acquire(&session.root, Some(LOCK_WAIT)) {
                Ok(lock) => lock,
                Err(err) => return session.fail(&err),
            };
            let outcome = match store.set(name, &value) {
                Ok(outcome) => outcome,
                Err(err) => return session.fail(&err),
            };
            let Some(users) = users_of_secrets(session) else {
                return exit::FAILURE;
            };
            match outcome {
                SetOutcome::Unchanged => println!("secret {name} unchanged"),
                SetOutcome::Changed => {
                    let services = users.get(name.as_str()).map(|s| {
                        let names: Vec<&str> = s.iter().map(String::as_str).collect();
                        names.join(", ")
                    });
                    let note = services.map_or(String::new(), |services| {
                        format!("; used by {services}: replaced at the next apply (now, under the agent)")
                    });
                    println!(
                        "secret {name} set ({}){note}",
                        human_bytes(value.len() as u64)
                    );
                }
            }
            drop_earlier_values(session);
            exit::OK
        }
        SecretCommand::Ls { json } => {
            let secrets = match store.list() {
                Ok(secrets) => secrets,
                Err(err) => return session.fail(&err),
            };
            let Some(users) = users_of_secrets(session) else {
                return exit::FAILURE;
            };
            let rows: Vec<Row> = secrets
                .iter()
                .map(|secret| Row {
                    name: &secret.name,
                    size: secret.size,
                    set_at: humantime::format_rfc3339_seconds(secret.set_at).to_string(),
                    used_by: users
                        .get(secret.name.as_str())
                        .into_iter()
                        .flatten()
                        .map(String::as_str)
                        .collect(),
                })
                .collect();
            if *json {
                return session.print_json(&rows);
            }
            let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(4);
            println!("{:width$}  {:>9}  {:20}  USED BY", "NAME", "SIZE", "SET");
            for row in &rows {
                let used = if row.used_by.is_empty() {
                    "-".to_owned()
                } else {
                    row.used_by.join(", ")
                };
                println!(
                    "{:width$}  {:>9}  {:20}  {used}",
                    row.name,
                    human_bytes(row.size),
                    row.set_at
                );
            }
            exit::OK
        }
        SecretCommand::Rm { name, force } => {
            let _lock = match ReconcileLock::acquire(&session.root, Some(LOCK_WAIT)) {
                Ok(lock) => lock,
                Err(err) => return session.fail(&err),
            };
            let Some(users) = users_of_secrets(session) else {
                return exit::FAILURE;
            };
            if let Some(services) = users.get(name.as_str()).filter(|_| !force) {
                let services: Vec<&str> = services.iter().map(String::as_str).collect();
                return session.fail_with(format!(
                    "secret {name} is used by {}; remove it from their manifests and apply first, or pass --force",
                    services.join(", ")
                ));
            }
            if let Err(err) = store.remove(name) {
                return session.fail(&err);
            }
            println!("secret {name} removed");
            drop_earlier_values(session);
            exit::OK
        }
    }
}

/// The services that use each secret: those whose containers do, and those last
/// applied with it (a service with no container now still needs it). None: why not
/// was printed.
fn users_of_secrets(session: &Session) -> Option<BTreeMap<String, BTreeSet<String>>> {
    let containers = session.containers().ok()?;
    let applied = match StateView::open(&session.root) {
        Ok(view) => view.map(|view| view.applied()).unwrap_or_default(),
        Err(err) => {
            session.fail(&err);
            return None;
        }
    };
    let mut users: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let specs = containers
        .iter()
        .filter_map(|c| c.spec.as_deref())
        .chain(applied.iter().map(|a| &a.spec));
    for spec in specs {
        for name in spec.secret_names() {
            users
                .entry(name.to_owned())
                .or_default()
                .insert(spec.name.clone());
        }
    }
    Some(users)
}

/// Removes the values no container uses any more (an earlier value of a secret just
/// set, the values of one removed). A failure only leaves them for the next apply.
fn drop_earlier_values(session: &Session) {
    if let Ok(containers) = session.containers() {
        let in_use: Vec<_> = containers.iter().map(|c| &c.files).collect();
        drop_unused_files(&session.root, &in_use);
    }
}

/// The value from `file`, or standard input for none or `-`; at most the limit.
fn read_value(file: Option<&PathBuf>) -> Result<Vec<u8>, String> {
    let limit = MAX_SECRET_BYTES;
    let mut value = Vec::new();
    let read = match file.filter(|f| f.as_os_str() != "-") {
        Some(path) => std::fs::File::open(path)
            .and_then(|f| f.take(limit + 1).read_to_end(&mut value))
            .map_err(|err| format!("cannot read {}: {err}", path.display())),
        None => {
            if std::io::stdin().is_terminal() {
                eprintln!("reading the value from standard input; end it with Ctrl-D");
            }
            std::io::stdin()
                .lock()
                .take(limit + 1)
                .read_to_end(&mut value)
                .map_err(|err| format!("cannot read standard input: {err}"))
        }
    };
    read?;
    if value.len() as u64 > limit {
        return Err(format!(
            "the value is more than the {} KiB a secret may have",
            limit >> 10
        ));
    }
    Ok(value)
}
