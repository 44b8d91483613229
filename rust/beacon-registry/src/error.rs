//! What can go wrong, each with the HTTP status the admin route answers.

/// A refused command.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    /// The command is not valid JSON of a known shape.
    #[error("malformed command: {0}")]
    BadCommand(String),
    /// A field's value is not acceptable (an address that is not one, a bad pool name).
    #[error("{0}")]
    BadRequest(String),
    /// No loaded config declares this pool.
    #[error("unknown pool {0:?}: no `dynamic beacon {0}` in Caddy's config")]
    UnknownPool(String),
    /// The pool does not hold this upstream (never registered, removed, or its lease ended).
    #[error("{0} is not registered in this pool (removed, or its lease ended)")]
    UnknownUpstream(String),
    /// The pool holds as many upstreams as it may.
    #[error("the pool already holds {0} upstreams")]
    Full(usize),
    /// As many pools are declared as the registry keeps.
    #[error("{0} pools are declared already: no more")]
    TooManyPools(usize),
    /// The pool's admission policy refuses the address (see admission.rs).
    #[error("{0}")]
    Refused(String),
    /// The host commits or releases a claim it never staged (see declarations.rs).
    #[error("claim {0} is not staged")]
    UnknownClaim(u64),
}

impl RegistryError {
    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            RegistryError::BadCommand(_) | RegistryError::BadRequest(_) => 400,
            RegistryError::UnknownPool(_)
            | RegistryError::UnknownUpstream(_)
            | RegistryError::UnknownClaim(_) => 404,
            RegistryError::Full(_) | RegistryError::TooManyPools(_) => 409,
            RegistryError::Refused(_) => 403,
        }
    }
}
