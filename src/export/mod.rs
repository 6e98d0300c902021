//! Manifests in other formats, for users who outgrow one host: `wharf export
//! kubernetes` turns services into Kubernetes objects. Pure: services in, documents
//! and warnings out.

mod kubernetes;

pub use kubernetes::to_kubernetes;

/// Something in a service that the target format cannot say, or says differently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// `file:line:col` of the service.
    pub location: String,
    pub service: String,
    /// The field concerned, e.g. `restart`.
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} service {}: {}: {}",
            self.location, self.service, self.field, self.message
        )
    }
}
