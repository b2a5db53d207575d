//! Bad configuration: a clear message naming the variable, a non-zero exit, no panic.

use herald_tests::{Result, TestEnv};

#[tokio::test]
async fn bad_or_missing_settings_name_the_variable_and_exit_non_zero() -> Result<()> {
    let env = TestEnv::new(&[]).await?;
    let db = env.database_url.as_str();
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            "herald-worker",
            &[
                ("HERALD_DATABASE_URL", db),
                ("HERALD_WORKER_PREFETCH", "lots"),
            ],
            "HERALD_WORKER_PREFETCH",
        ),
        (
            "herald-worker",
            &[("HERALD_DATABASE_URL", db), ("HERALD_WORKER_PREFETCH", "0")],
            "HERALD_WORKER_PREFETCH",
        ),
        (
            "herald-worker",
            &[("HERALD_DATABASE_URL", db), ("HERALD_WORKER_THREADS", "0")],
            "HERALD_WORKER_THREADS",
        ),
        ("herald-worker", &[], "HERALD_DATABASE_URL"),
        (
            "herald-scheduler",
            &[("HERALD_DATABASE_URL", "mysql://x")],
            "HERALD_DATABASE_URL",
        ),
        (
            "herald-scheduler",
            &[("HERALD_DATABASE_URL", db), ("HERALD_TICK_MS", "-5")],
            "HERALD_TICK_MS",
        ),
        (
            "herald-scheduler",
            &[("HERALD_DATABASE_URL", db), ("HERALD_AMQP_URL", "http://x")],
            "HERALD_AMQP_URL",
        ),
        // Read by the tracing set-up rather than clap, and checked all the same.
        (
            "herald-worker",
            &[("HERALD_DATABASE_URL", db), ("HERALD_LOG_FORMAT", "logfmt")],
            "HERALD_LOG_FORMAT",
        ),
        (
            "herald-receiver",
            &[("HERALD_DATABASE_URL", db), ("HERALD_LOG", "herald=loud")],
            "HERALD_LOG",
        ),
    ];
    for (binary, vars, named) in cases {
        let output = env.run_binary(binary, &[], vars)?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{binary} {vars:?}: {stderr}");
        assert!(
            stderr.contains(named),
            "{binary} {vars:?} should name {named}: {stderr}"
        );
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{stderr}"
        );
    }
    // Settings valid alone that do not fit together: the admin's uploads may not take the
    // connections every other request needs. (The database is out of reach: an admin that
    // let them through would fail to connect, exit 1.)
    let unreachable = "postgres://herald:x@127.0.0.1:1/herald";
    type AdminCase<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
    let admin_cases: &[AdminCase] = &[
        (
            &[
                ("HERALD_DB_POOL_SIZE", "8"),
                ("HERALD_ADMIN_MAX_UPLOADS", "7"),
            ],
            &["HERALD_ADMIN_MAX_UPLOADS", "HERALD_DB_POOL_SIZE"],
        ),
        (&[("HERALD_DB_POOL_SIZE", "2")], &["HERALD_DB_POOL_SIZE"]),
        (
            &[("HERALD_ADMIN_MAX_REQUESTS_PER_TENANT", "7")],
            &[
                "HERALD_ADMIN_MAX_REQUESTS_PER_TENANT",
                "HERALD_DB_POOL_SIZE",
            ],
        ),
    ];
    for (vars, named) in admin_cases {
        let mut all = vec![
            ("HERALD_DATABASE_URL", unreachable),
            ("HERALD_ADMIN_LISTEN", "127.0.0.1:0"),
        ];
        all.extend(vars.iter().copied());
        let output = env.run_binary("herald-admin", &["serve"], &all)?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{vars:?}: {stderr}");
        for name in *named {
            assert!(
                stderr.contains(name),
                "{vars:?} should name {name}: {stderr}"
            );
        }
    }
    // A key for a tenant that does not exist: said so, not a database's constraint.
    let missing = uuid::Uuid::new_v4().to_string();
    let output = env.run_binary(
        "herald-admin",
        &["keys", "create", "--tenant", &missing, "--name", "k"],
        &[("HERALD_DATABASE_URL", db)],
    )?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--tenant: there is no tenant") && !stderr.contains("constraint"),
        "{stderr}"
    );
    for binary in ["herald-worker", "herald-scheduler", "herald-simulator"] {
        let output = env.run_binary(binary, &["--help"], &[])?;
        assert!(output.status.success(), "{binary} --help");
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("HERALD_"),
            "{binary} --help documents its variables"
        );
    }
    Ok(())
}

/// docs/configuration.md is every binary's `--help`, and the README's configuration table
/// names only variables some binary reads: neither can drift from the code.
#[test]
fn the_configuration_reference_matches_the_binaries() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let reference = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
    let mut documented = String::new();
    for command in [
        "herald-scheduler",
        "herald-worker",
        "herald-receiver",
        "herald-admin serve",
        "herald-simulator",
        "herald",
    ] {
        let mut words = command.split(' ');
        let binary = words.next().unwrap_or_default();
        let output = std::process::Command::new(herald_tests::binary(binary))
            .args(words)
            .arg("--help")
            .env_clear()
            .output()
            .unwrap();
        assert!(output.status.success(), "{command} --help");
        let help = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            reference.contains(&format!("```text\n{help}```")),
            "docs/configuration.md is out of date for `{command}`: run scripts/config-reference.sh"
        );
        documented.push_str(&help);
    }
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    for row in readme.lines().filter(|l| l.starts_with("| `HERALD_")) {
        for variable in row
            .split('`')
            .filter(|word| word.starts_with("HERALD_") && !word.contains(' '))
        {
            // Read by the tracing set-up of every binary, not by clap (listed at the top of
            // docs/configuration.md).
            if ["HERALD_LOG", "HERALD_LOG_FORMAT"].contains(&variable) {
                assert!(reference.contains(&format!("`{variable}`")), "{variable}");
                continue;
            }
            assert!(
                documented.contains(&format!("[env: {variable}")),
                "the README's configuration table names {variable}, which no binary reads"
            );
        }
    }
}
