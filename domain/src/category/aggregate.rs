use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{CategoryCommand, CategoryError, CategoryEvent};
use crate::values::{Name, Slug};

/// Categories nest at most this many levels (a top-level category is level 1).
pub const MAX_DEPTH: usize = 8;

/// A node of the category tree. Deleted categories keep their stream; every
/// command on one is refused as not found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Category {
    id: Option<Uuid>,
    slug: Option<Slug>,
    name: Option<Name>,
    parent_id: Option<Uuid>,
    position: i32,
    deleted: bool,
}

impl Category {
    pub fn id(&self) -> Option<Uuid> {
        self.id
    }

    /// Created and not deleted.
    pub fn exists(&self) -> bool {
        self.id.is_some() && !self.deleted
    }

    pub fn slug(&self) -> Option<&Slug> {
        self.slug.as_ref()
    }

    pub fn name(&self) -> Option<&Name> {
        self.name.as_ref()
    }

    pub fn parent_id(&self) -> Option<Uuid> {
        self.parent_id
    }

    pub fn position(&self) -> i32 {
        self.position
    }

    fn ensure_exists(&self) -> Result<(), CategoryError> {
        if self.exists() {
            Ok(())
        } else {
            Err(CategoryError::NotFound)
        }
    }
}

fn check_position(position: i32) -> Result<(), CategoryError> {
    if position < 0 {
        Err(CategoryError::InvalidPosition)
    } else {
        Ok(())
    }
}

/// A category under `parent_path` with `height` levels below it.
fn check_depth(parent_path: &[Uuid], height: u32) -> Result<(), CategoryError> {
    let depth = parent_path
        .len()
        .saturating_add(1)
        .saturating_add(height as usize);
    if depth > MAX_DEPTH {
        return Err(CategoryError::TooDeep {
            depth,
            max: MAX_DEPTH,
        });
    }
    Ok(())
}

impl Aggregate for Category {
    const TYPE: &'static str = "category";
    type Command = CategoryCommand;
    type Event = CategoryEvent;
    type Error = CategoryError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            CategoryCommand::Create {
                category_id,
                slug,
                name,
                parent_id,
                position,
                parent_path,
            } => {
                if self.id.is_some() {
                    return Err(CategoryError::AlreadyExists);
                }
                check_position(position)?;
                check_depth(&parent_path, 0)?;
                let event = CategoryEvent::CategoryCreated {
                    category_id,
                    slug,
                    name,
                    parent_id,
                    position,
                };
                sink.write(event, self).await;
            }
            CategoryCommand::Update {
                slug,
                name,
                position,
            } => {
                self.ensure_exists()?;
                if let Some(position) = position {
                    check_position(position)?;
                }
                let slug = slug.filter(|s| self.slug.as_ref() != Some(s));
                let name = name.filter(|n| self.name.as_ref() != Some(n));
                let position = position.filter(|p| *p != self.position);
                if slug.is_some() || name.is_some() || position.is_some() {
                    let previous_slug = slug.as_ref().and(self.slug.clone());
                    let event = CategoryEvent::CategoryUpdated {
                        slug,
                        previous_slug,
                        name,
                        position,
                    };
                    sink.write(event, self).await;
                }
            }
            CategoryCommand::Move {
                parent_id,
                parent_path,
                subtree_height,
            } => {
                self.ensure_exists()?;
                if parent_id.is_some() && parent_id == self.id
                    || self.id.is_some_and(|id| parent_path.contains(&id))
                {
                    return Err(CategoryError::Cycle);
                }
                check_depth(&parent_path, subtree_height)?;
                if parent_id != self.parent_id {
                    sink.write(CategoryEvent::CategoryMoved { parent_id }, self)
                        .await;
                }
            }
            CategoryCommand::Delete { children, products } => {
                self.ensure_exists()?;
                if children > 0 || products > 0 {
                    return Err(CategoryError::NotEmpty { children, products });
                }
                if let Some(slug) = self.slug.clone() {
                    sink.write(CategoryEvent::CategoryDeleted { slug }, self)
                        .await;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            CategoryEvent::CategoryCreated {
                category_id,
                slug,
                name,
                parent_id,
                position,
            } => {
                self.id = Some(category_id);
                self.slug = Some(slug);
                self.name = Some(name);
                self.parent_id = parent_id;
                self.position = position;
            }
            CategoryEvent::CategoryUpdated {
                slug,
                name,
                position,
                ..
            } => {
                if slug.is_some() {
                    self.slug = slug;
                }
                if name.is_some() {
                    self.name = name;
                }
                if let Some(position) = position {
                    self.position = position;
                }
            }
            CategoryEvent::CategoryMoved { parent_id } => self.parent_id = parent_id,
            CategoryEvent::CategoryDeleted { .. } => self.deleted = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;
    use crate::refusal::{Refusal, RefusalKind};

    type CategoryTest = TestFramework<Category>;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + n)
    }

    fn slug(s: &str) -> Slug {
        Slug::parse(s).unwrap()
    }

    fn name(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    fn create(parent_path: Vec<Uuid>) -> CategoryCommand {
        CategoryCommand::Create {
            category_id: id(1),
            slug: slug("pens"),
            name: name("Pens"),
            parent_id: parent_path.last().copied(),
            position: 2,
            parent_path,
        }
    }

    fn created() -> CategoryEvent {
        CategoryEvent::CategoryCreated {
            category_id: id(1),
            slug: slug("pens"),
            name: name("Pens"),
            parent_id: None,
            position: 2,
        }
    }

    fn path(levels: u128) -> Vec<Uuid> {
        (0..levels).map(|n| id(100 + n)).collect()
    }

    fn move_under(parent_path: Vec<Uuid>, subtree_height: u32) -> CategoryCommand {
        CategoryCommand::Move {
            parent_id: parent_path.last().copied(),
            parent_path,
            subtree_height,
        }
    }

    #[test]
    fn create_creates_a_top_level_category() {
        CategoryTest::with(())
            .given_no_previous_events()
            .when(create(Vec::new()))
            .then_expect_events(vec![created()]);
    }

    #[test]
    fn create_under_a_parent_at_level_seven_makes_level_eight() {
        let parents = path(7);
        CategoryTest::with(())
            .given_no_previous_events()
            .when(create(parents.clone()))
            .then_expect_events(vec![CategoryEvent::CategoryCreated {
                category_id: id(1),
                slug: slug("pens"),
                name: name("Pens"),
                parent_id: parents.last().copied(),
                position: 2,
            }]);
    }

    #[test]
    fn create_at_level_nine_is_refused() {
        CategoryTest::with(())
            .given_no_previous_events()
            .when(create(path(8)))
            .then_expect_error(CategoryError::TooDeep { depth: 9, max: 8 });
    }

    #[test]
    fn create_twice_is_refused() {
        CategoryTest::with(())
            .given(vec![created()])
            .when(create(Vec::new()))
            .then_expect_error(CategoryError::AlreadyExists);
    }

    #[test]
    fn create_with_a_negative_position_is_refused() {
        CategoryTest::with(())
            .given_no_previous_events()
            .when(CategoryCommand::Create {
                category_id: id(1),
                slug: slug("pens"),
                name: name("Pens"),
                parent_id: None,
                position: -1,
                parent_path: Vec::new(),
            })
            .then_expect_error(CategoryError::InvalidPosition);
    }

    #[test]
    fn update_records_only_what_changed_and_the_slug_it_gives_up() {
        CategoryTest::with(())
            .given(vec![created()])
            .when(CategoryCommand::Update {
                slug: Some(slug("fountain-pens")),
                name: Some(name("Pens")),
                position: Some(2),
            })
            .then_expect_events(vec![CategoryEvent::CategoryUpdated {
                slug: Some(slug("fountain-pens")),
                previous_slug: Some(slug("pens")),
                name: None,
                position: None,
            }]);
    }

    #[test]
    fn update_that_changes_nothing_records_nothing() {
        CategoryTest::with(())
            .given(vec![created()])
            .when(CategoryCommand::Update {
                slug: Some(slug("pens")),
                name: None,
                position: Some(2),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn update_of_a_missing_category_is_refused() {
        CategoryTest::with(())
            .given_no_previous_events()
            .when(CategoryCommand::Update {
                slug: None,
                name: Some(name("X")),
                position: None,
            })
            .then_expect_error(CategoryError::NotFound);
    }

    #[test]
    fn move_under_another_category_records_the_new_parent() {
        CategoryTest::with(())
            .given(vec![created()])
            .when(move_under(vec![id(2)], 0))
            .then_expect_events(vec![CategoryEvent::CategoryMoved {
                parent_id: Some(id(2)),
            }]);
    }

    #[test]
    fn move_to_the_top_records_no_parent() {
        CategoryTest::with(())
            .given(vec![
                created(),
                CategoryEvent::CategoryMoved {
                    parent_id: Some(id(2)),
                },
            ])
            .when(move_under(Vec::new(), 3))
            .then_expect_events(vec![CategoryEvent::CategoryMoved { parent_id: None }]);
    }

    #[test]
    fn move_to_where_it_is_records_nothing() {
        CategoryTest::with(())
            .given(vec![created()])
            .when(move_under(Vec::new(), 0))
            .then_expect_events(vec![]);
    }

    #[test]
    fn move_under_itself_is_a_cycle() {
        CategoryTest::with(())
            .given(vec![created()])
            .when(move_under(vec![id(1)], 0))
            .then_expect_error(CategoryError::Cycle);
    }

    #[test]
    fn move_under_a_descendant_is_a_cycle() {
        CategoryTest::with(())
            .given(vec![created()])
            .when(move_under(vec![id(1), id(5), id(6)], 2))
            .then_expect_error(CategoryError::Cycle);
    }

    #[test]
    fn move_that_would_push_its_subtree_past_eight_levels_is_refused() {
        CategoryTest::with(())
            .given(vec![created()])
            .when(move_under(path(5), 3))
            .then_expect_error(CategoryError::TooDeep { depth: 9, max: 8 });
        CategoryTest::with(())
            .given(vec![created()])
            .when(move_under(path(5), 2))
            .then_expect_events(vec![CategoryEvent::CategoryMoved {
                parent_id: Some(id(104)),
            }]);
    }

    #[test]
    fn delete_of_an_empty_category_releases_its_slug() {
        CategoryTest::with(())
            .given(vec![created()])
            .when(CategoryCommand::Delete {
                children: 0,
                products: 0,
            })
            .then_expect_events(vec![CategoryEvent::CategoryDeleted { slug: slug("pens") }]);
    }

    #[test]
    fn delete_with_children_or_products_is_refused() {
        for (children, products) in [(1, 0), (0, 1), (2, 3)] {
            CategoryTest::with(())
                .given(vec![created()])
                .when(CategoryCommand::Delete { children, products })
                .then_expect_error(CategoryError::NotEmpty { children, products });
        }
    }

    #[test]
    fn a_deleted_category_refuses_every_command() {
        let deleted = vec![
            created(),
            CategoryEvent::CategoryDeleted { slug: slug("pens") },
        ];
        for command in [
            CategoryCommand::Update {
                slug: None,
                name: Some(name("X")),
                position: None,
            },
            move_under(vec![id(2)], 0),
            CategoryCommand::Delete {
                children: 0,
                products: 0,
            },
        ] {
            CategoryTest::with(())
                .given(deleted.clone())
                .when(command)
                .then_expect_error(CategoryError::NotFound);
        }
        CategoryTest::with(())
            .given(deleted)
            .when(create(Vec::new()))
            .then_expect_error(CategoryError::AlreadyExists);
    }

    #[test]
    fn refusals_name_their_kinds() {
        assert_eq!(CategoryError::Cycle.kind(), RefusalKind::CategoryCycle);
        assert_eq!(
            CategoryError::NotEmpty {
                children: 1,
                products: 0
            }
            .kind(),
            RefusalKind::CategoryNotEmpty
        );
        assert_eq!(
            CategoryError::TooDeep { depth: 9, max: 8 }.kind(),
            RefusalKind::Invalid
        );
    }

    #[test]
    fn state_follows_the_events() {
        let mut category = Category::default();
        for event in [
            created(),
            CategoryEvent::CategoryUpdated {
                slug: Some(slug("ink")),
                previous_slug: Some(slug("pens")),
                name: None,
                position: Some(7),
            },
            CategoryEvent::CategoryMoved {
                parent_id: Some(id(9)),
            },
        ] {
            category.apply(event);
        }
        assert_eq!(category.slug().map(Slug::as_str), Some("ink"));
        assert_eq!(category.position(), 7);
        assert_eq!(category.parent_id(), Some(id(9)));
        assert!(category.exists());
    }
}
