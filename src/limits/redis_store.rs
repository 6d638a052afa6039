//! Counters in Redis, shared by every gateway instance on it. Admission and settlement are one
//! Lua script each (one round trip, atomic across all the key's counters), over redis-rs's
//! multiplexed, self-reconnecting `ConnectionManager`.
//!
//! A connection Redis or something in between dropped (`CLIENT KILL`, the server's `timeout`, a
//! restart or failover, a proxy's idle cut) is only noticed by the next command, which fails;
//! the manager then reconnects. So a command that fails on the connection is sent once more, on
//! the new one, before Redis counts as unreachable. A failed send may still have run (the reply
//! was lost, not the request), so both scripts are idempotent: each call carries a random
//! operation id, and its key `{prefix}op:{id}` (kept 10 s, longer than any retry) records that
//! it ran — a repeated settlement does nothing, a repeated admission returns the first answer.
//!
//! Keys (under `state.key_prefix`, named after the client key's configured name, never the key):
//! `{prefix}{name}:s{scope}:req:{minute}`, `…:tok:{minute}` (expire after two minutes),
//! `{prefix}{name}:s{scope}:conc` (in-flight requests; expires ten minutes after its last change,
//! so slots held by an instance that died come back) and `{prefix}{name}:budget:{period}`
//! (nano-USD; periodic budgets expire after their period).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::LazyLock;
use tokio::sync::OnceCell;

use crate::config::Secret;

/// Longest wait for one Redis call on the request path; a call retried on a fresh connection
/// waits at most twice that.
const TIMEOUT: Duration = Duration::from_millis(250);
/// After a failed connect, how long requests skip Redis instead of each waiting for it.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// KEYS: budget, then (requests, tokens, in-flight) per scope, then the operation id's key.
/// ARGV: budget limit in nano-USD (-1: none), tokens to reserve, then (rpm, tpm, concurrency)
/// limits per scope (0: none). Returns {0, requests, tokens, in_flight} of scope 0 when
/// admitted, else {reason, scope, count} with reason 1 rpm, 2 tpm, 3 concurrency, 4 budget.
/// A refusal counts nothing, so only admissions are recorded under the operation id.
static ADMIT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local op = KEYS[#KEYS]
local done = redis.call('GET', op)
if done then
  local r, t, c = string.match(done, '^(%d+):(%d+):(%d+)$')
  return {0, tonumber(r), tonumber(t), tonumber(c)}
end
local budget = tonumber(ARGV[1])
if budget >= 0 then
  local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
  if spent >= budget then return {4, 0, spent} end
end
local tokens = tonumber(ARGV[2])
local scopes = (#KEYS - 2) / 3
for i = 0, scopes - 1 do
  local rpm, tpm, conc = tonumber(ARGV[3 + 3*i]), tonumber(ARGV[4 + 3*i]), tonumber(ARGV[5 + 3*i])
  local r = tonumber(redis.call('GET', KEYS[2 + 3*i]) or '0')
  local t = tonumber(redis.call('GET', KEYS[3 + 3*i]) or '0')
  local c = tonumber(redis.call('GET', KEYS[4 + 3*i]) or '0')
  if rpm > 0 and r + 1 > rpm then return {1, i, r} end
  if tpm > 0 and t + tokens > tpm then return {2, i, t} end
  if conc > 0 and c + 1 > conc then return {3, i, c} end
end
local first = {0, 0, 0, 0}
for i = 0, scopes - 1 do
  local r = redis.call('INCR', KEYS[2 + 3*i])
  redis.call('EXPIRE', KEYS[2 + 3*i], 120)
  local t = redis.call('INCRBY', KEYS[3 + 3*i], tokens)
  redis.call('EXPIRE', KEYS[3 + 3*i], 120)
  local c = redis.call('INCR', KEYS[4 + 3*i])
  redis.call('EXPIRE', KEYS[4 + 3*i], 600)
  if i == 0 then first = {0, r, t, c} end
end
redis.call('SET', op, first[2] .. ':' .. first[3] .. ':' .. first[4], 'PX', 10000)
return first
"#,
    )
});

/// KEYS as for [`ADMIT`]. ARGV: token correction (signed), cost in nano-USD, budget TTL in
/// seconds (0: none). Returns 0 when the operation id had already run.
static SETTLE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
if not redis.call('SET', KEYS[#KEYS], 1, 'NX', 'PX', 10000) then return 0 end
local delta = tonumber(ARGV[1])
local scopes = (#KEYS - 2) / 3
for i = 0, scopes - 1 do
  if delta ~= 0 and redis.call('EXISTS', KEYS[3 + 3*i]) == 1 then
    local t = redis.call('INCRBY', KEYS[3 + 3*i], delta)
    if t < 0 then redis.call('SET', KEYS[3 + 3*i], 0, 'KEEPTTL') end
  end
  local c = redis.call('DECR', KEYS[4 + 3*i])
  if c < 0 then redis.call('SET', KEYS[4 + 3*i], 0, 'KEEPTTL') end
end
local cost = tonumber(ARGV[2])
if cost > 0 then
  redis.call('INCRBY', KEYS[1], cost)
  local ttl = tonumber(ARGV[3])
  if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
end
return 1
"#,
    )
});

/// Why Redis could not answer. Never carries the URL (it may hold a password).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis is unreachable: {0}")]
    Unreachable(String),
    #[error("redis did not answer within {} ms", TIMEOUT.as_millis())]
    Timeout,
    #[error("redis failed: {0}")]
    Command(String),
}

/// An error's kind only: redis-rs messages may quote the URL, which may hold a password.
fn describe(e: &redis::RedisError) -> String {
    format!("{:?}", e.kind())
}

/// Sorts a call's outcome: connection-level failures are [`StoreError::Unreachable`] (worth
/// one retry on a fresh connection), our own timeout is not (Redis is slow, not gone).
fn classify<T>(
    outcome: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
) -> Result<T, StoreError> {
    match outcome {
        Err(_) => Err(StoreError::Timeout),
        Ok(Err(e))
            if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() =>
        {
            Err(StoreError::Unreachable(describe(&e)))
        }
        Ok(Err(e)) => Err(StoreError::Command(describe(&e))),
        Ok(Ok(v)) => Ok(v),
    }
}

pub struct RedisStore {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    /// Milliseconds since `started` before which no new connect is tried.
    pause_until_ms: AtomicU64,
    started: Instant,
}

/// The keys of one request's counters, for a script.
#[derive(Debug)]
pub struct ScriptKeys {
    pub keys: Vec<String>,
    prefix_len: usize,
}

impl ScriptKeys {
    /// `budget_period`, then the three counters of each scope for `minute`.
    pub fn new(prefix: &str, name: &str, scopes: &[usize], minute: u64, period: u64) -> Self {
        // Pieces pushed, not `format!`ted: this runs on every request of a limited key, and
        // the formatting machinery cost more than the rest of making the keys.
        let mut numbers = itoa::Buffer::new();
        let key = |parts: &[&str]| {
            let mut key = String::with_capacity(prefix.len() + name.len() + 40);
            key.push_str(prefix);
            key.push_str(name);
            for part in parts {
                key.push_str(part);
            }
            key
        };
        let mut keys = Vec::with_capacity(1 + 3 * scopes.len());
        keys.push(key(&[":budget:", numbers.format(period)]));
        let minute = numbers.format(minute).to_string();
        for &s in scopes {
            let scope = itoa::Buffer::new().format(s).to_string();
            keys.push(key(&[":s", &scope, ":req:", &minute]));
            keys.push(key(&[":s", &scope, ":tok:", &minute]));
            keys.push(key(&[":s", &scope, ":conc"]));
        }
        ScriptKeys {
            keys,
            prefix_len: prefix.len(),
        }
    }

    /// A fresh operation id's key, unique per call (128 random bits), for an idempotent script.
    fn operation(&self) -> String {
        let prefix = self.keys[0].get(..self.prefix_len).unwrap_or("");
        let mut key = String::with_capacity(prefix.len() + 35);
        key.push_str(prefix);
        key.push_str("op:");
        key.push_str(&hex::encode(fastrand::u128(..).to_be_bytes()));
        key
    }
}

/// What [`RedisStore::admit`] found.
pub enum AdmitReply {
    /// Admitted; the counts of the key's own scope after this request.
    Admitted { requests: u64, tokens: u64 },
    /// Refused by `reason` (1 rpm, 2 tpm, 3 concurrency, 4 budget) in `scope` at `count`.
    Refused {
        reason: u8,
        scope: usize,
        count: u64,
    },
}

/// The stores made so far, by URL: everything that talks to one Redis shares one multiplexed
/// connection, so that a request's concurrent calls (admission and the answer cache's lookup)
/// go out together.
static SHARED: LazyLock<Mutex<HashMap<String, Weak<RedisStore>>>> = LazyLock::new(Default::default);

impl RedisStore {
    /// The store of `url`, shared with every other user of the same URL while any holds it.
    pub fn shared(url: &Secret) -> Result<Arc<Self>, String> {
        let mut stores = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        stores.retain(|_, store| store.strong_count() > 0);
        if let Some(store) = stores.get(url.expose()).and_then(Weak::upgrade) {
            return Ok(store);
        }
        let store = Arc::new(RedisStore::new(url)?);
        stores.insert(url.expose().to_string(), Arc::downgrade(&store));
        Ok(store)
    }

    pub fn new(url: &Secret) -> Result<Self, String> {
        let client = redis::Client::open(url.expose())
            .map_err(|e| format!("state.url: not a usable redis URL ({})", describe(&e)))?;
        Ok(RedisStore {
            client,
            conn: OnceCell::new(),
            pause_until_ms: AtomicU64::new(0),
            started: Instant::now(),
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        if let Some(conn) = self.conn.get() {
            return Ok(conn.clone());
        }
        let now = self.started.elapsed().as_millis() as u64;
        if now < self.pause_until_ms.load(Ordering::Acquire) {
            return Err(StoreError::Unreachable("reconnecting".into()));
        }
        // One connect per (re)connection: the manager's own retries sleep a second or more
        // between attempts (backon's minimum delay), and every command waits for that shared
        // attempt — so after Redis came back, requests kept timing out behind a reconnect begun
        // while it was down. Retrying is `run`'s job, once, on the request's own time.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(TIMEOUT)
            .set_response_timeout(TIMEOUT)
            .set_number_of_retries(0);
        let made = self
            .conn
            .get_or_try_init(|| ConnectionManager::new_with_config(self.client.clone(), config))
            .await;
        match made {
            Ok(conn) => Ok(conn.clone()),
            Err(e) => {
                let pause = now + RECONNECT_PAUSE.as_millis() as u64;
                self.pause_until_ms.store(pause, Ordering::Release);
                Err(StoreError::Unreachable(describe(&e)))
            }
        }
    }

    /// Runs a script; a failure on the connection is retried once, on the connection the
    /// manager has started to make in its place (safe: the scripts are idempotent).
    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        match self.run_once(invocation).await {
            Err(StoreError::Unreachable(first)) => {
                log::debug!("redis connection failed ({first}); retrying on a fresh one");
                self.run_once(invocation).await
            }
            other => other,
        }
    }

    async fn run_once<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let mut conn = self.connection().await?;
        classify(tokio::time::timeout(TIMEOUT, invocation.invoke_async(&mut conn)).await)
    }

    /// Runs a command that may run twice (a read, or a write whose repeat changes nothing),
    /// retried like [`Self::run`].
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        match self.query_once(cmd).await {
            Err(StoreError::Unreachable(_)) => self.query_once(cmd).await,
            other => other,
        }
    }

    async fn query_once<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, StoreError> {
        let mut conn = self.connection().await?;
        classify(tokio::time::timeout(TIMEOUT, cmd.query_async(&mut conn)).await)
    }

    /// `GET key`: the value's bytes, `None` when there is none.
    pub async fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.query(redis::cmd("GET").arg(key)).await
    }

    /// `SET key value PX ttl` (at least 1 ms).
    pub async fn set_px(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        // Redis refuses an expiry beyond what its clock can add; a century is far enough.
        let ms = ms.clamp(1, 100 * 365 * 24 * 3600 * 1000);
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("PX").arg(ms);
        let _: () = self.query(&cmd).await?;
        Ok(())
    }

    /// `DEL key`: whether it was there. When the first send ran but its reply was lost, the
    /// retry finds nothing and answers false.
    pub async fn del(&self, key: &str) -> Result<bool, StoreError> {
        let removed: i64 = self.query(redis::cmd("DEL").arg(key)).await?;
        Ok(removed > 0)
    }

    /// Checks every limit and, when all pass, counts the request in each.
    pub async fn admit(
        &self,
        keys: &ScriptKeys,
        budget_nano: Option<u64>,
        tokens: u64,
        limits: &[[u64; 3]],
    ) -> Result<AdmitReply, StoreError> {
        let mut invocation = ADMIT.prepare_invoke();
        for k in &keys.keys {
            invocation.key(k);
        }
        invocation.key(keys.operation());
        invocation
            .arg(budget_nano.map_or(-1, |b| b.min(i64::MAX as u64) as i64))
            .arg(tokens);
        for l in limits {
            invocation.arg(l[0]).arg(l[1]).arg(l[2]);
        }
        let reply: Vec<i64> = self.run(&invocation).await?;
        let at = |i: usize| reply.get(i).copied().unwrap_or(0).max(0) as u64;
        Ok(match at(0) {
            0 => AdmitReply::Admitted {
                requests: at(1),
                tokens: at(2),
            },
            reason => AdmitReply::Refused {
                reason: reason as u8,
                scope: at(1) as usize,
                count: at(2),
            },
        })
    }

    /// Corrects the token reservation, frees the concurrency slots and adds the cost.
    pub async fn settle(
        &self,
        keys: &ScriptKeys,
        token_delta: i64,
        cost_nano: u64,
        budget_ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        let mut invocation = SETTLE.prepare_invoke();
        for k in &keys.keys {
            invocation.key(k);
        }
        invocation.key(keys.operation());
        invocation
            .arg(token_delta)
            .arg(cost_nano)
            .arg(budget_ttl.map_or(0, |t| t.as_secs().max(1)));
        let _: i64 = self.run(&invocation).await?;
        Ok(())
    }

    /// Current counts for the admin API: the budget, then (requests, tokens, in flight) per
    /// scope, in the order of `keys`.
    pub async fn read(&self, keys: &ScriptKeys) -> Result<Vec<u64>, StoreError> {
        let mut cmd = redis::cmd("MGET");
        for k in &keys.keys {
            cmd.arg(k);
        }
        let values: Vec<Option<i64>> = self.query(&cmd).await?;
        Ok(values
            .into_iter()
            .map(|v| v.unwrap_or(0).max(0) as u64)
            .collect())
    }
}

/// A throw-away `redis-server` for tests, shared with the other modules that use Redis.
#[cfg(test)]
pub(crate) mod test_server {
    use std::time::Duration;

    /// A `redis-server` on a free port, without persistence, killed on drop.
    pub(crate) struct Server(std::process::Child, pub(crate) u16);

    impl Server {
        /// `None` when it is not installed or did not start.
        pub(crate) fn start() -> Option<Server> {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .ok()?
                .local_addr()
                .ok()?
                .port();
            let child = std::process::Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .ok()?;
            let server = Server(child, port);
            for _ in 0..100 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some(server);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            None
        }

        pub(crate) fn url(&self) -> String {
            format!("redis://127.0.0.1:{}/0", self.1)
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_server::Server;
    use super::*;

    #[test]
    fn keys_are_named_as_the_module_says() {
        let keys = ScriptKeys::new("p:", "team", &[0, 2], 29_000_000, 202_612);
        assert_eq!(
            keys.keys,
            [
                "p:team:budget:202612",
                "p:team:s0:req:29000000",
                "p:team:s0:tok:29000000",
                "p:team:s0:conc",
                "p:team:s2:req:29000000",
                "p:team:s2:tok:29000000",
                "p:team:s2:conc",
            ]
        );
        let (a, b) = (keys.operation(), keys.operation());
        assert!(
            a.starts_with("p:op:") && a.len() == "p:op:".len() + 32,
            "{a}"
        );
        assert_ne!(a, b);
    }

    #[test]
    fn a_repeated_operation_counts_once() {
        let Some(server) = Server::start() else {
            eprintln!("SKIPPED: redis-server is not installed");
            return;
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let url = crate::config::Secret::new(format!("redis://127.0.0.1:{}/0", server.1));
            let store = RedisStore::new(&url).unwrap();
            let keys = ScriptKeys::new("t:", "team", &[0], 7, 3);
            // The same call sent twice, as a retry after a lost reply would.
            let op = keys.operation();
            let admit = |op: &str| {
                let mut inv = ADMIT.prepare_invoke();
                for k in &keys.keys {
                    inv.key(k);
                }
                inv.key(op).arg(-1).arg(100).arg(10).arg(0).arg(0);
                inv
            };
            let first: Vec<i64> = store.run(&admit(&op)).await.unwrap();
            let again: Vec<i64> = store.run(&admit(&op)).await.unwrap();
            assert_eq!(first, vec![0, 1, 100, 1]);
            assert_eq!(again, first, "the first answer, counted once");
            let other: Vec<i64> = store.run(&admit(&keys.operation())).await.unwrap();
            assert_eq!(other, vec![0, 2, 200, 2]);

            let settle = |op: &str| {
                let mut inv = SETTLE.prepare_invoke();
                for k in &keys.keys {
                    inv.key(k);
                }
                inv.key(op).arg(-50).arg(1000).arg(0);
                inv
            };
            let op = keys.operation();
            let done: i64 = store.run(&settle(&op)).await.unwrap();
            let repeated: i64 = store.run(&settle(&op)).await.unwrap();
            assert_eq!((done, repeated), (1, 0));
            assert_eq!(store.read(&keys).await.unwrap(), vec![1000, 2, 150, 1]);
        });
    }
}
