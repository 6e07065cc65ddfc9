//! `deploy check`: the repository's own config passes; broken configs exit 2
//! naming file, line and column with the text underlined; secrets never print.

use crate::harness::{open_tempdir, repo_root, Test};

#[test]
fn the_bundled_config_is_valid() {
    let run = Test::new().arg("check").current_dir(&repo_root()).run();
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stdout.contains("deploy.toml is valid"), "{}", run.stdout);
}

const BASE: &str =
    "[app]\nname = \"shop\"\n\n[environments.prod]\nhosts = [\"web1.example.com\"]\npath = \"/srv/shop\"\n";

/// Runs `deploy check` on `text` saved as deploy.toml; returns stderr after
/// asserting exit 2 and a `deploy.toml:LINE:COL` pointer with an underline.
fn broken(text: &str) -> String {
    let dir = open_tempdir();
    std::fs::write(dir.path().join("deploy.toml"), text).unwrap();
    let run = Test::new().arg("check").current_dir(dir.path()).run();
    assert_eq!(run.code, 2, "expected exit 2 (configuration error):\n{}", run.all());
    let pointer = regex::Regex::new(r"--> deploy\.toml:\d+:\d+").unwrap();
    assert!(pointer.is_match(&run.stderr), "no file:line:column in:\n{}", run.stderr);
    assert!(run.stderr.contains('^'), "nothing underlined in:\n{}", run.stderr);
    assert!(run.stdout.is_empty(), "stdout should be empty: {}", run.stdout);
    run.stderr
}

#[test]
fn syntax_error() {
    insta::assert_snapshot!(broken("[app]\nname = \"shop\n"));
}

#[test]
fn wrong_type() {
    insta::assert_snapshot!(broken(
        &BASE.replace("name = \"shop\"", "name = \"shop\"\nkeep_releases = \"five\"")
    ));
}

#[test]
fn unknown_key() {
    insta::assert_snapshot!(broken(&format!("{BASE}paralel = 2\n")));
}

#[test]
fn unknown_key_in_a_host_table() {
    insta::assert_snapshot!(broken(&BASE.replace(
        "hosts = [\"web1.example.com\"]",
        "hosts = [{ address = \"10.0.0.1\", prot = 2222 }]"
    )));
}

#[test]
fn bad_duration() {
    insta::assert_snapshot!(broken(&format!("{BASE}\n[verify]\ntimeout = \"10 parsecs\"\n")));
}

#[test]
fn missing_variable() {
    std::env::remove_var("DEPLOY_TEST_SURELY_UNSET");
    insta::assert_snapshot!(broken(&format!(
        "{BASE}\n[[verify.checks]]\nname = \"redis\"\ntype = \"redis\"\naddress = \"127.0.0.1:6379\"\npassword = \"${{DEPLOY_TEST_SURELY_UNSET}}\"\n"
    )));
}

#[test]
fn regex_that_does_not_compile() {
    insta::assert_snapshot!(broken(&format!(
        "{BASE}\n[[verify.checks]]\nname = \"no errors\"\ntype = \"logs\"\nabsent = \"(?i)connection (refused\"\n"
    )));
}

#[test]
fn check_missing_its_required_field() {
    insta::assert_snapshot!(broken(&format!(
        "{BASE}\n[[verify.checks]]\nname = \"api health\"\ntype = \"http\"\nexpect_status = [200]\n"
    )));
}

#[test]
fn field_that_does_not_apply_to_the_check_type() {
    insta::assert_snapshot!(broken(&format!(
        "{BASE}\n[[verify.checks]]\nname = \"up\"\ntype = \"compose_ps\"\nurl = \"http://127.0.0.1/\"\n"
    )));
}

#[test]
fn environment_without_hosts() {
    insta::assert_snapshot!(broken(
        "[app]\nname = \"shop\"\n\n[environments.prod]\npath = \"/srv/shop\"\n"
    ));
}

#[test]
fn environment_named_like_a_subcommand() {
    insta::assert_snapshot!(broken(&BASE.replace("[environments.prod]", "[environments.status]")));
}

#[test]
fn host_key_checking_cannot_be_turned_off() {
    insta::assert_snapshot!(broken(&format!("{BASE}\n[ssh]\nhost_key_policy = \"off\"\n")));
}

#[test]
fn app_name_that_is_not_a_compose_project_name() {
    insta::assert_snapshot!(broken(&BASE.replace("name = \"shop\"", "name = \"My Shop\"")));
}

#[test]
fn unknown_check_type() {
    insta::assert_snapshot!(broken(&format!(
        "{BASE}\n[[verify.checks]]\nname = \"ping\"\ntype = \"icmp\"\n"
    )));
}

#[test]
fn missing_config_file_is_a_configuration_error() {
    let dir = open_tempdir();
    let run = Test::new().arg("check").current_dir(dir.path()).run();
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("cannot read deploy.toml"), "{}", run.stderr);
}

#[test]
fn secrets_from_the_environment_and_env_file_never_print() {
    let dir = open_tempdir();
    std::fs::write(dir.path().join(".env.deploy"), "FILE_SECRET=from-the-file-7d1e\n").unwrap();
    std::fs::write(
        dir.path().join("deploy.toml"),
        format!(
            "env_file = \".env.deploy\"\n{}\nvars = {{ API_TOKEN = \"${{DEPLOY_TEST_TOKEN}}\", OTHER = \"x-${{FILE_SECRET}}\" }}\n\n\
             [[verify.checks]]\nname = \"redis\"\ntype = \"redis\"\naddress = \"127.0.0.1:6379\"\npassword = \"${{DEPLOY_TEST_REDIS_PASSWORD}}\"\n\n\
             [[verify.checks]]\nname = \"api\"\ntype = \"http\"\nurl = \"http://u:${{DEPLOY_TEST_REDIS_PASSWORD}}@127.0.0.1:8000/health\"\n\
             headers = {{ Authorization = \"Bearer ${{DEPLOY_TEST_TOKEN}}\" }}\n",
            BASE.trim_end()
        ),
    )
    .unwrap();
    let secrets = ["s3cret-token-91f2", "hunter2-redis-55a0", "from-the-file-7d1e"];
    for output in ["human", "json"] {
        let run = Test::new()
            .args(["check", "-vv", "--output", output])
            .env("DEPLOY_TEST_TOKEN", secrets[0])
            .env("DEPLOY_TEST_REDIS_PASSWORD", secrets[1])
            .current_dir(dir.path())
            .run();
        assert_eq!(run.code, 0, "{}", run.all());
        for secret in secrets {
            assert!(
                !run.all().contains(secret),
                "secret {secret} printed with --output {output}:\n{}",
                run.all()
            );
        }
        if output == "human" {
            // The values are shown, redacted: proof the verbose listing covers them.
            assert!(run.stderr.contains("API_TOKEN=[redacted]"), "{}", run.stderr);
            assert!(run.stderr.contains("with AUTH [redacted]"), "{}", run.stderr);
        } else {
            let last: serde_json::Value = serde_json::from_str(run.stdout.lines().last().unwrap()).unwrap();
            assert_eq!(last["result"], "ok");
        }
    }
}

#[test]
fn help_documents_the_exit_codes() {
    let run = Test::new().arg("--help").run();
    assert_eq!(run.code, 0);
    for line in [
        "0    success",
        "2    usage or configuration error",
        "5    another deploy holds the lock",
        "130  interrupted",
    ] {
        assert!(run.stdout.contains(line), "missing `{line}` in --help:\n{}", run.stdout);
    }
    let run = Test::new().args(["rollback", "--help"]).run();
    assert_eq!(run.code, 0);
    for line in [
        "0    every host runs the target release and it passed its checks",
        "3    the target failed its checks; every host was put back",
        "4    putting a host back failed too",
    ] {
        assert!(
            run.stdout.contains(line),
            "missing `{line}` in rollback --help:\n{}",
            run.stdout
        );
    }
}

#[test]
fn values_that_would_reach_a_shell_or_git_as_options_are_refused() {
    let variants = [
        (
            format!("{BASE}\n[source]\nfetch_url = \"--upload-pack=touch /tmp/pwned;\"\n"),
            "cannot start with `-`",
        ),
        (
            BASE.replace(
                "name = \"shop\"",
                "name = \"shop\"\nshared_files = [\"../../etc/passwd\"]",
            ),
            "without `..`",
        ),
        (
            BASE.replace("name = \"shop\"", "name = \"shop\"\nshared_files = [\"/etc/passwd\"]"),
            "relative",
        ),
        (
            format!("{BASE}vars = {{ \"api-port\" = \"1\" }}\n"),
            "not a variable name",
        ),
        (format!("{BASE}vars = {{ \"1X\" = \"1\" }}\n"), "not a variable name"),
    ];
    for (text, expected) in variants {
        let stderr = broken(&text);
        assert!(stderr.contains(expected), "expected `{expected}` in:\n{stderr}");
    }
}
