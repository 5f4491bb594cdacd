//! The Debian package: `scripts/package-deb` builds it (here around the test build's binary),
//! `dpkg -i` installs it, the packaged binary checks the packaged configuration as the
//! packaged user, `systemd-analyze verify` accepts the unit, and `dpkg --purge` removes it all.
//! Needs root (CI runs as root) and changes the machine only for the test's duration.

use std::process::Command;

use poolguard_e2e::*;

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        stdout(&out),
        stderr(&out)
    );
    out
}

#[test]
fn the_debian_package_installs_checks_and_purges() {
    let root = run(Command::new("id").arg("-u"));
    assert_eq!(stdout(&root), "0", "installing a package needs root");
    let out_dir = tempfile::tempdir().unwrap();
    // The debug binary without its debug info (150 MB of it), packaged with light compression:
    // the package's shape is under test here, not the release build.
    let binary = out_dir.path().join("poolguard");
    std::fs::copy(poolguard_bin(), &binary).unwrap();
    run(Command::new("strip").arg("--strip-debug").arg(&binary));
    let built = run(Command::new(repo_root().join("scripts/package-deb"))
        .arg("--binary")
        .arg(&binary)
        .arg("--out")
        .arg(out_dir.path())
        .arg("--fast"));
    let deb = stdout(&built);
    assert!(deb.ends_with(".deb"), "{deb}");
    run(Command::new("dpkg").args(["-i", &deb]));
    let installed = || {
        let user = run(Command::new("getent").args(["passwd", "poolguard"]));
        assert!(stdout(&user).starts_with("poolguard:"));
        let check = run(Command::new("runuser").args([
            "-u",
            "poolguard",
            "--",
            "/usr/bin/poolguard",
            "check",
            "--config",
            "/etc/poolguard/poolguard.toml",
            "--skip-servers",
        ]));
        assert!(
            stdout(&check).contains("configuration ok"),
            "{}",
            stdout(&check)
        );
        run(Command::new("systemd-analyze")
            .args(["verify", "/lib/systemd/system/poolguard.service"]));
        run(Command::new("systemd-analyze")
            .args(["verify", "/lib/systemd/system/poolguard@a.service"]));
        let unit = std::fs::read_to_string("/lib/systemd/system/poolguard.service").unwrap();
        assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
        assert!(unit.contains("User=poolguard"));
    };
    let checks = std::panic::catch_unwind(installed);
    // Whatever happened, leave the machine as it was.
    run(Command::new("dpkg").args(["--purge", "poolguard"]));
    assert!(!std::path::Path::new("/usr/bin/poolguard").exists());
    let gone = Command::new("getent")
        .args(["passwd", "poolguard"])
        .output()
        .unwrap();
    assert!(!gone.status.success(), "the user was removed on purge");
    if let Err(panic) = checks {
        std::panic::resume_unwind(panic);
    }
}
