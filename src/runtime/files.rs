//! A container's configs and secrets: files on a memory file system of its own
//! (`<container dir>/files`, root-only), each bind-mounted read-only at its target
//! with the mode and owner the manifest gives. Secrets so never touch a disk (nor
//! swap, where the kernel has `noswap`) nor the container's writable layer; secret env values go into config.json, which
//! is root-only.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::mount::{mount, MountFlags};

use super::config::ResolvedUser;
use super::error::CreateError;
use super::CreateRequest;
use crate::files::{env_text, ContentStore, FilesError, SecretStore};
use crate::image::detach;
use crate::manifest::EnvValue;

/// What the container gets: host files to mount at container paths, and the
/// values of env variables taken from secrets.
#[derive(Debug, Clone, Default)]
pub struct ContainerFiles {
    pub mounts: Vec<(PathBuf, String)>,
    pub secret_env: BTreeMap<String, String>,
}

/// One file to write: its name on the tmpfs, content, mode and owner, and target.
struct FileToWrite {
    name: String,
    what: String,
    bytes: Vec<u8>,
    mode: u32,
    owner: (u32, u32),
    target: String,
}

/// Writes the configs and secrets of `request` for the container in `dir`, whose
/// process runs as `user` (the owner of secrets by default).
pub fn put_files(
    root: &Path,
    request: &CreateRequest,
    dir: &Path,
    user: ResolvedUser,
) -> Result<ContainerFiles, CreateError> {
    let spec = &request.service;
    let mut files = ContainerFiles::default();
    let needs_secrets = !request.files.secrets.is_empty();
    let secrets = if needs_secrets {
        Some(SecretStore::open(root).map_err(CreateError::Files)?)
    } else {
        None
    };
    let secret_value = |name: &str| -> Result<Vec<u8>, CreateError> {
        let version = request
            .files
            .secrets
            .get(name)
            .ok_or_else(|| CreateError::Files(FilesError::NotSet(name.to_owned())))?;
        let store = secrets
            .as_ref()
            .ok_or_else(|| CreateError::Files(FilesError::NotSet(name.to_owned())))?;
        store.value(version).map_err(CreateError::Files)
    };
    for (variable, value) in &spec.env {
        let EnvValue::Secret { secret } = value else {
            continue;
        };
        let text = env_text(&secret_value(secret)?).map_err(|why| CreateError::SecretNotText {
            variable: variable.clone(),
            secret: secret.clone(),
            why,
        })?;
        files.secret_env.insert(variable.clone(), text);
    }
    let mut to_write = Vec::new();
    if !spec.configs.is_empty() {
        let contents = ContentStore::open(root).map_err(CreateError::Files)?;
        for (index, config) in spec.configs.iter().enumerate() {
            let digest = request.files.configs.get(index).ok_or_else(|| {
                CreateError::Files(FilesError::ContentMissing(format!("of configs[{index}]")))
            })?;
            to_write.push(FileToWrite {
                name: format!("config-{index}"),
                what: format!("configs[{index}] ({})", config.target),
                bytes: contents.get(digest).map_err(CreateError::Files)?,
                mode: config.mode.map_or(0o444, |m| m.0),
                owner: (config.uid.unwrap_or(0), config.gid.unwrap_or(0)),
                target: config.target.clone(),
            });
        }
    }
    for (index, secret) in spec.secrets.iter().enumerate() {
        to_write.push(FileToWrite {
            name: format!("secret-{index}"),
            what: format!("secrets[{index}] ({})", secret.name),
            bytes: secret_value(&secret.name)?,
            mode: secret.mode.map_or(0o400, |m| m.0),
            owner: (
                secret.uid.unwrap_or(user.uid),
                secret.gid.unwrap_or(user.gid),
            ),
            target: secret.target(),
        });
    }
    if to_write.is_empty() {
        return Ok(files);
    }
    let files_dir = mount_files_dir(dir, &to_write)?;
    for file in to_write {
        let path = files_dir.join(&file.name);
        write_owned(&path, &file.bytes, file.mode, file.owner).map_err(|error| {
            CreateError::WriteFile {
                what: file.what.clone(),
                error,
            }
        })?;
        files.mounts.push((path, file.target));
    }
    Ok(files)
}

/// Mounts a tmpfs just large enough for `files` at `<dir>/files`.
fn mount_files_dir(dir: &Path, files: &[FileToWrite]) -> Result<PathBuf, CreateError> {
    const PAGE: u64 = 4096;
    let path = dir.join("files");
    let failed = |error: io::Error| CreateError::FilesMount {
        path: path.clone(),
        error,
    };
    fs::create_dir(&path).map_err(failed)?;
    let size: u64 = files
        .iter()
        .map(|f| (f.bytes.len() as u64).div_ceil(PAGE).max(1) * PAGE)
        .sum::<u64>()
        + 16 * PAGE;
    let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    let mount_with = |options: String| {
        let options = std::ffi::CString::new(options).map_err(io::Error::other)?;
        mount("tmpfs", &path, "tmpfs", flags, options.as_c_str()).map_err(io::Error::from)
    };
    // noswap (Linux 6.4 and later) keeps secrets off the swap device too.
    mount_with(format!("mode=0700,size={size},noswap"))
        .or_else(|_| mount_with(format!("mode=0700,size={size}")))
        .map_err(failed)?;
    Ok(path)
}

fn write_owned(path: &Path, bytes: &[u8], mode: u32, (uid, gid): (u32, u32)) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?;
    file.write_all(bytes)?;
    std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
    // After the owner: chown clears setuid bits, and the umask does not apply here.
    file.set_permissions(fs::Permissions::from_mode(mode))
}

/// Unmounts and removes `<dir>/files`, if there is one.
pub fn remove_files(dir: &Path) {
    let path = dir.join("files");
    if let Err(err) = detach(&path) {
        tracing::warn!("cannot unmount {}: {err}", path.display());
    }
    let _ = fs::remove_dir_all(&path);
}
