//! `weft apply -f` and `weft delete`: change the store's documents through the control
//! plane's API (`POST`/`DELETE /v1/resources`), whichever store it runs on, as kubectl does:
//! one line per document (`httproute.gateway.networking.k8s.io/web configured`), errors on
//! stderr, and exit 1 when any document failed.

use std::io::Read as _;

use anyhow::{bail, Context as _};
use serde_json::Value;

use crate::get::{api_error, resource_path, ApiAddr};

/// `weft apply -f FILE|-`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    weft apply -f web.yaml\n  \
    cat routes.yaml | weft apply -f -\n\n\
    Every document of the file is validated by the control plane as its store validates it and \
    applied on its own: a bad document is reported (exit 1) and keeps its last good version, \
    the others are applied. A document already defined in the store is replaced where it is \
    (inside its file or etcd key, the other documents untouched); a new one gets a file \
    (<kind>.<namespace>.<name>.yaml) or key (PREFIX/resources/<kind>/<namespace>/<name>) of its \
    own. Each line says created, configured or unchanged once the control plane serves the \
    change. Registered workloads (weft run) cannot be applied. See docs/cli.md.")]
pub struct ApplyArgs {
    /// The YAML file to apply, one or more `---`-separated documents (`-`: standard input).
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: String,
    #[command(flatten)]
    pub api: ApiAddr,
}

/// `weft delete -f FILE|-` or `weft delete KIND NAME [-n NS]`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    weft delete -f web.yaml\n  \
    weft delete httproute web -n shop\n  \
    weft delete svc web\n\n\
    -f deletes every document the file names (only kind, namespace and name are read). The \
    document is taken out of the file or etcd key holding it; a file or key left empty is \
    removed. Deleting what is not there fails (exit 1), as kubectl's NotFound. Registered \
    workloads are deregistered by stopping `weft run` (or DELETE /v1/workloads/NS/NAME), not \
    here. See docs/cli.md.")]
pub struct DeleteArgs {
    /// The YAML file naming the documents to delete (`-`: standard input).
    #[arg(short = 'f', long = "filename", value_name = "FILE", conflicts_with_all = ["kind", "name"])]
    pub file: Option<String>,
    /// The kind of the document to delete (as `weft get` takes it).
    #[arg(
        value_name = "KIND",
        required_unless_present = "file",
        requires = "name"
    )]
    pub kind: Option<String>,
    /// Its name.
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
    /// Its namespace.
    #[arg(short = 'n', long, default_value = "default", value_name = "NS")]
    pub namespace: String,
    #[command(flatten)]
    pub api: ApiAddr,
}

/// The text of `-f FILE` (`-`: stdin) and the name errors give it.
fn read(file: &str) -> anyhow::Result<(String, String)> {
    if file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
        return Ok((text, "stdin".to_string()));
    }
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
    // The name goes into a query string: keep it to characters that need no escaping.
    let base = std::path::Path::new(file)
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let name: String = base
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => c,
            _ => '_',
        })
        .collect();
    Ok((text, name))
}

/// Prints one line per document of an apply/delete answer; an error when any failed.
pub(crate) fn report(status: hyper::StatusCode, answer: &Value) -> anyhow::Result<()> {
    let Some(results) = answer["results"].as_array() else {
        bail!("{}", api_error(answer, status));
    };
    let mut failed = 0;
    for r in results {
        match (r["result"].as_str(), r["error"].as_str()) {
            (Some(result), _) => println!("{} {result}", r["ref"].as_str().unwrap_or("?")),
            (_, Some(e)) => {
                failed += 1;
                eprintln!("error: {e}");
            }
            _ => bail!("an answer line without result or error: {r}"),
        }
    }
    if failed > 0 || !status.is_success() {
        bail!("{failed} of {} documents failed", results.len());
    }
    Ok(())
}

pub async fn apply(args: ApplyArgs) -> anyhow::Result<()> {
    let (text, name) = read(&args.file)?;
    let path = format!("/v1/resources?file={name}");
    let (status, answer) = args.api.call(hyper::Method::POST, &path, text).await?;
    report(status, &answer)
}

pub async fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let (path, body) = match (&args.file, &args.kind, &args.name) {
        (Some(file), _, _) => {
            let (text, name) = read(file)?;
            (format!("/v1/resources?file={name}"), text)
        }
        (None, Some(kind), Some(name)) => {
            let path = resource_path(kind, Some(&args.namespace), Some(name));
            (path, String::new())
        }
        _ => bail!("name what to delete: -f FILE, or KIND NAME"),
    };
    let (status, answer) = args.api.call(hyper::Method::DELETE, &path, body).await?;
    report(status, &answer)
}
