//! Secrets by name: `<root>/secrets/<name>.json` says which version is current
//! (with its size and when it was set), `<root>/secrets/values/<version>` holds a
//! value. Versions are random ids, so the spec hash, the container records and the
//! state database that carry them say nothing about a value. Earlier versions stay
//! while a container uses them (a rollback puts them back), then go.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{private_dir, write_private, FilesError};
use crate::manifest::{check_secret_name, Diagnostic, Service};
use crate::random_hex;

/// A secret's limit, as for a Kubernetes Secret.
pub const MAX_SECRET_BYTES: u64 = 1 << 20;
/// More secrets than one host's services name.
pub const MAX_SECRETS: usize = 10_000;
/// A record is a few dozen bytes.
const MAX_RECORD_BYTES: u64 = 4 << 10;

pub struct SecretStore {
    dir: PathBuf,
}

/// What is known of a secret without its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretInfo {
    pub name: String,
    pub version: String,
    pub size: u64,
    #[serde(with = "unix_seconds")]
    pub set_at: SystemTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOutcome {
    /// A new value: services using it are replaced at the next apply.
    Changed,
    /// The value it already had: nothing changes.
    Unchanged,
}

impl SecretStore {
    pub fn open(root: &Path) -> Result<Self, FilesError> {
        let dir = root.join("secrets");
        private_dir(&dir.join("values"))?;
        Ok(SecretStore { dir })
    }

    /// The store of `root` if this process can read the root (`wharf validate`
    /// creates nothing and runs as any user); a root without secrets has an empty one.
    pub fn existing(root: &Path) -> Option<Self> {
        let dir = root.join("secrets");
        match fs::read_dir(&dir) {
            Ok(_) => Some(SecretStore { dir }),
            Err(_) if fs::read_dir(root).is_ok() && !dir.exists() => Some(SecretStore { dir }),
            Err(_) => None,
        }
    }

    /// The directory whose entries change when a secret is set or removed.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sets `name` to `value`; setting the current value again changes nothing.
    pub fn set(&self, name: &str, value: &[u8]) -> Result<SetOutcome, FilesError> {
        check_secret_name(name).map_err(FilesError::InvalidName)?;
        let size = value.len() as u64;
        if size > MAX_SECRET_BYTES {
            return Err(FilesError::TooLarge { size });
        }
        match self.get(name)? {
            Some(current) if self.value(&current.version).ok().as_deref() == Some(value) => {
                return Ok(SetOutcome::Unchanged)
            }
            Some(_) => {}
            // A new name: within the count `list` reads.
            None if self.list()?.len() >= MAX_SECRETS => {
                return Err(FilesError::TooMany(MAX_SECRETS))
            }
            None => {}
        }
        let version = random_hex(16);
        write_private(&self.dir.join("values").join(&version), value)?;
        let info = SecretInfo {
            name: name.to_owned(),
            version,
            size,
            set_at: SystemTime::now(),
        };
        let record = serde_json::to_vec(&info).unwrap_or_default();
        write_private(&self.record_path(name), &record)?;
        Ok(SetOutcome::Changed)
    }

    /// The secret `name`, None when it is not set.
    pub fn get(&self, name: &str) -> Result<Option<SecretInfo>, FilesError> {
        check_secret_name(name).map_err(FilesError::InvalidName)?;
        let path = self.record_path(name);
        let bytes = match crate::bounded_read::read_regular(&path, MAX_RECORD_BYTES) {
            Ok(bytes) => bytes,
            Err(crate::bounded_read::ReadError::Io(err))
                if err.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(None)
            }
            Err(source) => return Err(FilesError::Read { path, source }),
        };
        let info: SecretInfo =
            serde_json::from_slice(&bytes).map_err(|err| FilesError::Damaged {
                path: path.clone(),
                message: err.to_string(),
            })?;
        if info.name != name || !is_version(&info.version) {
            return Err(FilesError::Damaged {
                path,
                message: "it names another secret or no valid version".into(),
            });
        }
        Ok(Some(info))
    }

    /// Every secret, by name. More records than [`MAX_SECRETS`] is an error, never a
    /// partial list (pruning keeps every current value it lists).
    pub fn list(&self) -> Result<Vec<SecretInfo>, FilesError> {
        let entries = fs::read_dir(&self.dir).map_err(|source| FilesError::Read {
            path: self.dir.clone(),
            source: source.into(),
        })?;
        let mut secrets = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(name) = name.strip_suffix(".json") else {
                continue;
            };
            if secrets.len() >= MAX_SECRETS {
                return Err(FilesError::TooMany(MAX_SECRETS));
            }
            if let Ok(Some(info)) = self.get(name) {
                secrets.push(info);
            }
        }
        secrets.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(secrets)
    }

    /// Removes the secret `name` (its values go once no container uses them).
    pub fn remove(&self, name: &str) -> Result<(), FilesError> {
        if self.get(name)?.is_none() {
            return Err(FilesError::NotSet(name.to_owned()));
        }
        let path = self.record_path(name);
        fs::remove_file(&path).map_err(|source| FilesError::Write { path, source })
    }

    /// The value of a version.
    pub fn value(&self, version: &str) -> Result<Vec<u8>, FilesError> {
        if !is_version(version) {
            return Err(FilesError::NotSet(version.to_owned()));
        }
        let path = self.dir.join("values").join(version);
        crate::bounded_read::read_regular(&path, MAX_SECRET_BYTES)
            .map_err(|source| FilesError::Read { path, source })
    }

    /// Fills in the version of every secret each service uses and rehashes it; one
    /// error for each use of a secret that is not set, at the field that names it.
    pub fn resolve(&self, services: &mut [Service]) -> Vec<Diagnostic> {
        let mut errors = Vec::new();
        for service in services.iter_mut() {
            for (name, (field, mark)) in &service.secret_uses {
                let error = |message: String| Diagnostic {
                    file: service.file.clone(),
                    mark: Some(*mark),
                    field: field.clone(),
                    message: format!("service \"{}\": {message}", service.spec.name),
                };
                let in_env = service.spec.env.values().any(|v| v.secret() == Some(name));
                match self.get(name) {
                    Ok(Some(info)) => {
                        // A value used in env must be text: said now, not at create.
                        match self.value(&info.version) {
                            Err(err) if in_env => errors.push(error(crate::error_chain(&err))),
                            Ok(value) if in_env => {
                                if let Err(why) = env_text(&value) {
                                    errors.push(error(format!(
                                        "secret {name} {why}: only text without NUL bytes can be an environment value (mount it as a file instead)"
                                    )));
                                }
                            }
                            _ => {}
                        }
                        service.files.secrets.insert(name.clone(), info.version);
                    }
                    Ok(None) => errors.push(error(format!(
                        "secret {name} is not set; set it with `wharf secret set {name}` (the value is read from standard input)"
                    ))),
                    Err(err) => errors.push(error(crate::error_chain(&err))),
                }
            }
            service.rehash();
        }
        errors
    }

    /// Removes the values that are neither a secret's current one nor in `keep`.
    pub fn prune(&self, keep: &BTreeSet<&str>) -> Result<(), FilesError> {
        let current: BTreeSet<String> = self.list()?.into_iter().map(|s| s.version).collect();
        let values = self.dir.join("values");
        let entries = fs::read_dir(&values).map_err(|source| FilesError::Read {
            path: values.clone(),
            source: source.into(),
        })?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(name.as_str()) && !current.contains(&name) {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }
}

/// A secret's value as an environment value: UTF-8 text without NUL bytes, one
/// trailing newline dropped (`echo pw | wharf secret set` stores it; a variable
/// never wants it). Err says why not, without the value.
pub fn env_text(value: &[u8]) -> Result<String, &'static str> {
    let mut text = String::from_utf8(value.to_vec()).map_err(|_| "is not UTF-8 text")?;
    if text.contains('\0') {
        return Err("contains a NUL byte");
    }
    if text.ends_with('\n') {
        text.pop();
    }
    Ok(text)
}

/// 32 lowercase hex digits, as `random_hex(16)` gives.
fn is_version(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

mod unix_seconds {
    use super::*;

    pub fn serialize<S: serde::Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let seconds = u64::deserialize(d)?;
        Ok(UNIX_EPOCH + Duration::from_secs(seconds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_value_is_a_new_version_and_the_same_value_changes_nothing() {
        let root = tempfile::tempdir().expect("tempdir");
        let store = SecretStore::open(root.path()).expect("open");
        assert_eq!(
            store.set("dbpass", b"one").expect("set"),
            SetOutcome::Changed
        );
        let first = store.get("dbpass").expect("get").expect("set");
        assert_eq!(
            store.set("dbpass", b"one").expect("set"),
            SetOutcome::Unchanged
        );
        assert_eq!(
            store.set("dbpass", b"two").expect("set"),
            SetOutcome::Changed
        );
        let second = store.get("dbpass").expect("get").expect("set");
        assert_ne!(first.version, second.version);
        assert_eq!(second.size, 3);
        assert_eq!(store.value(&second.version).expect("value"), b"two");

        // The first value goes once nothing keeps it; the current one stays.
        store
            .prune(&BTreeSet::from([first.version.as_str()]))
            .expect("prune");
        assert_eq!(store.value(&first.version).expect("kept"), b"one");
        store.prune(&BTreeSet::new()).expect("prune");
        assert!(store.value(&first.version).is_err());
        assert_eq!(store.value(&second.version).expect("current"), b"two");
    }

    #[test]
    fn names_that_are_not_file_names_are_refused() {
        let root = tempfile::tempdir().expect("tempdir");
        let store = SecretStore::open(root.path()).expect("open");
        for name in ["../x", "", ".hidden", "a/b"] {
            assert!(
                matches!(store.set(name, b"v"), Err(FilesError::InvalidName(_))),
                "{name}"
            );
        }
        assert!(matches!(
            store.remove("missing"),
            Err(FilesError::NotSet(_))
        ));
    }

    #[test]
    fn values_and_records_are_root_only() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().expect("tempdir");
        let store = SecretStore::open(root.path()).expect("open");
        store.set("token", b"s3cr3t").expect("set");
        let info = store.get("token").expect("get").expect("set");
        for path in [
            root.path().join("secrets/token.json"),
            root.path().join("secrets/values").join(&info.version),
        ] {
            let mode = fs::metadata(&path).expect("exists").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", path.display());
        }
        let record = fs::read_to_string(root.path().join("secrets/token.json")).expect("record");
        assert!(!record.contains("s3cr3t"));
    }
}
