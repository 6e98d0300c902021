//! Naming containers on the command line: `SERVICE`, `SERVICE/N` or a container id.

use crate::runtime::{ContainerStatus, ObservedContainer};

/// The containers `target` names, running ones first.
pub fn matching<'a>(
    containers: &'a [ObservedContainer],
    target: &str,
) -> Result<Vec<&'a ObservedContainer>, String> {
    let by_id: Vec<&ObservedContainer> = containers.iter().filter(|c| c.id == target).collect();
    let mut found = if by_id.is_empty() {
        let (service, slot) = match target.split_once('/') {
            Some((service, slot)) => {
                let slot: u32 = slot.parse().map_err(|_| {
                    format!("\"{target}\": the replica after / must be a number, e.g. web/0")
                })?;
                (service, Some(slot))
            }
            None => (target, None),
        };
        containers
            .iter()
            .filter(|c| c.service == service && slot.is_none_or(|slot| c.slot == slot))
            .collect()
    } else {
        by_id
    };
    if found.is_empty() {
        return Err(format!(
            "no container matches \"{target}\" (see `wharf ps`)"
        ));
    }
    found.sort_by_key(|c| !matches!(c.status, ContainerStatus::Running));
    Ok(found)
}
