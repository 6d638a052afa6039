//! The `cache` and `hedge` phases of the load bench: what a cache hit costs and how fast it
//! answers (memory and Redis, with a limited client key on Redis as well), the Redis commands
//! each request sends, and how much of a heavy-tailed target's p99 hedging takes away.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{
    cpu_time, free_port, gateway_config_with, instructions_with, percentile, pinned, request_bytes,
    saturate, wait_port, Conn, Kill,
};

/// Requests per latency row, after 100 that warm up.
const LATENCY_REQUESTS: usize = 2000;
/// Seconds of each CPU-per-request row.
const CPU_SECONDS: u64 = 3;

/// A gateway on CPU 0 with `extra` config sections; killed on drop.
fn start_gateway(
    gateway_bin: &std::path::Path,
    up_port: u16,
    dir: &std::path::Path,
    tag: &str,
    extra: &str,
) -> (Kill, SocketAddr, u16) {
    let (port, admin) = (free_port(), free_port());
    let path = dir.join(format!("{tag}.yaml"));
    std::fs::write(
        &path,
        gateway_config_with(port, admin, up_port, dir, tag, extra),
    )
    .expect("write the config");
    let child = pinned("0", gateway_bin)
        .args(["serve", "--config"])
        .arg(&path)
        .env("SWITCHYARD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the gateway");
    wait_port(port);
    (Kill(child), ([127, 0, 0, 1], port).into(), admin)
}

/// Adds a header line to a request made by [`request_bytes`].
fn with_header(request: Vec<u8>, header: &str) -> Vec<u8> {
    let text = String::from_utf8(request).unwrap_or_default();
    text.replacen(
        "host: bench\r\n",
        &format!("host: bench\r\n{header}\r\n"),
        1,
    )
    .into_bytes()
}

/// One connection, one request after another: the sorted latencies in µs.
async fn closed_loop(addr: SocketAddr, request: &[u8], count: usize) -> Vec<u64> {
    let mut conn = Conn::open(addr).await.expect("connect");
    for _ in 0..100 {
        conn.exchange(request, false).await.expect("warm-up answer");
    }
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        conn.exchange(request, false).await.expect("an answer");
        latencies.push(started.elapsed().as_micros() as u64);
    }
    latencies.sort_unstable();
    latencies
}

/// Client connections of the CPU rows: 16, as the other phases use, and 64, enough to keep the
/// gateway busy when each request also waits on Redis.
const CPU_CONNECTIONS: [usize; 2] = [16, 64];

/// The gateway's CPU time (user + system) per request while `connections` clients send
/// `request` as fast as they can, and the share of the time it was busy. A gateway that is
/// not busy all the time also pays for going to sleep and waking up, per request.
async fn cpu_per_request(
    pid: u32,
    addr: SocketAddr,
    request: &[u8],
    connections: usize,
    redis: Option<(u16, u32)>,
) -> (f64, f64, f64, f64) {
    let reads_before = match redis {
        Some((port, _)) => reads_processed(port).await,
        None => None,
    };
    let redis_before = redis.map(|(_, redis_pid)| cpu_time(redis_pid));
    let before = cpu_time(pid);
    let started = Instant::now();
    let (rps, _) = saturate(
        addr,
        std::sync::Arc::new(request.to_vec()),
        connections,
        CPU_SECONDS,
    )
    .await;
    let used = cpu_time(pid).saturating_sub(before);
    let busy = used.as_secs_f64() / started.elapsed().as_secs_f64();
    let requests = (rps * CPU_SECONDS as f64).max(1.0);
    // Redis's own CPU per request: it shares the other CPU with the upstream and the load
    // generator, so what it spends slows them, and the gateway waits (and wakes) more.
    let redis_cpu = match (redis, redis_before) {
        (Some((_, redis_pid)), Some(before)) => {
            cpu_time(redis_pid).saturating_sub(before).as_secs_f64() * 1e6 / requests
        }
        _ => f64::NAN,
    };
    // Writes that reached Redis per request under load: how well requests share them.
    let writes = match (redis, reads_before) {
        (Some((port, _)), Some(before)) => reads_processed(port).await.map_or(f64::NAN, |after| {
            after.saturating_sub(before + 1) as f64 / requests
        }),
        _ => f64::NAN,
    };
    (used.as_secs_f64() * 1e6 / requests, busy, writes, redis_cpu)
}

/// Rounds of CPU measurement: every row once a round, rows interleaved, so that the machine
/// drifting over the minutes a phase takes (a shared VM's neighbours) moves every row alike.
/// `BENCH_CACHE_ROUNDS` overrides.
fn cpu_rounds() -> usize {
    std::env::var("BENCH_CACHE_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(3)
}

/// The median of `values`.
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// With `BENCH_PERF` set to a directory, `perf record` samples the gateway while a CPU column
/// is measured, into `{BENCH_PERF}/{row}-{connections}.data` (for `perf report -i`). The
/// sampling costs the gateway CPU too: compare profiles with each other, not with the columns.
struct Profile(Option<Child>);

impl Profile {
    fn start(pid: u32, label: &str, connections: usize) -> Profile {
        let Some(dir) = std::env::var_os("BENCH_PERF") else {
            return Profile(None);
        };
        let row: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let out = std::path::Path::new(&dir).join(format!("{row}-{connections}.data"));
        let child = Command::new("perf")
            .args(["record", "-q", "-F", "2999", "-p", &pid.to_string(), "-o"])
            .arg(out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        Profile(child)
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        if let Some(mut perf) = self.0.take() {
            // perf writes its file on SIGINT.
            let _ = Command::new("kill")
                .args(["-INT", &perf.id().to_string()])
                .status();
            let _ = perf.wait();
        }
    }
}

/// Redis's count of reads from its clients (`INFO stats`): one per write that reached it.
async fn reads_processed(redis_port: u16) -> Option<u64> {
    let mut conn = TcpStream::connect(("127.0.0.1", redis_port)).await.ok()?;
    conn.write_all(b"INFO stats\r\n").await.ok()?;
    let mut text = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    while !text.ends_with(b"\r\n\r\n") && !String::from_utf8_lossy(&text).contains("total_writes") {
        let n = tokio::time::timeout(Duration::from_secs(1), conn.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            break;
        }
        text.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|l| l.strip_prefix("total_reads_processed:"))
        .and_then(|n| n.trim().parse().ok())
}

/// Commands the gateway sends Redis per `request`, and the writes that carry them (its round
/// trips, one request at a time), over 200 requests. Commands are watched with `MONITOR`:
/// lines from a client connection count, the calls scripts make (`[0 lua]`) do not. Writes
/// are Redis's count of reads, less the one of the `INFO` that reads it.
async fn commands_per_request(redis_port: u16, addr: SocketAddr, request: &[u8]) -> (f64, f64) {
    const REQUESTS: usize = 200;
    let Ok(mut monitor) = TcpStream::connect(("127.0.0.1", redis_port)).await else {
        return (f64::NAN, f64::NAN);
    };
    if monitor.write_all(b"MONITOR\r\n").await.is_err() {
        return (f64::NAN, f64::NAN);
    }
    let mut conn = Conn::open(addr).await.expect("connect");
    // MONITOR's "+OK" arrives first; everything after is a command.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let reads_before = reads_processed(redis_port).await;
    for _ in 0..REQUESTS {
        conn.exchange(request, false).await.expect("an answer");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let writes = match (reads_before, reads_processed(redis_port).await) {
        (Some(before), Some(after)) => after.saturating_sub(before + 1) as f64 / REQUESTS as f64,
        _ => f64::NAN,
    };
    let mut text = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(100), monitor.read(&mut buf)).await
    {
        if n == 0 {
            break;
        }
        text.extend_from_slice(&buf[..n]);
    }
    let sent = String::from_utf8_lossy(&text)
        .lines()
        .filter(|l| l.starts_with('+') && l.contains(" [") && !l.contains(" lua]"))
        .count();
    (sent as f64 / REQUESTS as f64, writes)
}

const MODELS: &str = r#"
models:
  plain: { targets: [{ provider: pass, model: bench, price: { input_per_mtok: 1, output_per_mtok: 2 } }] }
  cached: { targets: [{ provider: pass, model: bench, price: { input_per_mtok: 1, output_per_mtok: 2 } }], cache: { ttl_s: 3600 } }
"#;
const KEY: &str = "auth: { keys: [{ name: bench, key: sk-bench, rpm: 100000000, tpm: 100000000000, max_concurrent: 100000, budget_usd: { amount: 1000000, period: monthly } }] }";

pub async fn cache_phase(gateway_bin: &std::path::Path, up_port: u16, dir: &std::path::Path) {
    let plain = request_bytes("/v1/chat/completions", "plain", false, false);
    let cached = request_bytes("/v1/chat/completions", "cached", false, false);
    let keyed = |r: &[u8]| with_header(r.to_vec(), "authorization: Bearer sk-bench");
    let refresh = with_header(keyed(&cached), "cache-control: no-cache");

    let redis_port = free_port();
    let redis = Command::new("redis-server")
        .args([
            "--port",
            &redis_port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
        .map(Kill);
    let redis_pid = redis.as_ref().map(|r| r.0.id());
    let redis_state =
        format!("state: {{ backend: redis, url: \"redis://127.0.0.1:{redis_port}/0\" }}");
    let redis_extra = format!("{KEY}\n{redis_state}\n{MODELS}");
    if redis.is_some() {
        wait_port(redis_port);
    } else {
        println!("(redis-server is not installed: no Redis rows)");
    }

    // Both gateways run through the whole phase (the idle one costs nothing), so that the
    // rounds can interleave their rows.
    let memory_gw = start_gateway(gateway_bin, up_port, dir, "cache-memory", MODELS);
    let redis_gw = redis
        .as_ref()
        .map(|_| start_gateway(gateway_bin, up_port, dir, "cache-redis", &redis_extra));
    let mut rows: Vec<(&str, u32, SocketAddr, Vec<u8>)> = vec![
        (
            "passthrough",
            memory_gw.0 .0.id(),
            memory_gw.1,
            plain.clone(),
        ),
        (
            "cache hit, memory",
            memory_gw.0 .0.id(),
            memory_gw.1,
            cached.clone(),
        ),
    ];
    if let Some((gw, addr, _)) = &redis_gw {
        rows.extend([
            (
                "passthrough, key + limits + budget on Redis",
                gw.0.id(),
                *addr,
                keyed(&plain),
            ),
            (
                "cache hit, key + limits + budget + cache on Redis",
                gw.0.id(),
                *addr,
                keyed(&cached),
            ),
            (
                "cache refresh (no-cache: asks and stores), all on Redis",
                gw.0.id(),
                *addr,
                refresh.clone(),
            ),
        ]);
    }
    let latencies = {
        let mut all = Vec::new();
        for (_, _, addr, request) in &rows {
            all.push(closed_loop(*addr, request, LATENCY_REQUESTS).await);
        }
        all
    };
    // [row][connections] → (CPU per request, busy share) of each round.
    let rounds = cpu_rounds();
    let mut cpu = vec![vec![Vec::new(); CPU_CONNECTIONS.len()]; rows.len()];
    for round in 0..rounds {
        for (r, (label, pid, addr, request)) in rows.iter().enumerate() {
            for (c, connections) in CPU_CONNECTIONS.into_iter().enumerate() {
                let profile = (round == 0).then(|| Profile::start(*pid, label, connections));
                let redis = redis_pid.filter(|_| r >= 2).map(|pid| (redis_port, pid));
                cpu[r][c].push(cpu_per_request(*pid, *addr, request, connections, redis).await);
                drop(profile);
            }
        }
    }
    println!("\nanswer cache: latency of {LATENCY_REQUESTS} requests one after another on one connection; CPU per request while 16, then 64 connections send as fast as they can ({CPU_SECONDS} s each; real CPU, SHA-NI included; busy: the gateway's CPU time over the wall time); {rounds} rounds, every row once a round, rows interleaved: the median, and for the ratio to the passthrough (taken within each round) the median and the range; gateway on CPU 0");
    println!("| path | p50 µs | p99 µs | CPU per request, 16 connections | vs passthrough (range) | 64 connections | vs passthrough (range) | Redis commands per request | Redis round trips per request | Redis writes per request under load, 16 / 64 connections | Redis's CPU per request, 16 / 64 connections |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (r, (label, _, addr, request)) in rows.iter().enumerate() {
        let mut columns = String::new();
        for (row, passthrough) in cpu[r].iter().zip(&cpu[0]) {
            let mut per_request: Vec<f64> = row.iter().map(|m| m.0).collect();
            let mut busy: Vec<f64> = row.iter().map(|m| m.1).collect();
            let mut ratios: Vec<f64> = row
                .iter()
                .zip(passthrough)
                .map(|(row, passthrough)| row.0 / passthrough.0)
                .collect();
            let (low, high) = ratios
                .iter()
                .fold((f64::INFINITY, 0.0f64), |(l, h), &x| (l.min(x), h.max(x)));
            columns.push_str(&format!(
                " {:.1} µs ({:.0} % busy) | {:.2}× ({low:.2}–{high:.2}) |",
                median(&mut per_request),
                median(&mut busy) * 100.0,
                median(&mut ratios),
            ));
        }
        let redis_columns = if r < 2 {
            " — | — | — | — |".to_string()
        } else {
            let (commands, round_trips) = commands_per_request(redis_port, *addr, request).await;
            let column = |of: fn(&(f64, f64, f64, f64)) -> f64, precision: usize| {
                cpu[r]
                    .iter()
                    .map(|rounds| {
                        let mut values: Vec<f64> = rounds.iter().map(of).collect();
                        format!("{:.precision$}", median(&mut values))
                    })
                    .collect::<Vec<_>>()
                    .join(" / ")
            };
            format!(
                " {commands:.2} | {round_trips:.2} | {} | {} µs |",
                column(|m| m.2, 2),
                column(|m| m.3, 1)
            )
        };
        println!(
            "| {label} | {:.0} | {:.0} |{columns}{redis_columns}",
            percentile(&latencies[r], 0.5) * 1000.0,
            percentile(&latencies[r], 0.99) * 1000.0,
        );
    }
    drop((memory_gw, redis_gw));

    println!("\ninstructions per request (callgrind, 1000 requests on one connection; Redis's own work not counted):");
    let mut rows: Vec<(String, u64)> = Vec::new();
    let memory_paths = [
        ("passthrough", plain.clone()),
        ("cache hit, memory", cached.clone()),
    ];
    match instructions_with(
        gateway_bin,
        up_port,
        dir,
        "cache-cpu-memory",
        MODELS,
        &memory_paths,
    )
    .await
    {
        Some(r) => rows.extend(r),
        None => println!(
            "(memory rows: no count, the gateway did not answer 200 or valgrind is missing)"
        ),
    }
    if redis.is_some() {
        let redis_paths = [
            ("passthrough, key + limits + budget on Redis", keyed(&plain)),
            (
                "cache hit, key + limits + budget + cache on Redis",
                keyed(&cached),
            ),
            ("cache refresh (asks and stores), all on Redis", refresh),
        ];
        match instructions_with(
            gateway_bin,
            up_port,
            dir,
            "cache-cpu-redis",
            &redis_extra,
            &redis_paths,
        )
        .await
        {
            Some(r) => rows.extend(r),
            None => println!("(Redis rows: no count, the gateway did not answer 200)"),
        }
    }
    if rows.is_empty() {
        println!("skipped: needs valgrind (callgrind_control)");
        return;
    }
    let base = rows.first().map_or(1, |(_, n)| (*n).max(1)) as f64;
    println!("| path | instructions per request | against the passthrough |");
    println!("|---|---|---|");
    for (name, n) in rows {
        println!("| {name} | {n} | {:.2}× |", n as f64 / base);
    }
}

/// The heavy tail: 5 % of answers start 200 ms late (`tail-5x200` in the model name).
const TAIL_MODEL: &str = "tail-5x200";
const HEDGE_CONNS: usize = 4;
const HEDGE_REQUESTS_PER_CONN: usize = 500;

pub async fn hedge_phase(gateway_bin: &std::path::Path, up_port: u16, dir: &std::path::Path) {
    let models = format!(
        r#"
models:
  unhedged: {{ targets: [{{ provider: pass, model: {TAIL_MODEL} }}, {{ provider: pass, model: {TAIL_MODEL} }}] }}
  hedged:
    targets: [{{ provider: pass, model: {TAIL_MODEL} }}, {{ provider: pass, model: {TAIL_MODEL} }}]
    hedge: {{ after: 20, max_per_minute: 100000 }}
"#
    );
    let (_gw, addr, admin) = start_gateway(gateway_bin, up_port, dir, "hedge", &models);
    println!(
        "\nhedging: a target whose answers start 200 ms late 5 % of the time; {HEDGE_CONNS} connections × {HEDGE_REQUESTS_PER_CONN} requests in a row (time to first byte = answer time for JSON)"
    );
    println!("| model | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |");
    println!("|---|---|---|---|---|---|");
    for model in ["unhedged", "hedged"] {
        let request = request_bytes("/v1/chat/completions", model, false, false);
        let mut tasks = Vec::new();
        for _ in 0..HEDGE_CONNS {
            let request = request.clone();
            tasks.push(tokio::spawn(async move {
                let mut conn = Conn::open(addr).await.expect("connect");
                let mut latencies = Vec::with_capacity(HEDGE_REQUESTS_PER_CONN);
                for _ in 0..HEDGE_REQUESTS_PER_CONN {
                    let started = Instant::now();
                    conn.exchange(&request, false).await.expect("an answer");
                    latencies.push(started.elapsed().as_micros() as u64);
                }
                latencies
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("a connection's latencies"));
        }
        all.sort_unstable();
        println!(
            "| {model} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            percentile(&all, 0.5),
            percentile(&all, 0.9),
            percentile(&all, 0.99),
            percentile(&all, 0.999),
            all.last().copied().unwrap_or(0) as f64 / 1000.0
        );
    }
    if let Ok(metrics) = http_get(admin, "/metrics").await {
        let hedges: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("switchyard_hedges_total{"))
            .collect();
        println!("\n{}", hedges.join("\n"));
    }
}

/// A plain HTTP/1.1 GET (the bench has no HTTP client crate): the body.
async fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await?;
    let text = String::from_utf8_lossy(&out).to_string();
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or(text))
}
