//! `deploy init` writes a deploy.toml that `deploy check` accepts, filled from the compose file.

use crate::harness::{app::compose, open_tempdir, Test};

#[test]
fn init_fills_in_the_compose_services_and_check_accepts_it() {
    let dir = open_tempdir();
    std::fs::write(dir.path().join("docker-compose.yml"), compose()).unwrap();
    let run = Test::new().arg("init").current_dir(dir.path()).run();
    assert_eq!(run.code, 0, "{}", run.all());
    let written = std::fs::read_to_string(dir.path().join("deploy.toml")).unwrap();
    assert!(written.contains("build = [\"api\", \"worker\"]"), "{written}");
    assert!(
        written.contains("services = [\"api\", \"worker\", \"redis\"]"),
        "{written}"
    );
    assert!(
        written.contains("compose_files = [\"docker-compose.yml\"]"),
        "{written}"
    );

    let check = Test::new().arg("check").current_dir(dir.path()).run();
    assert_eq!(check.code, 0, "{}", check.all());

    // A second init does not overwrite the first.
    let again = Test::new().arg("init").current_dir(dir.path()).run();
    assert_eq!(again.code, 2, "{}", again.all());
    assert!(again.stderr.contains("--force"), "{}", again.stderr);
}

#[test]
fn init_without_a_compose_file_says_what_it_looked_for() {
    let dir = open_tempdir();
    let run = Test::new().arg("init").current_dir(dir.path()).run();
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("docker-compose.yml"), "{}", run.stderr);
    assert!(!dir.path().join("deploy.toml").exists());
}

#[test]
fn init_reads_one_shots_healthchecks_and_profiles() {
    let dir = open_tempdir();
    std::fs::write(
        dir.path().join("compose.yaml"),
        r#"services:
  migrate:
    build: .
    restart: "no"
  api:
    build: .
    depends_on:
      migrate:
        condition: service_completed_successfully
      redis:
        condition: service_healthy
  redis:
    image: redis:7
    healthcheck:
      test: ["CMD", "redis-cli", "ping"]
  web:
    image: nginx:1.27
    healthcheck:
      test: "wget -q -O /dev/null http://127.0.0.1/ || exit 1"
  debug:
    build: ./debug
    profiles: ["debug"]
"#,
    )
    .unwrap();
    let run = Test::new().arg("init").current_dir(dir.path()).run();
    assert_eq!(run.code, 0, "{}", run.all());
    let written = std::fs::read_to_string(dir.path().join("deploy.toml")).unwrap();
    assert!(written.contains("Found without listing: migrate"), "{written}");
    assert!(written.contains("the compose file has debug"), "{written}");
    assert!(
        written.contains("build = [\"migrate\", \"api\"]"),
        "a service behind a profile is not built by default: {written}"
    );
    assert!(
        written.contains(
            "name = \"redis healthcheck\"\ntype = \"exec\"\nservice = \"redis\"\ncommand = [\"redis-cli\", \"ping\"]"
        ),
        "{written}"
    );
    assert!(
        written.contains("command = [\"sh\", \"-c\", \"wget -q -O /dev/null http://127.0.0.1/ || exit 1\"]"),
        "{written}"
    );
    let check = Test::new().arg("check").current_dir(dir.path()).run();
    assert_eq!(check.code, 0, "{}", check.all());
}
