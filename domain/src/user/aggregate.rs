use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{UserCommand, UserError, UserEvent};
use crate::values::{EmailAddress, Name};

#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    #[default]
    Active,
    Deactivated,
    Erased,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    id: Option<Uuid>,
    email: Option<EmailAddress>,
    name: Option<Name>,
    status: UserStatus,
}

impl User {
    pub fn id(&self) -> Option<Uuid> {
        self.id
    }

    pub fn exists(&self) -> bool {
        self.id.is_some()
    }

    pub fn is_active(&self) -> bool {
        self.exists() && self.status == UserStatus::Active
    }

    pub fn email(&self) -> Option<&EmailAddress> {
        self.email.as_ref()
    }

    pub fn name(&self) -> Option<&Name> {
        self.name.as_ref()
    }

    pub fn status(&self) -> UserStatus {
        self.status
    }

    fn ensure_active(&self) -> Result<(), UserError> {
        if !self.exists() {
            return Err(UserError::NotFound);
        }
        match self.status {
            UserStatus::Active => Ok(()),
            UserStatus::Deactivated => Err(UserError::Deactivated),
            UserStatus::Erased => Err(UserError::NotFound),
        }
    }
}

impl Aggregate for User {
    const TYPE: &'static str = "user";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            UserCommand::Register {
                user_id,
                email,
                name,
            } => {
                if self.exists() {
                    return Err(UserError::AlreadyExists);
                }
                sink.write(
                    UserEvent::UserRegistered {
                        user_id,
                        email,
                        name,
                    },
                    self,
                )
                .await;
            }
            UserCommand::UpdateProfile { name, email } => {
                self.ensure_active()?;
                let name = name.filter(|n| self.name.as_ref() != Some(n));
                let email_change = match (email, &self.email) {
                    (Some(email), Some(current)) if email.as_str() != current.as_str() => {
                        Some((current.clone(), email))
                    }
                    _ => None,
                };
                if let Some(name) = name {
                    sink.write(UserEvent::UserNameChanged { name }, self).await;
                }
                if let Some((previous_email, email)) = email_change {
                    sink.write(
                        UserEvent::UserEmailChanged {
                            previous_email,
                            email,
                        },
                        self,
                    )
                    .await;
                }
            }
            UserCommand::Deactivate => {
                self.ensure_active()?;
                sink.write(UserEvent::UserDeactivated {}, self).await;
            }
            UserCommand::Erase => {
                if !self.exists() {
                    return Err(UserError::NotFound);
                }
                if self.status == UserStatus::Erased {
                    return Ok(());
                }
                if let Some(previous_email) = self.email.clone() {
                    sink.write(UserEvent::UserErased { previous_email }, self)
                        .await;
                }
            }
            UserCommand::ChangePassword => {
                self.ensure_active()?;
                sink.write(UserEvent::UserPasswordChanged {}, self).await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            UserEvent::UserRegistered {
                user_id,
                email,
                name,
            } => {
                self.id = Some(user_id);
                self.email = Some(email);
                self.name = Some(name);
                self.status = UserStatus::Active;
            }
            UserEvent::UserNameChanged { name } => self.name = Some(name),
            UserEvent::UserEmailChanged { email, .. } => self.email = Some(email),
            UserEvent::UserDeactivated {} => self.status = UserStatus::Deactivated,
            UserEvent::UserPasswordChanged {} => {}
            UserEvent::UserErased { .. } => {
                self.email = None;
                self.name = None;
                self.status = UserStatus::Erased;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;
    use cqrs_es::DomainEvent;

    use super::*;
    use crate::refusal::{Refusal, RefusalKind};

    type UserTest = TestFramework<User>;

    fn user_id() -> Uuid {
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001)
    }

    fn email(s: &str) -> EmailAddress {
        EmailAddress::parse(s).unwrap()
    }

    fn name(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    fn registered() -> UserEvent {
        UserEvent::UserRegistered {
            user_id: user_id(),
            email: email("ada@example.com"),
            name: name("Ada Lovelace"),
        }
    }

    fn register() -> UserCommand {
        UserCommand::Register {
            user_id: user_id(),
            email: email("ada@example.com"),
            name: name("Ada Lovelace"),
        }
    }

    #[test]
    fn register_creates_the_user() {
        UserTest::with(())
            .given_no_previous_events()
            .when(register())
            .then_expect_events(vec![registered()]);
    }

    #[test]
    fn register_twice_is_refused() {
        UserTest::with(())
            .given(vec![registered()])
            .when(register())
            .then_expect_error(UserError::AlreadyExists);
    }

    #[test]
    fn update_profile_changes_name_and_email() {
        UserTest::with(())
            .given(vec![registered()])
            .when(UserCommand::UpdateProfile {
                name: Some(name("Ada King")),
                email: Some(email("ada@king.example")),
            })
            .then_expect_events(vec![
                UserEvent::UserNameChanged {
                    name: name("Ada King"),
                },
                UserEvent::UserEmailChanged {
                    previous_email: email("ada@example.com"),
                    email: email("ada@king.example"),
                },
            ]);
    }

    #[test]
    fn update_profile_emits_only_what_differs() {
        UserTest::with(())
            .given(vec![registered()])
            .when(UserCommand::UpdateProfile {
                name: Some(name("Ada Lovelace")),
                email: Some(email("ada@new.example")),
            })
            .then_expect_events(vec![UserEvent::UserEmailChanged {
                previous_email: email("ada@example.com"),
                email: email("ada@new.example"),
            }]);
        UserTest::with(())
            .given(vec![registered()])
            .when(UserCommand::UpdateProfile {
                name: Some(name("Countess")),
                email: None,
            })
            .then_expect_events(vec![UserEvent::UserNameChanged {
                name: name("Countess"),
            }]);
    }

    #[test]
    fn update_profile_compares_email_exactly() {
        UserTest::with(())
            .given(vec![registered()])
            .when(UserCommand::UpdateProfile {
                name: None,
                email: Some(email("Ada@Example.com")),
            })
            .then_expect_events(vec![UserEvent::UserEmailChanged {
                previous_email: email("ada@example.com"),
                email: email("Ada@Example.com"),
            }]);
    }

    #[test]
    fn update_profile_without_changes_emits_nothing() {
        UserTest::with(())
            .given(vec![registered()])
            .when(UserCommand::UpdateProfile {
                name: Some(name("Ada Lovelace")),
                email: Some(email("ada@example.com")),
            })
            .then_expect_events(vec![]);
        UserTest::with(())
            .given(vec![registered()])
            .when(UserCommand::UpdateProfile {
                name: None,
                email: None,
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn update_profile_of_unknown_user_is_not_found() {
        UserTest::with(())
            .given_no_previous_events()
            .when(UserCommand::UpdateProfile {
                name: Some(name("Ada")),
                email: None,
            })
            .then_expect_error(UserError::NotFound);
    }

    #[test]
    fn update_profile_of_deactivated_user_is_refused() {
        UserTest::with(())
            .given(vec![registered(), UserEvent::UserDeactivated {}])
            .when(UserCommand::UpdateProfile {
                name: Some(name("Ada")),
                email: None,
            })
            .then_expect_error(UserError::Deactivated);
    }

    #[test]
    fn deactivate_deactivates() {
        UserTest::with(())
            .given(vec![registered()])
            .when(UserCommand::Deactivate)
            .then_expect_events(vec![UserEvent::UserDeactivated {}]);
    }

    #[test]
    fn deactivate_unknown_user_is_not_found() {
        UserTest::with(())
            .given_no_previous_events()
            .when(UserCommand::Deactivate)
            .then_expect_error(UserError::NotFound);
    }

    #[test]
    fn deactivate_twice_is_refused() {
        UserTest::with(())
            .given(vec![registered(), UserEvent::UserDeactivated {}])
            .when(UserCommand::Deactivate)
            .then_expect_error(UserError::Deactivated);
    }

    #[test]
    fn changing_the_password_records_only_that_it_changed() {
        UserTest::with(())
            .given(vec![registered()])
            .when(UserCommand::ChangePassword)
            .then_expect_events(vec![UserEvent::UserPasswordChanged {}]);
        assert_eq!(
            serde_json::to_string(&UserEvent::UserPasswordChanged {}).unwrap(),
            r#"{"UserPasswordChanged":{}}"#
        );
    }

    #[test]
    fn the_password_of_an_unknown_or_deactivated_user_cannot_change() {
        UserTest::with(())
            .given_no_previous_events()
            .when(UserCommand::ChangePassword)
            .then_expect_error(UserError::NotFound);
        UserTest::with(())
            .given(vec![registered(), UserEvent::UserDeactivated {}])
            .when(UserCommand::ChangePassword)
            .then_expect_error(UserError::Deactivated);
    }

    #[test]
    fn register_on_deactivated_user_is_still_already_exists() {
        UserTest::with(())
            .given(vec![registered(), UserEvent::UserDeactivated {}])
            .when(register())
            .then_expect_error(UserError::AlreadyExists);
    }

    #[test]
    fn apply_builds_state() {
        let mut user = User::default();
        assert!(!user.exists());
        assert!(!user.is_active());
        user.apply(registered());
        user.apply(UserEvent::UserEmailChanged {
            previous_email: email("ada@example.com"),
            email: email("ada@new.example"),
        });
        assert!(user.is_active());
        assert_eq!(user.id(), Some(user_id()));
        assert_eq!(user.email(), Some(&email("ada@new.example")));
        assert_eq!(user.name(), Some(&name("Ada Lovelace")));
        user.apply(UserEvent::UserDeactivated {});
        assert!(user.exists());
        assert!(!user.is_active());
        assert_eq!(user.status(), UserStatus::Deactivated);
    }

    #[test]
    fn events_serialize_externally_tagged_with_type_and_version() {
        let json = serde_json::to_value(registered()).unwrap();
        assert_eq!(
            json["UserRegistered"]["email"],
            serde_json::json!("ada@example.com")
        );
        assert_eq!(
            serde_json::to_string(&UserEvent::UserDeactivated {}).unwrap(),
            r#"{"UserDeactivated":{}}"#
        );
        assert_eq!(registered().event_type(), "UserRegistered");
        assert_eq!(registered().event_version(), crate::PERSONAL_DATA_VERSION);
        assert_eq!(
            serde_json::to_string(&UserStatus::Deactivated).unwrap(),
            r#""deactivated""#
        );
    }

    #[test]
    fn erasure_forgets_the_data_and_is_done_once() {
        UserTest::with(())
            .given(vec![registered()])
            .when(UserCommand::Erase)
            .then_expect_events(vec![UserEvent::UserErased {
                previous_email: email("ada@example.com"),
            }]);
        let erased = vec![
            registered(),
            UserEvent::UserErased {
                previous_email: email("ada@example.com"),
            },
        ];
        UserTest::with(())
            .given(erased.clone())
            .when(UserCommand::Erase)
            .then_expect_events(vec![]);
        UserTest::with(())
            .given(erased)
            .when(UserCommand::Deactivate)
            .then_expect_error(UserError::NotFound);
        UserTest::with(())
            .given_no_previous_events()
            .when(UserCommand::Erase)
            .then_expect_error(UserError::NotFound);
        let mut user = User::default();
        user.apply(registered());
        user.apply(UserEvent::UserErased {
            previous_email: email("ada@example.com"),
        });
        assert_eq!((user.email(), user.name()), (None, None));
        assert_eq!(user.status(), UserStatus::Erased);
    }

    #[test]
    fn nfc_and_nfd_emails_are_one() {
        let nfc = email("jos\u{e9}@example.com");
        let nfd = email("jose\u{301}@Example.com");
        assert_ne!(nfc.as_str(), nfd.as_str());
        assert_eq!(nfc.normalized(), nfd.normalized());
    }

    #[test]
    fn error_rules() {
        assert_eq!(UserError::AlreadyExists.kind(), RefusalKind::AlreadyExists);
        assert_eq!(UserError::NotFound.kind(), RefusalKind::NotFound);
        assert_eq!(UserError::Deactivated.kind(), RefusalKind::UserDeactivated);
    }
}
