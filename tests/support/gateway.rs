//! The gateway binary: [`Gateway`] runs `switchyard serve` as a child process with a config on
//! free ports and captures its output; [`run_cli`] runs one-shot commands.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::lock;

/// The gateway binary: cargo's `CARGO_BIN_EXE_switchyard` in this repo's integration tests,
/// else `$SWITCHYARD_BIN` (for trying the harness elsewhere).
pub fn binary() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_switchyard") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(std::env::var("SWITCHYARD_BIN").expect(
            "SWITCHYARD_BIN must name the gateway binary (CARGO_BIN_EXE_switchyard is unset)",
        )),
    }
}

/// A port that was free a moment ago (bind 127.0.0.1:0, read the port, close).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0 to find a free port")
}

/// A client for the gateway: no proxy from the environment, 60 s timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("build the reqwest client")
}

/// Runs the binary once with `args` and extra `env`, from the crate's directory, and waits.
#[allow(dead_code)] // Only the tests of one-shot commands run the binary this way.
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let bin = binary();
    Command::new(&bin)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {} {args:?}: {e}", bin.display()))
}

/// Everything a child wrote to stdout and stderr, whole lines at a time.
#[derive(Clone, Default)]
struct Output {
    text: Arc<Mutex<Vec<u8>>>,
    /// Reader threads that reached end of file.
    closed: Arc<AtomicUsize>,
}

impl Output {
    fn capture(&self, pipe: impl Read + Send + 'static) {
        let output = self.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) => break,
                    Ok(_) => {
                        if !line.ends_with(b"\n") {
                            line.push(b'\n');
                        }
                        lock(&output.text).extend_from_slice(&line);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            output.closed.fetch_add(1, Ordering::SeqCst);
        });
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&lock(&self.text)).into_owned()
    }

    /// After the child exited: lets the reader threads drain the pipes. Bounded, because a
    /// process the child started (an in-place upgrade) may still hold them open.
    async fn settle(&self, max: Duration) {
        let deadline = Instant::now() + max;
        while self.closed.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Names, in a gateway's `env`, another program to run instead of [`binary`] (a binary built
/// on the library, such as an example).
pub const BINARY_ENV: &str = "SWITCHYARD_TEST_BINARY";

/// Starts `switchyard serve --config <path> [extra]` in `dir`, capturing stdout and stderr.
fn spawn(path: &Path, dir: &Path, env: &[(String, String)], extra: &[&str]) -> (Child, Output) {
    let bin = env
        .iter()
        .find(|(k, _)| k == BINARY_ENV)
        .map_or_else(binary, |(_, v)| PathBuf::from(v));
    let mut child = Command::new(&bin)
        .args(["serve", "--config"])
        .arg(path)
        .args(extra)
        .env("SWITCHYARD_LOG", "info")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    let output = Output::default();
    if let Some(stdout) = child.stdout.take() {
        output.capture(stdout);
    }
    if let Some(stderr) = child.stderr.take() {
        output.capture(stderr);
    }
    (child, output)
}

fn fill_placeholders(yaml: &str, port: u16, admin_port: u16, dir: &Path) -> String {
    yaml.replace("{{listen}}", &format!("127.0.0.1:{port}"))
        .replace("{{admin}}", &format!("127.0.0.1:{admin_port}"))
        .replace("{{dir}}", &dir.to_string_lossy())
}

enum NotReady {
    Exited(ExitStatus),
    TimedOut,
}

/// The real gateway as a child process; killed (SIGKILL) and reaped on drop.
// Tests use different parts of `Gateway` (upgrades, signals, logs, its directory), so in each
// test binary some methods, and the fields only they read, are unused.
#[allow(dead_code)]
pub struct Gateway {
    pub port: u16,
    pub admin_port: u16,
    child: Child,
    dir: Arc<tempfile::TempDir>,
    env: Vec<(String, String)>,
    output: Output,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[allow(dead_code)] // See `Gateway`.
impl Gateway {
    /// See [`Gateway::start_with_env`].
    pub async fn start(yaml: &str) -> Gateway {
        Self::start_with_env(yaml, &[]).await
    }

    /// Writes `yaml` to `config.yaml` in a fresh temp dir, with `{{listen}}` and `{{admin}}`
    /// replaced by `127.0.0.1:PORT` of free ports and `{{dir}}` by that directory (for pid files
    /// and upgrade sockets), runs `switchyard serve --config <path>` there with `SWITCHYARD_LOG=info`
    /// and `env`, and waits until `GET {admin}/healthz` answers 200 and the client port accepts
    /// connections. Panics with the child's output if it exits first or is not ready in 30 s.
    /// If the child exits because a port was taken meanwhile, it is retried on other ports.
    pub async fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Gateway {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut attempt = 1;
        loop {
            let port = free_port();
            let mut admin_port = free_port();
            while admin_port == port {
                admin_port = free_port();
            }
            let dir = Arc::new(tempfile::tempdir().expect("temp dir for the gateway"));
            let path = dir.path().join("config.yaml");
            std::fs::write(&path, fill_placeholders(yaml, port, admin_port, dir.path()))
                .expect("write the gateway's config.yaml");
            let (child, output) = spawn(&path, dir.path(), &env, &[]);
            let mut gateway = Gateway {
                port,
                admin_port,
                child,
                dir,
                env: env.clone(),
                output,
            };
            match gateway.poll_ready(Duration::from_secs(30)).await {
                Ok(()) => return gateway,
                Err(NotReady::Exited(status)) => {
                    gateway.output.settle(Duration::from_millis(500)).await;
                    let logs = gateway.logs();
                    let port_taken = logs.contains("in use") || logs.contains("os error 98");
                    if port_taken && attempt < 3 {
                        attempt += 1;
                        continue;
                    }
                    panic!(
                        "switchyard exited with {status} before it was ready:\n{logs}"
                    );
                }
                Err(NotReady::TimedOut) => panic!(
                    "switchyard was not ready after 30 s (GET {}/healthz and a connect to port {}):\n{}",
                    gateway.admin_url(),
                    gateway.port,
                    gateway.logs()
                ),
            }
        }
    }

    /// Starts a second process with `--upgrade` on the same config and ports. It waits for the
    /// listening sockets of this one (sent on SIGQUIT), so it is not ready yet when this returns.
    pub fn start_upgrade(&self) -> Gateway {
        let (child, output) = spawn(
            &self.config_path(),
            self.dir.path(),
            &self.env,
            &["--upgrade"],
        );
        Gateway {
            port: self.port,
            admin_port: self.admin_port,
            child,
            dir: self.dir.clone(),
            env: self.env.clone(),
            output,
        }
    }

    /// Waits until healthy (as in [`Gateway::start_with_env`]); panics with the logs otherwise.
    pub async fn wait_ready(&mut self) {
        match self.poll_ready(Duration::from_secs(30)).await {
            Ok(()) => {}
            Err(NotReady::Exited(status)) => {
                self.output.settle(Duration::from_millis(500)).await;
                panic!(
                    "switchyard exited with {status} before it was ready:\n{}",
                    self.logs()
                );
            }
            Err(NotReady::TimedOut) => {
                panic!("switchyard was not ready after 30 s:\n{}", self.logs())
            }
        }
    }

    async fn poll_ready(&mut self, timeout: Duration) -> Result<(), NotReady> {
        let deadline = Instant::now() + timeout;
        let health = format!("{}/healthz", self.admin_url());
        let http = client();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(NotReady::Exited(status));
            }
            let healthy = matches!(
                http.get(&health).timeout(Duration::from_millis(500)).send().await,
                Ok(r) if r.status() == 200
            );
            if healthy && TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(NotReady::TimedOut);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Sends a signal (`"HUP"`, `"TERM"`, `"QUIT"`, `"USR2"`, ...) to the process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.output.settle(Duration::from_millis(200)).await;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits up to `timeout` until the logs contain `needle`; returns whether they did.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.logs().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `http://127.0.0.1:PORT` of the client listener.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT` of the admin listener.
    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    /// The Prometheus text of `GET /metrics` on the admin listener, once every request the
    /// tests made has been recorded: a request is counted just after its last byte reached the
    /// client, so a scrape right after an answer could miss it. Waits up to 2 s for
    /// `switchyard_inflight_requests 0`, then returns what it has (a test that keeps a request
    /// in flight on purpose gets its metrics all the same).
    pub async fn metrics(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let text = client()
                .get(format!("{}/metrics", self.admin_url()))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if text.contains("switchyard_inflight_requests 0") || Instant::now() > deadline {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The gateway's temp dir (its working directory, holding config.yaml).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// Replaces the config file (placeholders filled in as at start) by write-then-rename, as
    /// editors and config managers do, so no reader sees half a file.
    pub fn write_config(&self, yaml: &str) {
        let tmp = self.dir.path().join("config.yaml.tmp");
        std::fs::write(
            &tmp,
            fill_placeholders(yaml, self.port, self.admin_port, self.dir.path()),
        )
        .expect("write config.yaml.tmp");
        std::fs::rename(&tmp, self.config_path()).expect("rename config.yaml.tmp to config.yaml");
    }

    /// Everything the child wrote to stdout and stderr so far, whole lines.
    pub fn logs(&self) -> String {
        self.output.text()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}
