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
