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
        vec!["gateway", "--help"],
    ] {
        let output = agora(&command, &[]);
        assert!(output.status.success(), "{command:?}");
        assert!(!output.stdout.is_empty(), "{command:?}");
    }
}
