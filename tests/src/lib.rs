//! The integration-test harness: real PostgreSQL, real RabbitMQ, the real binaries.
//!
//! Each [`TestEnv`] gets its own database (migrated) and its own RabbitMQ vhost, so tests run
//! in parallel without seeing each other. Services run as child processes of the built
//! binaries (build them first: `cargo build --workspace`), with their logs under
//! `target/test-logs/`.
//!
//! Settings: `HERALD_TEST_ADMIN_URL` (a PostgreSQL URL whose user may create databases,
//! default `postgres://herald:herald@127.0.0.1:5432/postgres`) and `HERALD_TEST_RABBIT_API`
//! (RabbitMQ's management API, default `http://guest:guest@127.0.0.1:15672`).

use herald_shared::domain::Channel;
use herald_store::catalog::{self, NewCampaign, NewProvider, NewRecipient};
use serde_json::{Map, Value, json};
use sqlx::{Connection, PgConnection, PgPool};
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use uuid::Uuid;

pub use anyhow::Result;

pub mod proxy;
pub mod services;
pub mod status_sink;
pub mod tls;

const DB_HOST: &str = "herald:herald@127.0.0.1:5432";

/// The secrets the simulator signs receipts with by default (its `--webhook-secret` and
/// `--whatsapp-app-secret`).
pub const SIMULATOR_WEBHOOK_SECRET: &str = "simulator-webhook-secret";
pub const SIMULATOR_APP_SECRET: &str = "simulator-app-secret";
/// The Twilio account of [`TestEnv::twilio_provider`]: the simulator signs its callbacks
/// with the token the requests carry.
/// The worker's default `HERALD_WORKER_MAX_DEFERRAL_S`, for tests that record outcomes
/// themselves.
pub const DAY: Duration = Duration::from_secs(86_400);
pub const TWILIO_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const TWILIO_TOKEN: &str = "twilio-auth-t0ken";

fn admin_url() -> String {
    std::env::var("HERALD_TEST_ADMIN_URL")
        // Loopback: TLS (which sqlx's default `prefer` takes when offered) only costs CPU.
        .unwrap_or_else(|_| format!("postgres://{DB_HOST}/postgres?sslmode=disable"))
}

fn rabbit_api() -> String {
    std::env::var("HERALD_TEST_RABBIT_API")
        .unwrap_or_else(|_| "http://guest:guest@127.0.0.1:15672".into())
}

/// The path of a built binary of the workspace.
pub fn binary(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// The directory holding the workspace's built binaries (next to this test's own executable).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory")
        .to_path_buf();
    assert!(
        dir.join("herald-worker").exists(),
        "binaries not built in {}: run `cargo build --workspace` before the integration tests",
        dir.display()
    );
    dir
}

/// A running child service. Killed when dropped.
pub struct Service {
    pub name: String,
    child: Child,
    pub log: PathBuf,
    /// Its ops listener: /metrics, /livez, /readyz.
    pub ops_url: String,
}

impl Service {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM: asks for a graceful stop.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
    }

    /// Waits for the process to exit, up to `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where a test's database and broker live: the machine's, which every test shares (a
/// database and a vhost of the test's own), or services of the test's own ([`services`]).
#[derive(Debug, Clone, Default)]
pub struct Backends {
    /// A PostgreSQL cluster of the test's own: a URL to its `postgres` database as a user
    /// that may create databases.
    pub postgres: Option<String>,
    /// RabbitMQ nodes of the test's own, whose default vhost the test uses (one URL, or a
    /// cluster's).
    pub rabbitmq: Option<Vec<String>>,
}

/// One test's private world: a database, a vhost, a simulator, and the services it starts.
pub struct TestEnv {
    pub name: String,
    pub pool: PgPool,
    pub database_url: String,
    pub amqp_url: String,
    /// What the services this test starts connect to: the database and broker by default,
    /// a [`proxy`] in front of them where a test cuts them off ([`TestEnv::route`]).
    pub process_database_url: String,
    pub process_amqp_url: String,
    backends: Backends,
    pub simulator_url: String,
    pub http: reqwest::Client,
    log_dir: PathBuf,
    simulator: Option<Service>,
    /// Simulators started by [`extra_simulator`](Self::extra_simulator).
    others: Vec<Service>,
    /// The receipt receiver's URL once [`receiver`](Self::receiver) started it: workers
    /// started after that ask providers to post receipts there.
    pub receiver_url: Option<String>,
    receiver: Option<Service>,
}

impl TestEnv {
    /// Creates the database and vhost and starts a simulator with `simulator_args`.
    pub async fn new(simulator_args: &[&str]) -> Result<Self> {
        Self::with(Backends::default(), simulator_args).await
    }

    /// Like [`new`](Self::new), on `backends`.
    pub async fn with(backends: Backends, simulator_args: &[&str]) -> Result<Self> {
        let name = format!("herald_t_{}", &Uuid::new_v4().simple().to_string()[..12]);
        let admin_db_url = backends.postgres.clone().unwrap_or_else(admin_url);
        let mut admin = PgConnection::connect(&admin_db_url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        let mut database_url = url::Url::parse(&admin_db_url)?;
        database_url.set_path(&name);
        let database_url = database_url.to_string();
        let pool = herald_shared::db::connect(&database_url, 5, &Default::default()).await?;
        herald_shared::db::migrate(&pool).await?;

        let http = reqwest::Client::new();
        let amqp_url = match &backends.rabbitmq {
            None => {
                let api = rabbit_api();
                http.put(format!("{api}/api/vhosts/{name}"))
                    .send()
                    .await?
                    .error_for_status()?;
                http.put(format!("{api}/api/permissions/{name}/guest"))
                    .json(&json!({"configure": ".*", "write": ".*", "read": ".*"}))
                    .send()
                    .await?
                    .error_for_status()?;
                format!("amqp://guest:guest@127.0.0.1:5672/{name}")
            }
            Some(nodes) => nodes.join(","),
        };

        let log_dir = bin_dir().join("test-logs");
        std::fs::create_dir_all(&log_dir)?;
        let port = free_port()?;
        let simulator_url = format!("http://127.0.0.1:{port}");
        let mut env = Self {
            name,
            pool,
            process_database_url: database_url.clone(),
            process_amqp_url: amqp_url.clone(),
            database_url,
            amqp_url,
            backends,
            simulator_url,
            http,
            log_dir,
            simulator: None,
            others: Vec::new(),
            receiver_url: None,
            receiver: None,
        };
        let mut args = vec!["--listen".to_owned(), format!("127.0.0.1:{port}")];
        args.extend(simulator_args.iter().map(|s| (*s).to_owned()));
        let simulator = env.spawn("herald-simulator", &args, &[])?;
        env.simulator = Some(simulator);
        wait_healthy(&env.http, &env.simulator_url, "simulator").await?;
        Ok(env)
    }

    fn spawn(&self, binary: &str, args: &[String], env: &[(&str, String)]) -> Result<Service> {
        let log = self.log_dir.join(format!(
            "{}-{}-{}.log",
            self.name,
            binary,
            Uuid::new_v4().simple()
        ));
        let file = std::fs::File::create(&log)?;
        // Every service gets an ops listener of its own: the defaults would collide.
        let ops_listen = match env.iter().find(|(k, _)| *k == "HERALD_OPS_LISTEN") {
            Some((_, listen)) => listen.clone(),
            None => format!("127.0.0.1:{}", free_port()?),
        };
        let child = Command::new(bin_dir().join(binary))
            .args(args)
            .env("HERALD_OPS_LISTEN", &ops_listen)
            // Tenants' providers in tests point at simulators on loopback.
            .env("HERALD_PROVIDER_ALLOWED_NETWORKS", "127.0.0.0/8")
            .env("HERALD_DATABASE_URL", &self.process_database_url)
            .env("HERALD_AMQP_URL", &self.process_amqp_url)
            .env(
                "HERALD_LOG",
                "info,herald_worker=debug,herald_scheduler=debug",
            )
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()?;
        Ok(Service {
            name: binary.to_owned(),
            child,
            log,
            ops_url: format!("http://{ops_listen}"),
        })
    }

    /// Services started from now on connect to the database and the broker through these
    /// URLs (a [`proxy`]'s, say); `None` keeps what they are.
    pub fn route(&mut self, database_url: Option<String>, amqp_url: Option<String>) {
        if let Some(url) = database_url {
            self.process_database_url = url;
        }
        if let Some(url) = amqp_url {
            self.process_amqp_url = url;
        }
    }

    /// Starts a scheduler with `tick_ms` and extra `HERALD_*` settings.
    pub fn scheduler(&self, tick_ms: u64, env: &[(&str, &str)]) -> Result<Service> {
        let mut all: Vec<(&str, String)> = vec![("HERALD_TICK_MS", tick_ms.to_string())];
        all.extend(env.iter().map(|(k, v)| (*k, (*v).to_owned())));
        self.spawn("herald-scheduler", &[], &all)
    }

    /// Starts a worker with extra `HERALD_*` settings (and the receiver's URL, if one runs).
    pub fn worker(&self, env: &[(&str, &str)]) -> Result<Service> {
        let mut all: Vec<(&str, String)> = Vec::new();
        if let Some(url) = &self.receiver_url {
            all.push(("HERALD_RECEIVER_URL", url.clone()));
        }
        all.extend(env.iter().map(|(k, v)| (*k, (*v).to_owned())));
        self.spawn("herald-worker", &[], &all)
    }

    /// Starts the receipt receiver on a free port; returns its URL. The simulators are told
    /// where WhatsApp notifications go.
    pub async fn receiver(&mut self) -> Result<String> {
        self.receiver_with(&[]).await
    }

    /// [`receiver`](Self::receiver) with settings of its own.
    pub async fn receiver_with(&mut self, env: &[(&str, &str)]) -> Result<String> {
        self.start_receiver(env, true).await
    }

    /// Starts the receiver and waits only until it answers, ready or not (a test of its
    /// readiness).
    pub async fn receiver_answering(&mut self) -> Result<String> {
        self.start_receiver(&[], false).await
    }

    async fn start_receiver(&mut self, env: &[(&str, &str)], ready: bool) -> Result<String> {
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let mut all = vec![
            ("HERALD_RECEIVER_LISTEN", format!("127.0.0.1:{port}")),
            ("HERALD_RECEIVER_URL", url.clone()),
        ];
        all.extend(env.iter().map(|(k, v)| (*k, (*v).to_owned())));
        let service = self.spawn("herald-receiver", &[], &all)?;
        if ready {
            wait_ready(&self.http, &url, "receiver").await?;
        } else {
            wait_healthy(&self.http, &url, "receiver").await?;
        }
        self.receiver = Some(service);
        self.receiver_url = Some(url.clone());
        Ok(url)
    }

    /// SIGKILLs the receiver and starts it again at the same address, as a crash and a
    /// supervisor's restart would.
    pub async fn restart_receiver(&mut self) -> Result<()> {
        let url = self
            .receiver_url
            .clone()
            .ok_or_else(|| anyhow::anyhow!("no receiver to restart"))?;
        if let Some(mut old) = self.receiver.take() {
            old.kill();
        }
        let listen = url.trim_start_matches("http://").to_owned();
        let service = self.spawn(
            "herald-receiver",
            &[],
            &[
                ("HERALD_RECEIVER_LISTEN", listen),
                ("HERALD_RECEIVER_URL", url.clone()),
            ],
        )?;
        wait_ready(&self.http, &url, "receiver").await?;
        self.receiver = Some(service);
        Ok(())
    }

    /// Posts a Twilio status callback (`delivered`, message `sid`) for `provider` to the
    /// running receiver, signed with `auth_token` as Twilio would for a request that gave
    /// `signed_base` (the receiver's URL then; `None`: its URL now) as the callback's base;
    /// returns the answer's status.
    pub async fn post_twilio_callback(
        &self,
        provider: Uuid,
        signed_base: Option<&str>,
        auth_token: &str,
        sid: &str,
    ) -> Result<u16> {
        let params = [
            ("MessageSid", sid),
            ("MessageStatus", "delivered"),
            ("AccountSid", TWILIO_SID),
        ];
        self.post_twilio_form(provider, signed_base, auth_token, &params)
            .await
    }

    /// Posts the form `params` to `provider`'s Twilio webhook on the running receiver, signed
    /// with `auth_token` over `signed_base` (`None`: the receiver's URL now) as Twilio signs;
    /// returns the answer's status.
    pub async fn post_twilio_form(
        &self,
        provider: Uuid,
        signed_base: Option<&str>,
        auth_token: &str,
        params: &[(&str, &str)],
    ) -> Result<u16> {
        let receiver = self
            .receiver_url
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("no receiver runs"))?;
        let path = format!("/webhooks/twilio/{provider}?seq=1");
        let params: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let signed_url = format!("{}{path}", signed_base.unwrap_or(receiver));
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&params)
            .finish();
        Ok(self
            .http
            .post(format!("{receiver}{path}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header(
                "x-twilio-signature",
                herald_shared::signature::twilio(auth_token, &signed_url, &params),
            )
            .body(body)
            .send()
            .await?
            .status()
            .as_u16())
    }

    /// The receiver's process, once started.
    pub fn receiver_service(&self) -> Option<&Service> {
        self.receiver.as_ref()
    }

    /// The receiver, to stop it and wait for it.
    pub fn receiver_service_mut(&mut self) -> Option<&mut Service> {
        self.receiver.as_mut()
    }

    /// The receiver's process id, once started.
    pub fn receiver_pid(&self) -> Option<u32> {
        self.receiver.as_ref().map(Service::pid)
    }

    /// Messages (ready and unacknowledged) in each queue of this test's vhost on the
    /// machine's RabbitMQ, from its management API.
    pub async fn queue_depths(&self) -> Result<std::collections::BTreeMap<String, i64>> {
        let queues: Vec<Value> = self
            .get_json(&format!("{}/api/queues/{}", rabbit_api(), self.name))
            .await?;
        Ok(queues
            .iter()
            .filter_map(|q| Some((q["name"].as_str()?.to_owned(), q["messages"].as_i64()?)))
            .collect())
    }

    /// The receiver's log so far.
    pub fn receiver_log(&self) -> String {
        self.receiver
            .as_ref()
            .map(Service::log_text)
            .unwrap_or_default()
    }

    /// Runs a binary to completion with `env`, returning its exit status and output.
    pub fn run_binary(
        &self,
        binary: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<std::process::Output> {
        Ok(Command::new(bin_dir().join(binary))
            .args(args)
            .env_remove("HERALD_DATABASE_URL")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()?)
    }

    /// Starts an admin server on a free port and makes an operator key for it.
    pub async fn admin(&self) -> Result<Admin> {
        self.admin_with(&[]).await
    }

    /// [`admin`](Self::admin) with extra `HERALD_*` settings.
    pub async fn admin_with(&self, env: &[(&str, &str)]) -> Result<Admin> {
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let mut all = vec![("HERALD_ADMIN_LISTEN", format!("127.0.0.1:{port}"))];
        all.extend(env.iter().map(|(k, v)| (*k, (*v).to_owned())));
        let service = self.spawn("herald-admin", &["serve".to_owned()], &all)?;
        let output = Command::new(bin_dir().join("herald-admin"))
            .args(["keys", "create", "--operator", "--name", "tests"])
            .env("HERALD_DATABASE_URL", &self.database_url)
            .stdin(Stdio::null())
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "cannot create an operator key: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let operator_key = String::from_utf8(output.stdout)?.trim().to_owned();
        wait_healthy(&self.http, &url, "admin server").await?;
        Ok(Admin {
            url,
            operator_key,
            http: self.http.clone(),
            service,
        })
    }

    /// A generic HTTP provider pointing at this test's simulator, whose receipts (signed
    /// with the simulator's default secret) Herald takes when a receiver runs.
    pub fn provider(&self) -> NewProvider {
        let mut provider =
            NewProvider::http("simulator", &format!("{}/v1/messages", self.simulator_url));
        provider.max_in_flight = 10_000;
        provider.timeout_ms = 5_000;
        provider.credentials = json!({"webhook_secret": SIMULATOR_WEBHOOK_SECRET});
        provider
    }

    /// A Twilio provider of `kind` (`twilio_sms`, `twilio_voice`) at this test's simulator,
    /// with fast retries and a 5 s window for unknown outcomes.
    pub async fn twilio_provider(&self, kind: &str) -> Result<Uuid> {
        self.twilio_provider_at(kind, kind, &self.simulator_url)
            .await
    }

    /// Like [`twilio_provider`](Self::twilio_provider), named `name`, at `endpoint` (an
    /// [`extra_simulator`](Self::extra_simulator), say).
    pub async fn twilio_provider_at(&self, name: &str, kind: &str, endpoint: &str) -> Result<Uuid> {
        Ok(sqlx::query_scalar(
            "INSERT INTO providers (name, kind, endpoint, settings, credentials, timeout_ms,
                                    max_in_flight, max_attempts, retry_base_ms, retry_max_ms,
                                    unknown_window_ms)
             VALUES ($1, $2, $3, $4, $5, 2000, 10000, 5, 100, 2000, 5000) RETURNING id",
        )
        .bind(name)
        .bind(kind)
        .bind(endpoint)
        .bind(json!({"from": "+15005550006"}))
        .bind(json!({"account_sid": TWILIO_SID, "auth_token": TWILIO_TOKEN}))
        .fetch_one(&self.pool)
        .await?)
    }

    /// A Twilio SMS number of `tenant`'s own (a provider it owns) at this test's simulator:
    /// its recipients' STOP and START, posted as [`twilio_inbound`], change the tenant's
    /// suppression list.
    pub async fn tenants_twilio_number(&self, tenant: Uuid) -> Result<Uuid> {
        let own = self
            .twilio_provider_at("own", "twilio_sms", &self.simulator_url)
            .await?;
        sqlx::query("UPDATE providers SET tenant_id = $1 WHERE id = $2")
            .bind(tenant)
            .bind(own)
            .execute(&self.pool)
            .await?;
        Ok(own)
    }

    pub async fn create_provider(&self, provider: &NewProvider) -> Result<Uuid> {
        Ok(catalog::create_provider(&self.pool, provider).await?)
    }

    pub async fn tenant(&self, name: &str, weight: i32) -> Result<Uuid> {
        Ok(catalog::create_tenant(&self.pool, name, weight).await?)
    }

    /// A draft campaign of `addresses`, with a `{{first_name}}` template.
    pub async fn campaign(
        &self,
        tenant: Uuid,
        provider: Uuid,
        name: &str,
        addresses: &[String],
        batch_size: i32,
    ) -> Result<Uuid> {
        let recipients: Vec<NewRecipient> = addresses
            .iter()
            .enumerate()
            .map(|(i, address)| {
                let mut variables = Map::new();
                variables.insert("first_name".into(), Value::String(format!("R{i}")));
                NewRecipient {
                    address: address.clone(),
                    variables,
                }
            })
            .collect();
        let campaign = NewCampaign {
            tenant_id: tenant,
            provider_id: provider,
            overflow_provider_id: None,
            name: name.to_owned(),
            channel: Channel::Sms,
            template: "Hello {{first_name}}".into(),
            batch_size,
        };
        Ok(catalog::create_campaign(&self.pool, &campaign, &recipients).await?)
    }

    pub async fn start(&self, campaign: Uuid) -> Result<()> {
        Ok(catalog::start_campaign(&self.pool, campaign, None).await?)
    }

    /// One campaign's recipients' ids, in order.
    pub async fn recipient_ids(&self, campaign: Uuid) -> Result<Vec<i64>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM recipients WHERE campaign_id = $1 ORDER BY id")
                .bind(campaign)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Recipient counts by state for one campaign.
    pub async fn states(&self, campaign: Uuid) -> Result<std::collections::BTreeMap<String, i64>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT state, count(*) FROM recipients WHERE campaign_id = $1 GROUP BY state",
        )
        .bind(campaign)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().collect())
    }

    /// Recipients of one campaign by their latest delivery status (`none`: no receipt yet).
    pub async fn deliveries(
        &self,
        campaign: Uuid,
    ) -> Result<std::collections::BTreeMap<String, i64>> {
        let rows: Vec<(Option<String>, i64)> = sqlx::query_as(
            "SELECT delivery_status, count(*) FROM recipients WHERE campaign_id = $1 GROUP BY 1",
        )
        .bind(campaign)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(status, n)| (status.unwrap_or_else(|| "none".into()), n))
            .collect())
    }

    /// Waits until a live worker says it may send to `provider`'s lane: a scheduler
    /// publishes nothing to a lane no live worker may send to.
    pub async fn wait_live_worker(&self, provider: &str) -> Result<()> {
        wait_until(Duration::from_secs(20), || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM workers WHERE seen_at >= now() - interval '6 seconds'
                   AND (caps ->> $1)::int > 0",
            )
            .bind(provider)
            .fetch_one(&self.pool)
            .await
            .is_ok_and(|n| n > 0)
        })
        .await
        .map_err(|_| anyhow::anyhow!("no live worker for provider {provider}"))
    }

    pub async fn campaign_status(&self, campaign: Uuid) -> Result<String> {
        Ok(
            sqlx::query_scalar("SELECT status FROM campaigns WHERE id = $1")
                .bind(campaign)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Waits until every listed campaign is completed.
    pub async fn wait_completed(&self, campaigns: &[Uuid], timeout: Duration) -> Result<()> {
        let pool = self.pool.clone();
        let ids = campaigns.to_vec();
        wait_until(timeout, || {
            let (pool, ids) = (pool.clone(), ids.clone());
            async move {
                let done: Result<i64, _> = sqlx::query_scalar(
                    "SELECT count(*) FROM campaigns WHERE id = ANY($1) AND status = 'completed'",
                )
                .bind(&ids)
                .fetch_one(&pool)
                .await;
                done.is_ok_and(|n| n == ids.len() as i64)
            }
        })
        .await
        .map_err(|_| anyhow::anyhow!("campaigns not completed within {timeout:?}"))
    }

    /// Starts another simulator (a second provider with its own behaviour); returns its URL.
    pub async fn extra_simulator(&mut self, args: &[&str]) -> Result<String> {
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let mut all = vec!["--listen".to_owned(), format!("127.0.0.1:{port}")];
        all.extend(args.iter().map(|s| (*s).to_owned()));
        let simulator = self.spawn("herald-simulator", &all, &[])?;
        self.others.push(simulator);
        wait_healthy(&self.http, &url, "simulator").await?;
        Ok(url)
    }

    pub async fn simulator_stats(&self) -> Result<Value> {
        self.simulator_stats_at(&self.simulator_url).await
    }

    /// The statistics of the simulator at `url`.
    pub async fn simulator_stats_at(&self, url: &str) -> Result<Value> {
        self.get_json(&format!("{url}/control/stats")).await
    }

    pub async fn simulator_requests(&self, key: &str) -> Result<Value> {
        // Idempotency keys are plain ASCII (letters, digits, dashes): no escaping needed.
        self.get_json(&format!(
            "{}/control/requests?key={key}",
            self.simulator_url
        ))
        .await
    }

    /// Per idempotency key, how many messages the simulator sent for it.
    pub async fn simulator_accepted(&self) -> Result<std::collections::HashMap<String, u64>> {
        self.get_json(&format!("{}/control/accepted", self.simulator_url))
            .await
    }

    /// A service's metrics, as Prometheus scrapes them.
    pub async fn scrape(&self, service: &Service) -> Result<String> {
        Ok(self
            .http
            .get(format!("{}/metrics", service.ops_url))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?)
    }

    /// A service's readiness: the HTTP status and the body.
    pub async fn readiness(&self, service: &Service) -> Result<(u16, Value)> {
        let response = self
            .http
            .get(format!("{}/readyz", service.ops_url))
            .timeout(Duration::from_secs(2))
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// Waits until `service`'s readiness answers `status` (HTTP); returns the body and when.
    pub async fn wait_readiness(
        &self,
        service: &Service,
        status: u16,
        timeout: Duration,
    ) -> Result<(Value, Instant)> {
        let deadline = Instant::now() + timeout;
        loop {
            let answer = self.readiness(service).await;
            if let Ok((got, body)) = &answer
                && *got == status
            {
                return Ok((body.clone(), Instant::now()));
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} did not answer {status} on /readyz within {timeout:?} (last: {answer:?}); log:\n{}",
                service.name,
                service.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// GETs `url` and decodes its JSON answer (an error for any non-2xx).
    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T> {
        Ok(self
            .http
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    pub async fn simulator_config(&self, config: Value) -> Result<()> {
        self.http
            .put(format!("{}/control/config", self.simulator_url))
            .json(&config)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// The database's clock in unix milliseconds (the simulator stamps with the same clock).
    pub async fn now_ms(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Opens an AMQP connection to this test's vhost.
    pub async fn amqp(&self) -> Result<lapin::Connection> {
        Ok(
            herald_shared::queue::connect(&self.amqp_url, "herald-tests", &Default::default())
                .await?,
        )
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // Databases are left for inspection (scripts/test.sh removes old ones). The vhost
        // goes now: its quorum queues keep RabbitMQ busy while they exist, and dozens of
        // them made the timing of the tests that follow noisy.
        self.simulator.take();
        self.others.clear();
        self.receiver.take();
        if self.backends.rabbitmq.is_some() {
            return;
        }
        let url = format!("{}/api/vhosts/{}", rabbit_api(), self.name);
        // Drop cannot await, and a runtime cannot start inside the test's: a thread of its
        // own, joined, so the vhost is gone before the next test starts.
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async { reqwest::Client::new().delete(url).send().await.ok() })
        })
        .join();
        if !matches!(deleted, Ok(Some(ref r)) if r.status().is_success()) {
            eprintln!("could not delete vhost {}", self.name);
        }
    }
}

/// `n` distinct E.164 numbers, `prefix` then zero-padded digits.
pub fn numbers(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:07}")).collect()
}

/// A port nothing listens on, for a service the tests start. It is drawn below the kernel's
/// ephemeral range (32768 and up): a port the kernel hands out can be taken by any outgoing
/// connection between this check and the service's bind, which made a RabbitMQ node fail to
/// boot in CI (`eaddrinuse`).
pub(crate) fn free_port() -> Result<u16> {
    use rand::Rng;
    for _ in 0..200 {
        let port = rand::rng().random_range(10_000..32_000);
        let free = |host: &str| std::net::TcpListener::bind((host, port)).is_ok();
        if free("0.0.0.0") && free("127.0.0.1") {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port between 10000 and 32000")
}

/// An inbound SMS from `from` saying `body`, as Twilio posts it to a number's "a message
/// comes in" webhook (sign it with [`TestEnv::post_twilio_form`]).
pub fn twilio_inbound<'a>(from: &'a str, body: &'a str) -> [(&'a str, &'a str); 6] {
    [
        ("MessageSid", "SM00000000000000000000000000000001"),
        ("SmsStatus", "received"),
        ("From", from),
        ("To", "+15005550006"),
        ("Body", body),
        ("AccountSid", TWILIO_SID),
    ]
}

/// The sum of metric `name`'s samples in Prometheus text `text` whose labels include every
/// `name="value"` of `labels`; `None` when no sample matches.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut total = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, tags) = match series.split_once('{') {
            Some((metric, tags)) => (metric, tags.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name
            || !labels
                .iter()
                .all(|(k, v)| tags.split(',').any(|t| t == format!("{k}=\"{v}\"")))
        {
            continue;
        }
        if let Ok(value) = value.parse::<f64>() {
            *total.get_or_insert(0.0) += value;
        }
    }
    total
}

/// The metric names a Prometheus text exposes (histograms by their base name).
pub fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut condition: F) -> std::result::Result<(), ()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A running admin server and an operator key for it.
pub struct Admin {
    pub url: String,
    pub operator_key: String,
    pub http: reqwest::Client,
    service: Service,
}

/// A process's peak resident memory so far (`VmHWM`), in bytes.
pub fn peak_memory(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmHWM for process {pid}"))?;
    Ok(kib * 1024)
}

impl Admin {
    /// The admin server's process id.
    pub fn pid(&self) -> u32 {
        self.service.pid()
    }

    /// What the server has logged so far.
    pub fn log_text(&self) -> String {
        self.service.log_text()
    }

    /// `method path` under `/api/v1` with `key`, an optional JSON body: the whole response.
    pub async fn send(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<reqwest::Response> {
        let mut request = self
            .http
            .request(method, format!("{}/api/v1{path}", self.url))
            .bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        Ok(request.send().await?)
    }

    /// `method path` under `/api/v1` with `key`, an optional JSON body; returns status and JSON.
    pub async fn call(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let response = self.send(key, method, path, body).await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        };
        Ok((status, json))
    }

    /// POSTs a raw body (an upload) with `content_type`.
    pub async fn upload(
        &self,
        key: &str,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Result<(u16, Value)> {
        let response = self
            .http
            .post(format!("{}/api/v1{path}", self.url))
            .bearer_auth(key)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// Through the API: a tenant named `name` and a key for it. Returns (tenant id, key).
    pub async fn tenant_with_key(&self, name: &str) -> Result<(String, String)> {
        let op = self.operator_key.clone();
        let text = |v: &Value, field: &str| v[field].as_str().unwrap_or_default().to_owned();
        let tenant = self
            .ok(
                &op,
                reqwest::Method::POST,
                "/tenants",
                Some(json!({"name": name})),
            )
            .await?;
        let tenant_id = text(&tenant, "id");
        let key = self
            .ok(
                &op,
                reqwest::Method::POST,
                &format!("/tenants/{tenant_id}/keys"),
                Some(json!({"name": "tests"})),
            )
            .await?;
        Ok((tenant_id, text(&key, "key")))
    }

    /// Through the API: a tenant named `name`, a key for it, and a provider of that tenant
    /// pointing at `simulator_url`. Returns (tenant id, tenant key, provider id).
    pub async fn tenant_with_provider(
        &self,
        name: &str,
        simulator_url: &str,
    ) -> Result<(String, String, String)> {
        let text = |v: &Value, field: &str| v[field].as_str().unwrap_or_default().to_owned();
        let (tenant_id, key) = self.tenant_with_key(name).await?;
        let provider = self
            .ok(
                &key,
                reqwest::Method::POST,
                "/providers",
                Some(
                    json!({"name": "sim", "endpoint": format!("{simulator_url}/v1/messages"),
                            "max_in_flight": 10000}),
                ),
            )
            .await?;
        Ok((tenant_id, key, text(&provider, "id")))
    }

    /// Like [`call`](Self::call) but fails unless the status is 2xx; returns the JSON.
    pub async fn ok(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let (status, json) = self.call(key, method.clone(), path, body).await?;
        anyhow::ensure!(
            (200..300).contains(&status),
            "{method} {path}: {status} {json}"
        );
        Ok(json)
    }
}

/// The fields an API error (a 422) names, in order.
pub fn refused_fields(answer: &Value) -> Vec<&str> {
    answer["error"]["fields"]
        .as_array()
        .map(|f| f.iter().filter_map(|e| e["field"].as_str()).collect())
        .unwrap_or_default()
}

/// Waits (10 s at most) until the receiver at `base` is ready: it reaches the database and
/// its start is recorded as a refusal (so that a provider created after this sees no
/// refusal of its own).
async fn wait_ready(http: &reqwest::Client, base: &str, what: &str) -> Result<()> {
    wait_at(http, &format!("{base}/readyz"), what).await
}

/// Waits (10 s at most) until `{base}/healthz` answers 2xx.
async fn wait_healthy(http: &reqwest::Client, base: &str, what: &str) -> Result<()> {
    wait_at(http, &format!("{base}/healthz"), what).await
}

async fn wait_at(http: &reqwest::Client, health: &str, what: &str) -> Result<()> {
    let health = health.to_owned();
    wait_until(Duration::from_secs(10), || {
        let (http, health) = (http.clone(), health.clone());
        async move {
            http.get(&health)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("{what} did not start"))
}
