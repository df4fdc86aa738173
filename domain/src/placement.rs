//! The rules of placing an order, whether from `POST /orders` or from a
//! cart's checkout: the user is active, 1 to 50 lines, each product once,
//! every product active and priced in one currency. Unit prices are the
//! products' current ones.
//!
//! A service rather than a command handler: it reads two aggregates (the
//! user, the products) that the Order aggregate cannot see, and its answer
//! is the `OrderCommand::Place` lines. Pure, like every domain rule: the
//! caller loads the aggregates and passes them in.

use std::collections::HashSet;

use uuid::Uuid;

use crate::order::{OrderLine, MAX_LINES};
use crate::product::Product;
use crate::refusal::{Refusal, RefusalKind};
use crate::user::User;

/// One line as asked for: a product and a quantity (already 1..1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requested {
    pub product_id: Uuid,
    pub quantity: u32,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlacementError {
    #[error("no such user")]
    UnknownUser,
    #[error("a deactivated user cannot place orders")]
    UserDeactivated,
    #[error("an order must hold 1 to {MAX_LINES} lines")]
    LineCount,
    /// `index` is the line's place in the request.
    #[error("product {product_id} appears on more than one line")]
    DuplicateLine { index: usize, product_id: Uuid },
    #[error("no such product {product_id}")]
    UnknownProduct { index: usize, product_id: Uuid },
    #[error("product {product_id} is discontinued")]
    ProductDiscontinued { product_id: Uuid },
    #[error("all products of one order must be priced in one currency")]
    CurrencyMismatch,
}

impl Refusal for PlacementError {
    fn kind(&self) -> RefusalKind {
        match self {
            Self::UnknownUser
            | Self::LineCount
            | Self::DuplicateLine { .. }
            | Self::UnknownProduct { .. } => RefusalKind::Invalid,
            Self::UserDeactivated => RefusalKind::UserDeactivated,
            Self::ProductDiscontinued { .. } => RefusalKind::ProductDiscontinued,
            Self::CurrencyMismatch => RefusalKind::CurrencyMismatch,
        }
    }
}

impl PlacementError {
    /// The request field a validation failure is about, if it is one field's.
    pub fn field(&self) -> Option<String> {
        match self {
            Self::UnknownUser => Some("user_id".to_owned()),
            Self::LineCount => Some("lines".to_owned()),
            Self::DuplicateLine { index, .. } | Self::UnknownProduct { index, .. } => {
                Some(format!("lines[{index}].product_id"))
            }
            _ => None,
        }
    }
}

/// Checks the lines alone (before anything is loaded): their count and that
/// no product appears twice. Every failure, in line order.
pub fn check_lines(requested: &[Requested]) -> Vec<PlacementError> {
    let mut errors = Vec::new();
    if requested.is_empty() || requested.len() > MAX_LINES {
        errors.push(PlacementError::LineCount);
    }
    let mut seen = HashSet::new();
    for (index, line) in requested.iter().enumerate() {
        if !seen.insert(line.product_id) {
            errors.push(PlacementError::DuplicateLine {
                index,
                product_id: line.product_id,
            });
        }
    }
    errors
}

/// The order's lines, priced now, if `user` may order `requested` of
/// `products` (`products[i]` is the aggregate of `requested[i]`, a default
/// one if it does not exist).
pub fn place(
    user: &User,
    requested: &[Requested],
    products: &[&Product],
) -> Result<Vec<OrderLine>, PlacementError> {
    if let Some(first) = check_lines(requested).into_iter().next() {
        return Err(first);
    }
    if !user.exists() {
        return Err(PlacementError::UnknownUser);
    }
    if !user.is_active() {
        return Err(PlacementError::UserDeactivated);
    }
    debug_assert_eq!(requested.len(), products.len());
    let mut lines = Vec::with_capacity(requested.len());
    for (index, (line, product)) in requested.iter().zip(products).enumerate() {
        let price = match product.price() {
            Some(price) if product.exists() => price,
            _ => {
                return Err(PlacementError::UnknownProduct {
                    index,
                    product_id: line.product_id,
                })
            }
        };
        if !product.is_active() {
            return Err(PlacementError::ProductDiscontinued {
                product_id: line.product_id,
            });
        }
        lines.push(OrderLine {
            product_id: line.product_id,
            quantity: line.quantity,
            unit_price: price.clone(),
        });
    }
    if let Some(first) = lines.first() {
        let currency = &first.unit_price.currency;
        if lines.iter().any(|l| &l.unit_price.currency != currency) {
            return Err(PlacementError::CurrencyMismatch);
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use cqrs_es::Aggregate;

    use super::*;
    use crate::product::ProductEvent;
    use crate::user::UserEvent;
    use crate::values::{Currency, EmailAddress, Money, Name, Sku};

    fn user(events: &[UserEvent]) -> User {
        let mut user = User::default();
        user.apply(UserEvent::UserRegistered {
            user_id: Uuid::from_u128(1),
            email: EmailAddress::parse("ada@example.com").unwrap(),
            name: Name::parse("Ada").unwrap(),
        });
        for event in events {
            user.apply(event.clone());
        }
        user
    }

    fn product(n: u128, currency: &str, discontinued: bool) -> Product {
        let mut product = Product::default();
        product.apply(ProductEvent::ProductCreated {
            product_id: Uuid::from_u128(100 + n),
            sku: Sku::parse(format!("SKU-{n}")).unwrap(),
            name: Name::parse("Pen").unwrap(),
            description: None,
            price: Money::new(250, Currency::parse(currency).unwrap()),
            stock: 5,
        });
        if discontinued {
            product.apply(ProductEvent::ProductDiscontinued {});
        }
        product
    }

    fn wanted(n: u128, quantity: u32) -> Requested {
        Requested {
            product_id: Uuid::from_u128(100 + n),
            quantity,
        }
    }

    #[test]
    fn given_an_active_user_and_products_when_placing_then_lines_take_todays_prices() {
        let (pen, ink) = (product(1, "EUR", false), product(2, "EUR", false));
        let lines = place(&user(&[]), &[wanted(1, 3), wanted(2, 1)], &[&pen, &ink]).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].quantity, 3);
        assert_eq!(
            lines[0].unit_price,
            Money::new(250, Currency::parse("EUR").unwrap())
        );
    }

    #[test]
    fn given_a_deactivated_or_unknown_user_when_placing_then_refused() {
        let pen = product(1, "EUR", false);
        assert_eq!(
            place(
                &user(&[UserEvent::UserDeactivated {}]),
                &[wanted(1, 1)],
                &[&pen]
            ),
            Err(PlacementError::UserDeactivated)
        );
        assert_eq!(
            place(&User::default(), &[wanted(1, 1)], &[&pen]),
            Err(PlacementError::UnknownUser)
        );
    }

    #[test]
    fn given_a_discontinued_or_unknown_product_when_placing_then_refused() {
        let gone = product(1, "EUR", true);
        assert_eq!(
            place(&user(&[]), &[wanted(1, 1)], &[&gone]),
            Err(PlacementError::ProductDiscontinued {
                product_id: Uuid::from_u128(101)
            })
        );
        let err = place(&user(&[]), &[wanted(1, 1)], &[&Product::default()]).unwrap_err();
        assert_eq!(err.field().as_deref(), Some("lines[0].product_id"));
        assert_eq!(err.kind(), RefusalKind::Invalid);
    }

    #[test]
    fn given_two_currencies_when_placing_then_refused() {
        let (eur, usd) = (product(1, "EUR", false), product(2, "USD", false));
        assert_eq!(
            place(&user(&[]), &[wanted(1, 1), wanted(2, 1)], &[&eur, &usd]),
            Err(PlacementError::CurrencyMismatch)
        );
    }

    #[test]
    fn given_no_lines_too_many_or_a_duplicate_when_checking_then_each_is_named() {
        assert_eq!(check_lines(&[]), vec![PlacementError::LineCount]);
        let many: Vec<Requested> = (0..51).map(|n| wanted(n, 1)).collect();
        assert_eq!(check_lines(&many), vec![PlacementError::LineCount]);
        assert_eq!(
            check_lines(&[wanted(1, 1), wanted(1, 2)]),
            vec![PlacementError::DuplicateLine {
                index: 1,
                product_id: Uuid::from_u128(101)
            }]
        );
        let pen = product(1, "EUR", false);
        assert!(matches!(
            place(&user(&[]), &[wanted(1, 1), wanted(1, 2)], &[&pen, &pen]),
            Err(PlacementError::DuplicateLine { index: 1, .. })
        ));
    }
}
