//! Addresses on wharf's bridge, reserved host-wide: the bridge and its subnet belong
//! to the host, not to one wharf root, so two roots must never get the same address.
//! A reservation is a file `/run/wharf/addresses/<address>` naming the container
//! directory that holds it, made under a lock; one whose directory is gone (a
//! container removed by a wharf that was killed, or a root deleted by hand) is free
//! again. /run is emptied at boot, when no container has a network any more.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{next_free, NetworkError, Subnet};
use crate::lockfile::FileLock;

const RESERVATIONS: &str = "/run/wharf/addresses";

/// Reserves the lowest free address for the container directory `owner`.
pub fn reserve(owner: &Path) -> Result<Ipv4Addr, NetworkError> {
    reserve_in(Path::new(RESERVATIONS), &Subnet::current(), owner)
}

/// Frees `address` if `owner` holds it (a missing reservation is fine).
pub fn release(address: Ipv4Addr, owner: &Path) {
    release_in(Path::new(RESERVATIONS), address, owner);
}

fn reserve_in(dir: &Path, subnet: &Subnet, owner: &Path) -> Result<Ipv4Addr, NetworkError> {
    let failed = |path: PathBuf| move |source| NetworkError::Reservation { path, source };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(failed(dir.to_owned()))?;
    let lock = dir.with_extension("lock");
    let _one_at_a_time = FileLock::acquire(&lock).map_err(failed(lock))?;
    let mut held = BTreeSet::new();
    for entry in fs::read_dir(dir).map_err(failed(dir.to_owned()))?.flatten() {
        let Some(address) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        // Unreadable counts as held: an address is never given twice on a guess.
        let holder = fs::read_to_string(entry.path()).map(PathBuf::from);
        match holder {
            Ok(holder) if !holder.exists() => {
                let _ = fs::remove_file(entry.path());
            }
            _ => {
                held.insert(address);
            }
        }
    }
    let address =
        next_free(subnet, &held).ok_or_else(|| NetworkError::Exhausted(subnet.containers()))?;
    let path = dir.join(address.to_string());
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut file| io::Write::write_all(&mut file, owner.as_os_str().as_encoded_bytes()));
    written.map_err(failed(path))?;
    Ok(address)
}

fn release_in(dir: &Path, address: Ipv4Addr, owner: &Path) {
    let path = dir.join(address.to_string());
    let lock = dir.with_extension("lock");
    let Ok(_one_at_a_time) = FileLock::acquire(&lock) else {
        return;
    };
    if fs::read_to_string(&path).is_ok_and(|holder| Path::new(&holder) == owner) {
        let _ = fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_owners_never_share_an_address_and_a_release_frees_it() {
        let run = tempfile::tempdir().expect("temp dir");
        let dir = run.path().join("addresses");
        let owners = tempfile::tempdir().expect("owners");
        let (a, b) = (owners.path().join("a"), owners.path().join("b"));
        fs::create_dir(&a).expect("a");
        fs::create_dir(&b).expect("b");
        let first = reserve_in(&dir, &Subnet::DEFAULT, &a).expect("reserve");
        let second = reserve_in(&dir, &Subnet::DEFAULT, &b).expect("reserve");
        assert_ne!(first, second);
        // Only its holder frees an address.
        release_in(&dir, first, &b);
        assert_ne!(
            reserve_in(&dir, &Subnet::DEFAULT, &b).expect("reserve"),
            first
        );
        release_in(&dir, first, &a);
        assert_eq!(
            reserve_in(&dir, &Subnet::DEFAULT, &a).expect("reserve"),
            first
        );
    }

    #[test]
    fn an_address_whose_container_directory_is_gone_is_free_again() {
        let run = tempfile::tempdir().expect("temp dir");
        let dir = run.path().join("addresses");
        let owners = tempfile::tempdir().expect("owners");
        let gone = owners.path().join("gone");
        fs::create_dir(&gone).expect("gone");
        let address = reserve_in(&dir, &Subnet::DEFAULT, &gone).expect("reserve");
        fs::remove_dir(&gone).expect("a killed wharf's container, removed");
        let next = owners.path().join("next");
        fs::create_dir(&next).expect("next");
        assert_eq!(
            reserve_in(&dir, &Subnet::DEFAULT, &next).expect("reserve"),
            address
        );
    }
}
