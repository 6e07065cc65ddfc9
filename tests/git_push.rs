//! git2 against real remotes: by path and over SSH to a test sshd, with host keys
//! checked against known_hosts and rejected refs named.

use std::path::Path;

use deploy::config::HostKeyPolicy;
use deploy::git::{GitError, PushAuth, Repo};
use deploy::known_hosts::KnownHosts;

use crate::harness::app::{AppRepo, BareRemote, Behaviour};
use crate::harness::sshd::{client_key, SshHost};
use crate::harness::{git, open_tempdir};

fn auth(known_hosts: &Path, policy: HostKeyPolicy) -> PushAuth {
    PushAuth {
        known_hosts: KnownHosts::new(Some(known_hosts), policy),
        identity_file: Some(client_key().to_path_buf()),
    }
}

fn remote_head(bare: &BareRemote) -> String {
    git(&bare.path(), &["rev-parse", "refs/heads/main"]).trim().to_string()
}

#[test]
fn pushes_by_path_and_names_the_ref_a_non_fast_forward_rejects() {
    let app = AppRepo::new(&Behaviour::version("A"));
    let bare = BareRemote::new();
    git(app.path(), &["remote", "add", "origin", bare.path().to_str().unwrap()]);
    let repo = Repo::discover(app.path()).unwrap();
    let tmp = open_tempdir();
    let auth = auth(&tmp.path().join("known_hosts"), HostKeyPolicy::Strict);

    repo.push("origin", "main", &auth).unwrap();
    let b = app.commit(&Behaviour::version("B"));
    repo.push("origin", "main", &auth).unwrap();
    assert_eq!(remote_head(&bare), b);

    // Rewrite history under the remote's feet: the push must be refused, naming the ref.
    git(app.path(), &["reset", "-q", "--hard", "HEAD~1"]);
    app.commit(&Behaviour::version("C"));
    let err = repo.push("origin", "main", &auth).unwrap_err();
    assert!(matches!(err, GitError::Rejected { .. }), "{err}");
    assert!(err.to_string().contains("refs/heads/main"), "{err}");
    assert_eq!(remote_head(&bare), b, "the remote keeps its branch");
}

#[test]
fn pushes_over_ssh_with_a_known_host_key() {
    let host = SshHost::start();
    let app = AppRepo::new(&Behaviour::version("A"));
    let bare = BareRemote::for_ssh();
    git(app.path(), &["remote", "add", "origin", &bare.ssh_url(host.port)]);
    let tmp = open_tempdir();
    let known = host.known_hosts_file(tmp.path());
    let repo = Repo::discover(app.path()).unwrap();
    repo.push("origin", "main", &auth(&known, HostKeyPolicy::Strict))
        .unwrap();
    assert_eq!(remote_head(&bare), git(app.path(), &["rev-parse", "HEAD"]).trim());
}

#[test]
fn an_ssh_push_to_an_unknown_host_is_refused_under_strict() {
    let host = SshHost::start();
    let app = AppRepo::new(&Behaviour::version("A"));
    let bare = BareRemote::for_ssh();
    git(app.path(), &["remote", "add", "origin", &bare.ssh_url(host.port)]);
    let tmp = open_tempdir();
    let known = tmp.path().join("known_hosts");
    std::fs::write(&known, "").unwrap();
    let repo = Repo::discover(app.path()).unwrap();
    let err = repo
        .push("origin", "main", &auth(&known, HostKeyPolicy::Strict))
        .unwrap_err();
    assert!(matches!(err, GitError::HostKey { .. }), "{err}");
    assert!(err.to_string().contains("strict"), "{err}");
    assert!(
        git(&bare.path(), &["branch", "--list"]).trim().is_empty(),
        "nothing was pushed"
    );

    // accept-new records it and pushes; a changed key is then refused.
    let mut host = host;
    repo.push("origin", "main", &auth(&known, HostKeyPolicy::AcceptNew))
        .unwrap();
    assert!(
        crate::harness::knows_host(&known, host.port),
        "the new host key was not recorded"
    );
    host.change_host_key();
    let err = repo
        .push("origin", "main", &auth(&known, HostKeyPolicy::AcceptNew))
        .unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
}

#[test]
fn resolves_revisions_refuses_a_dirty_tree_and_packs_a_commit() {
    let app = AppRepo::new(&Behaviour::version("A"));
    let repo = Repo::discover(app.path()).unwrap();
    let head = repo.resolve("HEAD").unwrap();
    assert_eq!(head.id, git(app.path(), &["rev-parse", "HEAD"]).trim());
    assert_eq!(head.summary, "release A");
    assert!(matches!(repo.resolve("no-such-branch"), Err(GitError::Resolve { .. })));

    repo.require_clean().unwrap();
    std::fs::write(app.path().join("api/www/version"), "dirty\n").unwrap();
    std::fs::write(app.path().join("untracked.txt"), "ignored\n").unwrap();
    let err = repo.require_clean().unwrap_err();
    assert!(err.to_string().contains("api/www/version"), "{err}");
    assert!(!err.to_string().contains("untracked.txt"), "{err}");

    // The archive holds the commit, not the dirty working tree.
    let tar = repo.archive(&head).unwrap();
    let mut archive = tar::Archive::new(tar.as_slice());
    let mut seen = std::collections::BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        let mode = entry.header().mode().unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut entry, &mut text).unwrap_or_default();
        seen.insert(path, (mode, text));
    }
    assert_eq!(seen["api/www/version"].1, "A\n");
    assert_eq!(seen["api/www/cgi-bin/health"].0, 0o755);
    assert!(seen.contains_key("docker-compose.yml"));
    assert!(!seen.contains_key("untracked.txt"));
}
