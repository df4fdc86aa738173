//! The identity store against a real Postgres: refresh-token rotation under
//! races, and forgetting a user.

use std::time::Duration;

use commands::identity::{Identity, Rotation};
use domain::values::Password;
use testkit::TestDatabase;
use uuid::Uuid;

const TTL: Duration = Duration::from_secs(3600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_racing_refreshes_with_one_token_exactly_one_wins_and_the_sign_in_ends() {
    let db = TestDatabase::with_pool_size(16).await;
    let identity = Identity::new(db.pool.clone(), b"test key");
    for _ in 0..5 {
        let user = Uuid::now_v7();
        let issued = identity.sign_ins.start(user, TTL, TTL).await.unwrap();
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let (identity, token) = (identity.clone(), issued.token.clone());
                tokio::spawn(async move { identity.sign_ins.rotate(&token, TTL).await.unwrap() })
            })
            .collect();
        let mut rotated = Vec::new();
        for racer in racers {
            match racer.await.unwrap() {
                Rotation::Rotated(next) => rotated.push(next),
                Rotation::Reused { sign_in, .. } => assert_eq!(sign_in, issued.sign_in),
                Rotation::Invalid => {}
            }
        }
        assert_eq!(
            rotated.len(),
            1,
            "exactly one exchange of a single-use token"
        );
        // The others were reuses: the sign-in, and so the winner's token, ended.
        assert_eq!(
            identity
                .sign_ins
                .rotate(&rotated[0].token, TTL)
                .await
                .unwrap(),
            Rotation::Invalid
        );
        let access = identity.sign_ins.access(user, TTL).await.unwrap();
        assert_eq!(access.revoked_sign_ins, vec![issued.sign_in]);
        assert!(!access.disabled);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgetting_a_user_deletes_its_password_sign_ins_and_tokens_only() {
    let db = TestDatabase::with_pool_size(4).await;
    let identity = Identity::new(db.pool.clone(), b"test key");
    let (user, other) = (Uuid::now_v7(), Uuid::now_v7());
    let hash = identity
        .passwords
        .hash(&Password::parse("a fine passphrase").unwrap())
        .await
        .unwrap();
    for id in [user, other] {
        identity.set_password_hash(id, &hash).await.unwrap();
        identity.sign_ins.start(id, TTL, TTL).await.unwrap();
    }
    let token = identity.sign_ins.start(user, TTL, TTL).await.unwrap().token;
    assert_eq!(identity.forget_user(user).await.unwrap(), 5);
    assert_eq!(identity.password_hash(user).await.unwrap(), None);
    assert_eq!(
        identity.sign_ins.rotate(&token, TTL).await.unwrap(),
        Rotation::Invalid
    );
    assert_eq!(identity.password_hash(other).await.unwrap(), Some(hash));
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM sign_ins")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, 1);
}
