//! The admin web page in a real browser: headless Chromium driven over WebDriver
//! (chromedriver, both from Debian's `chromium` / `chromium-driver` packages, which
//! `scripts/services.sh` installs). A person's path through the page: create a campaign with
//! a recipients file, start it and watch its progress bar move, pause it and watch it stop,
//! resume it and watch it finish — checked against the provider (the simulator) too.

use fantoccini::{Client, ClientBuilder, Locator};
use herald_tests::{Result, TestEnv, wait_until};
use serde_json::{Value, json};
use std::future::Future;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `assert_eq!` that fails the test with an error instead of a panic, so that the page's
/// screenshot is taken and the browser closed.
macro_rules! ensure_eq {
    ($left:expr, $right:expr) => {
        ensure_eq!($left, $right, "values differ")
    };
    ($left:expr, $right:expr, $($msg:tt)+) => {{
        let (left, right) = (&$left, &$right);
        anyhow::ensure!(
            *left == *right,
            "{}: {:?} != {:?}",
            format!($($msg)+),
            left,
            right
        );
    }};
}

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const RECIPIENTS: usize = 3_000;

/// chromedriver and the browser it starts, plus a scratch directory (the browser profile and
/// the recipients file). Dropping it kills them all and removes the directory, also when the
/// test fails.
struct Browser {
    driver: Child,
    dir: PathBuf,
    webdriver_url: String,
}

impl Browser {
    /// Starts chromedriver on a free port and waits until it is ready.
    async fn start(http: &reqwest::Client) -> Result<Self> {
        for tool in [CHROMIUM, CHROMEDRIVER] {
            anyhow::ensure!(
                Path::new(tool).exists(),
                "{tool} is missing: run scripts/services.sh (it installs chromium and chromium-driver)"
            );
        }
        let dir =
            std::env::temp_dir().join(format!("herald-web-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("profile"))?;
        let log = log_dir()?.join(format!(
            "chromedriver-{}.log",
            dir.file_name().and_then(|n| n.to_str()).unwrap_or("web")
        ));
        let file = std::fs::File::create(&log)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            // Its own process group, so that Drop can kill the browser it starts as well.
            .process_group(0)
            .spawn()?;
        let browser = Self {
            driver,
            dir,
            webdriver_url: format!("http://127.0.0.1:{port}"),
        };
        let status = format!("{}/status", browser.webdriver_url);
        wait_until(Duration::from_secs(20), || {
            let (http, status) = (http.clone(), status.clone());
            async move {
                match http.get(&status).send().await {
                    Ok(r) => r
                        .json::<Value>()
                        .await
                        .is_ok_and(|v| v["value"]["ready"] == true),
                    Err(_) => false,
                }
            }
        })
        .await
        .map_err(|_| anyhow::anyhow!("chromedriver did not start; see {}", log.display()))?;
        Ok(browser)
    }

    /// A WebDriver session on a fresh headless Chromium profile.
    async fn session(&self) -> Result<Client> {
        let profile = self.dir.join("profile");
        let mut args: Vec<String> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,1000",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object literal")
        };
        let client = ClientBuilder::rustls()?
            .capabilities(capabilities)
            .connect(&self.webdriver_url)
            .await?;
        Ok(client)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver's process group holds the browser and its helpers; anything that left
        // it is still marked by our unique profile directory.
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let marker = self.dir.to_string_lossy().into_owned();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|p| p.parse::<u32>().ok())
                else {
                    continue;
                };
                let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(&marker) {
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where the harness keeps the services' logs (`target/<profile>/test-logs`).
fn log_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .ok_or_else(|| anyhow::anyhow!("no target directory"))?
        .join("test-logs");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Polls `probe` every 100 ms until it yields a value, or fails after `timeout` with `what`
/// and the last thing seen.
async fn poll<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<std::result::Result<T, String>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let seen = match probe().await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(seen)) => seen,
            Err(e) => format!("error: {e:#}"),
        };
        anyhow::ensure!(
            Instant::now() < deadline,
            "gave up after {timeout:?} waiting for {what}; last seen: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The text of the first element matching `css`, or `None` when there is none.
async fn text_of(page: &Client, css: &str) -> Result<Option<String>> {
    match page.find_all(Locator::Css(css)).await?.first() {
        Some(element) => Ok(Some(element.text().await?)),
        None => Ok(None),
    }
}

/// One campaign's row in the list.
struct Row<'a> {
    page: &'a Client,
    selector: String,
}

impl Row<'_> {
    async fn status(&self) -> Result<String> {
        Ok(text_of(self.page, &format!("{} .status", self.selector))
            .await?
            .unwrap_or_default())
    }

    /// The progress bar's `value` (finished recipients).
    async fn progress(&self) -> Result<i64> {
        let bar = self
            .page
            .find(Locator::Css(&format!(
                "{} progress.campaign-progress",
                self.selector
            )))
            .await?;
        let value = bar.attr("value").await?.unwrap_or_default();
        Ok(value.trim().parse::<f64>().unwrap_or(0.0) as i64)
    }

    async fn click(&self, action: &str) -> Result<()> {
        let css = format!("{} button.action-{action}", self.selector);
        let button = poll(Duration::from_secs(10), &css, || async {
            let found = self.page.find_all(Locator::Css(&css)).await?;
            Ok(found
                .into_iter()
                .next()
                .ok_or_else(|| "no such button".to_owned()))
        })
        .await?;
        button.click().await?;
        Ok(())
    }

    async fn wait_status(&self, status: &str, timeout: Duration) -> Result<()> {
        poll(timeout, &format!("status `{status}`"), || async {
            let shown = self.status().await?;
            Ok(if shown == status { Ok(()) } else { Err(shown) })
        })
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_creates_starts_pauses_and_resumes_a_campaign() -> Result<()> {
    // 20 in flight at 100 ms: about 200 msg/s, so 3,000 recipients take ~15 s.
    let env = TestEnv::new(&["--latency", "fixed:100"]).await?;
    let admin = env.admin().await?;
    let (acme, key, provider) = admin
        .tenant_with_provider("acme", &env.simulator_url)
        .await?;
    // A key of acme's service that sends: the page shows it the messages only.
    let send_key = admin
        .ok(
            &key,
            reqwest::Method::POST,
            &format!("/tenants/{acme}/keys"),
            Some(json!({"name": "checkout", "access": "send"})),
        )
        .await?["key"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // An overflow provider to pick in the form. The primary has no rate limit, so it carries
    // everything.
    let backup = admin
        .ok(
            &key,
            reqwest::Method::POST,
            "/providers",
            Some(
                json!({"name": "backup", "endpoint": format!("{}/v1/messages", env.simulator_url),
                        "cost_per_message": 0.05}),
            ),
        )
        .await?["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // One that places calls: offered for a voice campaign, not for an SMS one.
    let calls = admin
        .ok(
            &key,
            reqwest::Method::POST,
            "/providers",
            Some(
                json!({"name": "calls", "kind": "twilio_voice", "endpoint": env.simulator_url,
                        "settings": {"from": "+15005550006"},
                        "credentials": {"account_sid": herald_tests::TWILIO_SID, "auth_token": "t0ken"}}),
            ),
        )
        .await?["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let _scheduler = env.scheduler(500, &[])?;
    let _worker = env.worker(&[("HERALD_WORKER_PREFETCH", "20")])?;
    // A second tenant, for the operator's view of the lists: a draft campaign and a contact.
    let (globex, globex_key, globex_provider) = admin
        .tenant_with_provider("globex", &env.simulator_url)
        .await?;
    admin
        .ok(
            &globex_key,
            reqwest::Method::POST,
            "/campaigns",
            Some(
                json!({"name": "winter-sale", "provider_id": globex_provider,
                        "channel": "sms", "template": "Hi"}),
            ),
        )
        .await?;
    let (status, body) = admin
        .upload(
            &globex_key,
            "/contacts",
            "text/csv",
            "address\n+15559990009\n".to_owned(),
        )
        .await?;
    anyhow::ensure!(status == 200, "{body}");
    let operator = Operator {
        key: &admin.operator_key,
        other_tenant: &globex,
    };

    let browser = Browser::start(&env.http).await?;
    let file = browser.dir.join("recipients.csv");
    let mut csv = String::from("address,first_name\n");
    for i in 0..RECIPIENTS {
        csv.push_str(&format!("+1555{i:07},R{i}\n"));
    }
    std::fs::write(&file, csv)?;
    let page = browser.session().await?;
    let providers = Providers {
        primary: &provider,
        overflow: &backup,
        calls: &calls,
    };
    let outcome = drive(&env, &page, &admin.url, &key, &providers, &file).await;
    let outcome = match outcome {
        Ok(()) => browse_as_operator(&page, &operator).await,
        failed => failed,
    };
    let outcome = match outcome {
        Ok(()) => browse_with_send_key(&page, &send_key).await,
        failed => failed,
    };
    if outcome.is_err() {
        // What the page showed when it went wrong, next to the services' logs.
        if let Ok(png) = page.screenshot().await {
            let shot = log_dir()?.join(format!("{}-web-failure.png", env.name));
            if std::fs::write(&shot, png).is_ok() {
                eprintln!("screenshot of the page: {}", shot.display());
            }
        }
    }
    let _ = page.close().await;
    outcome
}

/// The operator's key, and the tenant other than acme it filters the lists by.
struct Operator<'a> {
    key: &'a str,
    other_tenant: &'a str,
}

/// The providers the form offers: the one chosen, and the one chosen as overflow.
struct Providers<'a> {
    primary: &'a str,
    overflow: &'a str,
    /// A twilio_voice provider: offered for voice campaigns, not for SMS ones.
    calls: &'a str,
}

async fn drive(
    env: &TestEnv,
    page: &Client,
    admin_url: &str,
    key: &str,
    providers: &Providers<'_>,
    file: &Path,
) -> Result<()> {
    let provider = providers.primary;
    let started = Instant::now();
    // A key in a link is never used: it leaves the address bar and the form asks for it.
    page.goto(&format!("{admin_url}/?key={key}")).await?;
    let address = page.current_url().await?;
    anyhow::ensure!(
        address.query().is_none_or(|q| !q.contains("key")),
        "the key stayed in the address bar: {address}"
    );
    let message = page
        .find(Locator::Css("#key-message"))
        .await?
        .text()
        .await?;
    anyhow::ensure!(
        message.contains("not accepted"),
        "no word on the refused link: {message:?}"
    );
    // Signing in is the form's job. A key pasted with an invisible character, which no
    // HTTP header carries, is refused by the form (it read as the server being out of
    // reach, for ever).
    let key_box = page.find(Locator::Css("#api-key")).await?;
    key_box.send_keys(&format!("{key}\u{200b}")).await?;
    page.find(Locator::Css("#use-key")).await?.click().await?;
    let message = page
        .find(Locator::Css("#key-message"))
        .await?
        .text()
        .await?;
    anyhow::ensure!(
        message.contains("Paste the key alone"),
        "no word on the key's stray character: {message:?}"
    );
    let key_box = page.find(Locator::Css("#api-key")).await?;
    key_box.clear().await?;
    key_box.send_keys(key).await?;
    page.find(Locator::Css("#use-key")).await?.click().await?;

    // The create form, as a person fills it.
    page.find(Locator::Css("#c-name"))
        .await?
        .send_keys("spring-sale")
        .await?;
    // The provider that places calls is offered for a voice campaign, not for an SMS one
    // (generic providers are offered for both).
    page.find(Locator::Css("#c-channel"))
        .await?
        .select_by_value("voice")
        .await?;
    choose_when_offered(page, "#c-provider", providers.calls).await?;
    page.find(Locator::Css("#c-channel"))
        .await?
        .select_by_value("sms")
        .await?;
    choose_when_offered(page, "#c-provider", provider).await?;
    let calls_offered = format!("#c-provider option[value=\"{}\"]", providers.calls);
    anyhow::ensure!(
        page.find_all(Locator::Css(&calls_offered))
            .await?
            .is_empty(),
        "the provider that places calls was offered for an SMS campaign"
    );
    page.find(Locator::Css("#c-overflow"))
        .await?
        .select_by_value(providers.overflow)
        .await?;
    page.find(Locator::Css("#c-channel"))
        .await?
        .select_by_value("sms")
        .await?;
    page.find(Locator::Css("#c-template"))
        .await?
        .send_keys("Hi {{first_name}}")
        .await?;
    page.find(Locator::Css("#c-file"))
        .await?
        .send_keys(&file.canonicalize()?.to_string_lossy())
        .await?;
    page.find(Locator::Css("#c-submit")).await?.click().await?;
    let created = poll(
        Duration::from_secs(30),
        "the form to report success",
        || async {
            // One snapshot: read one by one, the text could predate the class.
            let seen = page
                .execute(
                    "const s = document.querySelector('#form-status');
                     return [s.textContent, s.className,
                             document.querySelector('#form-errors').textContent];",
                    vec![],
                )
                .await?;
            let [text, class, errors] =
                [0, 1, 2].map(|i| seen[i].as_str().unwrap_or_default().to_owned());
            anyhow::ensure!(
                errors.trim().is_empty(),
                "the form reports errors: {errors}"
            );
            Ok(if class.contains("form-status-ok") && !text.is_empty() {
                Ok(text)
            } else {
                Err(format!("{text:?} ({class})"))
            })
        },
    )
    .await?;
    anyhow::ensure!(
        created.contains(&format!("{RECIPIENTS} recipients")),
        "form status: {created}"
    );

    // The new campaign's row.
    let id = poll(Duration::from_secs(10), "the campaign's row", || async {
        let rows = page
            .find_all(Locator::Css("#campaigns tbody tr[data-campaign-id]"))
            .await?;
        Ok(match rows.first() {
            Some(row) => row
                .attr("data-campaign-id")
                .await?
                .ok_or_else(|| "no id".to_owned()),
            None => Err("no rows".to_owned()),
        })
    })
    .await?;
    let campaign = env
        .http
        .get(format!("{admin_url}/api/v1/campaigns/{id}"))
        .bearer_auth(key)
        .send()
        .await?
        .error_for_status()?
        .json::<Value>()
        .await?;
    ensure_eq!(campaign["name"], "spring-sale", "{campaign}");
    ensure_eq!(campaign["template"], "Hi {{first_name}}", "{campaign}");
    ensure_eq!(campaign["channel"], "sms", "{campaign}");
    ensure_eq!(campaign["provider_id"], provider, "{campaign}");
    ensure_eq!(
        campaign["overflow_provider_id"],
        providers.overflow,
        "{campaign}"
    );
    ensure_eq!(campaign["progress"]["total"], RECIPIENTS, "{campaign}");
    let row = Row {
        page,
        selector: format!("#campaigns tbody tr[data-campaign-id=\"{id}\"]"),
    };
    ensure_eq!(row.status().await?, "draft");
    ensure_eq!(row.progress().await?, 0);
    let requests = || async {
        Ok::<_, anyhow::Error>(
            env.simulator_stats().await?["per_campaign"][&id]["requests"]
                .as_i64()
                .unwrap_or(0),
        )
    };

    // Start asks first, naming how many it sends to: declined, nothing changes; accepted,
    // it runs, and the bar moves.
    row.click("start").await?;
    let asked = poll(Duration::from_secs(10), "the question to start", || async {
        Ok(page.get_alert_text().await.map_err(|e| e.to_string()))
    })
    .await?;
    anyhow::ensure!(
        asked.contains("spring-sale") && asked.contains("recipients will be sent to"),
        "{asked:?}"
    );
    page.dismiss_alert().await?;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    ensure_eq!(row.status().await?, "draft");
    ensure_eq!(requests().await?, 0);
    row.click("start").await?;
    poll(Duration::from_secs(10), "the question to start", || async {
        Ok(page.get_alert_text().await.map_err(|e| e.to_string()))
    })
    .await?;
    page.accept_alert().await?;
    row.wait_status("running", Duration::from_secs(15)).await?;
    let first = poll(Duration::from_secs(20), "the bar to move", || async {
        let value = row.progress().await?;
        Ok(if value > 0 {
            Ok(value)
        } else {
            Err("0".into())
        })
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = row.progress().await?;
    anyhow::ensure!(
        second > first,
        "the bar does not move while running: {first} then {second}"
    );
    anyhow::ensure!(
        second < RECIPIENTS as i64 * 3 / 4,
        "finished too fast to pause: {second}"
    );

    // Pause: the bar stops, and so do the sends.
    row.click("pause").await?;
    row.wait_status("paused", Duration::from_secs(10)).await?;
    // In-flight requests finish, and the page refreshes once a second.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let (bar_at_pause, sent_at_pause) = (row.progress().await?, requests().await?);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (bar_later, sent_later) = (row.progress().await?, requests().await?);
    ensure_eq!(bar_at_pause, bar_later, "the bar moved while paused");
    ensure_eq!(sent_at_pause, sent_later, "sends while paused");
    ensure_eq!(
        bar_later,
        sent_later,
        "the bar shows what the provider received"
    );
    anyhow::ensure!(
        bar_later < RECIPIENTS as i64,
        "nothing left to resume: {bar_later}"
    );
    ensure_eq!(row.status().await?, "paused");
    // Cancel, beside Pause and final, asks first: declined, nothing changes.
    row.click("cancel").await?;
    let asked = poll(
        Duration::from_secs(10),
        "the question to cancel",
        || async { Ok(page.get_alert_text().await.map_err(|e| e.to_string())) },
    )
    .await?;
    anyhow::ensure!(
        asked.contains("spring-sale") && asked.contains("cannot be undone"),
        "{asked:?}"
    );
    page.dismiss_alert().await?;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    ensure_eq!(row.status().await?, "paused");

    // Resume: it finishes, every recipient sent exactly once.
    row.click("resume").await?;
    row.wait_status("completed", Duration::from_secs(60))
        .await?;
    ensure_eq!(row.progress().await?, RECIPIENTS as i64);
    let stats = env.simulator_stats().await?;
    ensure_eq!(
        stats["per_campaign"][&id]["requests"],
        RECIPIENTS,
        "each recipient exactly once"
    );
    ensure_eq!(stats["duplicates"], 0);

    // The campaign's details: what went through which provider.
    page.find(Locator::Css(&format!("{} a.campaign-link", row.selector)))
        .await?
        .click()
        .await?;
    ensure_eq!(sent_via(page).await?, format!("sim {RECIPIENTS}"));
    // The address names the campaign shown: reloaded (or shared), it opens it again.
    let url = page.current_url().await?;
    anyhow::ensure!(
        url.fragment() == Some(format!("campaign-{id}").as_str()),
        "{url}"
    );
    page.refresh().await?;
    ensure_eq!(sent_via(page).await?, format!("sim {RECIPIENTS}"));
    // By name, once the reloaded page has read the providers (the panel is drawn every
    // second; the sends above may come first).
    poll(Duration::from_secs(10), "the overflow by name", || async {
        let overflow = page.find(Locator::Css("#d-overflow")).await?.text().await?;
        Ok(if overflow == "backup" {
            Ok(())
        } else {
            Err(overflow)
        })
    })
    .await?;
    browse_lists(env, page, admin_url, key, &row).await?;
    eprintln!("web: the page's part took {:?}", started.elapsed());
    Ok(())
}

/// The open campaign's sends per provider, once shown (`sim 3000`).
async fn sent_via(page: &Client) -> Result<String> {
    poll(
        Duration::from_secs(15),
        "the sends per provider",
        || async {
            let text = page.find(Locator::Css("#d-sent-via")).await?.text().await?;
            Ok(if text.starts_with("sim ") {
                Ok(text)
            } else {
                Err(text)
            })
        },
    )
    .await
}

/// An operator's key sees every tenant's campaigns and contacts, each row naming its
/// tenant, and the tenant filters a tenant key is not offered narrow them to one.
async fn browse_as_operator(page: &Client, operator: &Operator<'_>) -> Result<()> {
    click(page, "#sign-out").await?;
    type_into(page, "#api-key", operator.key).await?;
    click(page, "#use-key").await?;
    let tenant_of = |rows: &[Vec<String>], name: &str| {
        rows.iter()
            .filter(|r| r.iter().any(|cell| cell == name))
            .count()
    };
    // Unfiltered, both tenants' campaigns (acme's 56 fill the first page of 50, newest
    // first, so globex's older one is on a later page: the filter finds it).
    wait_rows(page, "#campaigns", "every tenant's campaigns", |rows| {
        if rows.len() == 50 && tenant_of(rows, "acme") == 50 {
            Ok(())
        } else {
            Err(format!("{rows:?}"))
        }
    })
    .await?;
    choose_when_offered(page, "#f-tenant", operator.other_tenant).await?;
    wait_rows(
        page,
        "#campaigns",
        "globex's campaigns only",
        |rows| match rows {
            [only] if only[0] == "winter-sale" && tenant_of(rows, "globex") == 1 => Ok(()),
            _ => Err(format!("{rows:?}")),
        },
    )
    .await?;

    // Contacts: both tenants' (acme's one left after its erasure), then globex's only.
    click(page, "#contacts summary").await?;
    wait_rows(page, "#contact-list", "every tenant's contacts", |rows| {
        if rows.len() == 2 && tenant_of(rows, "acme") == 1 && tenant_of(rows, "globex") == 1 {
            Ok(())
        } else {
            Err(format!("{rows:?}"))
        }
    })
    .await?;
    page.find(Locator::Css("#k-tenant"))
        .await?
        .select_by_value(operator.other_tenant)
        .await?;
    wait_rows(
        page,
        "#contact-list",
        "globex's contacts only",
        |rows| match rows {
            [only] if only[0] == "+15559990009" && only[1] == "globex" => Ok(()),
            _ => Err(format!("{rows:?}")),
        },
    )
    .await?;
    Ok(())
}

/// A key of access `send`: the page shows the messages only, says why, and asks for nothing
/// else (its campaigns would answer 403 every second).
async fn browse_with_send_key(page: &Client, key: &str) -> Result<()> {
    click(page, "#sign-out").await?;
    // The operator's tenants and providers leave every select with it: the page shows at
    // once at the next sign-in, before the next key's own lists arrive.
    let left = page
        .execute(
            "return [...document.querySelectorAll('select option')]
                 .map((o) => o.textContent)
                 .filter((t) => /acme|globex|sim /.test(t));",
            vec![],
        )
        .await?;
    anyhow::ensure!(
        left.as_array().is_some_and(Vec::is_empty),
        "the last key's tenants or providers are still offered: {left}"
    );
    type_into(page, "#api-key", key).await?;
    click(page, "#use-key").await?;
    poll(
        Duration::from_secs(10),
        "the messages only, and why",
        || async {
            let said = text_of(page, "#notice").await?.unwrap_or_default();
            let shown = |css: &'static str| async move {
                page.find(Locator::Css(css)).await?.is_displayed().await
            };
            let campaigns = shown("#list-section").await?;
            let form = shown("#create-section").await?;
            let messages = shown("#message-list").await?;
            let error = shown("#messages-error").await?;
            Ok(
                if said.contains("access “send”") && !campaigns && !form && messages && !error {
                    Ok(())
                } else {
                    Err(format!(
                        "notice {said:?}, campaigns {campaigns}, form {form}, messages {messages}, error {error}"
                    ))
                },
            )
        },
    )
    .await
}

/// The texts of the cells of `table`'s rows, row by row.
async fn table_rows(page: &Client, table: &str) -> Result<Vec<Vec<String>>> {
    let rows = page
        .execute(
            "return [...document.querySelectorAll(arguments[0] + ' tbody tr')]
                 .map((tr) => [...tr.cells].map((td) => td.textContent.trim()));",
            vec![json!(table)],
        )
        .await?;
    Ok(serde_json::from_value(rows)?)
}

/// Waits until `table`'s rows satisfy `check` (which says what it saw otherwise).
async fn wait_rows(
    page: &Client,
    table: &str,
    what: &str,
    check: impl Fn(&[Vec<String>]) -> std::result::Result<(), String>,
) -> Result<Vec<Vec<String>>> {
    poll(Duration::from_secs(10), what, || async {
        let rows = table_rows(page, table).await?;
        Ok(check(&rows).map(|()| rows))
    })
    .await
}

/// The id of the first provider `key` may use.
async fn first_provider(http: &reqwest::Client, admin_url: &str, key: &str) -> Result<Value> {
    Ok(http
        .get(format!("{admin_url}/api/v1/providers"))
        .bearer_auth(key)
        .send()
        .await?
        .json::<Value>()
        .await?[0]["id"]
        .clone())
}

/// Picks `value` in the `select` once the page offers it (its options come from the API).
async fn choose_when_offered(page: &Client, select: &str, value: &str) -> Result<()> {
    let option = format!("{select} option[value=\"{value}\"]");
    poll(Duration::from_secs(10), &option, || async {
        let found = page.find_all(Locator::Css(&option)).await?;
        Ok(if found.is_empty() {
            Err("not offered".to_owned())
        } else {
            Ok(())
        })
    })
    .await?;
    page.find(Locator::Css(select))
        .await?
        .select_by_value(value)
        .await?;
    Ok(())
}

async fn click(page: &Client, css: &str) -> Result<()> {
    page.find(Locator::Css(css)).await?.click().await?;
    Ok(())
}

async fn type_into(page: &Client, css: &str, text: &str) -> Result<()> {
    let input = page.find(Locator::Css(css)).await?;
    input.clear().await?;
    input.send_keys(text).await?;
    Ok(())
}

/// The lists at scale: campaign pages, filters and tenant names; the finished campaign's
/// recipients page by page and by address; the contacts; a transactional message.
async fn browse_lists(
    env: &TestEnv,
    page: &Client,
    admin_url: &str,
    key: &str,
    finished: &Row<'_>,
) -> Result<()> {
    // Rows name their tenant (the list is drawn again after the reload: waited for).
    let cell = format!("{} .tenant", finished.selector);
    poll(
        Duration::from_secs(15),
        "the tenant's name in the list",
        || async {
            Ok(match text_of(page, &cell).await? {
                Some(name) if name == "acme" => Ok(()),
                other => Err(format!("{other:?}")),
            })
        },
    )
    .await?;

    // The detail panel lists the campaign's recipients, 20 to a page, by address.
    let first = wait_rows(page, "#recipients", "the recipients' first page", |rows| {
        if rows.len() == 20 && rows[0][0] == "+15550000000" {
            Ok(())
        } else {
            Err(format!("{rows:?}"))
        }
    })
    .await?;
    anyhow::ensure!(
        first.iter().all(|r| r[1] == "sent"),
        "every recipient shows sent: {first:?}"
    );
    click(page, "#recipients-next").await?;
    wait_rows(
        page,
        "#recipients",
        "the recipients' second page",
        |rows| match rows.first() {
            Some(r) if r[0] == "+15550000020" && rows.len() == 20 => Ok(()),
            _ => Err(format!("{rows:?}")),
        },
    )
    .await?;
    let shown = text_of(page, "#recipients-page").await?;
    ensure_eq!(shown.as_deref(), Some("Page 2"));
    type_into(page, "#r-address", "+15550001234").await?;
    wait_rows(
        page,
        "#recipients",
        "one recipient by address",
        |rows| match rows {
            [only] if only[0] == "+15550001234" => Ok(()),
            _ => Err(format!("{rows:?}")),
        },
    )
    .await?;

    // 55 more campaigns: the list shows 50 a page, newest first; the first is a page away.
    let http = &env.http;
    let create = |name: String| async move {
        let provider = first_provider(http, admin_url, key).await?;
        http.post(format!("{admin_url}/api/v1/campaigns"))
            .bearer_auth(key)
            .json(
                &json!({"name": name, "provider_id": provider, "channel": "sms", "template": "Hi"}),
            )
            .send()
            .await?
            .error_for_status()?;
        Ok::<_, anyhow::Error>(())
    };
    for i in 0..55 {
        create(format!("bulk-{i:02}")).await?;
    }
    let named = |rows: &[Vec<String>]| rows.iter().map(|r| r[0].clone()).collect::<Vec<_>>();
    wait_rows(page, "#campaigns", "the newest 50 campaigns", |rows| {
        let names = named(rows);
        if names.len() == 50 && names[0] == "bulk-54" && names[49] == "bulk-05" {
            Ok(())
        } else {
            Err(format!("{names:?}"))
        }
    })
    .await?;
    click(page, "#campaigns-next").await?;
    wait_rows(page, "#campaigns", "the older campaigns' page", |rows| {
        let names = named(rows);
        let expected = [
            "bulk-04",
            "bulk-03",
            "bulk-02",
            "bulk-01",
            "bulk-00",
            "spring-sale",
        ];
        if names == expected {
            Ok(())
        } else {
            Err(format!("{names:?}"))
        }
    })
    .await?;
    click(page, "#campaigns-prev").await?;
    wait_rows(page, "#campaigns", "back to the first page", |rows| {
        if rows.len() == 50 {
            Ok(())
        } else {
            Err(format!("{} rows", rows.len()))
        }
    })
    .await?;

    // Filters: by name (any case), by status; nothing matching says so.
    type_into(page, "#f-name", "SPRING").await?;
    wait_rows(page, "#campaigns", "the name filter", |rows| {
        let names = named(rows);
        if names == ["spring-sale"] {
            Ok(())
        } else {
            Err(format!("{names:?}"))
        }
    })
    .await?;
    page.find(Locator::Css("#f-status"))
        .await?
        .select_by_value("draft")
        .await?;
    wait_rows(
        page,
        "#campaigns",
        "no completed campaign among drafts",
        |rows| {
            if rows.is_empty() {
                Ok(())
            } else {
                Err(format!("{rows:?}"))
            }
        },
    )
    .await?;
    let empty = text_of(page, "#campaigns-empty").await?.unwrap_or_default();
    anyhow::ensure!(
        empty.contains("match"),
        "the empty list says why: {empty:?}"
    );

    // Contacts, when the section is opened.
    let contacts = "address,plan\n+15559990001,gold\n+15559990002,silver\n";
    http.post(format!("{admin_url}/api/v1/contacts"))
        .bearer_auth(key)
        .header("content-type", "text/csv")
        .body(contacts)
        .send()
        .await?
        .error_for_status()?;
    click(page, "#contacts summary").await?;
    let rows = wait_rows(page, "#contact-list", "the contacts", |rows| {
        if rows.len() == 2 {
            Ok(())
        } else {
            Err(format!("{rows:?}"))
        }
    })
    .await?;
    ensure_eq!(rows[0][0], "+15559990001");
    ensure_eq!(rows[0][1], "acme");
    anyhow::ensure!(rows[1][2].contains("silver"), "attributes shown: {rows:?}");
    // A person asking to be forgotten: erased from the row, after asking.
    click(page, "#contact-list button.action-erase").await?;
    let asked = poll(Duration::from_secs(10), "the question to erase", || async {
        Ok(page.get_alert_text().await.map_err(|e| e.to_string()))
    })
    .await?;
    anyhow::ensure!(asked.contains("+15559990001"), "{asked:?}");
    page.accept_alert().await?;
    let rows = wait_rows(page, "#contact-list", "the contact left", |rows| {
        if rows.len() == 1 {
            Ok(())
        } else {
            Err(format!("{rows:?}"))
        }
    })
    .await?;
    ensure_eq!(rows[0][0], "+15559990002");
    let told = text_of(page, "#notice").await?.unwrap_or_default();
    anyhow::ensure!(told.contains("+15559990001 erased"), "{told:?}");

    // Transactional messages, when their section is opened: sent through the provider the
    // campaign used (the scheduler and workers of the test are running).
    let provider = first_provider(http, admin_url, key).await?;
    http.post(format!("{admin_url}/api/v1/messages"))
        .bearer_auth(key)
        .json(
            &json!({"to": "+15559990003", "channel": "sms", "provider_id": provider,
                      "text": "Your code is 4821"}),
        )
        .send()
        .await?
        .error_for_status()?;
    click(page, "#messages summary").await?;
    // The section reads its list when opened, filtered or refreshed.
    let rows = poll(Duration::from_secs(30), "the message, sent", || async {
        click(page, "#m-reload").await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rows = table_rows(page, "#message-list").await?;
        Ok(if rows.len() == 1 && rows[0][1] == "sent" {
            Ok(rows)
        } else {
            Err(format!("{rows:?}"))
        })
    })
    .await?;
    ensure_eq!(rows[0][0], "+15559990003");
    ensure_eq!(rows[0][4], "Your code is 4821");

    // One held by its quiet hours (now, in UTC) waits: the page cancels it, after asking.
    let now = chrono::Utc::now();
    let clock = |t: chrono::DateTime<chrono::Utc>| t.format("%H:%M").to_string();
    let held: Value = http
        .post(format!("{admin_url}/api/v1/messages"))
        .bearer_auth(key)
        .json(
            &json!({"to": "+15559990004", "channel": "sms", "provider_id": provider,
                      "text": "See you at 9",
                      "quiet_hours": {"start": clock(now - chrono::Duration::hours(1)),
                                      "end": clock(now + chrono::Duration::hours(1)),
                                      "time_zone": "UTC"}}),
        )
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let held_id = held["messages"][0]["id"]
        .as_str()
        .or_else(|| held["id"].as_str())
        .unwrap_or_default()
        .to_owned();
    poll(
        Duration::from_secs(30),
        "the held message, waiting",
        || async {
            click(page, "#m-reload").await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let rows = table_rows(page, "#message-list").await?;
            Ok(
                if rows
                    .iter()
                    .any(|r| r[0] == "+15559990004" && r[1] == "pending")
                {
                    Ok(())
                } else {
                    Err(format!("{rows:?}"))
                },
            )
        },
    )
    .await?;
    click(page, "#message-list button.action-cancel").await?;
    let asked = poll(
        Duration::from_secs(10),
        "the question to cancel",
        || async { Ok(page.get_alert_text().await.map_err(|e| e.to_string())) },
    )
    .await?;
    anyhow::ensure!(asked.contains("+15559990004"), "{asked:?}");
    page.accept_alert().await?;
    poll(
        Duration::from_secs(10),
        "the message, cancelled",
        || async {
            let rows = table_rows(page, "#message-list").await?;
            Ok(
                if rows
                    .iter()
                    .any(|r| r[0] == "+15559990004" && r[1] == "cancelled")
                {
                    Ok(())
                } else {
                    Err(format!("{rows:?}"))
                },
            )
        },
    )
    .await?;
    let state: Value = http
        .get(format!("{admin_url}/api/v1/messages/{held_id}"))
        .bearer_auth(key)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    ensure_eq!(
        state["message"]["state"]
            .as_str()
            .or(state["state"].as_str()),
        Some("cancelled")
    );
    // Those to one number, written as people write it.
    type_into(page, "#m-to", "+1 555 999 0003").await?;
    wait_rows(
        page,
        "#message-list",
        "the messages to one number",
        |rows| match rows {
            [only] if only[0] == "+15559990003" => Ok(()),
            _ => Err(format!("{rows:?}")),
        },
    )
    .await?;
    Ok(())
}

/// A tenant's suppression list and status webhook on the page: listed, added to and taken
/// from; the webhook set (its secret shown once) and seen failing; an operator's view of
/// another tenant's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_keeps_a_tenants_suppressions_and_shows_its_webhook_failing() -> Result<()> {
    let env = TestEnv::new(&[]).await?;
    let admin = env.admin().await?;
    let (acme, key, provider) = admin
        .tenant_with_provider("acme", &env.simulator_url)
        .await?;
    let (globex, globex_key) = admin.tenant_with_key("globex").await?;
    admin
        .ok(
            &globex_key,
            reqwest::Method::POST,
            "/suppressions",
            Some(json!({"channel": "sms", "addresses": ["+15557770001"]})),
        )
        .await?;
    let _scheduler = env.scheduler(250, &[])?;
    let _worker = env.worker(&[])?;
    let down = herald_tests::status_sink::StatusSink::start(usize::MAX).await?;

    let browser = Browser::start(&env.http).await?;
    let page = browser.session().await?;
    let outcome = async {
        page.goto(&admin.url).await?;
        type_into(&page, "#api-key", &key).await?;
        click(&page, "#use-key").await?;

        // Suppressions: none yet; two added through the form, shown with their reason; one
        // taken off again after the question.
        click(&page, "#suppressions summary").await?;
        poll(Duration::from_secs(10), "an empty list", || async {
            let empty = page
                .find(Locator::Css("#suppressions-empty"))
                .await?
                .is_displayed()
                .await?;
            Ok(if empty {
                Ok(())
            } else {
                Err("not empty".to_owned())
            })
        })
        .await?;
        type_into(&page, "#sa-addresses", "+15557770002\n+1 555 777 0003").await?;
        type_into(&page, "#sa-reason", "asked by phone").await?;
        click(&page, "#sa-submit").await?;
        wait_text(
            &page,
            "#sa-status",
            "the form's word",
            Duration::from_secs(10),
            |said| said.starts_with("2 of 2 added"),
        )
        .await?;
        let rows = wait_rows(&page, "#suppression-list", "the two added", |rows| {
            if rows.len() == 2
                && rows
                    .iter()
                    .all(|r| r[1] == "sms" && r[2] == "acme" && r[4] == "asked by phone")
            {
                Ok(())
            } else {
                Err(format!("{rows:?}"))
            }
        })
        .await?;
        ensure_eq!(
            rows.iter().map(|r| r[0].clone()).collect::<Vec<_>>(),
            vec!["+15557770002".to_owned(), "+15557770003".to_owned()]
        );
        click(&page, "#suppression-list button.action-remove").await?;
        let asked = poll(Duration::from_secs(10), "the question", || async {
            Ok(page.get_alert_text().await.map_err(|e| e.to_string()))
        })
        .await?;
        anyhow::ensure!(asked.contains("+15557770002"), "{asked:?}");
        page.accept_alert().await?;
        wait_rows(&page, "#suppression-list", "one left", |rows| match rows {
            [only] if only[0] == "+15557770003" => Ok(()),
            _ => Err(format!("{rows:?}")),
        })
        .await?;
        // A mistake is named, and nothing added (of the good address beside it either).
        type_into(&page, "#sa-addresses", "+15557770004\nnot a number").await?;
        click(&page, "#sa-submit").await?;
        wait_text(
            &page,
            "#sa-status",
            "the refusal",
            Duration::from_secs(10),
            |said| said.contains("addresses[1]"),
        )
        .await?;
        let listed = admin
            .ok(&key, reqwest::Method::GET, "/suppressions", None)
            .await?;
        ensure_eq!(
            listed["items"].as_array().map(Vec::len),
            Some(1),
            "{listed}"
        );

        // The webhook: none; set (its secret shown once); failing once a message's event is
        // refused, as the API says.
        click(&page, "#webhook summary").await?;
        wait_text(
            &page,
            "#w-url",
            "no webhook",
            Duration::from_secs(10),
            |url| url.starts_with("none"),
        )
        .await?;
        type_into(&page, "#w-new-url", &down.url).await?;
        click(&page, "#w-save").await?;
        let secret = wait_text(
            &page,
            "#w-secret",
            "the secret",
            Duration::from_secs(10),
            |secret| secret.starts_with("whsec_"),
        )
        .await?;
        let stored = admin
            .ok(
                &key,
                reqwest::Method::GET,
                &format!("/tenants/{acme}/webhook"),
                None,
            )
            .await?;
        ensure_eq!(stored["url"], json!(down.url));
        anyhow::ensure!(
            stored.get("secret").is_none() && secret.len() > 40,
            "{stored}"
        );
        admin
            .ok(
                &key,
                reqwest::Method::POST,
                "/messages",
                Some(
                    json!({"to": "+15557770009", "channel": "sms", "provider_id": provider,
                            "text": "Your code is 4821"}),
                ),
            )
            .await?;
        // The section shows what it read when opened, and again on Refresh.
        poll(Duration::from_secs(30), "the webhook failing", || async {
            click(&page, "#w-reload").await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let failing = text_of(&page, "#w-failing").await?.unwrap_or_default();
            let failure = text_of(&page, "#w-last-failure").await?.unwrap_or_default();
            Ok(
                if failing != "no" && !failing.is_empty() && failure.contains("answered 500") {
                    Ok(())
                } else {
                    Err(format!("{failing:?} {failure:?}"))
                },
            )
        })
        .await?;
        ensure_eq!(
            text_of(&page, "#w-disabled").await?.unwrap_or_default(),
            "no"
        );
        // Disabled, as an endpoint's 410 Gone leaves it (made so): the page says why and
        // offers no test; enabled again for what follows.
        let disable = |on: bool| {
            sqlx::query(
                "UPDATE tenant_webhooks
                 SET disabled_at = CASE WHEN $2 THEN now() END,
                     disabled_reason = CASE WHEN $2 THEN 'answered 410 Gone: unsubscribed' END
                 WHERE tenant_id = $1::uuid",
            )
            .bind(&acme)
            .bind(on)
            .execute(&env.pool)
        };
        disable(true).await?;
        click(&page, "#w-reload").await?;
        wait_text(
            &page,
            "#w-disabled",
            "the webhook disabled",
            Duration::from_secs(10),
            |text| text.contains("answered 410 Gone: unsubscribed"),
        )
        .await?;
        anyhow::ensure!(
            !page
                .find(Locator::Css("#w-test"))
                .await?
                .is_displayed()
                .await?,
            "no test for a disabled webhook"
        );
        disable(false).await?;

        // Its events given up once a day old (made so, with the webhook: the worker looks
        // every 10 s), then posted again from the page.
        for statement in [
            "UPDATE tenant_webhooks SET created_at = now() - interval '2 days'
             WHERE tenant_id = $1::uuid",
            "UPDATE message_events SET occurred_at = now() - interval '25 hours'
             WHERE tenant_id = $1::uuid",
        ] {
            sqlx::query(statement)
                .bind(&acme)
                .execute(&env.pool)
                .await?;
        }
        let given_up = poll(Duration::from_secs(30), "events given up", || async {
            click(&page, "#w-reload").await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let shown = text_of(&page, "#w-abandoned").await?.unwrap_or_default();
            let offered = page
                .find(Locator::Css("#w-recover"))
                .await?
                .is_displayed()
                .await?;
            Ok(match shown.parse::<u32>() {
                Ok(n) if n > 0 && offered => Ok(n),
                _ => Err(format!("{shown:?}, offered {offered}")),
            })
        })
        .await?;
        click(&page, "#w-recover").await?;
        poll(Duration::from_secs(10), "the question", || async {
            Ok(page.get_alert_text().await.map_err(|e| e.to_string()))
        })
        .await?;
        page.accept_alert().await?;
        let noun = if given_up == 1 { "event" } else { "events" };
        wait_text(
            &page,
            "#w-status",
            "the events posted again",
            Duration::from_secs(10),
            |said| said.starts_with(&format!("{given_up} {noun} given up posted again")),
        )
        .await?;
        wait_text(
            &page,
            "#w-abandoned",
            "none given up",
            Duration::from_secs(10),
            |shown| shown == "0",
        )
        .await?;
        // A test event, asked for from the page: queued for acme's webhook.
        click(&page, "#w-test").await?;
        wait_text(
            &page,
            "#w-status",
            "the test event queued",
            Duration::from_secs(10),
            |said| said.starts_with("Test event ") && said.contains("queued"),
        )
        .await?;
        let tests: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM message_events
             WHERE tenant_id = $1::uuid AND kind = 'webhook.test'",
        )
        .bind(&acme)
        .fetch_one(&env.pool)
        .await?;
        ensure_eq!(tests, 1);
        // Its events, newest first: the test event waiting (the endpoint still fails), the
        // message's recovered and waiting again (posts and failures counted from the
        // recovery); filtered to those delivered, none.
        click(&page, "#webhook-events summary").await?;
        let events = wait_rows(
            &page,
            "#webhook-event-list",
            "acme's events",
            |rows| match rows.first() {
                Some(first)
                    if first[0] == "webhook.test"
                        && first[3].starts_with("waiting")
                        && rows.len() > 1
                        && rows[1..].iter().all(|r| {
                            r[0] == "message.status"
                                && r[3].starts_with("waiting")
                                && r[4].parse::<u32>().is_ok()
                        }) =>
                {
                    Ok(())
                }
                _ => Err(format!("{rows:?}")),
            },
        )
        .await?;
        page.find(Locator::Css("#we-delivery"))
            .await?
            .select_by_value("delivered")
            .await?;
        wait_text(
            &page,
            "#webhook-events-empty",
            "no event delivered",
            Duration::from_secs(10),
            |said| said == "No events match.",
        )
        .await?;
        page.find(Locator::Css("#we-delivery"))
            .await?
            .select_by_value("waiting")
            .await?;
        wait_rows(&page, "#webhook-event-list", "the events waiting", |rows| {
            if rows.len() == events.len() {
                Ok(())
            } else {
                Err(format!("{rows:?}"))
            }
        })
        .await?;

        // Signed out: nothing of acme's webhook is left on the page, its secret least of all.
        click(&page, "#sign-out").await?;
        let left: Value = page
            .execute(
                "return [document.querySelector('#w-secret').textContent,
                         document.querySelector('#w-url').textContent,
                         document.querySelector('#w-secret-box').hidden,
                         document.querySelectorAll('#webhook-event-list tbody tr').length];",
                vec![],
            )
            .await?;
        ensure_eq!(left, json!(["", "", true, 0]));

        // The operator: every tenant's suppressions, then globex's; each tenant's webhook,
        // chosen.
        type_into(&page, "#api-key", &admin.operator_key).await?;
        click(&page, "#use-key").await?;
        click(&page, "#suppressions summary").await?;
        wait_rows(&page, "#suppression-list", "every tenant's", |rows| {
            if rows.len() == 2 {
                Ok(())
            } else {
                Err(format!("{rows:?}"))
            }
        })
        .await?;
        choose_when_offered(&page, "#s-tenant", &globex).await?;
        wait_rows(&page, "#suppression-list", "globex's", |rows| match rows {
            [only] if only[0] == "+15557770001" && only[2] == "globex" => Ok(()),
            _ => Err(format!("{rows:?}")),
        })
        .await?;
        click(&page, "#webhook summary").await?;
        choose_when_offered(&page, "#w-tenant", &globex).await?;
        wait_text(
            &page,
            "#w-url",
            "globex's webhook: none",
            Duration::from_secs(10),
            |url| url.starts_with("none"),
        )
        .await?;
        click(&page, "#webhook-events summary").await?;
        wait_text(
            &page,
            "#webhook-events-empty",
            "globex's events: none",
            Duration::from_secs(10),
            |said| said == "No events match.",
        )
        .await?;
        choose_when_offered(&page, "#w-tenant", &acme).await?;
        wait_text(
            &page,
            "#w-url",
            "acme's webhook",
            Duration::from_secs(10),
            |url| url == down.url,
        )
        .await?;
        wait_rows(
            &page,
            "#webhook-event-list",
            "acme's events again",
            |rows| {
                if rows.len() == events.len() && rows[0][0] == "webhook.test" {
                    Ok(())
                } else {
                    Err(format!("{rows:?}"))
                }
            },
        )
        .await?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if outcome.is_err()
        && let Ok(png) = page.screenshot().await
    {
        let shot = log_dir()?.join(format!("{}-web-lists-failure.png", env.name));
        if std::fs::write(&shot, png).is_ok() {
            eprintln!("screenshot of the page: {}", shot.display());
        }
    }
    let _ = page.close().await;
    outcome
}

/// Waits until the text of the first element matching `css` satisfies `check`; that text.
async fn wait_text(
    page: &Client,
    css: &str,
    what: &str,
    timeout: Duration,
    check: impl Fn(&str) -> bool,
) -> Result<String> {
    poll(timeout, what, || async {
        let text = text_of(page, css).await?.unwrap_or_default();
        Ok(if check(&text) { Ok(text) } else { Err(text) })
    })
    .await
}

/// A create whose answer was lost (the network dropped it after the admin made the draft)
/// is sent again when the same form is submitted again, even after a reload of the page,
/// under the same idempotency key: one campaign, not two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_sent_again_after_a_lost_answer_makes_one_campaign() -> Result<()> {
    let env = TestEnv::new(&[]).await?;
    let admin = env.admin().await?;
    let (acme, key, provider) = admin
        .tenant_with_provider("acme", &env.simulator_url)
        .await?;
    let browser = Browser::start(&env.http).await?;
    let page = browser.session().await?;
    let fill = async || -> Result<()> {
        type_into(&page, "#c-name", "lost-answer").await?;
        page.find(Locator::Css("#c-channel"))
            .await?
            .select_by_value("sms")
            .await?;
        choose_when_offered(&page, "#c-provider", &provider).await?;
        type_into(&page, "#c-template", "Hi").await?;
        Ok(())
    };
    let outcome = async {
        page.goto(&admin.url).await?;
        type_into(&page, "#api-key", &key).await?;
        click(&page, "#use-key").await?;
        fill().await?;
        // The create reaches the admin, which makes the draft; its answer is lost on the way
        // back, as a dropped connection loses it.
        page.execute(
            "const sent = window.fetch;
             window.fetch = async (url, init) => {
                 const answer = await sent(url, init);
                 if (init && init.method === 'POST' && String(url).endsWith('/campaigns')) {
                     throw new TypeError('the connection was reset');
                 }
                 return answer;
             };",
            vec![],
        )
        .await?;
        click(&page, "#c-submit").await?;
        wait_text(
            &page,
            "#form-errors",
            "the lost answer reported",
            Duration::from_secs(10),
            |errors| errors.contains("Network error"),
        )
        .await?;
        let made = async || -> Result<i64> {
            Ok(sqlx::query_scalar(
                "SELECT count(*) FROM campaigns
                 WHERE tenant_id = $1::uuid AND name = 'lost-answer'",
            )
            .bind(&acme)
            .fetch_one(&env.pool)
            .await?)
        };
        // The draft was made: what follows is a replay, not a first create.
        ensure_eq!(made().await?, 1);
        // The page reloaded (its network mended), the same form sent again.
        page.refresh().await?;
        fill().await?;
        click(&page, "#c-submit").await?;
        wait_text(
            &page,
            "#form-status",
            "the campaign created",
            Duration::from_secs(10),
            |said| said.starts_with("Campaign created"),
        )
        .await?;
        ensure_eq!(made().await?, 1);
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let _ = page.close().await;
    outcome
}
