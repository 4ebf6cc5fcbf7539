//! Real Redis servers for the fleet tests: [`RedisServer`], one
//! `redis-server` child process in the foreground on a free loopback port
//! (no persistence, its own temporary directory, killed and reaped on
//! drop), which can be killed, paused (SIGSTOP), resumed and restarted on
//! the same port; [`RedisCluster`], three or more such servers made into a
//! Redis Cluster with `redis-cli --cluster create`; and [`Conn`], a small
//! RESP client over a `TcpStream` for binary-safe reads and writes.
//!
//! Ports are taken from 12000..22000 (the cluster bus port, port + 10000,
//! stays below Linux's ephemeral range too), so that no outgoing connection
//! can take a port between a kill and a restart. `redis-server` and
//! `redis-cli` come from the Debian package `redis-server` (CI installs it).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Ports are picked in `PORT_START..PORT_END`; with the cluster bus offset
/// they stay below 32768, where Linux's ephemeral ports begin.
const PORT_START: u16 = 12000;
const PORT_END: u16 = 22000;
/// A Redis Cluster node's bus port is its port plus this.
const BUS_OFFSET: u16 = 10000;
/// How long a server may take to answer PING after it was started.
const READY_WITHIN: Duration = Duration::from_secs(10);

fn bindable(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A loopback port in 12000..22000 that nobody listens on now (and, with
/// `bus`, whose port + 10000 is free too). Successive calls in one process
/// never give the same port; the start is spread by PID and time so that
/// concurrent test binaries rarely try the same ports.
fn pick_port(bus: bool) -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = u32::from(PORT_END - PORT_START);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let origin = std::process::id()
        .wrapping_mul(7919)
        .wrapping_add(nanos / 1000);
    for _ in 0..span {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = PORT_START + (origin.wrapping_add(step.wrapping_mul(13)) % span) as u16;
        if bindable(port) && (!bus || bindable(port + BUS_OFFSET)) {
            return port;
        }
    }
    panic!("no free loopback port in {PORT_START}..{PORT_END}");
}

/// Fails the test with a clear message when the Redis tools are missing.
fn require_tool(tool: &str) {
    if let Err(error) = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        panic!(
            "`{tool}` is required by the fleet tests and could not be run ({error}); \
             install the Debian package redis-server (apt-get install redis-server)"
        );
    }
}

/// A RESP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Status(String),
    /// `-ERR ...`
    Error(String),
    /// `:1`
    Int(i64),
    /// `$n` (`None` for the null bulk string).
    Bulk(Option<Vec<u8>>),
    /// `*n` (`None` for the null array).
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// A bulk or status reply as text ("" for null), else `None`.
    pub fn as_text(&self) -> Option<String> {
        match self {
            Reply::Status(s) => Some(s.clone()),
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            Reply::Bulk(None) => Some(String::new()),
            _ => None,
        }
    }

    /// [`Reply::as_text`]; panics on a reply that is not text.
    pub fn text(&self) -> String {
        self.as_text()
            .unwrap_or_else(|| panic!("expected a text reply, got {self:?}"))
    }
}

/// A RESP connection to one Redis server (binary-safe; authenticated when
/// the server has a password). Every read has a 5 s deadline, so that a
/// paused server fails the call instead of hanging the test.
pub struct Conn {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Conn {
    /// Connects to `127.0.0.1:port`, sending `AUTH password` if given.
    pub fn open(port: u16, password: Option<&str>) -> std::io::Result<Conn> {
        let stream =
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        stream.set_nodelay(true)?;
        let mut conn = Conn {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        if let Some(password) = password {
            match conn.call(&[b"AUTH", password.as_bytes()])? {
                Reply::Status(_) => {}
                other => {
                    return Err(std::io::Error::other(format!("AUTH failed: {other:?}")));
                }
            }
        }
        Ok(conn)
    }

    /// Sends one command and reads its reply.
    pub fn call(&mut self, args: &[&[u8]]) -> std::io::Result<Reply> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&out)?;
        self.read_reply()
    }

    /// [`Conn::call`] with text arguments.
    pub fn cmd(&mut self, args: &[&str]) -> std::io::Result<Reply> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.call(&args)
    }

    fn read_line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }

    fn read_reply(&mut self) -> std::io::Result<Reply> {
        let line = self.read_line()?;
        let bad = || std::io::Error::other(format!("bad RESP line {line:?}"));
        let (kind, rest) = line.split_at_checked(1).ok_or_else(bad)?;
        let number = || rest.parse::<i64>().map_err(|_| bad());
        Ok(match kind {
            "+" => Reply::Status(rest.to_owned()),
            "-" => Reply::Error(rest.to_owned()),
            ":" => Reply::Int(number()?),
            "$" => match usize::try_from(number()?) {
                Err(_) => Reply::Bulk(None),
                Ok(len) => {
                    let mut data = vec![0; len + 2];
                    self.reader.read_exact(&mut data)?;
                    data.truncate(len);
                    Reply::Bulk(Some(data))
                }
            },
            "*" => match usize::try_from(number()?) {
                Err(_) => Reply::Array(None),
                Ok(len) => Reply::Array(Some(
                    (0..len)
                        .map(|_| self.read_reply())
                        .collect::<std::io::Result<_>>()?,
                )),
            },
            _ => return Err(bad()),
        })
    }
}

/// A `redis-server` child process on `127.0.0.1:port`, in the foreground,
/// without persistence (`--save '' --appendonly no`), its working directory
/// and log in a temporary directory. Dropping it kills and reaps it.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    /// Arguments after the standard ones (`--requirepass`, cluster mode...).
    extra: Vec<String>,
    password: Option<String>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// A plain server on a free port.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// A server on a free port with extra arguments, e.g.
    /// `["--requirepass", "pw"]`.
    pub fn start_with(args: &[&str]) -> RedisServer {
        RedisServer::launch(None, args, false)
    }

    /// A server on `port` (from [`RedisServer::unused_port`]); fails the
    /// test if the port is taken.
    pub fn start_on(port: u16, args: &[&str]) -> RedisServer {
        RedisServer::launch(Some(port), args, false)
    }

    /// A port in 12000..22000 on which nothing listens now, to start a
    /// server on later (nothing reserves it meanwhile).
    pub fn unused_port() -> u16 {
        pick_port(false)
    }

    /// Starts a server on `port`, or on a picked port (trying another when
    /// a picked one was taken meanwhile). `bus`: the picked port's
    /// port + 10000 must be free too (a Cluster node).
    fn launch(port: Option<u16>, args: &[&str], bus: bool) -> RedisServer {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        RedisServer::launch_with(port, bus, &|_, _| args.clone())
    }

    /// [`RedisServer::launch`] with the extra arguments made from the
    /// server's directory and port.
    fn launch_with(
        fixed: Option<u16>,
        bus: bool,
        make_args: &dyn Fn(&Path, u16) -> Vec<String>,
    ) -> RedisServer {
        require_tool("redis-server");
        let mut failures = Vec::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("a temporary directory for redis");
            let port = fixed.unwrap_or_else(|| pick_port(bus));
            let extra = make_args(dir.path(), port);
            let password = extra
                .iter()
                .position(|a| a == "--requirepass")
                .and_then(|i| extra.get(i + 1).cloned());
            let mut server = RedisServer {
                child: None,
                port,
                extra,
                password,
                dir,
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(log) if fixed.is_none() && log.contains("in use") => failures.push(log),
                Err(log) => panic!("redis-server did not start on port {port}; its log:\n{log}"),
            }
        }
        panic!(
            "redis-server found its port taken five times; logs:\n{}",
            failures.join("\n---\n")
        );
    }

    /// Spawns the process on `self.port` and waits until it answers PING;
    /// `Err(log)` if it exits or does not answer in time.
    fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the redis log");
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .args(["--dir", &self.dir.path().display().to_string()])
            .args(&self.extra)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("redis log handle"))
            .stderr(log);
        let child = command.spawn().unwrap_or_else(|e| {
            panic!("could not run redis-server ({e}); install the Debian package redis-server")
        });
        self.child = Some(child);
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!("(exited: {status})\n{}", self.log_text()));
                }
            }
            if let Ok(mut conn) = Conn::open(self.port, self.password.as_deref()) {
                // PONG from this child, not from another server on the port.
                let pong = matches!(conn.cmd(&["PING"]), Ok(Reply::Status(s)) if s == "PONG");
                let ours = format!("process_id:{}\r\n", self.pid());
                if pong
                    && conn
                        .cmd(&["INFO", "server"])
                        .is_ok_and(|info| info.as_text().is_some_and(|t| t.contains(&ours)))
                {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                self.kill9();
                return Err(format!(
                    "(no PONG within {READY_WITHIN:?})\n{}",
                    self.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// The server's own log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The server's temporary working directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`, or `redis://:PASSWORD@127.0.0.1:PORT` when
    /// the server was started with `--requirepass`.
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// The process id (0 while it is not running).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn signal(&self, signal: &str) {
        let pid = self.pid();
        assert_ne!(pid, 0, "redis-server is not running");
        let sent = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill {signal} {pid} failed");
    }

    /// SIGKILL, and reap the process (its port can then be restarted).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (and SIGCONT, should it be paused) and wait (at most 10 s,
    /// then SIGKILL) for the process to exit.
    pub fn stop(&mut self) {
        if self.child.is_none() {
            return;
        }
        self.signal("-TERM");
        self.signal("-CONT");
        let deadline = Instant::now() + Duration::from_secs(10);
        if let Some(mut child) = self.child.take() {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the server keeps its connections but answers nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`RedisServer::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Starts the server again on the same port with the same arguments
    /// (killing it first if it still runs); its data is gone.
    pub fn restart(&mut self) {
        self.kill9();
        if let Err(log) = self.spawn() {
            panic!(
                "redis-server did not restart on port {}; its log:\n{log}",
                self.port
            );
        }
    }

    /// A new RESP connection to the server.
    pub fn connect(&self) -> Conn {
        Conn::open(self.port, self.password.as_deref())
            .unwrap_or_else(|e| panic!("connect to redis on port {}: {e}", self.port))
    }

    /// `GET key`, binary-safe.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        match self.connect().cmd(&["GET", key]).expect("GET") {
            Reply::Bulk(value) => value,
            other => panic!("GET {key}: {other:?}"),
        }
    }

    /// `SET key value`, binary-safe.
    pub fn set(&self, key: &str, value: &[u8]) {
        let reply = self
            .connect()
            .call(&[b"SET", key.as_bytes(), value])
            .expect("SET");
        assert_eq!(reply, Reply::Status("OK".into()), "SET {key}");
    }

    /// `KEYS pattern`, sorted.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        match self.connect().cmd(&["KEYS", pattern]).expect("KEYS") {
            Reply::Array(Some(keys)) => {
                let mut keys: Vec<String> = keys.iter().map(Reply::text).collect();
                keys.sort();
                keys
            }
            other => panic!("KEYS {pattern}: {other:?}"),
        }
    }

    /// Runs `redis-cli -p PORT ARGS` (authenticated when the server has a
    /// password) and returns its standard output, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        require_tool("redis-cli");
        let mut command = Command::new("redis-cli");
        command.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(password) = &self.password {
            command.args(["-a", password, "--no-auth-warning"]);
        }
        let out = command.args(args).output().expect("run redis-cli");
        assert!(
            out.status.success(),
            "redis-cli {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A Redis Cluster of masters without replicas, each a [`RedisServer`] in
/// cluster mode in its own temporary directory.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters` nodes (`--cluster-enabled yes`, node timeout 2 s,
    /// full coverage not required), creates the cluster with
    /// `redis-cli --cluster create ... --cluster-replicas 0 --cluster-yes`,
    /// and waits until every node reports `cluster_state:ok`.
    pub fn start(masters: usize) -> RedisCluster {
        require_tool("redis-cli");
        assert!(masters >= 3, "a Redis Cluster needs at least 3 masters");
        let nodes: Vec<RedisServer> = (0..masters)
            .map(|_| {
                RedisServer::launch_with(None, true, &|dir, port| {
                    let config = dir.join(format!("nodes-{port}.conf"));
                    [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-require-full-coverage",
                        "no",
                        "--cluster-node-timeout",
                        "2000",
                        "--cluster-config-file",
                        &config.display().to_string(),
                    ]
                    .iter()
                    .map(|a| (*a).to_owned())
                    .collect()
                })
            })
            .collect();
        let cluster = RedisCluster { nodes };
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create {addresses:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &cluster.nodes {
            loop {
                let info = node
                    .connect()
                    .cmd(&["CLUSTER", "INFO"])
                    .expect("CLUSTER INFO");
                if info.text().contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "cluster node {} not ok within 30 s: {}",
                    node.port,
                    info.text()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        cluster
    }

    /// `redis://127.0.0.1:P1,redis://127.0.0.1:P2,...`: the seed nodes.
    pub fn seeds_url(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// SIGKILL node `index` (its slots are then served by nobody).
    pub fn kill9(&mut self, index: usize) {
        self.nodes[index].kill9();
    }

    /// The index of the node that serves `key`'s hash slot, from
    /// `CLUSTER KEYSLOT` and `CLUSTER SLOTS` (asked of the first live node).
    pub fn node_for_key(&self, key: &str) -> usize {
        let node = self
            .nodes
            .iter()
            .find(|n| n.pid() != 0)
            .expect("a running cluster node");
        let mut conn = node.connect();
        let slot = match conn.cmd(&["CLUSTER", "KEYSLOT", key]).expect("KEYSLOT") {
            Reply::Int(slot) => slot,
            other => panic!("CLUSTER KEYSLOT {key}: {other:?}"),
        };
        let Reply::Array(Some(ranges)) = conn.cmd(&["CLUSTER", "SLOTS"]).expect("SLOTS") else {
            panic!("CLUSTER SLOTS gave no array");
        };
        for range in ranges {
            let Reply::Array(Some(range)) = range else {
                continue;
            };
            let (Some(Reply::Int(first)), Some(Reply::Int(last))) = (range.first(), range.get(1))
            else {
                continue;
            };
            if (*first..=*last).contains(&slot) {
                if let Some(Reply::Array(Some(master))) = range.get(2) {
                    if let Some(Reply::Int(port)) = master.get(1) {
                        if let Some(i) = self.nodes.iter().position(|n| i64::from(n.port) == *port)
                        {
                            return i;
                        }
                    }
                }
            }
        }
        panic!("no node serves slot {slot} of {key}");
    }

    /// `GET key` on the node that serves it, binary-safe.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.nodes[self.node_for_key(key)].get(key)
    }

    /// `SET key value` on the node that serves it, binary-safe.
    pub fn set(&self, key: &str, value: &[u8]) {
        self.nodes[self.node_for_key(key)].set(key, value);
    }

    /// `KEYS pattern` over every running node, sorted.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.pid() != 0)
            .flat_map(|n| n.keys(pattern))
            .collect();
        keys.sort();
        keys
    }

    /// Runs `redis-cli -c -p P1 ARGS` (following redirections).
    pub fn cli(&self, args: &[&str]) -> String {
        let mut all = vec!["-c"];
        all.extend_from_slice(args);
        self.nodes[0].cli(&all)
    }
}
