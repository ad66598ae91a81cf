//! `intake` processes with TLS and tokens: the CLI speaks TLS with `--ca`
//! and sends `--token`/`INTAKE_TOKEN`; a plaintext CLI against a TLS node
//! fails and says why; SIGHUP makes the node read replaced certificates
//! (whose files look unchanged, so the file watch cannot be what found them).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the answer

#[path = "../../intake-server/tests/common/pki.rs"]
mod pki;

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use pki::Ca;

const BIN: &str = env!("CARGO_BIN_EXE_intake");

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn intake(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("INTAKE_TOKEN")
        .env_remove("INTAKE_CA")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn hash(token: &str) -> String {
    let mut child = Command::new(BIN)
        .args(["auth", "hash-token"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(token.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn hash_token_prints_the_sha256_of_stdin() {
    assert_eq!(
        hash("test"),
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    );
    let out = Command::new(BIN)
        .args(["auth", "hash-token"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "an empty token is an error");
}

/// Sets a file's modification time back to `t`.
fn set_mtime(path: &std::path::Path, t: std::time::SystemTime) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_times(std::fs::FileTimes::new().set_modified(t)).unwrap();
}

#[test]
fn cli_speaks_tls_with_tokens_and_sighup_reloads_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (Ca::new("old CA"), Ca::new("new CA"));
    let old_ca_path = old_ca.write(&dir.path().join("old-ca.crt"));
    let new_ca_path = new_ca.write(&dir.path().join("new-ca.crt"));
    let served = old_ca.leaf(dir.path(), "server");
    let auth = dir.path().join("auth.toml");
    std::fs::write(
        &auth,
        format!(
            "[[token]]\nname = \"app\"\nsha256 = \"{}\"\nrole = \"adapter\"\nchannels = [\"phone\", \"app\", \"web\"]\n\n\
             [[token]]\nname = \"ops\"\nsha256 = \"{}\"\nrole = \"ops\"\n",
            hash("adapter-secret"),
            hash("ops-secret")
        ),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let log_path = dir.path().join("node.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let node = Proc(
        Command::new(BIN)
            .args(["start", "--node-id", "1", "--listen", &addr])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--tls-cert")
            .arg(&served.cert)
            .arg("--tls-key")
            .arg(&served.key)
            .arg("--auth")
            .arg(&auth)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let old_ca_arg = old_ca_path.to_str().unwrap();
    let new_ca_arg = new_ca_path.to_str().unwrap();
    let status = |ca: &str| {
        intake(
            &["status", "--endpoint", &addr, "--ca", ca, "--json"],
            &[("INTAKE_TOKEN", "ops-secret")],
        )
    };
    let end = Instant::now() + Duration::from_secs(60);
    while !status(old_ca_arg).status.success() {
        assert!(
            Instant::now() < end,
            "node not up over TLS: {}\n{}",
            text(&status(old_ca_arg)),
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let first = std::fs::read_to_string(&log_path).unwrap_or_default();
    let first = first.lines().next().unwrap_or_default().to_string();
    assert!(first.contains("authentication on"), "first log line: {first}");

    let submit = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec![
            "submit",
            "--endpoint",
            &addr,
            "--district",
            "110105",
            "--category",
            "noise",
            "--channel",
            "app",
            "--text",
            "drilling",
        ];
        args.extend_from_slice(extra);
        intake(&args, env)
    };
    // A ticket within the deadline the node may need for its first election.
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let out = submit(&["--ca", old_ca_arg], &[("INTAKE_TOKEN", "adapter-secret")]);
        if out.status.success() {
            assert!(!String::from_utf8_lossy(&out.stdout).trim().is_empty());
            break;
        }
        assert!(Instant::now() < end, "{}", text(&out));
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = submit(&[], &[("INTAKE_TOKEN", "adapter-secret")]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--ca"),
        "a plaintext CLI against a TLS node says to give --ca: {}",
        text(&out)
    );
    let out = submit(&["--ca", old_ca_arg], &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthenticated"),
        "{}",
        text(&out)
    );
    let out = submit(&["--ca", old_ca_arg, "--token", "ops-secret"], &[]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("PermissionDenied"),
        "{}",
        text(&out)
    );

    // `intake load` speaks TLS with a token too.
    let out = intake(
        &[
            "load",
            "--endpoints",
            &addr,
            "--ca",
            old_ca_arg,
            "--token",
            "adapter-secret",
            "--rate",
            "20",
            "--duration",
            "2",
        ],
        &[],
    );
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(out.status.success(), "{}", text(&out));
    assert!(last.contains("lost=0") && !last.contains("acked=0 "), "{last}");

    // New certificate from another CA, same file sizes, old mtimes: only a
    // SIGHUP can make the node notice.
    let before = std::fs::metadata(&served.cert).unwrap().modified().unwrap();
    let (cert, key) = new_ca.leaf_pem("server");
    pki::write_padded(&served.key, &key);
    pki::write_padded(&served.cert, &cert);
    set_mtime(&served.cert, before);
    set_mtime(&served.key, before);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(status(old_ca_arg).status.success(), "reloaded before any SIGHUP");
    let pid = node.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let end = Instant::now() + Duration::from_secs(15);
    while !status(new_ca_arg).status.success() {
        assert!(
            Instant::now() < end,
            "SIGHUP did not bring the new certificate: {}\n{}",
            text(&status(new_ca_arg)),
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !status(old_ca_arg).status.success(),
        "new connections still see the old certificate"
    );
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(log.contains("TLS certificates reloaded"), "{log}");
    for secret in ["adapter-secret", "ops-secret"] {
        assert!(!log.contains(secret), "a token reached the log");
    }
    drop(node);
}
