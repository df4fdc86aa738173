//! Start-up refuses a configuration it cannot honour, naming the variable.

use std::process::Command;

fn agora(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_agora"));
    command
        .args(args)
        .env_remove("AGORA_JWT_SECRET")
        .env_remove("AGORA_AUTH");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("run agora")
}

#[test]
fn serve_refuses_to_start_without_a_jwt_secret_unless_auth_is_off() {
    let output = agora(&["serve"], &[("AGORA_HTTP_ADDR", "127.0.0.1:0")]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("AGORA_JWT_SECRET"), "{stderr}");
}

#[test]
fn a_wrong_value_stops_start_up_naming_the_variable() {
    let output = agora(
        &["serve"],
        &[("AGORA_AUTH", "off"), ("AGORA_CONSISTENCY_WAIT_MS", "soon")],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("AGORA_CONSISTENCY_WAIT_MS"), "{stderr}");
}

#[test]
fn every_command_explains_itself() {
    for command in [
        vec!["--help"],
        vec!["migrate", "--help"],
        vec!["serve", "--help"],
        vec!["projections", "--help"],
        vec!["token", "--help"],
        vec!["gateway", "--help"],
    ] {
        let output = agora(&command, &[]);
        assert!(output.status.success(), "{command:?}");
        assert!(!output.stdout.is_empty(), "{command:?}");
    }
}

#[test]
fn token_prints_a_token_the_server_accepts_for_that_subject_and_role() {
    let user = uuid::Uuid::now_v7();
    let output = agora(
        &[
            "token",
            "--sub",
            &user.to_string(),
            "--role",
            "customer",
            "--ttl",
            "5m",
        ],
        &[("AGORA_JWT_SECRET", "s3cret")],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let caller = api::auth::JwtSecret::new(b"s3cret")
        .verify(&token)
        .expect("a valid token");
    assert_eq!(
        caller,
        api::auth::Verified::Customer {
            user_id: user,
            sign_in: None
        }
    );
    assert!(api::auth::JwtSecret::new(b"other").verify(&token).is_err());

    let output = agora(&["token", "--sub", "ops", "--role", "admin"], &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("AGORA_JWT_SECRET"), "{stderr}");

    for args in [
        vec!["token", "--sub", "ops", "--role", "root"],
        vec!["token", "--sub", "not-a-user-id", "--role", "customer"],
        vec![
            "token", "--sub", "ops", "--role", "admin", "--ttl", "forever",
        ],
    ] {
        let output = agora(&args, &[("AGORA_JWT_SECRET", "s3cret")]);
        assert!(!output.status.success(), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
    }
}
