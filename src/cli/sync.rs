use std::path::Path;

use clap::Parser;

use super::reconcile::Source;
use super::{apply, exit, Session};
use crate::sync::{sync, GitSource};

/// Where manifests come from in Git: shared by `wharf sync` and `wharf agent --git`.
#[derive(Debug, Clone, clap::Args)]
pub struct GitArgs {
    /// Repository URL (anything `git fetch` takes; credentials from git's configuration).
    #[arg(long = "git", value_name = "URL")]
    pub url: Option<String>,
    /// Branch, tag or commit to follow.
    #[arg(long = "ref", default_value = "main", requires = "url")]
    pub reference: String,
    /// Directory of the repository that holds the manifests.
    #[arg(long, default_value = ".", requires = "url")]
    pub path: String,
}

impl GitArgs {
    pub fn source(&self) -> Option<GitSource> {
        self.url.as_ref().map(|url| GitSource {
            url: url.clone(),
            reference: self.reference.clone(),
            path: self.path.clone(),
        })
    }
}

/// Fetch manifests from a Git ref and apply them: the GitOps job. A fetch failure or a
/// commit with invalid manifests changes nothing (the last good commit stays) and
/// exits 1.
#[derive(Debug, Parser)]
#[command(
    after_help = "Examples:\n  wharf sync --git https://git.example.com/ops/services.git --ref main --path hosts/web1 --prune --yes\n  wharf sync --git git@git.example.com:ops/services.git --ref v42 --prune --yes --detailed-exitcode --json\n\nExit status: 0 nothing to change, 2 changes applied (with --detailed-exitcode; else 0), 1 error."
)]
pub struct Args {
    #[command(flatten)]
    pub git: GitArgs,
    /// Remove services whose manifests left the directory.
    #[arg(long)]
    pub prune: bool,
    /// Allow --prune to remove everything when the commit holds no services.
    #[arg(long)]
    pub allow_empty: bool,
    /// Do not ask for confirmation (needed without a terminal).
    #[arg(long, short)]
    pub yes: bool,
    /// Exit 0 when nothing changed, 2 when changes were applied, 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Print apply's result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Internal (the agent): only update the manifest directory; print the outcome as JSON.
    #[arg(long, hide = true)]
    pub checkout_only: bool,
}

pub fn run(session: &Session, args: &Args) -> u8 {
    let Some(source) = args.git.source() else {
        return session.fail_with("give the repository with --git URL");
    };
    let synced = sync(&session.root, &source);
    if args.checkout_only {
        // The error as one line of text: the agent reads it as the helper's JSON answer.
        let answer = synced.as_ref().map_err(|err| crate::error_chain(err));
        println!("{}", serde_json::to_string(&answer).unwrap_or_default());
        return if synced.is_ok() {
            exit::OK
        } else {
            exit::FAILURE
        };
    }
    let synced = match synced {
        Ok(synced) => synced,
        Err(err) => return session.fail(&err),
    };
    eprintln!(
        "{} is at commit {} ({} files changed)",
        source.describe(),
        &synced.commit[..synced.commit.len().min(12)],
        synced.files_changed
    );
    apply_dir(session, args, &source.manifest_dir(&session.root))
}

fn apply_dir(session: &Session, args: &Args, dir: &Path) -> u8 {
    apply::run(
        session,
        &apply::Args {
            source: Source {
                dir: dir.to_owned(),
                prune: args.prune,
                allow_empty: args.allow_empty,
                detailed_exitcode: args.detailed_exitcode,
                json: args.json,
            },
            yes: args.yes,
            lock_timeout: None,
            wait: false,
            timeout: None,
        },
    )
}
