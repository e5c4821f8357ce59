//! The `lqo` binary as a user runs it: help, config checking with exit code 2, secrets hidden.

use std::process::Command;

fn lqo() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lqo"));
    for var in [
        "LLM_API_KEY",
        "DATABASE_URL",
        "OPENAI_MODEL_MAIN",
        "LLM_API_BASE_URL",
        "LQO_CONFIG",
        "PORT",
    ] {
        c.env_remove(var);
    }
    c
}

#[test]
fn help_lists_the_commands() {
    let out = lqo().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "serve",
        "migrate",
        "check-config",
        "keys",
        "mock-upstream",
        "--port",
    ] {
        assert!(text.contains(cmd), "{cmd} missing from --help:\n{text}");
    }
}

#[test]
fn invalid_config_prints_one_line_per_problem_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "providers:\n  up: { kind: openai_chat, base_url: nope }\nmodels:\n  m: { provider: missing }\ndefault_model: zzz\n",
    )
    .unwrap();
    let out = lqo().arg("check-config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "providers.up.base_url",
        "models.m.provider",
        "default_model \"zzz\"",
    ] {
        assert!(err.contains(needle), "{needle} missing:\n{err}");
    }
}

#[test]
fn unknown_config_keys_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.yaml");
    std::fs::write(&path, "sever:\n  port: 1\n").unwrap();
    let out = lqo().arg("check-config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `sever`"));
}

#[test]
fn check_config_never_prints_the_api_key() {
    let out = lqo()
        .arg("check-config")
        .env("LLM_API_KEY", "sk-very-secret-key-42")
        .env("DATABASE_URL", "postgres://app:db-password-7@db:5432/lqo")
        .current_dir(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("sk-very-secret-key-42"), "{all}");
    assert!(!all.contains("db-password-7"), "{all}");
    assert!(all.contains("set (hidden)"), "{all}");
}

#[test]
fn example_config_checks_clean() {
    let out = lqo()
        .arg("check-config")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/lqo.example.yaml"))
        .env("LLM_API_KEY", "k")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Finding 9: `lqo check-config` printed a password given as `?password=` in DATABASE_URL, and
/// a start-up error printed `?pass%77ord=…` unmasked. One redaction everywhere: check-config,
/// and the errors of commands that cannot reach the database.
#[test]
fn database_url_secrets_never_show_in_query_parameters_either() {
    let dir = tempfile::tempdir().unwrap();
    let nothing = crate::common::nothing_listening_url("postgres");
    for (args, url) in [
        (
            vec!["check-config"],
            "postgres://app@db:5432/lqo?sslmode=require&password=hunter22-a".to_string(),
        ),
        (
            vec!["migrate"],
            format!("{nothing}/lqo?pass%77ord=hunter22-b&application_name=lqo"),
        ),
        (
            vec!["keys", "list"],
            format!("{nothing}/lqo?password=hunter22-c"),
        ),
    ] {
        let out = lqo()
            .args(&args)
            .env("DATABASE_URL", &url)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains("hunter22"), "{args:?}: {all}");
        assert!(all.contains("=***"), "{args:?}: {all}");
    }
}
