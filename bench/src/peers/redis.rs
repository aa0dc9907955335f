//! Redis through the `redis` crate, against a `redis-server` on 127.0.0.1 that the harness
//! starts on a free port (no persistence) and stops when done.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::kv::Kv;

/// A running `redis-server`, killed (and its scratch directory removed) on drop.
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: PathBuf,
    pub version: String,
}

/// Why Redis is not measured, or `None` if `redis-server` is on the PATH.
pub fn unavailable() -> Option<String> {
    match Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => None,
        Ok(s) => Some(format!("`redis-server --version` failed ({s})")),
        Err(e) => Some(format!(
            "redis-server is not installed ({e}); install it with `apt-get install redis-server` to include Redis"
        )),
    }
}

fn free_port() -> u16 {
    // The kernel picks a free port; there is a small window before redis-server binds it.
    let l = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    l.local_addr().expect("local address").port()
}

impl RedisServer {
    /// Starts a server with no persistence and `allkeys-lru` eviction (which only acts once
    /// a workload sets `maxmemory`). Waits until it answers PING (at most 10 s).
    pub fn start() -> RedisServer {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "shmstore-bench-redis-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("redis scratch directory");
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args([
                "--maxmemory-policy",
                "allkeys-lru",
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting redis-server");
        let mut server = RedisServer {
            child,
            port,
            dir,
            version: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut con) = server.try_connect()
                && redis::cmd("PING").query::<String>(&mut con).is_ok()
            {
                let info: String = redis::cmd("INFO")
                    .arg("server")
                    .query(&mut con)
                    .expect("INFO server");
                server.version = info_field(&info, "redis_version")
                    .unwrap_or_default()
                    .to_owned();
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("redis-server exited at start ({status})");
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on port {port} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn try_connect(&self) -> redis::RedisResult<redis::Connection> {
        connect_port(self.port)
    }

    pub fn client(&self) -> RedisKv {
        RedisKv::connect(self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn connect_port(port: u16) -> redis::RedisResult<redis::Connection> {
    use redis::IntoConnectionInfo;
    // Without Nagle's delay, as a latency-minded client sets it (redis-benchmark does).
    let info = format!("redis://127.0.0.1:{port}/")
        .into_connection_info()?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    redis::Client::open(info)?.get_connection()
}

/// `field:value` from an INFO reply.
pub fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

/// One client connection (one round trip per operation, no pipelining).
pub struct RedisKv(redis::Connection);

impl RedisKv {
    pub fn connect(port: u16) -> RedisKv {
        RedisKv(
            connect_port(port)
                .unwrap_or_else(|e| panic!("connecting to redis on port {port}: {e}")),
        )
    }

    pub fn flushall(&mut self) {
        redis::cmd("FLUSHALL")
            .query::<()>(&mut self.0)
            .expect("FLUSHALL");
    }

    /// `maxmemory` in bytes; 0 is no limit.
    pub fn set_maxmemory(&mut self, bytes: u64) {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg(bytes)
            .query::<()>(&mut self.0)
            .expect("CONFIG SET");
    }

    /// `used_memory` from INFO memory.
    pub fn used_memory(&mut self) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query(&mut self.0)
            .expect("INFO memory");
        info_field(&info, "used_memory")
            .and_then(|v| v.parse().ok())
            .expect("used_memory in INFO")
    }
}

impl Kv for RedisKv {
    fn put(&mut self, key: &str, value: &[u8]) -> bool {
        match redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query::<()>(&mut self.0)
        {
            Ok(()) => true,
            // Over maxmemory with nothing left to evict.
            Err(e) if e.code() == Some("OOM") => false,
            Err(e) => panic!("redis SET: {e}"),
        }
    }
    fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        redis::cmd("GET")
            .arg(key)
            .query(&mut self.0)
            .expect("redis GET")
    }
    fn has(&mut self, key: &str) -> bool {
        redis::cmd("EXISTS")
            .arg(key)
            .query::<i64>(&mut self.0)
            .expect("redis EXISTS")
            > 0
    }
    fn remove(&mut self, key: &str) -> bool {
        redis::cmd("DEL")
            .arg(key)
            .query::<i64>(&mut self.0)
            .expect("redis DEL")
            > 0
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn info_fields_are_found() {
        let info = "# Memory\r\nused_memory:1234\r\nused_memory_human:1.2K\r\n";
        assert_eq!(super::info_field(info, "used_memory"), Some("1234"));
    }
}
