//! `podmesh inject -f FILE`: the manifests with the sidecar injected into every workload, as `istioctl
//! kube-inject` prints them (`podmesh_inject` does the work; this reads and writes the files).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use podmesh_inject::{Config, Outcome};

#[derive(Args, Debug)]
pub struct InjectArgs {
    /// Manifest files or directories (*.yaml, *.yml, *.json), or - for stdin. Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    files: Vec<String>,
    /// The podmesh image the init container and the sidecar run.
    #[arg(long, default_value_t = Config::default().image)]
    image: String,
    /// The control plane's gRPC address as pods reach it.
    #[arg(long, default_value_t = Config::default().control)]
    control: String,
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// Put the sidecar first among the containers instead of as a native sidecar (an init container with
    /// restartPolicy: Always, Kubernetes 1.29 and later).
    #[arg(long)]
    no_native_sidecar: bool,
}

pub fn inject(a: InjectArgs) -> Result<ExitCode> {
    let config = Config {
        image: a.image,
        control: a.control,
        trust_domain: a.trust_domain,
        native_sidecar: !a.no_native_sidecar,
    };
    let mut out = String::new();
    let (mut injected, mut errors) = (0usize, 0usize);
    for (name, text) in read(&a.files)? {
        let json = name.ends_with(".json");
        for (key, mut object) in podmesh_model::objects(&text, json) {
            match podmesh_inject::inject(&mut object, &config) {
                Ok(Outcome::Injected) => injected += 1,
                Ok(Outcome::Skipped(why)) => eprintln!("{name}: {key}: not injected: {why}"),
                Ok(Outcome::AlreadyInjected | Outcome::NotAWorkload) => {}
                Err(e) => {
                    eprintln!("error: {name}: {key}: {e}");
                    errors += 1;
                    continue;
                }
            }
            out.push_str("---\n");
            out.push_str(&podmesh_model::yaml::to_string(&object));
        }
    }
    if errors > 0 {
        bail!("{errors} object(s) could not be injected; nothing was printed");
    }
    print!("{out}");
    eprintln!("podmesh inject: {injected} workload(s) injected");
    Ok(ExitCode::SUCCESS)
}

/// Each file's name and text: a directory's manifests in name order, `-` for stdin.
fn read(args: &[String]) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for arg in args {
        if arg == "-" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).context("reading stdin")?;
            out.push(("<stdin>".to_string(), text));
            continue;
        }
        let path = PathBuf::from(arg);
        let mut files = Vec::new();
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).with_context(|| format!("reading {}", path.display()))? {
                let p = entry?.path();
                if p.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e, "yaml" | "yml" | "json")) {
                    files.push(p);
                }
            }
            files.sort();
        } else {
            files.push(path);
        }
        for f in files {
            let text = std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
            out.push((f.display().to_string(), text));
        }
    }
    Ok(out)
}
