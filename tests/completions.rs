//! `deploy completions` and `deploy man`: the scripts run in real bash, fish
//! and zsh and complete environment names from deploy.toml, host names, and
//! `rollback --to` release ids from a real host; the man page is valid roff
//! that man(1) renders, with every subcommand.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::app::Behaviour;
use crate::harness::deployment::{Deployment, Setup};
use crate::harness::{open_tempdir, sh, Test};

const DEPLOY: &str = env!("CARGO_BIN_EXE_deploy");

const CONFIG: &str = "[app]\nname = \"shop\"\n\n[environments.prod]\nhosts = [\"web1.example.com\", \"web2.example.com\"]\npath = \"/srv/shop\"\n\n[environments.staging-eu]\nhosts = [\"stage.example.com\"]\npath = \"/srv/shop\"\n";

/// What bash's completion of `words` (the last one under the cursor) offers,
/// with the script `deploy completions bash` prints sourced, in `dir`.
fn bash_complete(dir: &Path, words: &[&str]) -> Vec<String> {
    let script = format!(
        "source <({DEPLOY} completions bash) || exit 9\n\
         COMP_WORDS=(\"$@\"); COMP_CWORD=$(( $# - 1 ))\n\
         _clap_complete_deploy deploy \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\""
    );
    let out = sh(Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg("bash")
        .args(words)
        .current_dir(dir));
    out.lines().filter(|l| !l.is_empty()).map(str::to_string).collect()
}

fn has(list: &[String], item: &str) -> bool {
    list.iter().any(|l| l == item)
}

#[test]
fn bash_completes_environments_and_hosts_from_deploy_toml() {
    let dir = open_tempdir();
    std::fs::write(dir.path().join("deploy.toml"), CONFIG).unwrap();
    std::fs::write(
        dir.path().join("other.toml"),
        CONFIG.replace("prod", "canary").replace("staging-eu", "qa"),
    )
    .unwrap();
    // A secret the shell does not have must not cost the completion.
    std::fs::write(
        dir.path().join("secret.toml"),
        format!("{CONFIG}vars = {{ TOKEN = \"${{DEPLOY_TEST_NEVER_SET}}\" }}\n"),
    )
    .unwrap();

    let top = bash_complete(dir.path(), &["deploy", ""]);
    for item in ["up", "doctor", "completions", "man", "prod", "staging-eu"] {
        assert!(has(&top, item), "`deploy <TAB>` offers {item}: {top:?}");
    }
    let verify = bash_complete(dir.path(), &["deploy", "verify", ""]);
    assert!(has(&verify, "prod") && has(&verify, "staging-eu"), "{verify:?}");
    assert!(!has(&verify, "canary"), "{verify:?}");
    assert_eq!(bash_complete(dir.path(), &["deploy", "doctor", "st"]), ["staging-eu"]);
    let other = bash_complete(dir.path(), &["deploy", "--config", "other.toml", "rollback", ""]);
    assert!(
        has(&other, "canary") && has(&other, "qa") && !has(&other, "prod"),
        "{other:?}"
    );
    let secret = bash_complete(dir.path(), &["deploy", "--config", "secret.toml", "status", "p"]);
    assert_eq!(secret, ["prod"]);
    let hosts = bash_complete(dir.path(), &["deploy", "status", "prod", "--hosts", ""]);
    assert_eq!(hosts, ["web1.example.com", "web2.example.com"]);
    let second = bash_complete(
        dir.path(),
        &["deploy", "logs", "prod", "--hosts", "web1.example.com,web2"],
    );
    assert_eq!(second, ["web1.example.com,web2.example.com"]);
}

#[test]
fn fish_and_zsh_complete_environments_and_powershell_gets_a_script() {
    let dir = open_tempdir();
    std::fs::write(dir.path().join("deploy.toml"), CONFIG).unwrap();
    // fish asks deploy through the script, as a person's TAB would.
    let fish = sh(Command::new("fish")
        .arg("-c")
        .arg(format!(
            "{DEPLOY} completions fish | source; complete -C 'deploy verify '"
        ))
        .current_dir(dir.path()));
    assert!(fish.lines().any(|l| l == "prod\tenvironment, 2 hosts"), "{fish}");
    assert!(fish.lines().any(|l| l == "staging-eu\tenvironment, 1 host"), "{fish}");

    // zsh: the script loads into the completion system and registers for `deploy`...
    let script = dir.path().join("_deploy");
    std::fs::write(
        &script,
        sh(Command::new(DEPLOY)
            .args(["completions", "zsh"])
            .current_dir(dir.path())),
    )
    .unwrap();
    sh(Command::new("zsh").arg("-n").arg(&script));
    let registered = sh(Command::new("zsh").arg("-f").arg("-c").arg(format!(
        "autoload -U compinit && compinit -u -D && source {} && print -r -- $_comps[deploy]",
        script.display()
    )));
    assert_eq!(registered.trim(), "_clap_dynamic_completer_deploy");
    // ...and what it asks deploy for (words and index as zsh passes them) answers in zsh's form.
    let asked = sh(Command::new(DEPLOY)
        .env("DEPLOY_COMPLETE", "zsh")
        .env("_CLAP_IFS", "\n")
        .env("_CLAP_COMPLETE_INDEX", "2")
        .args(["--", "deploy", "verify", ""])
        .current_dir(dir.path()));
    assert!(asked.lines().any(|l| l == "prod:environment, 2 hosts"), "{asked}");

    let ps = sh(Command::new(DEPLOY).args(["completions", "powershell"]));
    assert!(
        ps.contains("Register-ArgumentCompleter -Native -CommandName deploy"),
        "{ps}"
    );
    assert!(ps.contains(&format!("& {DEPLOY} -- $args")), "{ps}");
}

/// The words of `deploy rollback test --to <prefix>` as bash would complete them.
fn release_ids(d: &Deployment, prefix: &str) -> Vec<String> {
    bash_complete(d.app.path(), &["deploy", "rollback", "test", "--to", prefix])
}

#[test]
fn rollback_to_completes_the_release_ids_the_host_keeps_and_gives_up_on_a_silent_host() {
    let d = Deployment::new(Setup::default(), &Behaviour::version("one"));
    d.deploy(&[], 0);
    d.app.commit(&Behaviour::version("two"));
    d.deploy(&[], 0);
    let kept = d.releases();
    assert_eq!(kept.len(), 2, "{kept:?}");
    let newest_first: Vec<String> = kept.iter().rev().cloned().collect();
    assert_eq!(release_ids(&d, ""), newest_first);
    let older = &kept[0];
    assert_eq!(release_ids(&d, &older[..older.len() - 1]), vec![older.to_string()]);
    // zsh and fish show each id's commit and how it went.
    let asked = sh(Command::new(DEPLOY)
        .env("DEPLOY_COMPLETE", "zsh")
        .env("_CLAP_IFS", "\n")
        .env("_CLAP_COMPLETE_INDEX", "4")
        .args(["--", "deploy", "rollback", "test", "--to", ""])
        .current_dir(d.app.path()));
    let newest = asked.lines().next().unwrap_or_default();
    assert!(
        newest.starts_with(&format!("{}:commit ", kept[1])) && newest.ends_with(", deployed, live"),
        "{asked}"
    );

    // A host that accepts the connection and never speaks: the completion gives
    // up on it within its own limit, not the config's connect_timeout (10s).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let path = d.app.path().join("deploy.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let re = regex::Regex::new(r"(?m)^port = \d+$").unwrap();
    let text = re
        .replace(&text, format!("port = {port}").as_str())
        .replace("connect_timeout = \"5s\"", "connect_timeout = \"10s\"");
    std::fs::write(&path, text).unwrap();
    let started = Instant::now();
    assert!(release_ids(&d, "").is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn the_man_page_is_valid_roff_and_names_every_subcommand() {
    let dir = open_tempdir();
    let run = Test::new().arg("man").run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let page = dir.path().join("deploy.1");
    std::fs::write(&page, &run.stdout).unwrap();
    // groff with every warning on: valid roff says nothing.
    let groff = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .arg(&page)
        .output()
        .unwrap();
    assert!(
        groff.status.success() && groff.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&groff.stderr)
    );
    let man = |page: &Path| {
        sh(Command::new("man")
            .args(["-P", "cat", "-l"])
            .arg(page)
            .env("MANWIDTH", "120"))
    };
    let shown = man(&page);
    for sub in deploy::cli::SUBCOMMANDS {
        assert!(shown.contains(&format!("deploy-{sub}(1)")), "no {sub} in:\n{shown}");
    }
    assert!(
        shown.contains("EXIT STATUS") && shown.contains("another deploy holds the lock"),
        "{shown}"
    );

    let pages = dir.path().join("man1");
    let run = Test::new()
        .args(["man", "--dir"])
        .arg(pages.display().to_string())
        .run();
    assert_eq!(run.code, 0, "{}", run.all());
    for sub in deploy::cli::SUBCOMMANDS {
        assert!(pages.join(format!("deploy-{sub}.1")).exists(), "no page for {sub}");
    }
    let rollback = man(&pages.join("deploy-rollback.1"));
    let synopsis = regex::Regex::new(r"SYNOPSIS\s+deploy\s+rollback\s").unwrap();
    assert!(
        synopsis.is_match(&rollback) && rollback.contains("--to <RELEASE>"),
        "{rollback}"
    );
}
