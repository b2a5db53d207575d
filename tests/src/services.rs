//! Private PostgreSQL clusters and RabbitMQ nodes, started by a test for itself from the
//! machine's own packages, so that the fault suite can stop, kill and restart them (and form
//! a RabbitMQ cluster) without disturbing the services every other test shares.
//!
//! They run as the services' own users (`postgres`, `rabbitmq`): the suite needs root, or
//! sudo without a password, like `scripts/services.sh`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

/// Runs `program args` as `user` (directly when we are that user already).
fn as_user(user: &str, program: &str, args: &[&str], env: &[(&str, String)]) -> Result<Output> {
    let me = Command::new("id").arg("-un").output()?;
    let mut command = if String::from_utf8_lossy(&me.stdout).trim() == user {
        Command::new(program)
    } else if unsafe_is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", user, "--", program]);
        c
    } else {
        let mut c = Command::new("sudo");
        c.args(["-n", "-E", "-u", user, "--", program]);
        c
    };
    command.args(args);
    // `runuser`/`sudo -E` pass the environment on.
    command.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    Ok(command.output()?)
}

fn unsafe_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs as root (directly, or through sudo).
fn as_root(program: &str, args: &[&str]) -> Result<Output> {
    let output = if unsafe_is_root() {
        Command::new(program).args(args).output()?
    } else {
        Command::new("sudo")
            .arg("-n")
            .arg(program)
            .args(args)
            .output()?
    };
    Ok(output)
}

fn check(what: &str, output: Output) -> Result<Output> {
    ensure!(
        output.status.success(),
        "{what} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output)
}

/// A scratch directory owned by `user`.
fn scratch(prefix: &str, user: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    std::fs::create_dir_all(&dir)?;
    check(
        "chown",
        as_root(
            "chown",
            &["-R", &format!("{user}:{user}"), &dir.to_string_lossy()],
        )?,
    )?;
    Ok(dir)
}

/// A PostgreSQL cluster of its own: `initdb` into a scratch directory, loopback only, every
/// local connection trusted (it lives for one test).
pub struct PrivatePostgres {
    bin: PathBuf,
    dir: PathBuf,
    pub port: u16,
    /// Takes TLS connections only (`hostssl`), with the certificate in its data directory.
    tls: bool,
}

impl PrivatePostgres {
    pub fn start() -> Result<Self> {
        Self::start_with(None)
    }

    /// One that takes only TLS connections, with `certs`' server certificate.
    pub fn start_tls(certs: &crate::tls::Certificates) -> Result<Self> {
        Self::start_with(Some(certs))
    }

    fn start_with(certs: Option<&crate::tls::Certificates>) -> Result<Self> {
        let bin = postgres_bin()?;
        let dir = scratch("herald-pg", "postgres")?;
        let data = dir.join("data");
        let initdb = bin.join("initdb");
        check(
            "initdb",
            as_user(
                "postgres",
                &initdb.to_string_lossy(),
                &[
                    "-D",
                    &data.to_string_lossy(),
                    "--auth=trust",
                    "--username=postgres",
                    "--no-sync",
                ],
                &[],
            )?,
        )?;
        if let Some(certs) = certs {
            certs.install(&data)?;
            // Loopback TCP only over TLS: a plain connection is refused, so one that works
            // is encrypted.
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            )?;
            check(
                "chown",
                as_root(
                    "chown",
                    &["-R", "postgres:postgres", &data.to_string_lossy()],
                )?,
            )?;
            check(
                "chmod",
                as_root(
                    "chmod",
                    &["600", &data.join("server.key").to_string_lossy()],
                )?,
            )?;
        }
        let pg = Self {
            bin,
            dir,
            port: crate::free_port()?,
            tls: certs.is_some(),
        };
        pg.start_again()?;
        Ok(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<Output> {
        let pg_ctl = self.bin.join("pg_ctl");
        as_user("postgres", &pg_ctl.to_string_lossy(), args, &[])
    }

    /// Starts it (again), and waits until it takes connections.
    pub fn start_again(&self) -> Result<()> {
        let mut options = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={} \
             -c max_connections=300 -c shared_buffers=64MB",
            self.port,
            self.dir.to_string_lossy()
        );
        if self.tls {
            options.push_str(" -c ssl=on -c ssl_cert_file=server.pem -c ssl_key_file=server.key");
        }
        let log = self.dir.join("postgres.log");
        check(
            "pg_ctl start",
            self.pg_ctl(&[
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                &self.data().to_string_lossy(),
                "-l",
                &log.to_string_lossy(),
                "-o",
                &options,
            ])?,
        )?;
        Ok(())
    }

    /// Stops it: `fast` (connections cut, a clean shutdown) or `immediate` (as if killed:
    /// the next start recovers from the WAL).
    pub fn stop(&self, mode: &str) -> Result<()> {
        check(
            "pg_ctl stop",
            self.pg_ctl(&[
                "stop",
                "-w",
                "-m",
                mode,
                "-D",
                &self.data().to_string_lossy(),
            ])?,
        )?;
        Ok(())
    }

    /// A URL for `database` as the superuser.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.stop("immediate");
        let _ = as_root("rm", &["-rf", &self.dir.to_string_lossy()]);
    }
}

fn postgres_bin() -> Result<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL's binaries (/usr/lib/postgresql) are not installed")?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .context("no initdb under /usr/lib/postgresql/*/bin")
}

/// A RabbitMQ node of its own (its own name, ports and data directory), from the machine's
/// `rabbitmq-server`, with no plugins.
pub struct RabbitNode {
    pub name: String,
    pub port: u16,
    /// Its TLS listener, where it has one.
    pub tls_port: Option<u16>,
    dist_port: u16,
    dir: PathBuf,
}

impl RabbitNode {
    pub fn start(label: &str) -> Result<Self> {
        Self::start_with(label, None)
    }

    /// One with a TLS listener too, with `certs`' server certificate.
    pub fn start_tls(label: &str, certs: &crate::tls::Certificates) -> Result<Self> {
        Self::start_with(label, Some(certs))
    }

    /// A node that fails to boot is started again, with new ports (three attempts in all): a port
    /// picked free can be taken (by any outgoing connection) before the node binds it, and
    /// three nodes booting at once on two cores may fail for reasons that are not Herald's.
    fn start_with(label: &str, certs: Option<&crate::tls::Certificates>) -> Result<Self> {
        let mut attempt = 1;
        loop {
            match Self::start_once(label, certs) {
                Ok(node) => return Ok(node),
                Err(e) if attempt < 3 => {
                    eprintln!("RabbitMQ node {label} did not boot (attempt {attempt}): {e:#}");
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn start_once(label: &str, certs: Option<&crate::tls::Certificates>) -> Result<Self> {
        let dir = scratch(&format!("herald-rmq-{label}"), "rabbitmq")?;
        std::fs::write(dir.join("enabled_plugins"), "[].\n")?;
        let tls_port = match certs {
            Some(certs) => {
                certs.install(&dir)?;
                let port = crate::free_port()?;
                let d = |f: &str| dir.join(f).to_string_lossy().into_owned();
                std::fs::write(
                    dir.join("rabbitmq.conf"),
                    format!(
                        "listeners.ssl.default = {port}\n\
                         ssl_options.cacertfile = {}\n\
                         ssl_options.certfile = {}\n\
                         ssl_options.keyfile = {}\n\
                         ssl_options.verify = verify_none\n\
                         ssl_options.fail_if_no_peer_cert = false\n",
                        d("ca.pem"),
                        d("server.pem"),
                        d("server.key")
                    ),
                )?;
                Some(port)
            }
            None => None,
        };
        std::fs::create_dir_all(dir.join("log"))?;
        check(
            "chown",
            as_root(
                "chown",
                &["-R", "rabbitmq:rabbitmq", &dir.to_string_lossy()],
            )?,
        )?;
        let node = Self {
            name: format!(
                "herald-{label}-{}@localhost",
                &uuid::Uuid::new_v4().simple().to_string()[..6]
            ),
            port: crate::free_port()?,
            tls_port,
            dist_port: crate::free_port()?,
            dir,
        };
        if let Err(e) = node.start_again() {
            // Dropping the node kills it and removes its directory, log included.
            return Err(e.context(format!("its log ends:\n{}", node.log_tail())));
        }
        Ok(node)
    }

    /// The last lines of the node's log, to say why it did not boot.
    fn log_tail(&self) -> String {
        let log = self.dir.join("log").join(format!("{}.log", self.name));
        as_root("tail", &["-n", "30", &log.to_string_lossy()])
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_else(|e| format!("(no log: {e})"))
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let d = |p: &str| self.dir.join(p).to_string_lossy().into_owned();
        vec![
            ("RABBITMQ_NODENAME", self.name.clone()),
            ("RABBITMQ_NODE_PORT", self.port.to_string()),
            ("RABBITMQ_DIST_PORT", self.dist_port.to_string()),
            ("RABBITMQ_MNESIA_BASE", d("mnesia")),
            ("RABBITMQ_LOG_BASE", d("log")),
            ("RABBITMQ_PID_FILE", d("node.pid")),
            ("RABBITMQ_ENABLED_PLUGINS_FILE", d("enabled_plugins")),
            ("RABBITMQ_CONFIG_FILE", d("rabbitmq")),
        ]
    }

    fn ctl(&self, args: &[&str]) -> Result<Output> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        as_user(
            "rabbitmq",
            "/usr/lib/rabbitmq/bin/rabbitmqctl",
            &all,
            &self.env(),
        )
    }

    /// Starts the node (again) and waits until it has booted.
    pub fn start_again(&self) -> Result<()> {
        let server = Path::new("/usr/lib/rabbitmq/bin/rabbitmq-server");
        check(
            "rabbitmq-server",
            as_user(
                "rabbitmq",
                &server.to_string_lossy(),
                &["-detached"],
                &self.env(),
            )?,
        )?;
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if self.ctl(&["-q", "ping"]).is_ok_and(|o| o.status.success()) {
                break;
            }
            if Instant::now() > deadline {
                bail!("RabbitMQ node {} did not start", self.name);
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        check(
            "await_startup",
            self.ctl(&["-q", "await_startup", "--timeout", "90"])?,
        )?;
        Ok(())
    }

    /// Stops the node cleanly.
    pub fn stop(&self) -> Result<()> {
        check("rabbitmqctl stop", self.ctl(&["-q", "stop"])?)?;
        Ok(())
    }

    /// Kills the node (SIGKILL): no goodbye to its clients or its cluster.
    pub fn kill(&self) -> Result<()> {
        let pid =
            std::fs::read_to_string(self.dir.join("node.pid")).context("the node's pid file")?;
        check("kill", as_root("kill", &["-9", pid.trim()])?)?;
        // Wait until it is gone.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.ctl(&["-q", "ping"]).is_ok_and(|o| o.status.success()) {
            if Instant::now() > deadline {
                bail!("RabbitMQ node {} did not die", self.name);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Raises (or clears) a memory alarm: with the watermark at 0 the node stops reading from
    /// every connection that publishes, as a broker out of memory does; others go on.
    pub fn block_publishers(&self, blocked: bool) -> Result<()> {
        let watermark = if blocked { "0" } else { "0.4" };
        check(
            "set_vm_memory_high_watermark",
            self.ctl(&["-q", "set_vm_memory_high_watermark", watermark])?,
        )?;
        Ok(())
    }

    /// Joins `other`'s cluster (this node's own data is reset).
    pub fn join(&self, other: &RabbitNode) -> Result<()> {
        check("stop_app", self.ctl(&["-q", "stop_app"])?)?;
        check("reset", self.ctl(&["-q", "reset"])?)?;
        check(
            "join_cluster",
            self.ctl(&["-q", "join_cluster", &other.name])?,
        )?;
        check("start_app", self.ctl(&["-q", "start_app"])?)?;
        Ok(())
    }

    /// Nodes this one sees running in its cluster.
    pub fn running_nodes(&self) -> Result<Vec<String>> {
        let output = check(
            "cluster_status",
            self.ctl(&["-q", "cluster_status", "--formatter", "json"])?,
        )?;
        let status: serde_json::Value = serde_json::from_slice(&output.stdout)?;
        Ok(status["running_nodes"]
            .as_array()
            .map(|nodes| {
                nodes
                    .iter()
                    .filter_map(|n| n.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The node leading quorum queue `queue` (of the default vhost).
    pub fn queue_leader(&self, queue: &str) -> Result<String> {
        let output = check(
            "list_queues",
            self.ctl(&["-q", "list_queues", "name", "leader", "--formatter", "json"])?,
        )?;
        let queues: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout)?;
        queues
            .iter()
            .find(|q| q["name"] == queue)
            .and_then(|q| q["leader"].as_str())
            .filter(|leader| !leader.is_empty())
            .map(str::to_owned)
            .with_context(|| format!("no leader for queue {queue}"))
    }

    /// The AMQP URL of the node's default vhost.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// The same over TLS, where the node has a TLS listener.
    pub fn amqps_url(&self) -> Option<String> {
        self.tls_port
            .map(|port| format!("amqps://guest:guest@127.0.0.1:{port}/%2f"))
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        let _ = self.kill();
        let _ = as_root("rm", &["-rf", &self.dir.to_string_lossy()]);
    }
}
