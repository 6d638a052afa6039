//! One connection to Redis per store, its commands pipelined: requests hand their encoded
//! commands to the connection's task, which sends everything waiting in one write and reads
//! the replies back in order. While one write's replies are on their way, the next requests'
//! commands gather, so under load one write (one system call, one wake-up of Redis) carries
//! many requests' admissions and settlements; alone, a request's commands go out at once.
//!
//! Measured, the round trip's system calls cost the gateway more than all the rest of a Redis
//! call: a write and a read per request each way took ~10 µs of kernel time per request, its
//! user-space part ~5 µs. Sharing them across requests is what brings Redis on the hot path
//! close to a plain passthrough.
//!
//! Commands nobody waits for (a settlement, a cache store riding with it) hand the task a
//! function for their replies instead of a channel: it runs on the task, so such a request
//! costs no task of its own and no wake-up ([`Pipeline::send_detached`]).
//!
//! Failure handling is the task's. A connection Redis or something in between closed while it
//! was idle (`CLIENT KILL`, the server's `timeout`, a restart) is noticed before anything is
//! sent on it, and replaced. When a connection made earlier fails all the same, what was not
//! sent yet, or is safe to run twice, is sent once more on a new connection; a command that
//! may have run (its reply was lost) and must not run twice ([`Pipeline::exchange_at_most_once`]:
//! the counting scripts) fails instead. A failure on the new connection, or no answer within
//! the timeout, is the answer of every command in that write. After a connect that timed out,
//! commands are refused at once for a pause instead of each waiting for Redis again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use tokio::sync::{mpsc, oneshot};

use super::redis_store::StoreError;
use super::resp::{Cmd, Connection, Endpoint, OpenError, Value};

/// Longest wait for one write's replies (and, apart, for a connect).
pub const TIMEOUT: Duration = Duration::from_millis(250);
/// After a connect that timed out, how long commands skip Redis instead of each waiting for
/// it. A refused connect fails at once and pauses nothing: the first request after Redis is
/// back must find it.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);
/// Most requests' commands in one write.
const MAX_BATCH: usize = 256;

/// Commands of one caller, encoded, and where their replies go.
struct Job {
    encoded: Vec<u8>,
    count: usize,
    /// Whether it may be sent again after a failure that left unknown whether it ran.
    resend: bool,
    /// Told once the commands are written to the connection (dropped unsent when never).
    written: Option<oneshot::Sender<()>>,
    reply: Reply,
}

/// What is done with a reply of Redis that nobody waits for ([`Pipeline::send_detached`]): run
/// on the connection's task, given the job's replies in order, or the failure. It must be
/// quick and must not wait; it may send more commands, detached as well.
pub type Then = Box<dyn FnOnce(Result<&mut dyn Iterator<Item = Value>, StoreError>) + Send + Sync>;

/// Where a job's replies go.
enum Reply {
    /// To a caller waiting for them.
    Wait(oneshot::Sender<Result<Vec<Value>, StoreError>>),
    /// To a function run on the connection's task.
    Then(Then),
}

impl Reply {
    /// Answers with the next `count` of `replies`, taken whatever is done with them.
    fn answer(self, replies: &mut impl Iterator<Item = Value>, count: usize) {
        let mut mine = replies.take(count);
        match self {
            // A caller that went away (its request cancelled) needs no answer.
            Reply::Wait(caller) => drop(caller.send(Ok(mine.by_ref().collect()))),
            Reply::Then(then) => then(Ok(&mut mine)),
        }
        mine.for_each(drop);
    }

    fn fail(self, error: StoreError) {
        match self {
            Reply::Wait(caller) => drop(caller.send(Err(error))),
            Reply::Then(then) => then(Err(error)),
        }
    }
}

/// The way to one Redis: hands commands to its connection's task, started on first use (and
/// again when the runtime it ran on has ended, as each test's runtime does).
pub struct Pipeline {
    link: Arc<Link>,
    jobs: ArcSwapOption<mpsc::UnboundedSender<Job>>,
    /// Taken only to start a task, never on the way of a command.
    starting: std::sync::Mutex<()>,
}

/// What the connection's task needs to (re)connect.
struct Link {
    endpoint: Endpoint,
    /// Milliseconds since `started` before which no new connect is tried.
    pause_until_ms: AtomicU64,
    started: Instant,
}

impl Pipeline {
    pub fn new(endpoint: Endpoint) -> Self {
        Pipeline {
            link: Arc::new(Link {
                endpoint,
                pause_until_ms: AtomicU64::new(0),
                started: Instant::now(),
            }),
            jobs: ArcSwapOption::empty(),
            starting: std::sync::Mutex::new(()),
        }
    }

    /// Sends `cmds` together (in one write, with other requests' commands) and returns one
    /// reply per command. A failure on a connection made earlier is retried once on a new one,
    /// so every command sent here must be safe to run twice (a read, or a write whose repeat
    /// changes nothing).
    pub async fn exchange(&self, cmds: &[&Cmd]) -> Result<Vec<Value>, StoreError> {
        self.exchange_with(cmds, true, None).await
    }

    /// [`Self::exchange`] for commands that must not run twice (a counter's increment): when
    /// the connection fails after they were sent, they may have run, and the failure is their
    /// answer. Sent again only when they provably were not sent.
    pub async fn exchange_at_most_once(&self, cmds: &[&Cmd]) -> Result<Vec<Value>, StoreError> {
        self.exchange_with(cmds, false, None).await
    }

    /// [`Self::exchange`] (`resend`) or [`Self::exchange_at_most_once`], telling `written` as
    /// soon as the commands are written to Redis's connection, before their replies are back:
    /// from then on, a command any instance sends to Redis arrives after them.
    pub async fn exchange_with(
        &self,
        cmds: &[&Cmd],
        resend: bool,
        written: Option<oneshot::Sender<()>>,
    ) -> Result<Vec<Value>, StoreError> {
        let (reply, replied) = oneshot::channel();
        self.submit(Job {
            encoded: encode(cmds),
            count: cmds.len(),
            resend,
            written,
            reply: Reply::Wait(reply),
        });
        replied.await.unwrap_or_else(|_| {
            Err(StoreError::Unreachable(
                "the redis connection's task ended".into(),
            ))
        })
    }

    /// Sends `count` commands already `encoded` (with other requests', as
    /// [`Self::exchange_with`]), and returns at once: nobody waits for the replies, `then` gets
    /// them on the connection's task. Queued before this returns, so whatever this instance
    /// sends Redis after reaches it after them. Without a task to hand them to (no runtime),
    /// `then` gets the failure here.
    pub fn send_detached(
        &self,
        encoded: Vec<u8>,
        count: usize,
        resend: bool,
        written: Option<oneshot::Sender<()>>,
        then: Then,
    ) {
        self.submit(Job {
            encoded,
            count,
            resend,
            written,
            reply: Reply::Then(then),
        });
    }

    /// Hands `job` to the connection's task, started when there is none; without a runtime to
    /// start it on, answers the job with the failure.
    fn submit(&self, job: Job) {
        let Some(job) = self.try_send(job) else {
            return;
        };
        // No task yet, or its runtime has ended: start one on this runtime (once, when
        // several callers find it so at the same time).
        let _starting = self.starting.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(job) = self.try_send(job) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            job.reply.fail(StoreError::Unreachable(
                "no async runtime to talk to redis".into(),
            ));
            return;
        };
        let (jobs, queue) = mpsc::unbounded_channel();
        runtime.spawn(drive(self.link.clone(), queue));
        // The task lives as long as the sender: this send cannot fail.
        let _ = jobs.send(job);
        self.jobs.store(Some(Arc::new(jobs)));
    }

    /// Hands `job` to the running task; gives it back when there is none.
    fn try_send(&self, job: Job) -> Option<Job> {
        match self.jobs.load().as_deref() {
            Some(jobs) => jobs.send(job).err().map(|mpsc::error::SendError(job)| job),
            None => Some(job),
        }
    }
}

/// `cmds` one after another, as they go on the wire.
pub fn encode(cmds: &[&Cmd]) -> Vec<u8> {
    let mut encoded = Vec::with_capacity(cmds.iter().map(|c| c.len() + 16).sum());
    for cmd in cmds {
        cmd.write_to(&mut encoded);
    }
    encoded
}

/// The connection's task: takes every job waiting, sends them in one write, answers each
/// from the replies; ends when the pipeline is dropped.
async fn drive(link: Arc<Link>, mut queue: mpsc::UnboundedReceiver<Job>) {
    let mut conn: Option<Connection> = None;
    let mut batch: Vec<Job> = Vec::with_capacity(16);
    let mut replies: Vec<Value> = Vec::with_capacity(32);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        match link.exchange(&mut conn, &mut batch, &mut replies).await {
            Ok(()) => {
                let mut replies = replies.drain(..);
                for job in batch.drain(..) {
                    job.reply.answer(&mut replies, job.count);
                }
            }
            Err(e) => {
                replies.clear();
                for job in batch.drain(..) {
                    job.reply.fail(e.clone());
                }
            }
        }
    }
}

impl Link {
    /// One write of `batch` and its replies. A connection closed while idle is replaced
    /// first; when one made earlier fails all the same, the batch is sent once more on a new
    /// one, less the jobs that may have run and must not run twice (answered with the error).
    async fn exchange(
        &self,
        conn: &mut Option<Connection>,
        batch: &mut Vec<Job>,
        replies: &mut Vec<Value>,
    ) -> Result<(), StoreError> {
        if conn.as_mut().is_some_and(Connection::closed_while_idle) {
            log::debug!("redis closed the idle connection; opening a new one");
            *conn = None;
        }
        let reused = conn.is_some();
        let first = match self.exchange_once(conn, batch, replies).await {
            Err(StoreError::Unreachable(first)) if reused => first,
            other => return other,
        };
        log::debug!("redis connection failed ({first}); retrying on a new one");
        replies.clear();
        // What was written before the failure may have run: the jobs that must not run twice
        // keep the failure as their answer.
        if batch.iter().any(|job| !job.resend) {
            let (again, lost): (Vec<Job>, Vec<Job>) = batch.drain(..).partition(|job| job.resend);
            for job in lost {
                job.reply.fail(StoreError::Unreachable(format!(
                    "{first} (not sent again: it may have run)"
                )));
            }
            batch.extend(again);
            if batch.is_empty() {
                return Ok(());
            }
        }
        self.exchange_once(conn, batch, replies).await
    }

    async fn exchange_once(
        &self,
        conn: &mut Option<Connection>,
        batch: &mut [Job],
        replies: &mut Vec<Value>,
    ) -> Result<(), StoreError> {
        let open = match conn {
            Some(open) => open,
            None => conn.insert(self.connect().await?),
        };
        let count = batch.iter().map(|job| job.count).sum();
        let exchange = async {
            open.send(batch.iter().map(|job| job.encoded.as_slice()))
                .await?;
            for job in batch.iter_mut() {
                if let Some(written) = job.written.take() {
                    let _ = written.send(());
                }
            }
            open.receive(count, replies).await
        };
        match tokio::time::timeout(TIMEOUT, exchange).await {
            Ok(Ok(())) => Ok(()),
            // Replies may still be on their way: the connection cannot be used again.
            Err(_) => {
                *conn = None;
                Err(StoreError::Timeout)
            }
            Ok(Err(e)) => {
                *conn = None;
                Err(StoreError::Unreachable(e.to_string()))
            }
        }
    }

    async fn connect(&self) -> Result<Connection, StoreError> {
        let now = self.started.elapsed().as_millis() as u64;
        if now < self.pause_until_ms.load(Ordering::Acquire) {
            return Err(StoreError::Unreachable("reconnecting".into()));
        }
        Connection::open(&self.endpoint, TIMEOUT)
            .await
            .map_err(|e| {
                if let OpenError::TimedOut = e {
                    let pause = now + RECONNECT_PAUSE.as_millis() as u64;
                    self.pause_until_ms.store(pause, Ordering::Release);
                }
                StoreError::Unreachable(e.to_string())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::test_server::Server;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    fn cmd(parts: &[&str]) -> Cmd {
        let mut cmd = Cmd::new(parts[0]);
        for part in &parts[1..] {
            cmd.arg(part);
        }
        cmd
    }

    /// `INFO stats`' count of reads Redis made from its clients: one per write that reached it.
    async fn reads_processed(pipeline: &Pipeline) -> i64 {
        let reply = pipeline
            .exchange(&[&cmd(&["INFO", "stats"])])
            .await
            .unwrap();
        let Some(Value::Bulk(text)) = reply.first() else {
            panic!("{reply:?}")
        };
        String::from_utf8_lossy(text)
            .lines()
            .find_map(|l| l.strip_prefix("total_reads_processed:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap()
    }

    #[test]
    fn concurrent_callers_share_writes_and_each_gets_its_own_replies() {
        let Some(server) = Server::start() else {
            eprintln!("SKIPPED: redis-server is not installed");
            return;
        };
        let pipeline = Arc::new(Pipeline::new(Endpoint::parse(&server.url()).unwrap()));
        runtime().block_on(async {
            let before = reads_processed(&pipeline).await;
            let callers: Vec<_> = (0..200)
                .map(|i| {
                    let pipeline = pipeline.clone();
                    tokio::spawn(async move {
                        let (key, value) = (format!("k{i}"), format!("v{i}"));
                        let set = cmd(&["SET", &key, &value]);
                        let get = cmd(&["GET", &key]);
                        let replies = pipeline.exchange(&[&set, &get]).await.unwrap();
                        assert_eq!(
                            replies,
                            [
                                Value::Status(bytes::Bytes::from_static(b"OK")),
                                Value::Bulk(value.into_bytes().into())
                            ]
                        );
                    })
                })
                .collect();
            for caller in callers {
                caller.await.unwrap();
            }
            // 200 callers' 400 commands (and the INFO before) reached Redis in fewer writes.
            let writes = reads_processed(&pipeline).await - before;
            assert!(writes < 200, "{writes} writes for 200 callers");
        });
    }

    #[test]
    fn a_silent_server_times_out_and_the_next_call_reconnects() {
        // Accepts connections and reads, never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicU64::new(0));
        let counted = accepted.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                counted.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
        let pipeline =
            Pipeline::new(Endpoint::parse(&format!("redis://127.0.0.1:{port}/0")).unwrap());
        runtime().block_on(async {
            for _ in 0..2 {
                let started = Instant::now();
                let err = pipeline.exchange(&[&cmd(&["PING"])]).await.unwrap_err();
                assert!(matches!(err, StoreError::Timeout), "{err}");
                let waited = started.elapsed();
                assert!(waited >= TIMEOUT && waited < TIMEOUT * 3, "{waited:?}");
            }
        });
    }

    #[test]
    fn the_connection_authenticates_and_selects_the_urls_database() {
        let Some(server) = Server::start_with(&["--requirepass", "hunter2"]) else {
            eprintln!("SKIPPED: redis-server is not installed");
            return;
        };
        let at = |auth: &str, db: u8| {
            let url = format!("redis://{auth}@127.0.0.1:{}/{db}", server.1);
            Pipeline::new(Endpoint::parse(&url).unwrap())
        };
        runtime().block_on(async {
            let (db2, db0) = (at(":hunter2", 2), at("default:hunter2", 0));
            db2.exchange(&[&cmd(&["SET", "k", "in 2"])]).await.unwrap();
            let get = cmd(&["GET", "k"]);
            assert_eq!(
                db2.exchange(&[&get]).await.unwrap(),
                [Value::Bulk(bytes::Bytes::from_static(b"in 2"))]
            );
            assert_eq!(db0.exchange(&[&get]).await.unwrap(), [Value::Nil]);
            let err = at(":not-the-pw", 0).exchange(&[&get]).await.unwrap_err();
            assert!(matches!(err, StoreError::Unreachable(_)), "{err}");
            assert!(!err.to_string().contains("not-the-pw"), "{err}");
        });
    }

    #[test]
    fn a_runtime_that_ended_takes_its_task_and_the_next_one_starts_another() {
        let Some(server) = Server::start() else {
            eprintln!("SKIPPED: redis-server is not installed");
            return;
        };
        let pipeline = Pipeline::new(Endpoint::parse(&server.url()).unwrap());
        for _ in 0..3 {
            let reply = runtime().block_on(pipeline.exchange(&[&cmd(&["PING"])]));
            assert_eq!(
                reply.unwrap(),
                [Value::Status(bytes::Bytes::from_static(b"PONG"))]
            );
        }
    }

    /// A fake Redis whose every connection answers its first write (`+OK` per command) and
    /// closes after reading the second, unanswered: a reply lost after the command was sent.
    /// Returns its port and the commands it read, in order.
    fn answers_once_then_drops() -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    for write in 0..2 {
                        let Ok(n @ 1..) = stream.read(&mut buf) else {
                            return;
                        };
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        // The command's name is the first bulk string of each array.
                        let names: Vec<String> = text
                            .split("\r\n")
                            .collect::<Vec<_>>()
                            .windows(3)
                            .filter(|w| w[0].starts_with('*'))
                            .map(|w| w[2].to_owned())
                            .collect();
                        let count = names.len();
                        // Logged before the reply, which ends the caller's wait.
                        log.lock().unwrap().extend(names);
                        if write == 0 {
                            let _ = stream.write_all(&b"+OK\r\n".repeat(count));
                        }
                    }
                });
            }
        });
        (port, seen)
    }

    #[test]
    fn a_lost_reply_resends_reads_but_never_runs_a_counter_twice() {
        let (port, seen) = answers_once_then_drops();
        let pipeline =
            Pipeline::new(Endpoint::parse(&format!("redis://127.0.0.1:{port}/0")).unwrap());
        let ok = || vec![Value::Status(bytes::Bytes::from_static(b"OK"))];
        runtime().block_on(async {
            // The first connection answers, then loses the counter's reply.
            assert_eq!(pipeline.exchange(&[&cmd(&["PING"])]).await.unwrap(), ok());
            let err = pipeline
                .exchange_at_most_once(&[&cmd(&["INCR", "n"])])
                .await
                .unwrap_err();
            assert!(
                matches!(&err, StoreError::Unreachable(e) if e.contains("not sent again")),
                "{err}"
            );
            // The second answers, then loses the read's reply: the read goes again on a third.
            assert_eq!(pipeline.exchange(&[&cmd(&["PING"])]).await.unwrap(), ok());
            assert_eq!(
                pipeline.exchange(&[&cmd(&["GET", "n"])]).await.unwrap(),
                ok()
            );
        });
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen, ["PING", "INCR", "PING", "GET", "GET"]);
    }

    #[test]
    fn a_connection_closed_while_idle_is_replaced_before_a_counter_is_sent() {
        let Some(server) = Server::start() else {
            eprintln!("SKIPPED: redis-server is not installed");
            return;
        };
        let (pipeline, other) = (
            Pipeline::new(Endpoint::parse(&server.url()).unwrap()),
            Pipeline::new(Endpoint::parse(&server.url()).unwrap()),
        );
        let incr = cmd(&["INCR", "n"]);
        runtime().block_on(async {
            assert_eq!(
                pipeline.exchange_at_most_once(&[&incr]).await.unwrap(),
                [Value::Int(1)]
            );
            // Every client but `other`'s own connection, i.e. `pipeline`'s, is closed.
            let kill = cmd(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]);
            assert_eq!(other.exchange(&[&kill]).await.unwrap(), [Value::Int(1)]);
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(
                pipeline.exchange_at_most_once(&[&incr]).await.unwrap(),
                [Value::Int(2)]
            );
        });
    }

    #[test]
    fn written_is_told_once_the_commands_are_on_the_connection_before_any_reply() {
        use std::io::Read;
        // Reads everything, answers nothing.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (got, received) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let got = got.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = stream.read(&mut buf) {
                        let _ = got.send(String::from_utf8_lossy(&buf[..n]).into_owned());
                    }
                });
            }
        });
        let pipeline =
            Pipeline::new(Endpoint::parse(&format!("redis://127.0.0.1:{port}/0")).unwrap());
        runtime().block_on(async {
            let (tell, told) = oneshot::channel();
            let set = cmd(&["SET", "k", "v"]);
            let cmds = [&set];
            let exchange = pipeline.exchange_with(&cmds, false, Some(tell));
            tokio::pin!(exchange);
            tokio::select! {
                written = told => written.expect("told, not dropped"),
                replied = &mut exchange => panic!("replied before written: {replied:?}"),
            }
            // Already written when told: the server has it without any further poll.
            let seen = received.recv_timeout(Duration::from_secs(2)).unwrap();
            assert!(seen.contains("SET"), "{seen}");
            // Its reply never comes.
            let err = exchange.await.unwrap_err();
            assert!(matches!(err, StoreError::Timeout), "{err}");

            // Never written (nothing listens): dropped untold.
            let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let nowhere = closed.local_addr().unwrap().port();
            drop(closed);
            let pipeline =
                Pipeline::new(Endpoint::parse(&format!("redis://127.0.0.1:{nowhere}/0")).unwrap());
            let (tell, told) = oneshot::channel();
            assert!(pipeline
                .exchange_with(&[&set], true, Some(tell))
                .await
                .is_err());
            assert!(told.await.is_err());
        });
    }
}
