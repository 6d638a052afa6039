//! Operating the gateway without downtime: hot reload under load, bad configs on every reload
//! path, graceful upgrade and shutdown, the metrics exposition and the systemd unit.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{client, Gateway};

/// Two mock providers; `chat` is served by `target`, `temp` exists when `with_temp`.
fn config(target: &str, with_temp: bool, extra_server: &str) -> String {
    let temp = if with_temp {
        "  temp: { targets: [{ provider: two, model: temp-model }] }\n"
    } else {
        ""
    };
    format!(
        r#"
server:
  listen: ["{{{{listen}}}}"]
  admin_listen: "{{{{admin}}}}"
  grace_period_s: 2
  upgrade_sock: "{{{{dir}}}}/upgrade.sock"
  pid_file: "{{{{dir}}}}/switchyard.pid"
{extra_server}
providers:
  one: {{ kind: mock, reply: "one two three four five six seven eight", tokens_per_second: 40 }}
  two: {{ kind: mock, reply: "uno dos tres cuatro cinco seis siete ocho", tokens_per_second: 40 }}
models:
  chat: {{ targets: [{{ provider: {target}, model: {target}-model }}] }}
{temp}"#
    )
}

/// Runs `workers` loops of requests (half streamed) until `stop`; returns (ok count, failures).
fn load(
    url: String,
    workers: usize,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    tokio::spawn(async move {
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for w in 0..workers {
            let (url, stop, ok, failures) =
                (url.clone(), stop.clone(), ok.clone(), failures.clone());
            tasks.push(tokio::spawn(async move {
                let http = client();
                let mut i = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    match support::complete_chat(&http, &url, (w + i) % 2 == 0).await {
                        Ok(_) => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => failures.lock().unwrap().push(e),
                    }
                    i += 1;
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        let failures = failures.lock().unwrap().clone();
        (ok.load(Ordering::SeqCst), failures)
    })
}

async fn admin_reload(gw: &Gateway) -> (u16, Value) {
    let resp = client()
        .post(format!("{}/admin/reload", gw.admin_url()))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_drop_nothing_and_apply_at_once() {
    let gw = Gateway::start(&config("one", false, "")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = load(gw.url(), 4, stop.clone());
    let http = client();
    for i in 0..12 {
        let target = if i % 2 == 0 { "two" } else { "one" };
        gw.write_config(&config(target, i % 3 == 0, ""));
        let (status, body) = admin_reload(&gw).await;
        assert_eq!(status, 200, "{body}");
        // The very next request follows the new table.
        let provider = support::complete_chat(&http, &gw.url(), false)
            .await
            .unwrap();
        assert_eq!(provider, target, "reload {i} did not apply at once");
        let temp = http
            .post(format!("{}/v1/chat/completions", gw.url()))
            .json(&json!({"model": "temp", "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            temp.status() == 200,
            i % 3 == 0,
            "model temp after reload {i}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let (ok, failures) = traffic.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} failed requests during reloads: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert!(ok >= 20, "too little traffic to mean anything: {ok}");
    let routes: Value = http
        .get(format!("{}/admin/routes", gw.admin_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(routes["generation"].as_u64().unwrap() >= 13);
    assert_eq!(routes["models"][0]["targets"][0]["breaker"], "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configs_are_rejected_by_every_reload_path() {
    let gw =
        Gateway::start_with_env(&config("one", false, ""), &[("SWITCHYARD_TEST_SET", "x")]).await;
    let http = client();
    let good = config("one", false, "");
    let bad = [
        (
            "syntax",
            good.replace("models:", "models: [unclosed"),
            "models",
        ),
        (
            "unknown provider",
            config("ghost", false, ""),
            "unknown provider 'ghost'",
        ),
        (
            "unset variable",
            good.replace("reply: \"uno", "reply: \"${SWITCHYARD_TEST_UNSET} uno"),
            "SWITCHYARD_TEST_UNSET",
        ),
    ];
    for (what, yaml, reason) in &bad {
        gw.write_config(yaml);
        // Admin API: refused with the reason.
        let (status, body) = admin_reload(&gw).await;
        assert_eq!(status, 400, "{what}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(reason),
            "{what}: {body}"
        );
        assert_eq!(
            support::complete_chat(&http, &gw.url(), false)
                .await
                .unwrap(),
            "one",
            "{what}"
        );
        // SIGHUP: same file, same refusal, old table answers.
        gw.signal("HUP");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            support::complete_chat(&http, &gw.url(), true)
                .await
                .unwrap(),
            "one",
            "{what}"
        );
    }
    // File watch: a fresh bad file is noticed and refused on its own.
    gw.write_config(&config("nobody", false, ""));
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(
        support::complete_chat(&http, &gw.url(), false)
            .await
            .unwrap(),
        "one"
    );
    let logs = gw.logs();
    assert!(logs.contains("rejected, the previous config keeps serving"));
    assert!(
        logs.contains("(SIGHUP) rejected"),
        "SIGHUP path not exercised"
    );
    assert!(
        logs.contains("(file change) rejected"),
        "file path not exercised"
    );
    let metrics = gw.metrics().await;
    let errors: f64 = metrics
        .lines()
        .find(|l| l.starts_with("switchyard_config_reloads_total{result=\"error\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(errors >= 7.0, "errors counted: {errors}");

    // A good file is picked up by the watcher, and a changed listen address is reported.
    gw.write_config(&config("two", false, "  threads: 3"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while support::complete_chat(&http, &gw.url(), false)
        .await
        .unwrap()
        != "two"
    {
        assert!(
            Instant::now() < deadline,
            "the file watcher did not load the good config"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(gw
        .logs()
        .contains("server.threads changed; it takes effect after a restart"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_need_the_token_when_one_is_set() {
    let yaml = config("one", false, "").replace(
        "providers:",
        "auth:\n  admin_token: s3cret-admin\nproviders:",
    );
    let gw = Gateway::start(&yaml).await;
    let http = client();
    let routes = format!("{}/admin/routes", gw.admin_url());
    assert_eq!(http.get(&routes).send().await.unwrap().status(), 401);
    assert_eq!(
        http.get(&routes)
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let body: Value = http
        .get(&routes)
        .bearer_auth("s3cret-admin")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["models"][0]["model"], "chat");
    assert!(
        !body.to_string().contains("s3cret"),
        "the admin view must not show secrets"
    );
    assert_eq!(
        http.post(format!("{}/admin/reload", gw.admin_url()))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // Health and metrics stay open for probes and scrapers.
    assert_eq!(
        http.get(format!("{}/healthz", gw.admin_url()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(format!("{}/metrics", gw.admin_url()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_upgrade_hands_the_sockets_over_without_failures() {
    let mut old = Gateway::start(&config("one", false, "")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = load(old.url(), 3, stop.clone());
    // A long stream that starts on the old process and must finish there.
    let slow = config("one", false, "").replace("tokens_per_second: 40", "tokens_per_second: 4");
    old.write_config(&slow);
    assert_eq!(admin_reload(&old).await.0, 200);
    let long_stream = tokio::spawn({
        let url = old.url();
        async move { support::complete_chat(&client(), &url, true).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut new = old.start_upgrade();
    tokio::time::sleep(Duration::from_millis(300)).await;
    old.signal("QUIT");
    new.wait_ready().await;
    let status = old.wait_exit(Duration::from_secs(20)).await;
    assert!(
        status.is_some(),
        "the old process did not exit after handing over"
    );
    // The new process serves alone now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let (ok, failures) = traffic.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} requests failed during the upgrade: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert!(ok > 10, "too little traffic: {ok}");
    long_stream
        .await
        .unwrap()
        .expect("the long stream survived the upgrade");
    assert!(support::complete_chat(&client(), &new.url(), true)
        .await
        .is_ok());
    assert!(
        old.logs().contains("listener sockets sent"),
        "{}",
        old.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_upgrades_in_place() {
    let mut old = Gateway::start(&config("one", false, "")).await;
    let http = client();
    let routes = format!("{}/admin/routes", old.admin_url());
    let pid_before = http
        .get(&routes)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["pid"]
        .as_u64()
        .unwrap();
    assert_eq!(pid_before, u64::from(old.pid()));
    old.signal("USR2");
    let status = old.wait_exit(Duration::from_secs(20)).await;
    assert!(
        status.is_some(),
        "the old process did not hand over: {}",
        old.logs()
    );
    let after: Value = http
        .get(&routes)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pid_after = after["pid"].as_u64().unwrap();
    // The replacement is not a child the harness knows about: stop it here.
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid_after.to_string()])
        .status();
    assert_ne!(pid_after, pid_before);
    assert!(
        old.logs().contains("upgrade: new process"),
        "{}",
        old.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_open_streams_finish() {
    let slow = config("one", false, "").replace("tokens_per_second: 40", "tokens_per_second: 8");
    let mut gw = Gateway::start(&slow).await;
    let stream = tokio::spawn({
        let url = gw.url();
        async move {
            let result = support::complete_chat(&client(), &url, true).await;
            (result, Instant::now())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped_at = Instant::now();
    gw.signal("TERM");
    let (result, finished_at) = stream.await.unwrap();
    result.expect("the stream finished, with [DONE], during the grace period");
    assert!(
        finished_at > stopped_at + Duration::from_millis(300),
        "the stream was not in flight at SIGTERM"
    );
    // New connections are refused once the process stops accepting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(support::complete_chat(&client(), &gw.url(), false)
        .await
        .is_err());
    let status = gw.wait_exit(Duration::from_secs(15)).await;
    assert!(status.is_some(), "no exit after the grace period");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_with_every_spec_name() {
    let gw = Gateway::start(&config("one", false, "")).await;
    let http = client();
    support::complete_chat(&http, &gw.url(), false)
        .await
        .unwrap();
    support::complete_chat(&http, &gw.url(), true)
        .await
        .unwrap();
    let text = gw.metrics().await;
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix('#') {
            let words: Vec<&str> = rest.split_whitespace().collect();
            assert!(
                matches!(words.first(), Some(&"HELP") | Some(&"TYPE")),
                "bad comment: {line}"
            );
            if words[0] == "TYPE" {
                assert!(
                    matches!(
                        words.get(2),
                        Some(&"counter") | Some(&"gauge") | Some(&"histogram")
                    ),
                    "{line}"
                );
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        assert!(
            value.parse::<f64>().is_ok() || value == "+Inf",
            "bad value in {line}"
        );
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name: {line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "bad labels: {line}"
            );
        }
    }
    for name in [
        "switchyard_requests_total{",
        "switchyard_request_duration_seconds_bucket{",
        "switchyard_time_to_first_token_seconds_bucket{",
        "switchyard_gateway_overhead_seconds_bucket{",
        "switchyard_upstream_attempts_total{",
        "# TYPE switchyard_fallbacks_total counter",
        "switchyard_tokens_total{",
        "# TYPE switchyard_cost_usd_total counter",
        "switchyard_target_healthy{",
        "switchyard_inflight_requests",
        "switchyard_config_reloads_total{",
        "# TYPE switchyard_rate_limited_total counter",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    // Label values are bounded: no request ids, no keys.
    assert!(!text.contains("request_id"));
}

#[test]
fn systemd_unit_verifies() {
    let available = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !available {
        eprintln!("SKIPPED: systemd-analyze is not installed (apt-get install systemd); .ci/run installs it");
        return;
    }
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/switchyard.service"
    ))
    .unwrap();
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    // Type=notify, following the new main process of an in-place upgrade without a PID file.
    for line in ["Type=notify", "NotifyAccess=all", "WatchdogSec="] {
        assert!(unit.contains(line), "{line} missing from the unit");
    }
    assert!(!unit.contains("PIDFile=") && !unit.contains("--daemon"));
    // ExecStart names the binary where the README's install step puts it.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let installed = "/usr/local/bin/switchyard";
    assert!(
        readme.contains("cargo install --path . --root /usr/local"),
        "the README's install step must put the binary at {installed}"
    );
    assert!(
        unit.contains(&format!("ExecStart={installed} serve --config ")),
        "ExecStart must run {installed}"
    );
    // verify checks that ExecStart exists. Where the README's install was done, the unit is
    // verified as shipped; elsewhere ExecStart points at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.service");
    let shipped = std::path::Path::new(installed).exists();
    let text = if shipped {
        unit.clone()
    } else {
        unit.replace(installed, env!("CARGO_BIN_EXE_switchyard"))
    };
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("switchyard.service:"),
        "systemd-analyze verify (unit as shipped: {shipped}): {stderr}"
    );
}
