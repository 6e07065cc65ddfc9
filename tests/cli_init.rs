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
