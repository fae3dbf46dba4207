//! The Debian package, installed for real: `cargo deb` packages the binary
//! this test run built (`--no-build`, stripped), and
//! `scripts/package-test.sh` installs it with dpkg, checks the user, files
//! and modes it made, starts the packaged binary with the packaged config
//! the way the unit does, waits for `/status`, and purges the package
//! again (also on failure). Needs root, dpkg and cargo-deb (the test
//! command, `scripts/test.sh`, installs cargo-deb).

mod common;

use std::process::Command;

#[test]
fn the_debian_package_installs_and_its_service_starts_a_node() {
    common::require_tool("dpkg", "dpkg");
    let root = env!("CARGO_MANIFEST_DIR");
    let deb = common::temp_dir("package").join("p2psip-test.deb");
    let built = Command::new("cargo")
        .current_dir(root)
        .args([
            "deb",
            "--no-build",
            "--profile",
            "dev",
            "--strip",
            "--fast",
            "-o",
        ])
        .arg(&deb)
        .output()
        .expect("run cargo deb");
    assert!(
        built.status.success() && deb.is_file(),
        "cargo deb failed ({}): {}{}\n(scripts/test.sh installs cargo-deb)",
        built.status,
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/package-test.sh"
        ))
        .arg(&deb)
        .output()
        .expect("run scripts/package-test.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("package-test: ok"),
        "scripts/package-test.sh failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("node started by"),
        "the packaged node never answered /status:\n{stdout}"
    );
}
