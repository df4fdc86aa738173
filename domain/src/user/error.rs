#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UserError {
    /// 409 Conflict.
    #[error("user already exists")]
    AlreadyExists,
    /// 404 Not Found.
    #[error("user not found")]
    NotFound,
    /// 422 Unprocessable Content.
    #[error("user is deactivated")]
    Deactivated,
}

impl UserError {
    /// Problem-type slug for API error responses.
    pub fn rule(&self) -> &'static str {
        match self {
            Self::AlreadyExists => "already-exists",
            Self::NotFound => "not-found",
            Self::Deactivated => "user-deactivated",
        }
    }
}
