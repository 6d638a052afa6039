//! Counters in Redis, shared by every gateway instance on it. Admission and settlement are one
//! Lua script each (one round trip, atomic across all the key's counters), sent over one
//! pipelined connection per Redis ([`super::pipeline`], speaking [`super::resp`]).
//!
//! A connection Redis or something in between dropped (`CLIENT KILL`, the server's `timeout`, a
//! restart or failover, a proxy's idle cut) is only noticed by the next command, which fails.
//! So commands that fail on a connection made earlier are sent once more, on a new connection,
//! before Redis counts as unreachable. A failed send may still have run (the reply was lost,
//! not the request), so both scripts are idempotent: each call carries a random operation id, and its
//! key `{prefix}op:{id}` (kept 10 s, longer than any retry) records that it ran — a repeated
//! settlement does nothing, a repeated admission returns the first answer.
//!
//! Keys (under `state.key_prefix`, named after the client key's configured name, never the key):
//! `{prefix}{name}:s{scope}:req:{minute}`, `…:tok:{minute}` (expire after two minutes),
//! `{prefix}{name}:s{scope}:conc` (in-flight requests; expires ten minutes after its last change,
//! so slots held by an instance that died come back) and `{prefix}{name}:budget:{period}`
//! (nano-USD; periodic budgets expire after their period).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use std::sync::LazyLock;

use super::pipeline::{Pipeline, TIMEOUT};
use super::resp::{Cmd, Endpoint, Value};
use crate::config::Secret;

/// A Lua script, sent by its SHA-1 (`EVALSHA`) and by its text only when Redis does not know
/// it yet (`NOSCRIPT`: a new or flushed server).
pub struct Script {
    code: &'static str,
    sha: String,
}

impl Script {
    fn new(code: &'static str) -> Self {
        Script {
            code,
            sha: sha1_smol::Sha1::from(code).digest().to_string(),
        }
    }

    /// `EVALSHA sha numkeys keys…` for a request's counters, the last key `operation`; the
    /// caller adds the arguments.
    fn call(&'static self, keys: &ScriptKeys, operation: &str) -> ScriptCall {
        let bytes: usize = keys.keys.iter().map(|k| k.len() + 8).sum();
        let mut cmd = Cmd::with_capacity("EVALSHA", bytes + 192);
        cmd.arg(&self.sha);
        let head = cmd.len();
        cmd.int(keys.keys.len() + 1);
        for key in &keys.keys {
            cmd.arg(key);
        }
        cmd.arg(operation);
        ScriptCall {
            script: self,
            cmd,
            head,
        }
    }
}

/// One script's invocation, ready to send.
pub struct ScriptCall {
    script: &'static Script,
    cmd: Cmd,
    /// Where the arguments after `EVALSHA sha` start, for the `EVAL` sent on `NOSCRIPT`.
    head: usize,
}

impl ScriptCall {
    fn eval(&self) -> Cmd {
        let mut eval = Cmd::new("EVAL");
        eval.arg(self.script.code);
        self.cmd.replace_head(self.head, &eval, 2)
    }
}

/// KEYS: budget, then (requests, tokens, in-flight) per scope, then the operation id's key.
/// ARGV: budget limit in nano-USD (-1: none), tokens to reserve, then (rpm, tpm, concurrency)
/// limits per scope (0: none). Returns {0, requests, tokens, in_flight} of scope 0 when
/// admitted, else {reason, scope, count} with reason 1 rpm, 2 tpm, 3 concurrency, 4 budget.
/// A refusal counts nothing, so only admissions are recorded under the operation id.
static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
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
static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
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
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("redis is unreachable: {0}")]
    Unreachable(String),
    #[error("redis did not answer within {} ms", TIMEOUT.as_millis())]
    Timeout,
    #[error("redis failed: {0}")]
    Command(String),
}

pub struct RedisStore {
    pipeline: Pipeline,
}

/// A command sent in the same write as another module's script (the answer cache's lookup
/// beside admission, its store beside settlement): both are answered in one round trip. When
/// no script took it along, [`Rider::reply`] sends it alone. It must be safe to send twice
/// (see [`Pipeline::exchange`]).
pub struct Rider {
    redis: Arc<RedisStore>,
    cmd: Cmd,
    reply: Option<Result<Value, StoreError>>,
}

impl Rider {
    pub fn new(redis: Arc<RedisStore>, cmd: Cmd) -> Self {
        Rider {
            redis,
            cmd,
            reply: None,
        }
    }

    /// Its reply: the one it got riding along, or else from sending it now.
    pub async fn reply(self) -> Result<Value, StoreError> {
        match self.reply {
            Some(reply) => reply,
            None => self.redis.query(&self.cmd).await,
        }
    }

    /// Whether it still waits for a ride on `redis` (the same server).
    fn boards(&self, redis: &RedisStore) -> bool {
        self.reply.is_none() && std::ptr::eq(&*self.redis, redis)
    }
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
        let mut id = [0u8; 32];
        // Into a buffer: `hex::encode` collects chars one by one, ten times the work.
        if hex::encode_to_slice(fastrand::u128(..).to_be_bytes(), &mut id).is_ok() {
            key.push_str(std::str::from_utf8(&id).unwrap_or_default());
        }
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

/// The stores made so far, by URL: everything that talks to one Redis shares one connection,
/// so that commands of concurrent requests go out together.
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
        Ok(RedisStore {
            pipeline: Pipeline::new(Endpoint::parse(url.expose())?),
        })
    }

    /// One command's reply; an error reply is [`StoreError::Command`].
    async fn query(&self, cmd: &Cmd) -> Result<Value, StoreError> {
        command_reply(self.pipeline.exchange(&[cmd]).await?.pop())
    }

    /// Runs a script, with `rider` in the same write when it has not had a ride yet, and
    /// sends the script's text when Redis does not have it yet.
    async fn run(&self, call: &ScriptCall, rider: Option<&mut Rider>) -> Result<Value, StoreError> {
        let first = match rider.filter(|r| r.boards(self)) {
            None => self.query(&call.cmd).await,
            Some(rider) => match self.pipeline.exchange(&[&call.cmd, &rider.cmd]).await {
                Ok(mut replies) => {
                    rider.reply = Some(command_reply(replies.pop()));
                    command_reply(replies.pop())
                }
                Err(e) => {
                    rider.reply = Some(Err(e.clone()));
                    Err(e)
                }
            },
        };
        match first {
            Err(StoreError::Command(e)) if e.starts_with("NOSCRIPT") => {
                self.query(&call.eval()).await
            }
            other => other,
        }
    }

    /// `GET key`: the value's bytes, `None` when there is none.
    pub async fn get_bytes(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        bytes_of(self.query(&get(key)).await)
    }

    /// `SET key value PX ttl` (at least 1 ms).
    pub async fn set_px(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        self.query(&set_px(key, value, ttl)).await.map(drop)
    }

    /// `DEL key`: whether it was there. When the first send ran but its reply was lost, the
    /// retry finds nothing and answers false.
    pub async fn del(&self, key: &str) -> Result<bool, StoreError> {
        let mut cmd = Cmd::new("DEL");
        cmd.arg(key);
        match self.query(&cmd).await? {
            Value::Int(removed) => Ok(removed > 0),
            other => Err(unexpected("DEL", &other)),
        }
    }

    /// Checks every limit and, when all pass, counts the request in each.
    pub async fn admit(
        &self,
        keys: &ScriptKeys,
        budget_nano: Option<u64>,
        tokens: u64,
        limits: &[[u64; 3]],
        rider: Option<&mut Rider>,
    ) -> Result<AdmitReply, StoreError> {
        let mut call = ADMIT.call(keys, &keys.operation());
        call.cmd
            .int(budget_nano.map_or(-1, |b| b.min(i64::MAX as u64) as i64))
            .int(tokens);
        for l in limits {
            call.cmd.int(l[0]).int(l[1]).int(l[2]);
        }
        let reply = self.run(&call, rider).await?;
        let Value::Array(reply) = reply else {
            return Err(unexpected("the admission script", &reply));
        };
        let at = |i: usize| reply.get(i).and_then(Value::as_int).unwrap_or(0).max(0) as u64;
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
        rider: Option<&mut Rider>,
    ) -> Result<(), StoreError> {
        let mut call = SETTLE.call(keys, &keys.operation());
        call.cmd
            .int(token_delta)
            .int(cost_nano)
            .int(budget_ttl.map_or(0, |t| t.as_secs().max(1)));
        self.run(&call, rider).await.map(drop)
    }

    /// Current counts for the admin API: the budget, then (requests, tokens, in flight) per
    /// scope, in the order of `keys`.
    pub async fn read(&self, keys: &ScriptKeys) -> Result<Vec<u64>, StoreError> {
        let mut cmd = Cmd::new("MGET");
        for k in &keys.keys {
            cmd.arg(k);
        }
        match self.query(&cmd).await? {
            Value::Array(values) => Ok(values
                .iter()
                .map(|v| v.as_int().unwrap_or(0).max(0) as u64)
                .collect()),
            other => Err(unexpected("MGET", &other)),
        }
    }
}

/// `GET key`.
pub fn get(key: &str) -> Cmd {
    let mut cmd = Cmd::new("GET");
    cmd.arg(key);
    cmd
}

/// `GET`'s reply: the value's bytes, `None` when there is none.
pub fn bytes_of(reply: Result<Value, StoreError>) -> Result<Option<Bytes>, StoreError> {
    match reply? {
        Value::Bulk(bytes) => Ok(Some(bytes)),
        Value::Nil => Ok(None),
        other => Err(unexpected("GET", &other)),
    }
}

/// `SET key value PX ttl` (at least 1 ms).
pub fn set_px(key: &str, value: &[u8], ttl: Duration) -> Cmd {
    let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    // Redis refuses an expiry beyond what its clock can add; a century is far enough.
    let ms = ms.clamp(1, 100 * 365 * 24 * 3600 * 1000);
    let mut cmd = Cmd::with_capacity("SET", key.len() + value.len() + 48);
    cmd.arg(key).arg(value).arg("PX").int(ms);
    cmd
}

/// A command's reply; an error reply is [`StoreError::Command`].
fn command_reply(reply: Option<Value>) -> Result<Value, StoreError> {
    match reply {
        Some(Value::Error(e)) => Err(StoreError::Command(e)),
        Some(value) => Ok(value),
        None => Err(StoreError::Command("no reply".into())),
    }
}

/// A reply of the wrong kind (another program's value under our key, say).
fn unexpected(what: &str, reply: &Value) -> StoreError {
    let kind = match reply {
        Value::Nil => "nil",
        Value::Int(_) => "an integer",
        Value::Bulk(_) => "a string",
        Value::Status(_) => "a status",
        Value::Error(_) => "an error",
        Value::Array(_) => "an array",
    };
    StoreError::Command(format!("{what} answered {kind}"))
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
            Self::start_with(&[])
        }

        /// [`Self::start`] with more `redis-server` arguments.
        pub(crate) fn start_with(extra: &[&str]) -> Option<Server> {
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
                .args(extra)
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

    /// Runs `test` with a store on a fresh `redis-server` (skipped when there is none).
    fn on_redis<F: std::future::Future<Output = ()>>(test: impl FnOnce(Arc<RedisStore>) -> F) {
        let Some(server) = Server::start() else {
            eprintln!("SKIPPED: redis-server is not installed");
            return;
        };
        let store = RedisStore::shared(&crate::config::Secret::new(server.url())).unwrap();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(test(store));
    }

    #[test]
    fn a_repeated_operation_counts_once() {
        on_redis(|store| async move {
            let keys = ScriptKeys::new("t:", "team", &[0], 7, 3);
            // The same call sent twice, as a retry after a lost reply would. The first finds
            // Redis without the script (`NOSCRIPT`) and sends its text.
            let op = keys.operation();
            let admit = |op: &str| {
                let mut call = ADMIT.call(&keys, op);
                call.cmd.int(-1).int(100).int(10).int(0).int(0);
                call
            };
            let ints = |v: Value| match v {
                Value::Array(items) => items.iter().map(|i| i.as_int().unwrap()).collect(),
                other => panic!("{other:?}"),
            };
            let first: Vec<i64> = ints(store.run(&admit(&op), None).await.unwrap());
            let again: Vec<i64> = ints(store.run(&admit(&op), None).await.unwrap());
            assert_eq!(first, vec![0, 1, 100, 1]);
            assert_eq!(again, first, "the first answer, counted once");
            // A flushed script cache is reloaded too.
            let mut flush = Cmd::new("SCRIPT");
            flush.arg("FLUSH");
            store.query(&flush).await.unwrap();
            let other: Vec<i64> = ints(store.run(&admit(&keys.operation()), None).await.unwrap());
            assert_eq!(other, vec![0, 2, 200, 2]);

            let settle = |op: &str| {
                let mut call = SETTLE.call(&keys, op);
                call.cmd.int(-50).int(1000).int(0);
                call
            };
            let op = keys.operation();
            let done = store.run(&settle(&op), None).await.unwrap();
            let repeated = store.run(&settle(&op), None).await.unwrap();
            assert_eq!((done, repeated), (Value::Int(1), Value::Int(0)));
            assert_eq!(store.read(&keys).await.unwrap(), vec![1000, 2, 150, 1]);
        });
    }

    #[test]
    fn a_rider_shares_the_scripts_write_or_goes_alone() {
        on_redis(|store| async move {
            store
                .set_px("t:x", b"value", Duration::from_secs(60))
                .await
                .unwrap();
            let keys = ScriptKeys::new("t:", "team", &[0], 7, 3);
            let mut rider = Rider::new(store.clone(), get("t:x"));
            let admitted = store
                .admit(&keys, None, 1, &[[0, 0, 0]], Some(&mut rider))
                .await
                .unwrap();
            assert!(matches!(admitted, AdmitReply::Admitted { requests: 1, .. }));
            assert!(
                rider.reply.is_some(),
                "answered in the admission's exchange"
            );
            let value = bytes_of(rider.reply().await).unwrap();
            assert_eq!(value.as_deref(), Some(&b"value"[..]));

            // A write riding with settlement; one that no script takes goes alone.
            let mut write = Rider::new(store.clone(), set_px("t:y", b"1", Duration::from_secs(9)));
            store
                .settle(&keys, 0, 0, None, Some(&mut write))
                .await
                .unwrap();
            assert!(write.reply.is_some());
            write.reply().await.unwrap();
            let alone = Rider::new(store.clone(), get("t:y"));
            assert_eq!(
                bytes_of(alone.reply().await).unwrap().as_deref(),
                Some(&b"1"[..])
            );
            // An error reply belongs to the rider alone.
            let mut not_a_number = Cmd::new("INCR");
            not_a_number.arg("t:x");
            let mut wrong = Rider::new(store.clone(), not_a_number);
            let admitted = store
                .admit(&keys, None, 1, &[[0, 0, 0]], Some(&mut wrong))
                .await;
            assert!(matches!(
                admitted,
                Ok(AdmitReply::Admitted { requests: 2, .. })
            ));
            assert!(matches!(wrong.reply().await, Err(StoreError::Command(_))));
        });
    }
}
