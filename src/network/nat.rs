//! wharf's nftables table, `inet wharf`: only it, never another table (Docker's,
//! firewalld's). Rules go in as one `nft -f -` transaction, as kube-proxy's nftables
//! mode does: atomic, and readable with `nft list table inet wharf`.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::{BRIDGE, GATEWAY, PREFIX_LEN};
use crate::process::spawn_beside_containers;
use crate::reaper::Reaper;

/// How long one nft transaction may take.
const NFT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether this process has installed the egress rule already (once per process: each
/// `nft` run costs some 20 ms).
static EGRESS_INSTALLED: Mutex<bool> = Mutex::new(false);

/// Containers' traffic leaving the host through another interface is masqueraded
/// behind the host's address (egress NAT, as Docker and podman do).
pub(super) fn ensure_egress() -> Result<(), String> {
    let mut installed = EGRESS_INSTALLED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if *installed {
        return Ok(());
    }
    let subnet = format!("{GATEWAY}/{PREFIX_LEN}");
    // Declaring the table and chain creates them if missing; the chain is then
    // rewritten whole, so that running this again changes nothing.
    let ruleset = format!(
        "table inet wharf {{\n\
         \tchain egress {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
         }}\n\
         flush chain inet wharf egress\n\
         add rule inet wharf egress ip saddr {subnet} oifname != \"{BRIDGE}\" masquerade\n"
    );
    run_nft(&ruleset)?;
    *installed = true;
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
    let mut complaint = String::new();
    if let Some(stderr) = nft.stderr.take() {
        // Bounded: nft says a few lines at most.
        let _ = stderr.take(64 * 1024).read_to_string(&mut complaint);
    }
    match Reaper::global().wait_for(nft.id() as i32, since, NFT_TIMEOUT) {
        Some(exit) if exit.code == 0 => Ok(()),
        Some(exit) => Err(format!(
            "nft exited with {}: {}",
            exit.code,
            complaint.trim()
        )),
        None => Err(format!(
            "nft did not finish within {}s",
            NFT_TIMEOUT.as_secs()
        )),
    }
}
