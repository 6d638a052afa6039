//! The gateway as a process an operator can trust: a port it cannot bind ends it with one line
//! and exit code 1; a stop takes as long as the work in flight, not the whole grace period; a
//! SIGQUIT with no new process to take the sockets leaves it serving; a normal upgrade logs no
//! error; and systemd hears READY, RELOADING, STOPPING, MAINPID and watchdog pings.

mod support;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{client, Gateway};

/// One mock model `chat` streaming eight words at `tokens_per_second`, with a 30 s grace period
/// (so a stop that waits it out is obvious).
fn config(tokens_per_second: u32) -> String {
    format!(
        r#"
server:
  listen: ["{{{{listen}}}}"]
  admin_listen: "{{{{admin}}}}"
  grace_period_s: 30
  upgrade_sock: "{{{{dir}}}}/upgrade.sock"
  pid_file: "{{{{dir}}}}/switchyard.pid"
providers:
  one: {{ kind: mock, reply: "one two three four five six seven eight", tokens_per_second: {tokens_per_second} }}
models:
  chat: {{ targets: [{{ provider: one, model: one-model }}] }}
"#
    )
}

/// Runs `switchyard serve` on `yaml` and waits up to 20 s for it to exit; the exit status (None
/// if it was still running, then killed) and everything it wrote.
fn serve_until_exit(yaml: &str) -> (Option<std::process::ExitStatus>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    let mut child = Command::new(support::binary())
        .args(["serve", "--config"])
        .arg(&path)
        .env("SWITCHYARD_LOG", "info")
        .env("RUST_BACKTRACE", "1")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(25));
    };
    let out = child.wait_with_output().unwrap();
    (
        status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_port_in_use_is_one_line_and_exit_code_1() {
    // Held (and listening) for the whole test; the gateway must not take it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    let free = support::free_port();
    for (listen, admin, busy) in [
        (
            taken_addr.to_string(),
            format!("127.0.0.1:{free}"),
            "client",
        ),
        (format!("127.0.0.1:{free}"), taken_addr.to_string(), "admin"),
    ] {
        let yaml = config(0)
            .replace("{{listen}}", &listen)
            .replace("{{admin}}", &admin)
            .replace("{{dir}}", "/tmp");
        let (status, stdout, stderr) = serve_until_exit(&yaml);
        let status = status.unwrap_or_else(|| {
            panic!(
                "{busy} port taken: still running after 20 s\nstdout:\n{stdout}\nstderr:\n{stderr}"
            )
        });
        assert_eq!(status.code(), Some(1), "{busy}: {stderr}");
        let expected = format!("cannot listen on {taken_addr}: Address already in use");
        let lines: Vec<&str> = stderr.lines().collect();
        assert!(
            lines.len() == 1 && lines[0].starts_with(&expected),
            "{busy}: stderr must be the one line '{expected} ...':\n{stderr}"
        );
        let all = format!("{stdout}{stderr}");
        for word in ["panicked", "backtrace", "serving on"] {
            assert!(!all.contains(word), "{busy}: '{word}' in output:\n{all}");
        }
    }
    drop(taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_an_idle_gateway_exits_at_once() {
    let mut gw = Gateway::start(&config(0)).await;
    // An idle keep-alive connection from the client must not hold the stop up either.
    let http = client();
    support::complete_chat(&http, &gw.url(), true)
        .await
        .unwrap();
    let stopped = Instant::now();
    gw.signal("TERM");
    let status = gw.wait_exit(Duration::from_secs(10)).await;
    let took = stopped.elapsed();
    let status = status.unwrap_or_else(|| panic!("still running 10 s after SIGTERM (grace 30 s)"));
    assert!(status.success(), "exit status {status}\n{}", gw.logs());
    assert!(
        took < Duration::from_secs(3),
        "an idle gateway took {took:?} to stop"
    );
    let logs = gw.logs();
    assert!(
        !logs.contains("grace period ends"),
        "the grace period was waited out:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_waits_for_a_stream_in_flight_and_exits_right_after_it() {
    // Eight words at four a second: about two seconds of stream.
    let mut gw = Gateway::start(&config(4)).await;
    let stream = tokio::spawn({
        let url = gw.url();
        async move {
            let result = support::complete_chat(&client(), &url, true).await;
            (result, Instant::now())
        }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stopped = Instant::now();
    gw.signal("TERM");
    let status = gw.wait_exit(Duration::from_secs(20)).await;
    let exited = Instant::now();
    let (result, finished) = stream.await.unwrap();
    result.expect("the stream in flight at SIGTERM finished, with [DONE]");
    let status = status.unwrap_or_else(|| panic!("still running 20 s after SIGTERM"));
    assert!(status.success(), "exit status {status}\n{}", gw.logs());
    assert!(
        finished > stopped + Duration::from_millis(500),
        "the stream was not in flight at SIGTERM"
    );
    // It exits once the stream ended: not before (the stream completed), and not the grace
    // period (30 s) later. `exited` is when the harness noticed, polling every 25 ms.
    assert!(
        exited < finished + Duration::from_secs(2),
        "exited {:?} after the last stream ended",
        exited.saturating_duration_since(finished)
    );
    assert!(
        gw.logs().contains("\"endpoint\":\"chat\""),
        "access line written before exit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigquit_with_no_new_process_to_take_the_sockets_keeps_serving() {
    let old = Gateway::start(&config(0)).await;
    let http = client();
    // The manual recipe gone wrong: the new process cannot start (here: a bad config) ...
    let bad = old.dir().join("bad.yaml");
    std::fs::write(&bad, "server: { listen: [\"not an address\"] }\n").unwrap();
    let new = Command::new(support::binary())
        .args(["serve", "--upgrade", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!new.status.success());
    // ... and the operator sends SIGQUIT to the old one anyway.
    old.signal("QUIT");
    assert!(
        old.wait_for_log("keeps serving", Duration::from_secs(5))
            .await,
        "{}",
        old.logs()
    );
    // Pingora alone would retry the hand-over for 5 s, wait 5 s more and then stop accepting.
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        support::complete_chat(&http, &old.url(), false)
            .await
            .unwrap_or_else(|e| panic!("the old process stopped serving: {e}\n{}", old.logs()));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // A real hand-over still works afterwards.
    let mut old = old;
    let mut new = old.start_upgrade();
    assert!(
        new.wait_for_log("No incoming socket transfer", Duration::from_secs(10))
            .await,
        "{}",
        new.logs()
    );
    old.signal("QUIT");
    new.wait_ready().await;
    assert!(old.wait_exit(Duration::from_secs(20)).await.is_some());
    support::complete_chat(&http, &new.url(), true)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_place_upgrade_logs_no_error() {
    let mut old = Gateway::start(&config(0)).await;
    let http = client();
    let routes = format!("{}/admin/routes", old.admin_url());
    old.signal("USR2");
    let status = old.wait_exit(Duration::from_secs(20)).await;
    let status = status.unwrap_or_else(|| panic!("no hand-over:\n{}", old.logs()));
    assert!(status.success(), "old process: {status}\n{}", old.logs());
    let after: Value = http
        .get(&routes)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new_pid = after["pid"].as_u64().unwrap();
    assert_ne!(new_pid, u64::from(old.pid()));
    support::complete_chat(&http, &old.url(), true)
        .await
        .unwrap();
    // The new process is the old one's child and writes to the same pipes.
    let logs = old.logs();
    let _ = Command::new("kill")
        .args(["-KILL", &new_pid.to_string()])
        .status();
    let errors: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("\"level\":\"error\""))
        .collect();
    assert!(
        errors.is_empty(),
        "error lines on a normal upgrade: {errors:#?}"
    );
    assert!(logs.contains("listener sockets sent"), "{logs}");
}

/// What systemd would receive on `NOTIFY_SOCKET`, one datagram per entry. A thread reads the
/// socket all the time, as systemd does (a full socket would block the sender).
struct FakeSystemd {
    received: Arc<Mutex<Vec<String>>>,
    /// How many entries of `received` were looked at by [`FakeSystemd::wait_for`].
    checked: usize,
}

impl FakeSystemd {
    fn new(dir: &std::path::Path) -> (FakeSystemd, String) {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        std::thread::spawn({
            let received = received.clone();
            move || {
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = socket.recv(&mut buf) {
                    let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                    received.lock().unwrap().push(message);
                }
            }
        });
        let fake = FakeSystemd {
            received,
            checked: 0,
        };
        (fake, path.to_string_lossy().into_owned())
    }

    fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }

    /// The next datagram (after those already looked at) that satisfies `wanted`, waiting up
    /// to five seconds for it.
    async fn wait_for(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let received = self.received();
            while self.checked < received.len() {
                self.checked += 1;
                if wanted(&received[self.checked - 1]) {
                    return received[self.checked - 1].clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "no {what}; received: {received:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_reloading_stopping_mainpid_and_watchdog_pings() {
    let dir = tempfile::tempdir().unwrap();
    let (mut systemd, socket) = FakeSystemd::new(dir.path());
    // WatchdogSec=0.4s: pings every 0.2 s. No WATCHDOG_PID, as for a process systemd started.
    let mut gw = Gateway::start_with_env(
        &config(0),
        &[("NOTIFY_SOCKET", &socket), ("WATCHDOG_USEC", "400000")],
    )
    .await;
    assert_eq!(
        systemd.wait_for("READY=1", |m| m.contains("READY=1")).await,
        "READY=1\n"
    );
    systemd
        .wait_for("a watchdog ping", |m| m == "WATCHDOG=1\n")
        .await;
    systemd
        .wait_for("a second watchdog ping", |m| m == "WATCHDOG=1\n")
        .await;

    let resp = client()
        .post(format!("{}/admin/reload", gw.admin_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let reloading = systemd
        .wait_for("RELOADING=1", |m| m.contains("RELOADING=1"))
        .await;
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    systemd
        .wait_for("READY=1 after the reload", |m| m.contains("READY=1"))
        .await;

    // An in-place upgrade: the new process names itself the main process, and the old one
    // does not say STOPPING (systemd would stop the whole service).
    gw.signal("USR2");
    let handed = systemd
        .wait_for("MAINPID= of the new process", |m| m.contains("MAINPID="))
        .await;
    assert!(handed.contains("READY=1"), "{handed}");
    let new_pid: u32 = handed
        .lines()
        .find_map(|l| l.strip_prefix("MAINPID="))
        .and_then(|p| p.parse().ok())
        .unwrap();
    assert_ne!(new_pid, gw.pid());
    assert!(gw.wait_exit(Duration::from_secs(20)).await.is_some());
    let received = systemd.received().join("");
    assert!(
        !received.contains("STOPPING=1"),
        "STOPPING during a hand-over: {received}"
    );

    // The new process stops for good on SIGTERM, and says so.
    let killed = Command::new("kill")
        .args(["-TERM", &new_pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !systemd.received().iter().any(|m| m.contains("STOPPING=1")) && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let received = systemd.received();
    let _ = Command::new("kill")
        .args(["-KILL", &new_pid.to_string()])
        .status();
    assert!(
        received.iter().any(|m| m.contains("STOPPING=1")),
        "no STOPPING=1 from the new process: {received:?}"
    );
}
