use crate::refusal::{Refusal, RefusalKind};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CategoryError {
    /// 409 Conflict.
    #[error("category already exists")]
    AlreadyExists,
    /// 404 Not Found.
    #[error("category not found")]
    NotFound,
    /// 422 `category-cycle`.
    #[error("a category cannot move under itself or one of its descendants")]
    Cycle,
    /// 422 validation.
    #[error("categories nest at most {max} levels deep; this would make {depth}")]
    TooDeep { depth: usize, max: usize },
    /// 422 validation.
    #[error("position must be zero or more")]
    InvalidPosition,
    /// 422 `category-not-empty`.
    #[error("category has {children} children and {products} products")]
    NotEmpty { children: u64, products: u64 },
}

impl Refusal for CategoryError {
    fn kind(&self) -> RefusalKind {
        match self {
            Self::AlreadyExists => RefusalKind::AlreadyExists,
            Self::NotFound => RefusalKind::NotFound,
            Self::Cycle => RefusalKind::CategoryCycle,
            Self::TooDeep { .. } | Self::InvalidPosition => RefusalKind::Invalid,
            Self::NotEmpty { .. } => RefusalKind::CategoryNotEmpty,
        }
    }
}
