//! `xds-server validate`: everything it finds about a catalog, told to a person (text on
//! stderr, `ok` on stdout) or to CI (`--output json` on stdout), with the same exit code.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::catalog::{self, CatalogError, LoadedCatalog};
use crate::load::{CatalogLocation, LoadError};

/// What `validate` found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// The catalog checked.
    pub location: String,
    /// Whether `serve` would take it (no errors).
    pub ok: bool,
    /// Why it would be refused.
    pub errors: Vec<Problem>,
    /// What is most likely a mistake, without refusing it.
    pub warnings: Vec<Problem>,
    /// The text a person reads on stderr.
    #[serde(skip)]
    text: Vec<String>,
}

/// One error or warning.
#[derive(Debug, Serialize)]
pub struct Problem {
    /// Field path (with a fragment's name first when several are merged); empty for the
    /// document as a whole.
    pub path: String,
    /// Line in a YAML document, from 1.
    pub line: Option<u64>,
    /// Column in a YAML document, from 1.
    pub column: Option<u64>,
    /// What is wrong.
    pub message: String,
}

impl From<&CatalogError> for Problem {
    fn from(e: &CatalogError) -> Problem {
        Problem {
            path: e.path.clone(),
            line: e.position.map(|p| p.0),
            column: e.position.map(|p| p.1),
            message: e.message.clone(),
        }
    }
}

impl Problem {
    fn at(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            path: path.into(),
            line: None,
            column: None,
            message: message.into(),
        }
    }
}

/// What to check besides the catalog itself.
#[derive(Debug, Default)]
pub struct Options {
    /// Check the location as one fragment joining the fragments of these directories or
    /// prefixes: the first is what the control plane serves, the others hold fragments written
    /// together with this one, which replace those of the same name.
    pub with: Vec<CatalogLocation>,
    /// The fragment's name in the set (its key relative to the prefix); its file name if unset.
    pub join_as: Option<String>,
    /// Where the server keeps the last good catalog of the first `with` location; its default
    /// place ([`crate::last_good::LastGoodLocation::default_for`]) if unset.
    pub last_good: Option<crate::last_good::LastGoodLocation>,
    /// Have this Envoy binary check every proxy's configuration.
    pub envoy: Option<PathBuf>,
    /// The trust domain the control plane serves with.
    pub trust_domain: String,
}

/// Checks `location` as `serve` would take it.
pub async fn check(location: &CatalogLocation, options: Options) -> Report {
    let mut report = Report {
        location: location.to_string(),
        ..Report::default()
    };
    if let (Some(at), []) = (&options.last_good, options.with.as_slice()) {
        report.warn(format!(
            "{at}: --last-good (or XDS_SERVER_LAST_GOOD) is read only with --with: not used"
        ));
    }
    let loaded = match (options.with.as_slice(), location) {
        ([], _) if options.join_as.is_some() => {
            let why = "--as names the fragment in the set of --with";
            report.error(Problem::at("", why), format!("{location}: {why}"));
            None
        }
        ([_, ..], CatalogLocation::File(file)) => {
            joining(
                &mut report,
                file,
                &options.with,
                options.join_as.as_deref(),
                options.last_good.as_ref(),
                &options.trust_domain,
            )
            .await
        }
        ([_, ..], _) => {
            report.error(
                Problem::at("", "--with checks a local fragment file"),
                format!("{location}: --with checks a local fragment file"),
            );
            None
        }
        ([], _) => {
            let server = crate::secrets::ServerSide {
                has_ca: true,
                trust_domain: options.trust_domain.clone(),
            };
            match crate::load::load_once(location, &server).await {
                Ok(c) => Some(c),
                Err(LoadError::Read(e)) => {
                    report.error(Problem::at("", e.clone()), e);
                    None
                }
                Err(LoadError::Invalid(e)) => {
                    report.errors.extend(e.errors.iter().map(Problem::from));
                    report.text.push(e.to_string());
                    None
                }
            }
        }
    };
    let Some(loaded) = loaded else {
        return report;
    };
    let endpoint_files = endpoint_file_warnings(&loaded);
    for w in catalog::warnings(&loaded.catalog)
        .into_iter()
        .chain(endpoint_files)
    {
        report.text.push(format!("warning: {w}"));
        report.warnings.push(Problem::at(w.path, w.message));
    }
    if let Some(envoy) = &options.envoy {
        with_envoy(&mut report, location, envoy, &loaded);
    }
    report.ok = report.errors.is_empty();
    report
}

impl Report {
    fn warn(&mut self, text: String) {
        self.text.push(format!("warning: {text}"));
        self.warnings.push(Problem::at("", text));
    }

    fn error(&mut self, problem: Problem, text: String) {
        self.errors.push(problem);
        self.text.push(text);
    }

    /// What a person reads on stderr (without the final `ok`).
    pub fn text(&self) -> String {
        self.text.iter().map(|t| format!("{t}\n")).collect()
    }
}

/// `validate FILE --with LOCATION...`: the catalog FILE's proxies would get, or `None` with the
/// reasons in `report`.
async fn joining(
    report: &mut Report,
    path: &Path,
    sources: &[CatalogLocation],
    join_as: Option<&str>,
    last_good: Option<&crate::last_good::LastGoodLocation>,
    trust_domain: &str,
) -> Option<LoadedCatalog> {
    use crate::catalog::fragments::{self, Document};
    let shown = path.display().to_string();
    if path.is_dir() {
        let why = "--with checks one fragment file against a directory or prefix";
        report.error(Problem::at("", why), format!("{shown}: {why}"));
        return None;
    }
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            let why = format!("cannot read {shown}: {e}");
            report.error(Problem::at("", why.clone()), why);
            return None;
        }
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| shown.clone());
    let name = join_as
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or(file_name);
    // The first source is what is served; the others' fragments are named as if under it.
    let with = sources[0].to_string();
    let base = with.trim_end_matches('/').to_string();
    let mut served = Vec::new();
    let mut pending = Vec::new();
    for (i, source) in sources.iter().enumerate() {
        let docs = match crate::load::read_fragments(source).await {
            Ok(o) => o,
            Err(e) => {
                report.error(Problem::at("", e.clone()), e);
                return None;
            }
        };
        if i == 0 {
            served = docs;
            continue;
        }
        let source_name = source.to_string();
        pending.extend(docs.into_iter().map(|d| Document {
            name: format!("{base}/{}", fragments::short_name(&source_name, &d.name)),
            ..d
        }));
    }
    let changed: Vec<String> = sources[1..].iter().map(ToString::to_string).collect();
    let along = if changed.is_empty() {
        String::new()
    } else {
        format!(" with the fragments of {} in place", changed.join(", "))
    };
    let fragment = Document::new(shown.clone(), bytes);
    let server = crate::secrets::ServerSide {
        has_ca: true,
        trust_domain: trust_domain.to_string(),
    };
    let check = |c: &mut catalog::Catalog| server.settle_trust_domain(c);
    let persisted = persisted(report, &sources[0], last_good, &check).await;
    let joining = fragments::check_joining(
        &with,
        &served,
        &pending,
        &name,
        &fragment,
        persisted.as_ref(),
        &check,
    );
    for (other, errors) in &joining.others_refused {
        for e in errors {
            report.text.push(format!(
                "warning: {with}: {other} is refused (the server serves its last good version, if any): {e}"
            ));
            report.warnings.push(Problem {
                message: format!(
                    "{with}: {other} is refused (the server serves its last good version, if any): {}",
                    e.message
                ),
                ..Problem::from(e)
            });
        }
    }
    if !joining.errors.is_empty() {
        let n = joining.errors.len();
        let mut text = format!(
            "{shown}: {n} error{} joining {with} as {}{along}",
            if n == 1 { "" } else { "s" },
            joining.name
        );
        for e in &joining.errors {
            text.push_str(&format!("\n  {}", e.located()));
        }
        report.text.push(text);
        report
            .errors
            .extend(joining.errors.iter().map(Problem::from));
        return None;
    }
    let base_dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    Some(LoadedCatalog {
        catalog: joining.catalog,
        base_dir,
    })
}

/// The server's last good catalog of `location`, at `at` or its default place
/// (`.last-good.json` beside the directory or under the prefix), as the server reads it; `None`
/// when there is none. One that cannot be read or used is a warning: the fragments are then
/// checked as read. The document at the default place is the location's own, whatever path
/// the server named the directory by (it may be mounted elsewhere there); one elsewhere must
/// have been written for this location, so a document exported for another catalog does not
/// supply versions; and one named there that does not exist is a warning.
async fn persisted(
    report: &mut Report,
    location: &CatalogLocation,
    at: Option<&crate::last_good::LastGoodLocation>,
    check: catalog::fragments::Check<'_>,
) -> Option<catalog::fragments::Fragments> {
    use crate::last_good::{LastGoodLocation, Read, Store, decode};
    let default = LastGoodLocation::default_for(location);
    let (at, own) = match at {
        Some(at) => (at.clone(), default.as_ref() == Some(at)),
        None => (default?, true),
    };
    let store = Store::new(at.clone()).await;
    let used = match store.read(None).await {
        Ok(Read::Document(stored)) if own => {
            // Written under the catalog name the server was given (a path may be spelt
            // otherwise here): the document beside this location is its own.
            let written_for = serde_json::from_slice::<serde_json::Value>(&stored.bytes)
                .ok()
                .and_then(|v| v["catalog"].as_str().map(String::from))
                .unwrap_or_default();
            decode(&written_for, &stored.bytes, check).map(|d| Some(d.fragments))
        }
        Ok(Read::Document(stored)) => {
            decode(&location.to_string(), &stored.bytes, check).map(|d| Some(d.fragments))
        }
        Ok(Read::Absent) if !own => {
            Err("there is none (--last-good or XDS_SERVER_LAST_GOOD names no document)".to_string())
        }
        Ok(Read::Absent | Read::Unchanged) => Ok(None),
        Err(e) => Err(e),
    };
    used.unwrap_or_else(|why| {
        report.warn(format!("{at}: the last good catalog is not used: {why}"));
        None
    })
}

/// `--envoy`: what that Envoy refuses of each proxy's configuration.
fn with_envoy(
    report: &mut Report,
    location: &CatalogLocation,
    envoy: &Path,
    loaded: &LoadedCatalog,
) {
    let verdicts = crate::envoy_validate::validate_all(envoy, loaded);
    let refused: Vec<_> = verdicts
        .iter()
        .filter_map(|(p, v)| v.as_ref().err().map(|why| (p, why)))
        .collect();
    if refused.is_empty() {
        return;
    }
    let mut text = format!(
        "{location}: Envoy ({}) refuses {} of {} proxies",
        envoy.display(),
        refused.len(),
        verdicts.len()
    );
    for (proxy, why) in refused {
        text.push_str(&format!("\n  proxies.{proxy}: {why}"));
        report
            .errors
            .push(Problem::at(format!("proxies.{proxy}"), why.to_string()));
    }
    report.text.push(text);
}

/// Endpoint files that `serve` could not read now: the upstream would have no endpoints until
/// the file is there and good (not an error: a file written by another process may come later).
fn endpoint_file_warnings(loaded: &LoadedCatalog) -> Vec<catalog::CatalogWarning> {
    let mut out = Vec::new();
    for (name, u) in &loaded.catalog.upstreams {
        let Some(file) = &u.endpoints.file else {
            continue;
        };
        let path = loaded.base_dir.join(file);
        let problem = match std::fs::read(&path) {
            Err(e) => Some(format!(
                "{} cannot be read ({e}): the upstream has no endpoints until it can",
                path.display()
            )),
            Ok(bytes) => crate::discovery::parse_endpoints(&path, &bytes)
                .err()
                .map(|e| format!("{e}: the upstream has no endpoints until it is fixed")),
        };
        if let Some(message) = problem {
            out.push(catalog::CatalogWarning {
                path: format!("upstreams.{}.endpoints.file", name.0),
                message,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::fragments::tests::service;
    use crate::catalog::fragments::{self, Document, Fragments};

    /// `text` as the only fragment of a last good catalog, accepted as the server accepts it.
    fn accepted(name: &str, text: &str) -> Fragments {
        let fragment = fragments::accept(&Document::new(name, text.as_bytes()), &|_| Vec::new());
        [(name.to_string(), fragment.unwrap())].into()
    }

    async fn validate_with(wallet: &Path, dir: &Path) -> Report {
        let options = Options {
            with: vec![CatalogLocation::File(dir.to_path_buf())],
            trust_domain: "mesh.local".into(),
            ..Options::default()
        };
        check(&CatalogLocation::File(wallet.to_path_buf()), options).await
    }

    #[tokio::test]
    async fn a_last_good_document_named_for_another_catalog_or_missing_is_not_used_and_says_so() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("catalog.d");
        std::fs::create_dir_all(&dir).unwrap();
        let connector = service("connector", "connector", &["connector"]);
        let good = accepted("connector.yaml", &connector);
        std::fs::write(
            dir.join("connector.yaml"),
            connector.replace("port: 8080", "port: 0"),
        )
        .unwrap();
        let wallet = tmp.path().join("wallet.yaml");
        std::fs::write(&wallet, service("wallet", "connector", &[])).unwrap();
        let kept = tmp.path().join("state.json");
        let validate = async |last_good: &Path| {
            let options = Options {
                with: vec![CatalogLocation::File(dir.clone())],
                last_good: Some(crate::last_good::LastGoodLocation::File(
                    last_good.to_path_buf(),
                )),
                trust_domain: "mesh.local".into(),
                ..Options::default()
            };
            check(&CatalogLocation::File(wallet.clone()), options).await
        };
        // Exported for another catalog: its versions are not used, and it says why.
        let other = CatalogLocation::File(tmp.path().join("other.d")).to_string();
        std::fs::write(&kept, crate::last_good::encode(&other, &good).unwrap().0).unwrap();
        let report = validate(&kept).await;
        assert!(!report.ok, "{}", report.text());
        let not_used = format!(
            "warning: {}: the last good catalog is not used: written for catalog {}",
            kept.display(),
            crate::last_good::canonical(&other)
        );
        assert!(report.text().contains(&not_used), "{}", report.text());
        assert!(
            report
                .text()
                .contains(r#"upstream "connector" is not defined"#),
            "{}",
            report.text()
        );
        // Written for this one: used.
        let this = CatalogLocation::File(dir.clone()).to_string();
        std::fs::write(&kept, crate::last_good::encode(&this, &good).unwrap().0).unwrap();
        let report = validate(&kept).await;
        assert!(report.ok, "{}", report.text());
        assert!(!report.text().contains("not used"), "{}", report.text());
        // Named but missing: said so.
        let missing = tmp.path().join("missing.json");
        let report = validate(&missing).await;
        assert!(!report.ok);
        assert!(
            report.text().contains(&format!(
                "warning: {}: the last good catalog is not used: there is none",
                missing.display()
            )),
            "{}",
            report.text()
        );
        // Given without --with: said so.
        std::fs::write(dir.join("connector.yaml"), &connector).unwrap();
        let options = Options {
            last_good: Some(crate::last_good::LastGoodLocation::File(kept.clone())),
            trust_domain: "mesh.local".into(),
            ..Options::default()
        };
        let report = check(&CatalogLocation::File(dir.clone()), options).await;
        assert!(report.ok, "{}", report.text());
        assert!(
            report
                .text()
                .contains("--last-good (or XDS_SERVER_LAST_GOOD) is read only with --with"),
            "{}",
            report.text()
        );
    }

    #[tokio::test]
    async fn a_fragment_joins_against_the_last_good_versions_the_server_serves() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("catalog.d");
        std::fs::create_dir_all(&dir).unwrap();
        let connector = service("connector", "connector", &["connector"]);
        // The server's last good catalog holds connector.yaml as it was; it is broken now.
        let good = accepted("connector.yaml", &connector);
        let served_as = CatalogLocation::File(PathBuf::from("/etc/xds/catalog.d")).to_string();
        let (bytes, _) = crate::last_good::encode(&served_as, &good).unwrap();
        std::fs::write(tmp.path().join(crate::last_good::DEFAULT_NAME), bytes).unwrap();
        std::fs::write(
            dir.join("connector.yaml"),
            connector.replace("port: 8080", "port: 0"),
        )
        .unwrap();
        let wallet = tmp.path().join("wallet.yaml");
        std::fs::write(&wallet, service("wallet", "connector", &[])).unwrap();
        let report = validate_with(&wallet, &dir).await;
        assert!(report.ok, "{}", report.text());
        assert!(
            report.text().contains("connector.yaml is refused"),
            "{}",
            report.text()
        );
        // Another trust domain than the server's is refused, as the server refuses it.
        std::fs::write(
            &wallet,
            service("wallet", "connector", &[]) + "mesh: { trust_domain: other.example }\n",
        )
        .unwrap();
        let report = validate_with(&wallet, &dir).await;
        assert!(!report.ok);
        assert!(
            report.text().contains("mesh.trust_domain"),
            "{}",
            report.text()
        );
    }
}
