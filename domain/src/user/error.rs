use crate::refusal::{Refusal, RefusalKind};

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

impl Refusal for UserError {
    fn kind(&self) -> RefusalKind {
        match self {
            Self::AlreadyExists => RefusalKind::AlreadyExists,
            Self::NotFound => RefusalKind::NotFound,
            Self::Deactivated => RefusalKind::UserDeactivated,
        }
    }
}
