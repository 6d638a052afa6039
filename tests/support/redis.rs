//! A real `redis-server` for the tests that share state between gateways (`.ci/run` installs
//! it; without it those tests say SKIPPED).

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `redis-server` on a free port, killed on drop.
pub struct Redis {
    pub port: u16,
    child: Child,
}

impl Redis {
    pub fn start_on(port: u16) -> Option<Redis> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let redis = Redis { port, child };
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(redis);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not listen on {port}");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn redis_available() -> bool {
    let ok = Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: redis-server is not installed (apt-get install redis-server)");
    }
    ok
}
