//! wharf's nftables table, `inet wharf`: only it, never another table (Docker's,
//! firewalld's). Rules go in as one `nft -f -` transaction, as kube-proxy's nftables
//! mode does: atomic, and readable with `nft list table inet wharf`.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use super::{BRIDGE, GATEWAY, PREFIX_LEN};
use crate::process::spawn_beside_containers;
use crate::reaper::Reaper;

/// How long one nft transaction may take.
const NFT_TIMEOUT: Duration = Duration::from_secs(10);

/// When this process last installed the rules: each `nft` run costs some 20 ms, so
/// they are put in place again only now and then (another program may have flushed
/// the ruleset meanwhile).
static INSTALLED_AT: Mutex<Option<Instant>> = Mutex::new(None);
const REINSTALL_AFTER: Duration = Duration::from_secs(60);

/// Egress NAT: containers' traffic leaving the host through another interface is
/// masqueraded behind the host's address, as Docker and podman do. Forwarding: the
/// host forwards for its containers' connections only (replies, and what they start);
/// nothing from elsewhere is routed into the bridge. (Another table's forward drop,
/// Docker's or firewalld's, still applies: an accept here cannot override it.)
pub(super) fn ensure_rules() -> Result<(), String> {
    let mut installed = INSTALLED_AT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if installed.is_some_and(|at| at.elapsed() < REINSTALL_AFTER) {
        return Ok(());
    }
    let subnet = format!("{GATEWAY}/{PREFIX_LEN}");
    // Declaring the table and chains creates them if missing; the chains are then
    // rewritten whole, so that running this again changes nothing.
    let ruleset = format!(
        "table inet wharf {{\n\
         \tchain egress {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
         \tchain forward {{ type filter hook forward priority filter; policy accept; }}\n\
         }}\n\
         flush chain inet wharf egress\n\
         add rule inet wharf egress ip saddr {subnet} oifname != \"{BRIDGE}\" masquerade\n\
         flush chain inet wharf forward\n\
         add rule inet wharf forward ct state established,related accept\n\
         add rule inet wharf forward iifname \"{BRIDGE}\" accept\n\
         add rule inet wharf forward oifname \"{BRIDGE}\" drop\n"
    );
    run_nft(&ruleset)?;
    *installed = Some(Instant::now());
    Ok(())
}

/// Runs `nft -f -` with `ruleset` as one transaction. In a process that runs
/// containers, its exit status comes from the reaper (see `crate::process`).
fn run_nft(ruleset: &str) -> Result<(), String> {
    let since = SystemTime::now();
    let mut nft = spawn_beside_containers(
        Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )
    .map_err(|err| format!("cannot run nft: {err}"))?;
    if let Some(mut stdin) = nft.stdin.take() {
        stdin
            .write_all(ruleset.as_bytes())
            .map_err(|err| format!("cannot give nft the rules: {err}"))?;
    }
    // Waited for first, so that a hung nft is bounded in time; what it said then
    // waits in the pipe (a few lines, far less than a pipe holds).
    match Reaper::global().wait_for(nft.id() as i32, since, NFT_TIMEOUT) {
        Some(exit) if exit.code == 0 => Ok(()),
        Some(exit) => {
            let mut complaint = String::new();
            if let Some(stderr) = nft.stderr.take() {
                let _ = stderr.take(64 * 1024).read_to_string(&mut complaint);
            }
            Err(format!(
                "nft exited with {}: {}",
                exit.code,
                complaint.trim()
            ))
        }
        None => {
            let _ = nft.kill();
            Err(format!(
                "nft did not finish within {}s",
                NFT_TIMEOUT.as_secs()
            ))
        }
    }
}
