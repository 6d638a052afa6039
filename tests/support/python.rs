//! The Python that runs the official SDKs in tests/sdk.rs and tests/anthropic_sdk.rs.

use std::process::Command;

/// `$SWITCHYARD_PYTHON` (`.ci/run` points it into its virtualenv), else `python3`.
pub fn python() -> String {
    std::env::var("SWITCHYARD_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".to_string())
}

/// Whether [`python`] can import `package`. Where it cannot, the test is skipped with a loud
/// line — except under CI (`CI` set), where a missing SDK must fail the run, not pass it.
pub fn sdk_available(package: &str) -> bool {
    let python = python();
    let available = Command::new(&python)
        .args(["-c", &format!("import {package}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !available {
        let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
        assert!(
            !ci,
            "CI is set but `{python}` cannot import `{package}`: .ci/run installs it in a \
             virtualenv and sets SWITCHYARD_PYTHON"
        );
        eprintln!(
            "SKIPPED: `{python}` cannot import the `{package}` package (pip install {package}, \
             or set SWITCHYARD_PYTHON to a Python that has it)"
        );
    }
    available
}

/// Runs `tests/sdk/<script>` with `args` under [`python`]: its stdout when it exits 0, else
/// what it printed on both streams.
pub fn run_script(script: &str, args: &[&str]) -> Result<String, String> {
    let path = format!("{}/tests/sdk/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(python())
        .arg(&path)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{script} failed:\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
