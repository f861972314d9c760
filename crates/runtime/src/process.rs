//! Containers as processes. A container's command runs in its pod's network namespace with exactly its
//! environment, in a process group of its own (so stopping it stops whatever it started, as stopping a
//! container does), its output appended to one log file per container (what `podmesh logs` shows). When it
//! exits it is started again as the pod's restartPolicy says, with the kubelet's back-off: the first restart at
//! once, then after a delay that doubles up to a cap, reset once a run has lasted long enough. Stopping sends
//! SIGTERM to the group and SIGKILL after a grace period, as the kubelet does.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use podmesh_model::RestartPolicy;
use rustix::process::Signal;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// When to start a container again after it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay before the second restart (the first is at once); it doubles with each restart after that.
    pub initial: Duration,
    pub max: Duration,
    /// A run at least this long starts the back-off over.
    pub reset_after: Duration,
}

impl Backoff {
    /// The kubelet's: 10 s doubling to 5 minutes, reset after 10 minutes of running.
    pub const KUBELET: Backoff = Backoff {
        initial: Duration::from_secs(10),
        max: Duration::from_secs(300),
        reset_after: Duration::from_secs(600),
    };
}

/// What to run, and how.
#[derive(Debug, Clone)]
pub struct Spec {
    /// "namespace/pod/container", for messages.
    pub name: String,
    /// The command line, expanded ([`crate::env::command_line`]); empty when the container gave no command.
    pub argv: Vec<String>,
    /// The whole environment: nothing else is inherited.
    pub env: Vec<(String, String)>,
    /// The pod's network namespace (`ip netns exec`); `None` runs on the node.
    pub netns: Option<String>,
    /// Output (stdout and stderr) is appended here.
    pub log: PathBuf,
    pub restart: RestartPolicy,
    pub backoff: Backoff,
    /// Between SIGTERM and SIGKILL when stopped (the pod's terminationGracePeriodSeconds; Kubernetes' default is
    /// 30 s).
    pub grace: Duration,
}

/// What happened to a container, as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Running, as process `pid`; `restarts` counts the starts before this one.
    Started { pid: u32, restarts: u32 },
    /// It could not be started (the program does not exist, the log cannot be opened, ...).
    NotStarted(String),
    /// It exited with a code, or was killed by a signal (`code` None).
    Exited { code: Option<i32> },
    /// It will be started again after `delay`.
    BackOff { delay: Duration },
}

/// Why supervising ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Stopped on request.
    Stopped,
    /// It exited, and the restart policy does not start it again: its last exit code (None: killed by a signal).
    Completed { code: Option<i32> },
    /// It has no command: podmesh ignores images, so there is nothing to run.
    NoCommand,
}

/// Runs the container until its restart policy says it is done or `stop` is cancelled, telling `events` what
/// happens.
pub async fn supervise(spec: &Spec, stop: &CancellationToken, mut events: impl FnMut(Event)) -> Ended {
    if spec.argv.is_empty() {
        return Ended::NoCommand;
    }
    let mut restarts = 0u32;
    let mut delay = None::<Duration>;
    loop {
        let started = Instant::now();
        let code = match start(spec) {
            Err(e) => {
                events(Event::NotStarted(e));
                // Like a failed run: a program that cannot start is retried (or not) as one that failed.
                Some(127)
            }
            Ok(mut child) => {
                events(Event::Started { pid: child.id().unwrap_or(0), restarts });
                tokio::select! {
                    status = child.wait() => status.ok().and_then(|s| s.code()),
                    () = stop.cancelled() => {
                        terminate(&mut child, spec.grace).await;
                        events(Event::Exited { code: None });
                        return Ended::Stopped;
                    }
                }
            }
        };
        events(Event::Exited { code });
        let failed = code != Some(0);
        let again = match spec.restart {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => failed,
            RestartPolicy::Never => false,
        };
        if !again {
            return Ended::Completed { code };
        }
        // The first restart is at once; then the delay doubles, up to the cap; a long run starts it over.
        if started.elapsed() >= spec.backoff.reset_after {
            delay = None;
        }
        let wait = delay.unwrap_or(Duration::ZERO);
        delay = Some(match delay {
            None => spec.backoff.initial,
            Some(d) => d.saturating_mul(2).min(spec.backoff.max),
        });
        if !wait.is_zero() {
            events(Event::BackOff { delay: wait });
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => return Ended::Stopped,
            }
        }
        if stop.is_cancelled() {
            return Ended::Stopped;
        }
        restarts = restarts.saturating_add(1);
    }
}

fn start(spec: &Spec) -> Result<Child, String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .map_err(|e| format!("{}: opening its log {}: {e}", spec.name, spec.log.display()))?;
    let err = log.try_clone().map_err(|e| format!("{}: opening its log {}: {e}", spec.name, spec.log.display()))?;
    let (program, args) = match &spec.netns {
        Some(ns) => {
            ("ip", ["netns", "exec", ns.as_str()].into_iter().chain(spec.argv.iter().map(String::as_str)).collect())
        }
        None => (
            spec.argv.first().map_or("", String::as_str),
            spec.argv.iter().skip(1).map(String::as_str).collect::<Vec<_>>(),
        ),
    };
    Command::new(program)
        .args(args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err))
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{}: starting {}: {e}", spec.name, spec.argv.join(" ")))
}

/// SIGTERM to the container's process group, then SIGKILL to it if it has not exited within `grace`.
async fn terminate(child: &mut Child, grace: Duration) {
    let Some(pid) = child.id() else { return };
    signal_group(pid, Signal::TERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        signal_group(pid, Signal::KILL);
        let _ = child.wait().await;
    } else {
        // The leader is gone; what it started goes too.
        signal_group(pid, Signal::KILL);
    }
}

/// Signals a process group (ESRCH, a group already gone, is nothing to report).
fn signal_group(pgid: u32, signal: Signal) {
    if let Some(pid) = i32::try_from(pgid).ok().and_then(rustix::process::Pid::from_raw) {
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::testdir::TestDir as Dir;
    use std::sync::{Arc, Mutex};

    const FAST: Backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(120),
        reset_after: Duration::from_secs(60),
    };

    fn spec(dir: &Dir, script: &str, restart: RestartPolicy) -> Spec {
        Spec {
            name: "ns/pod/app".into(),
            argv: vec!["sh".into(), "-c".into(), script.into()],
            env: vec![("PATH".into(), std::env::var("PATH").unwrap()), ("GREETING".into(), "hello".into())],
            netns: None,
            log: dir.0.join("app.log"),
            restart,
            backoff: FAST,
            grace: Duration::from_millis(300),
        }
    }

    /// Supervises until it ends, or until `starts` starts were seen (then stops it); at most 10 s.
    async fn run(spec: &Spec, starts: usize) -> (Ended, Vec<Event>) {
        let stop = CancellationToken::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = {
            let (seen, stop) = (Arc::clone(&seen), stop.clone());
            move |e: Event| {
                let mut seen = seen.lock().unwrap();
                seen.push(e);
                if seen.iter().filter(|e| matches!(e, Event::Started { .. })).count() >= starts {
                    stop.cancel();
                }
            }
        };
        let ended = tokio::time::timeout(Duration::from_secs(10), supervise(spec, &stop, record)).await.unwrap();
        let events = seen.lock().unwrap().clone();
        (ended, events)
    }

    fn exits(events: &[Event]) -> Vec<Option<i32>> {
        events.iter().filter_map(|e| if let Event::Exited { code } = e { Some(*code) } else { None }).collect()
    }

    fn delays(events: &[Event]) -> Vec<Duration> {
        events.iter().filter_map(|e| if let Event::BackOff { delay } = e { Some(*delay) } else { None }).collect()
    }

    #[tokio::test]
    async fn output_goes_to_the_log_and_the_environment_is_exactly_the_one_given() {
        let dir = Dir::new("env");
        let s = spec(&dir, "echo \"$GREETING from $0\"; env | sort; echo oops >&2; exit 0", RestartPolicy::Never);
        let (ended, events) = run(&s, usize::MAX).await;
        assert_eq!(ended, Ended::Completed { code: Some(0) });
        assert!(matches!(events[0], Event::Started { restarts: 0, .. }), "{events:?}");
        let log = std::fs::read_to_string(&s.log).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines[0], "hello from sh");
        // Nothing of the runtime's own environment leaks in (sh itself adds PWD, SHLVL and _).
        let vars: Vec<&str> = lines[1..lines.len() - 1].iter().map(|l| l.split('=').next().unwrap()).collect();
        assert!(vars.iter().all(|v| ["GREETING", "PATH", "PWD", "SHLVL", "_"].contains(v)), "{vars:?}");
        assert_eq!(lines.last(), Some(&"oops"));
        // The log is appended to, as the container restarts.
        let (_, _) = run(&s, usize::MAX).await;
        assert_eq!(std::fs::read_to_string(&s.log).unwrap().matches("hello from sh").count(), 2);
    }

    #[tokio::test]
    async fn a_failing_container_restarts_at_once_then_with_a_doubling_capped_back_off() {
        let dir = Dir::new("backoff");
        let s = spec(&dir, "exit 3", RestartPolicy::OnFailure);
        let (ended, events) = run(&s, 5).await;
        assert_eq!(ended, Ended::Stopped);
        let restarts: Vec<u32> = events
            .iter()
            .filter_map(|e| if let Event::Started { restarts, .. } = e { Some(*restarts) } else { None })
            .collect();
        assert_eq!(restarts, [0, 1, 2, 3, 4]);
        assert!(exits(&events).starts_with(&[Some(3), Some(3), Some(3), Some(3)]), "{events:?}");
        let ms = Duration::from_millis;
        assert_eq!(delays(&events), [ms(50), ms(100), ms(120)]);
    }

    #[tokio::test]
    async fn the_restart_policy_decides_what_an_exit_means() {
        let dir = Dir::new("policy");
        // OnFailure: success ends it; Never: any exit ends it; Always: success restarts too.
        let (ended, _) = run(&spec(&dir, "exit 0", RestartPolicy::OnFailure), usize::MAX).await;
        assert_eq!(ended, Ended::Completed { code: Some(0) });
        let (ended, events) = run(&spec(&dir, "exit 1", RestartPolicy::Never), usize::MAX).await;
        assert_eq!((ended, exits(&events)), (Ended::Completed { code: Some(1) }, vec![Some(1)]));
        let (ended, events) = run(&spec(&dir, "exit 0", RestartPolicy::Always), 3).await;
        assert_eq!(ended, Ended::Stopped);
        assert!(exits(&events).starts_with(&[Some(0), Some(0)]), "{events:?}");
        // Killed by a signal: a failure, with no exit code.
        let (ended, _) = run(&spec(&dir, "kill -KILL $$", RestartPolicy::Never), usize::MAX).await;
        assert_eq!(ended, Ended::Completed { code: None });
    }

    #[tokio::test]
    async fn a_container_without_a_command_or_program_is_reported() {
        let dir = Dir::new("missing");
        let mut s = spec(&dir, "", RestartPolicy::Always);
        s.argv.clear();
        assert_eq!(run(&s, usize::MAX).await.0, Ended::NoCommand);
        s.argv = vec!["/nonexistent/podmesh-test-program".into()];
        s.restart = RestartPolicy::Never;
        let (ended, events) = run(&s, usize::MAX).await;
        assert_eq!(ended, Ended::Completed { code: Some(127) });
        assert!(
            matches!(&events[0], Event::NotStarted(m)
                if m.starts_with("ns/pod/app: ") && m.contains("/nonexistent/podmesh-test-program")),
            "{events:?}"
        );
    }

    /// Stopping ends the whole process group: the program, and what it started, also when it ignores SIGTERM.
    #[tokio::test]
    async fn stopping_terminates_the_group_and_kills_it_after_the_grace_period() {
        let dir = Dir::new("stop");
        let marker = dir.0.join("child.pid");
        for script in [
            format!("sleep 30 & echo $! > {}; wait", marker.display()),
            format!("trap '' TERM; sleep 30 & echo $! > {}; wait; wait", marker.display()),
        ] {
            let _ = std::fs::remove_file(&marker);
            let s = spec(&dir, &script, RestartPolicy::Always);
            let stop = CancellationToken::new();
            let supervised = tokio::spawn({
                let (s, stop) = (s.clone(), stop.clone());
                async move { supervise(&s, &stop, |_| {}).await }
            });
            let start = Instant::now();
            while !marker.exists() {
                assert!(start.elapsed() < Duration::from_secs(5), "the script never started");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let child: u32 = std::fs::read_to_string(&marker).unwrap().trim().parse().unwrap();
            stop.cancel();
            let ended = tokio::time::timeout(Duration::from_secs(5), supervised).await.unwrap().unwrap();
            assert_eq!(ended, Ended::Stopped);
            // The background `sleep` went with the group (it may linger a moment as a zombie of init).
            let gone = Instant::now();
            while std::fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|s| !s.contains(") Z ")) {
                assert!(gone.elapsed() < Duration::from_secs(5), "process {child} outlived its container: {script}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}
