//! What `podmesh up` needs from the machine, checked before it changes anything: the tools it runs (iproute2,
//! iptables, util-linux, mount) and, when not run as root, unprivileged user namespaces. Each problem says exactly
//! what to install or enable.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};

/// A program the runtime runs, the package that has it (Debian and Ubuntu names), and what it is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tool {
    pub program: &'static str,
    pub package: &'static str,
    pub used_for: &'static str,
}

/// Every program the runtime runs.
pub const TOOLS: &[Tool] = &[
    Tool { program: "ip", package: "iproute2", used_for: "the pod network: namespaces, veth pairs, the bridge" },
    Tool {
        program: "iptables-restore",
        package: "iptables",
        used_for: "each meshed pod's capture rules and the node's Service NAT",
    },
    Tool { program: "unshare", package: "util-linux", used_for: "the private namespaces the whole mesh runs in" },
    Tool { program: "setpriv", package: "util-linux", used_for: "ending the mesh with `podmesh up` in the foreground" },
    Tool { program: "nsenter", package: "util-linux", used_for: "`podmesh exec`: entering the mesh's namespaces" },
    Tool { program: "mount", package: "mount", used_for: "the mesh's private /run/netns" },
];

/// A kernel setting that keeps unprivileged user namespaces off, as read from `/proc/sys`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sysctl {
    /// Under /proc/sys, with dots: `kernel.unprivileged_userns_clone`.
    pub name: &'static str,
    /// The value that turns user namespaces on.
    pub enable: &'static str,
    /// The value that keeps them off.
    pub blocking: &'static str,
}

/// The settings that can keep unprivileged user namespaces off: Debian's switch, the namespace limit, and
/// Ubuntu's AppArmor restriction (23.10 and later).
pub const USERNS_SYSCTLS: &[Sysctl] = &[
    Sysctl { name: "kernel.unprivileged_userns_clone", enable: "1", blocking: "0" },
    Sysctl { name: "user.max_user_namespaces", enable: "15000", blocking: "0" },
    Sysctl { name: "kernel.apparmor_restrict_unprivileged_userns", enable: "0", blocking: "1" },
];

/// One thing missing, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    MissingTool(Tool),
    /// Not root, and the kernel does not let this user make user namespaces: the settings that block them (none
    /// found: something else does, such as a seccomp policy).
    NoUserNamespaces {
        blocking: Vec<(&'static str, &'static str)>,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::MissingTool(t) => write!(
                f,
                "`{}` is not installed; podmesh up uses it for {}: install the {} package (apt-get install {})",
                t.program, t.used_for, t.package, t.package
            ),
            Problem::NoUserNamespaces { blocking } if blocking.is_empty() => write!(
                f,
                "this user cannot make user namespaces, which podmesh up needs when not run as root: run it as \
                 root, or allow unprivileged user namespaces"
            ),
            Problem::NoUserNamespaces { blocking } => {
                let fixes: Vec<String> = blocking.iter().map(|(n, v)| format!("sysctl -w {n}={v}")).collect();
                write!(
                    f,
                    "unprivileged user namespaces are off, and podmesh up needs them when not run as root: run it as \
                     root, or enable them ({})",
                    fixes.join("; ")
                )
            }
        }
    }
}

/// The tools of [`TOOLS`] that are not on `path` (a `PATH` value), in order.
pub fn missing_tools(path: &OsStr) -> Vec<Tool> {
    TOOLS.iter().filter(|t| find(t.program, path).is_none()).copied().collect()
}

/// Where `program` is on `path`: the first directory that has it as an executable file.
pub fn find(program: &str, path: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(path).map(|dir| dir.join(program)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The settings among [`USERNS_SYSCTLS`] that keep user namespaces off, with the value that turns them on;
/// `read` gives a setting's current value (None: the kernel does not have it).
pub fn userns_blockers(read: impl Fn(&str) -> Option<String>) -> Vec<(&'static str, &'static str)> {
    USERNS_SYSCTLS
        .iter()
        .filter(|s| read(s.name).is_some_and(|v| v.trim() == s.blocking))
        .map(|s| (s.name, s.enable))
        .collect()
}

/// A setting's value from `/proc/sys`.
pub fn read_sysctl(name: &str) -> Option<String> {
    std::fs::read_to_string(Path::new("/proc/sys").join(name.replace('.', "/"))).ok()
}

/// Everything missing on this machine, for a run as root or not. `userns_works` says whether making a user
/// namespace succeeded (the caller tries it: `unshare --user --map-root-user true`); it is only asked when not
/// root.
pub fn check(path: &OsStr, root: bool, userns_works: impl FnOnce() -> bool) -> Vec<Problem> {
    let mut problems: Vec<Problem> = missing_tools(path).into_iter().map(Problem::MissingTool).collect();
    if !root && !userns_works() {
        problems.push(Problem::NoUserNamespaces { blocking: userns_blockers(read_sysctl) });
    }
    problems
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::testdir::TestDir as Dir;
    use std::os::unix::fs::PermissionsExt;

    fn executable(dir: &Dir, name: &str, mode: u32) {
        let p = dir.0.join(name);
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_tool_is_found_only_as_an_executable_file_on_the_path() {
        let (a, b) = (Dir::new("a"), Dir::new("b"));
        executable(&a, "ip", 0o644); // not executable
        std::fs::create_dir_all(a.0.join("unshare")).unwrap(); // a directory
        executable(&b, "ip", 0o755);
        executable(&b, "mount", 0o755);
        let path = std::env::join_paths([&a.0, &b.0]).unwrap();
        assert_eq!(find("ip", &path), Some(b.0.join("ip")));
        assert_eq!(find("unshare", &path), None);
        let missing: Vec<&str> = missing_tools(&path).iter().map(|t| t.program).collect();
        assert_eq!(missing, ["iptables-restore", "unshare", "setpriv", "nsenter"]);
        // Each says what to install.
        let said = Problem::MissingTool(missing_tools(&path)[0]).to_string();
        assert!(said.contains("`iptables-restore` is not installed") && said.contains("apt-get install iptables"));
    }

    #[test]
    fn what_keeps_user_namespaces_off_is_named_with_its_fix() {
        let sysctls = |values: &'static [(&'static str, &'static str)]| {
            move |name: &str| values.iter().find(|(n, _)| *n == name).map(|(_, v)| format!("{v}\n"))
        };
        assert_eq!(userns_blockers(sysctls(&[])), []);
        assert_eq!(
            userns_blockers(sysctls(&[("kernel.unprivileged_userns_clone", "1"), ("user.max_user_namespaces", "63")])),
            []
        );
        let blocked = userns_blockers(sysctls(&[
            ("kernel.unprivileged_userns_clone", "0"),
            ("user.max_user_namespaces", "0"),
            ("kernel.apparmor_restrict_unprivileged_userns", "1"),
        ]));
        assert_eq!(
            blocked,
            [
                ("kernel.unprivileged_userns_clone", "1"),
                ("user.max_user_namespaces", "15000"),
                ("kernel.apparmor_restrict_unprivileged_userns", "0")
            ]
        );
        let said = Problem::NoUserNamespaces { blocking: blocked }.to_string();
        assert!(
            said.contains("sysctl -w kernel.unprivileged_userns_clone=1; sysctl -w user.max_user_namespaces=15000")
        );
        assert!(Problem::NoUserNamespaces { blocking: vec![] }.to_string().contains("run it as root"));
    }

    #[test]
    fn user_namespaces_matter_only_when_not_root() {
        let all = Dir::new("all");
        for t in TOOLS {
            executable(&all, t.program, 0o755);
        }
        let path = all.0.clone().into_os_string();
        assert_eq!(check(&path, true, || panic!("not asked as root")), []);
        assert_eq!(check(&path, false, || true), []);
        assert!(matches!(check(&path, false, || false).as_slice(), [Problem::NoUserNamespaces { .. }]));
        assert_eq!(check(OsStr::new(""), true, || true).len(), TOOLS.len());
    }
}
