//! Counters in Redis, shared by every gateway instance on it. Admission is one Lua script (one
//! round trip, atomic across all the key's counters: it checks every limit before any count
//! stays); settlement is plain increments in one write. Both go over one pipelined connection
//! per Redis ([`super::pipeline`], speaking [`super::resp`]).
//!
//! A connection Redis or something in between dropped while it was idle (`CLIENT KILL`, the
//! server's `timeout`, a restart or failover) is replaced before the next command goes out on
//! it ([`super::pipeline`]). Admission and settlement count, so they are sent at most once:
//! when a connection fails after they were sent, they may have run, and the failure is their
//! answer (the key's `failure_mode` decides) rather than a second count. Reads and the cache's
//! writes are sent again on a new connection.
//!
//! Redis's own work is part of the price of every request, so both do the least that keeps
//! the counters exact: a counter is incremented and checked (and the increments undone when
//! one is over its limit) rather than read first, an expiry is set when a per-minute counter
//! is created rather than on every call, and only admission, which must check before it
//! counts, is a script. Measured in Redis's `commandstats`, a request's two scripts cost
//! ~20 µs of Redis's time with per-call operation ids and read-before-write; see
//! BENCHMARKS.md for what a request costs it now.
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
use tokio::sync::oneshot;

use super::pipeline::{encode, Pipeline, Then, TIMEOUT};
use super::resp::{self, Cmd, Endpoint, Value};
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

    /// `EVALSHA sha numkeys keys…` for a request's counters; the caller adds the arguments.
    fn call(&'static self, keys: &ScriptKeys) -> ScriptCall {
        let bytes = keys.text.len() + 8 * keys.len();
        let mut cmd = Cmd::with_capacity("EVALSHA", bytes + 128);
        cmd.arg(&self.sha);
        let head = cmd.len();
        cmd.int(keys.len());
        for key in keys.iter() {
            cmd.arg(key);
        }
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

/// KEYS: budget, then (requests, tokens, in-flight) per scope. ARGV: budget limit in nano-USD
/// (-1: none), tokens to reserve, then (rpm, tpm, concurrency) limits per scope (0: none).
/// Returns {0, requests, tokens, in_flight} of scope 0 when admitted, else {reason, scope,
/// count} with reason 1 rpm, 2 tpm, 3 concurrency, 4 budget, and count what was used before
/// this request. A refusal counts nothing: the increments made are undone before it returns
/// (the script is atomic, so no other client sees them).
static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local budget = tonumber(ARGV[1])
if budget >= 0 then
  local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
  if spent >= budget then return {4, 0, spent} end
end
local tokens = tonumber(ARGV[2])
local scopes = (#KEYS - 1) / 3
local first
for i = 0, scopes - 1 do
  local rk, tk, ck = KEYS[2 + 3*i], KEYS[3 + 3*i], KEYS[4 + 3*i]
  local r = redis.call('INCR', rk)
  if r == 1 then redis.call('EXPIRE', rk, 120) end
  local t = redis.call('INCRBY', tk, tokens)
  if t == tokens then redis.call('EXPIRE', tk, 120) end
  local c = redis.call('INCR', ck)
  redis.call('EXPIRE', ck, 600)
  local rpm, tpm, conc = tonumber(ARGV[3 + 3*i]), tonumber(ARGV[4 + 3*i]), tonumber(ARGV[5 + 3*i])
  local reason, count
  if rpm > 0 and r > rpm then reason, count = 1, r - 1
  elseif tpm > 0 and t > tpm then reason, count = 2, t - tokens
  elseif conc > 0 and c > conc then reason, count = 3, c - 1 end
  if reason then
    for j = 0, i do
      redis.call('DECR', KEYS[2 + 3*j])
      redis.call('DECRBY', KEYS[3 + 3*j], tokens)
      redis.call('DECR', KEYS[4 + 3*j])
    end
    return {reason, i, count}
  end
  if i == 0 then first = {0, r, t, c} end
end
return first or {0, 0, 0, 0}
"#,
    )
});

/// How long a per-minute counter lives after its creation, and an in-flight count after its
/// last admission: as [`ADMIT`] sets them.
const MINUTE_COUNTER_TTL_S: u64 = 120;
const IN_FLIGHT_TTL_S: u64 = 600;

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

/// A command sent in the same write as the counters' (the answer cache's lookup beside
/// admission, its store beside settlement): all are answered in one round trip. When nothing
/// took it along, [`Rider::reply`] sends it alone. It must be safe to send twice (see
/// [`Pipeline::exchange`]); riding along, it is sent at most once, as the counters are.
pub struct Rider {
    redis: Arc<RedisStore>,
    cmd: Cmd,
    reply: Option<Result<Value, StoreError>>,
    written: Option<oneshot::Sender<()>>,
}

impl Rider {
    pub fn new(redis: Arc<RedisStore>, cmd: Cmd) -> Self {
        Rider {
            redis,
            cmd,
            reply: None,
            written: None,
        }
    }

    /// Told as soon as the command is written to Redis's connection, riding along or alone
    /// (the pipeline's `exchange_with`); closed unsent when it never is.
    pub fn written(&mut self) -> oneshot::Receiver<()> {
        let (tell, told) = oneshot::channel();
        self.written = Some(tell);
        told
    }

    /// Its reply: the one it got riding along, or else from sending it now.
    pub async fn reply(self) -> Result<Value, StoreError> {
        match self.reply {
            Some(reply) => reply,
            None => command_reply(
                self.redis
                    .pipeline
                    .exchange_with(&[&self.cmd], true, self.written)
                    .await?
                    .pop(),
            ),
        }
    }

    /// Whether it can still ride with commands sent to `redis` (the same server).
    pub fn rides_with(&self, redis: &RedisStore) -> bool {
        self.reply.is_none() && std::ptr::eq(&*self.redis, redis)
    }

    /// Sends it alone with nobody waiting (the pipeline's `send_detached`); `then` gets its
    /// reply on the connection's task.
    pub fn send_detached(
        self,
        then: impl FnOnce(Result<Value, StoreError>) + Send + Sync + 'static,
    ) {
        let then: Then =
            Box::new(move |replies| then(replies.and_then(|r| command_reply(r.next()))));
        self.redis
            .pipeline
            .send_detached(encode(&[&self.cmd]), 1, true, self.written, then);
    }
}

/// What is done with a [`Rider`]'s reply when nobody waits for it: run on the connection's
/// task (see the pipeline's `Then`).
pub type RiderThen = Box<dyn FnOnce(Result<Value, StoreError>) + Send + Sync>;

/// The keys of one request's counters, for a script: `budget_period`, then the three
/// counters (requests, tokens, in flight) of each scope.
#[derive(Debug, Clone)]
pub struct ScriptKeys {
    /// All keys, one after another: one allocation, not one a key (this runs on every request
    /// of a limited key).
    text: String,
    /// Where each key ends in `text`.
    ends: Vec<usize>,
}

impl ScriptKeys {
    /// `budget_period`, then the three counters of each scope for `minute`.
    pub fn new(prefix: &str, name: &str, scopes: &[usize], minute: u64, period: u64) -> Self {
        let count = 1 + 3 * scopes.len();
        let mut keys = ScriptKeys {
            text: String::with_capacity(count * (prefix.len() + name.len() + 24)),
            ends: Vec::with_capacity(count),
        };
        // Pieces pushed, not `format!`ted: the formatting machinery cost more than the rest of
        // making the keys.
        let mut numbers = itoa::Buffer::new();
        keys.push(prefix, name, &[":budget:", numbers.format(period)]);
        let minute = numbers.format(minute);
        for &s in scopes {
            let mut scope = itoa::Buffer::new();
            let scope = scope.format(s);
            keys.push(prefix, name, &[":s", scope, ":req:", minute]);
            keys.push(prefix, name, &[":s", scope, ":tok:", minute]);
            keys.push(prefix, name, &[":s", scope, ":conc"]);
        }
        keys
    }

    fn push(&mut self, prefix: &str, name: &str, parts: &[&str]) {
        self.text.push_str(prefix);
        self.text.push_str(name);
        for part in parts {
            self.text.push_str(part);
        }
        self.ends.push(self.text.len());
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    /// The `i`th key.
    fn get(&self, i: usize) -> &str {
        let start = i.checked_sub(1).map_or(0, |before| self.ends[before]);
        &self.text[start..self.ends[i]]
    }

    fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.len()).map(|i| self.get(i))
    }

    /// The budget's key.
    fn budget(&self) -> &str {
        self.get(0)
    }

    /// The (tokens, in flight) counters of each scope.
    fn settled(&self) -> impl Iterator<Item = (&str, &str)> {
        (0..(self.len() - 1) / 3).map(|s| (self.get(2 + 3 * s), self.get(3 + 3 * s)))
    }
}

/// What settling a request changes in Redis.
pub struct Settlement {
    pub keys: ScriptKeys,
    /// Tokens used less tokens reserved.
    pub token_delta: i64,
    pub cost_nano: u64,
    /// How long the budget's counter lives when the settlement creates it.
    pub budget_ttl: Option<Duration>,
}

impl Settlement {
    /// (key, amount added, seconds it lives when this created it; 0: for ever), in the order
    /// the increments are sent.
    fn changes(&self) -> impl Iterator<Item = (&str, i64, u64)> {
        let token_delta = self.token_delta;
        let scopes = self.keys.settled().flat_map(move |(tokens, in_flight)| {
            let tokens = (token_delta != 0).then_some((tokens, token_delta, MINUTE_COUNTER_TTL_S));
            tokens
                .into_iter()
                .chain(std::iter::once((in_flight, -1, IN_FLIGHT_TTL_S)))
        });
        let budget = (self.cost_nano > 0).then(|| {
            let ttl = self.budget_ttl.map_or(0, |t| t.as_secs().max(1));
            let cost = self.cost_nano.min(i64::MAX as u64) as i64;
            (self.keys.budget(), cost, ttl)
        });
        scopes.chain(budget)
    }

    /// The repairs the increments' `replies` call for: an expiry for a counter the settlement
    /// created, a count below zero brought back.
    fn repairs(&self, replies: impl Iterator<Item = Value>) -> Result<Vec<Cmd>, StoreError> {
        let mut repairs = Vec::new();
        for ((key, by, ttl), reply) in self.changes().zip(replies) {
            let now = match command_reply(Some(reply))? {
                Value::Int(now) => now,
                other => return Err(unexpected("INCRBY", &other)),
            };
            if now == by && ttl > 0 {
                let mut expire = Cmd::new("EXPIRE");
                expire.arg(key).int(ttl);
                repairs.push(expire);
            }
            if now < 0 {
                repairs.push(incr_by(key, -now));
            }
        }
        Ok(repairs)
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

    /// Sends counting commands (at most once: see the module's doc), with `rider` in the same
    /// write when it has not had a ride yet; one reply per command.
    async fn count(
        &self,
        cmds: &[&Cmd],
        rider: Option<&mut Rider>,
    ) -> Result<Vec<Value>, StoreError> {
        let Some(rider) = rider.filter(|r| r.rides_with(self)) else {
            return self.pipeline.exchange_at_most_once(cmds).await;
        };
        let mut all = Vec::with_capacity(cmds.len() + 1);
        all.extend_from_slice(cmds);
        all.push(&rider.cmd);
        match self
            .pipeline
            .exchange_with(&all, false, rider.written.take())
            .await
        {
            Ok(mut replies) => {
                rider.reply = Some(command_reply(replies.pop()));
                Ok(replies)
            }
            Err(e) => {
                rider.reply = Some(Err(e.clone()));
                Err(e)
            }
        }
    }

    /// Runs a script (at most once), with `rider` in the same write, and sends the script's
    /// text when Redis does not have it yet.
    async fn run(&self, call: &ScriptCall, rider: Option<&mut Rider>) -> Result<Value, StoreError> {
        let first = command_reply(self.count(&[&call.cmd], rider).await?.pop());
        match first {
            // `NOSCRIPT` ran nothing: sending the text is not a second run.
            Err(StoreError::Command(e)) if e.starts_with("NOSCRIPT") => command_reply(
                self.pipeline
                    .exchange_at_most_once(&[&call.eval()])
                    .await?
                    .pop(),
            ),
            other => other,
        }
    }

    /// `GET key`: the value's bytes, `None` when there is none.
    pub async fn get_bytes(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        bytes_of(self.query(&get(key)).await)
    }

    /// `SET key value PX ttl` (at least 1 ms).
    pub async fn set_px(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        self.query(&set_px(key, &[value], ttl)).await.map(drop)
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
        let mut call = ADMIT.call(keys);
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
    ///
    /// Plain increments, not a script: a script costs Redis about 4 µs a call, an increment
    /// 0.15 µs, and settling needs no atomicity across counters. The rare repairs after (an
    /// expiry for a counter this created, because its own had expired under a long request; a
    /// count that went below zero brought back) are increments and expiries too, so they are
    /// right whatever other requests did in between.
    ///
    /// Waits for what [`Self::settle_detached`] does, so both run the same increments and
    /// repairs.
    pub async fn settle(self: &Arc<Self>, settlement: Settlement) -> Result<(), StoreError> {
        let (tell, told) = oneshot::channel();
        self.settle_detached(settlement, None, move |settled, _| {
            let _ = tell.send(settled);
        });
        told.await.unwrap_or_else(|_| {
            Err(StoreError::Unreachable(
                "the redis connection's task ended".into(),
            ))
        })
    }

    /// [`Self::settle`] with nobody waiting: queued on the connection before this returns, so
    /// that whatever this instance sends Redis after reaches it after the settlement; the
    /// replies are read on the connection's task, which sends any repairs itself. `rider`
    /// (for this store: [`Rider::rides_with`]) goes in the same write. `done` gets, on the
    /// connection's task, the settlement's outcome and the rider's reply.
    ///
    /// No task and no waiting caller: per request, this spares a task's allocation, its
    /// wake-ups and the reply's channel (measured in the load bench).
    pub fn settle_detached(
        self: &Arc<Self>,
        settlement: Settlement,
        rider: Option<Rider>,
        done: impl FnOnce(Result<(), StoreError>, Option<Result<Value, StoreError>>)
            + Send
            + Sync
            + 'static,
    ) {
        let (written, ride) = match rider {
            Some(rider) => (rider.written, Some(rider.cmd)),
            None => (None, None),
        };
        let mut encoded = Vec::with_capacity(256 + ride.as_ref().map_or(0, |cmd| cmd.len() + 16));
        let mut count = 0;
        let mut numbers = itoa::Buffer::new();
        for (key, by, _) in settlement.changes() {
            resp::write_command(
                &mut encoded,
                &[b"INCRBY", key.as_bytes(), numbers.format(by).as_bytes()],
            );
            count += 1;
        }
        let rides = ride.is_some();
        if let Some(cmd) = &ride {
            cmd.write_to(&mut encoded);
        }
        let store = self.clone();
        let then: Then = Box::new(move |replies| {
            let replies = match replies {
                Ok(replies) => replies,
                Err(e) => return done(Err(e.clone()), rides.then_some(Err(e))),
            };
            let repairs = settlement.repairs((&mut *replies).take(count));
            let ride = rides.then(|| command_reply(replies.next()));
            match repairs {
                Ok(repairs) if !repairs.is_empty() => {
                    let refs: Vec<&Cmd> = repairs.iter().collect();
                    let then: Then = Box::new(move |sent| done(sent.map(drop), ride));
                    store
                        .pipeline
                        .send_detached(encode(&refs), refs.len(), false, None, then);
                }
                settled => done(settled.map(drop), ride),
            }
        });
        self.pipeline
            .send_detached(encoded, count + rides as usize, false, written, then);
    }

    /// Current counts for the admin API: the budget, then (requests, tokens, in flight) per
    /// scope, in the order of `keys`.
    pub async fn read(&self, keys: &ScriptKeys) -> Result<Vec<u64>, StoreError> {
        let mut cmd = Cmd::new("MGET");
        for k in keys.iter() {
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

/// `SET key value PX ttl` (at least 1 ms), the value given in parts.
pub fn set_px(key: &str, value: &[&[u8]], ttl: Duration) -> Cmd {
    let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    // Redis refuses an expiry beyond what its clock can add; a century is far enough.
    let ms = ms.clamp(1, 100 * 365 * 24 * 3600 * 1000);
    let size: usize = value.iter().map(|part| part.len()).sum();
    let mut cmd = Cmd::with_capacity("SET", key.len() + size + 64);
    cmd.arg(key).arg_parts(value).arg("PX").int(ms);
    cmd
}

/// `INCRBY key by`.
fn incr_by(key: &str, by: i64) -> Cmd {
    let mut cmd = Cmd::with_capacity("INCRBY", key.len() + 32);
    cmd.arg(key).int(by);
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
            keys.iter().collect::<Vec<_>>(),
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

    async fn ttl(store: &RedisStore, key: &str) -> i64 {
        let mut cmd = Cmd::new("TTL");
        cmd.arg(key);
        match store.query(&cmd).await.unwrap() {
            Value::Int(seconds) => seconds,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn admission_counts_what_it_admits_and_nothing_it_refuses() {
        on_redis(|store| async move {
            // Scope 0 (the key) and scope 1 (a model's own limits).
            let keys = ScriptKeys::new("t:", "team", &[0, 1], 7, 3);
            let admit = |tokens: u64, limits: [[u64; 3]; 2]| {
                let (store, keys) = (&store, &keys);
                async move {
                    store
                        .admit(keys, None, tokens, &limits, None)
                        .await
                        .unwrap()
                }
            };
            let open = [[0, 0, 0], [0, 0, 0]];
            assert!(matches!(
                admit(100, open).await,
                AdmitReply::Admitted {
                    requests: 1,
                    tokens: 100
                }
            ));
            let counts = vec![0, 1, 100, 1, 1, 100, 1];
            assert_eq!(store.read(&keys).await.unwrap(), counts);
            // Over each limit in turn, in either scope: refused with the count before it, and
            // every increment undone.
            for (limits, reason, scope, count) in [
                ([[1, 0, 0], [0, 0, 0]], 1, 0, 1),
                ([[0, 150, 0], [0, 0, 0]], 2, 0, 100),
                ([[0, 0, 1], [0, 0, 0]], 3, 0, 1),
                ([[0, 0, 0], [1, 0, 0]], 1, 1, 1),
                ([[0, 0, 0], [0, 0, 1]], 3, 1, 1),
            ] {
                let AdmitReply::Refused {
                    reason: r,
                    scope: s,
                    count: c,
                } = admit(100, limits).await
                else {
                    panic!("{limits:?} admitted");
                };
                assert_eq!((r, s, c), (reason, scope, count), "{limits:?}");
                assert_eq!(store.read(&keys).await.unwrap(), counts, "{limits:?}");
            }
            // A flushed script cache is reloaded (`NOSCRIPT`, then the text).
            let mut flush = Cmd::new("SCRIPT");
            flush.arg("FLUSH");
            store.query(&flush).await.unwrap();
            assert!(matches!(
                admit(100, [[2, 200, 2], [2, 200, 2]]).await,
                AdmitReply::Admitted {
                    requests: 2,
                    tokens: 200
                }
            ));
            // Per-minute counters expire after two minutes, in-flight ones ten minutes after
            // their last change.
            for (key, range) in [
                ("t:team:s0:req:7", 110..=120),
                ("t:team:s1:tok:7", 110..=120),
                ("t:team:s1:conc", 590..=600),
            ] {
                let left = ttl(&store, key).await;
                assert!(range.contains(&left), "{key}: {left}");
            }
        });
    }

    #[test]
    fn settlement_corrects_tokens_frees_slots_and_adds_the_cost() {
        on_redis(|store| async move {
            let keys = ScriptKeys::new("t:", "team", &[0], 7, 3);
            let budget = Some(10_000);
            for _ in 0..2 {
                store
                    .admit(&keys, budget, 100, &[[0, 0, 0]], None)
                    .await
                    .unwrap();
            }
            let hour = Some(Duration::from_secs(3600));
            let settlement = |keys: &ScriptKeys, token_delta, cost_nano, budget_ttl| Settlement {
                keys: keys.clone(),
                token_delta,
                cost_nano,
                budget_ttl,
            };
            store
                .settle(settlement(&keys, -50, 4000, hour))
                .await
                .unwrap();
            assert_eq!(store.read(&keys).await.unwrap(), vec![4000, 2, 150, 1]);
            // The period's first cost gave the budget its expiry.
            assert!((3590..=3600).contains(&ttl(&store, "t:team:budget:3").await));
            store
                .settle(settlement(&keys, 30, 6000, hour))
                .await
                .unwrap();
            assert_eq!(store.read(&keys).await.unwrap(), vec![10_000, 2, 180, 0]);
            // Spent: refused, counting nothing.
            let refused = store
                .admit(&keys, budget, 100, &[[0, 0, 0]], None)
                .await
                .unwrap();
            assert!(matches!(
                refused,
                AdmitReply::Refused {
                    reason: 4,
                    count: 10_000,
                    ..
                }
            ));
            // A settlement after its minute's counter expired leaves none without an expiry,
            // and no slot count below zero; nobody waiting, the connection's task repairs.
            for (name, minute) in [("late", 8), ("later", 9)] {
                let late = ScriptKeys::new("t:", name, &[0], minute, 3);
                let counter = format!("t:{name}:s0:tok:{minute}");
                if name == "late" {
                    store.settle(settlement(&late, 40, 0, None)).await.unwrap();
                } else {
                    let (tell, told) = tokio::sync::oneshot::channel();
                    store.settle_detached(settlement(&late, 40, 0, None), None, |settled, ride| {
                        let _ = tell.send((settled, ride.is_none()));
                    });
                    let (settled, no_ride) = told.await.unwrap();
                    settled.unwrap();
                    assert!(no_ride);
                }
                assert_eq!(store.read(&late).await.unwrap(), vec![0, 0, 40, 0]);
                assert!((110..=120).contains(&ttl(&store, &counter).await));
            }
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

            // A write riding with a settlement nobody waits for: its reply goes to `done`.
            let write = Rider::new(
                store.clone(),
                set_px("t:y", &[b"1"], Duration::from_secs(9)),
            );
            assert!(write.rides_with(&store));
            let settlement = Settlement {
                keys: keys.clone(),
                token_delta: 0,
                cost_nano: 0,
                budget_ttl: None,
            };
            let (tell, told) = tokio::sync::oneshot::channel();
            store.settle_detached(settlement, Some(write), |settled, ride| {
                let _ = tell.send((settled, ride));
            });
            let (settled, ride) = told.await.unwrap();
            settled.unwrap();
            assert_eq!(
                ride.unwrap().unwrap(),
                Value::Status(Bytes::from_static(b"OK"))
            );
            // One that nothing takes along goes alone.
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
