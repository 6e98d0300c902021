//! Images against a real registry and real overlay mounts (run as root).

#[path = "../support/mod.rs"]
mod support;

mod compression;
mod layers;
mod pulls;
mod store;
mod store_safety;
mod unpack_safety;
mod whiteouts;
