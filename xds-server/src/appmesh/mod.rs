//! `xds-server import-appmesh`: an App Mesh mesh read through its API and written as catalog
//! fragments, one per virtual node and per virtual gateway, with `IMPORT-REPORT.md` saying what
//! became of every field.
//!
//! [`fetch`] lists and describes the mesh's resources, [`map`] turns them into fragments and a
//! [`report::Report`] (pure functions), and [`write`] checks the fragments with the catalog
//! loader before anything is written: an import never leaves a catalog that does not validate.

pub mod fetch;
pub mod map;
pub mod report;

use std::path::Path;

use aws_sdk_appmesh::types::{
    GatewayRouteData, MeshData, RouteData, VirtualGatewayData, VirtualNodeData, VirtualRouterData,
    VirtualServiceData,
};

use crate::catalog::{self, CatalogErrors};

pub use fetch::MeshRef;
pub use map::{Mapped, Options};

/// The report's file name, beside the fragments (the catalog loader reads only YAML and JSON).
pub const REPORT_FILE: &str = "IMPORT-REPORT.md";

/// Every ACTIVE resource of a mesh, as the App Mesh API describes them.
#[derive(Debug, Clone)]
pub struct Mesh {
    /// The mesh itself.
    pub data: MeshData,
    /// Its virtual nodes.
    pub nodes: Vec<VirtualNodeData>,
    /// Its virtual services.
    pub services: Vec<VirtualServiceData>,
    /// Its virtual routers, each with its routes.
    pub routers: Vec<(VirtualRouterData, Vec<RouteData>)>,
    /// Its virtual gateways, each with its gateway routes.
    pub gateways: Vec<(VirtualGatewayData, Vec<GatewayRouteData>)>,
    /// The resources left out because they are not ACTIVE.
    pub skipped: Vec<Skipped>,
}

/// A resource left out of an import: its status is not ACTIVE (INACTIVE, DELETED).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// `virtual node`, `route`, …
    pub kind: &'static str,
    /// Its name (a route with its router: `ROUTER/ROUTE`).
    pub name: String,
    /// The status App Mesh gave.
    pub status: String,
}

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// An App Mesh call failed.
    #[error("App Mesh {operation} ({what}): {message}")]
    Aws {
        /// The API operation.
        operation: &'static str,
        /// The resource it was about.
        what: String,
        /// The SDK's error with its causes.
        message: String,
    },
    /// Two App Mesh resources map to one catalog name (names differing only in characters the
    /// catalog does not take, or a node and a gateway of one name).
    #[error(
        "{first} and {second} both become {name} in the catalog: rename one of them in App Mesh"
    )]
    Collision {
        /// The catalog name, with its kind.
        name: String,
        /// The resource imported first.
        first: String,
        /// The one that would have overwritten it.
        second: String,
    },
    /// A file this import would write exists and is not one an import of this mesh wrote.
    #[error(
        "{path} exists and was not written by an import of this mesh (it lacks the import's first line): move it away, or import into another directory; nothing was written"
    )]
    NotOurs {
        /// The file.
        path: String,
    },
    /// App Mesh answered without the resource.
    #[error("App Mesh answered without {0}")]
    Missing(String),
    /// The fragments made do not validate (a bug of the importer): nothing was written.
    #[error("the imported catalog does not validate, nothing was written: {0}")]
    Invalid(CatalogErrors),
    /// A fragment could not be rendered.
    #[error("cannot render fragment {file}: {message}")]
    Render {
        /// The fragment's file name.
        file: String,
        /// Why.
        message: String,
    },
    /// Writing the output failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The first line of every fragment an import of `mesh` writes: how `write` tells its own
/// files (which it may replace or remove) from others.
fn header(mesh: &str) -> String {
    format!(
        "# Imported from App Mesh mesh {mesh} by `xds-server import-appmesh`; see {REPORT_FILE}.\n"
    )
}

/// An import checked with the catalog loader: its fragments as YAML text and its report with
/// what the loader warns of.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// File name → text, each starting with the import's header.
    pub fragments: Vec<(String, String)>,
    /// The import's report, with the catalog's warnings (routes that never match, …).
    pub report: report::Report,
}

/// The fragments of an import as YAML text (file name → text), checked with the catalog
/// loader as `serve --catalog DIR` would load them, beside `others` (the directory's other
/// fragments, name → text).
fn render_with(
    mapped: &Mapped,
    dir: &Path,
    others: &[(String, String)],
) -> Result<Rendered, ImportError> {
    let mut out = Vec::new();
    for (file, doc) in &mapped.fragments {
        let text = serde_saphyr::to_string(doc).map_err(|e| ImportError::Render {
            file: file.clone(),
            message: e.to_string(),
        })?;
        out.push((file.clone(), header(&mapped.report.mesh) + &text));
    }
    let location = dir.display().to_string();
    let documents: Vec<catalog::fragments::Document> = out
        .iter()
        .chain(others)
        .map(|(file, text)| {
            catalog::fragments::Document::new(
                format!("{}/{file}", location.trim_end_matches('/')),
                text.as_bytes(),
            )
        })
        .collect();
    let merged = catalog::merge(&location, &documents).map_err(ImportError::Invalid)?;
    let mut report = mapped.report.clone();
    report.warnings = catalog::warnings(&merged)
        .into_iter()
        // Every node's upstream is written for its callers, and a node nobody calls yet (or
        // only by hand) has none: not a mistake of the mesh.
        .filter(|w| !(w.path.starts_with("upstreams.") && w.message.starts_with("no route")))
        .map(|w| w.to_string())
        .collect();
    Ok(Rendered {
        fragments: out,
        report,
    })
}

/// The fragments of an import as YAML text, checked with the catalog loader as `serve
/// --catalog DIR` would load them, and its report with the loader's warnings.
pub fn render(mapped: &Mapped, dir: &Path) -> Result<Rendered, ImportError> {
    render_with(mapped, dir, &[])
}

/// What [`write`] would do in a directory: the fragments and report it writes, and the
/// fragments of an earlier import it removes. `--dry-run --out DIR` prints this report, the
/// very one that would be written.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The fragments and the report, checked beside the directory's other fragments.
    pub rendered: Rendered,
    /// Fragments an earlier import of the mesh wrote that this one no longer makes.
    pub stale: Vec<std::path::PathBuf>,
}

/// Plans writing the fragments and the report into `dir`. The directory is checked as it will
/// be: this import's fragments beside the fragments already there that it does not replace.
/// Fragments an earlier import of the same mesh wrote (they start with its header) that this
/// one no longer makes (resources deleted from the mesh since) are to be removed; a fragment
/// of this import's name that has no header (a file of someone else's) is not written over:
/// an error names it.
pub fn plan(mapped: &Mapped, dir: &Path) -> Result<Plan, ImportError> {
    let ours = header(&mapped.report.mesh);
    let read_failed = |path: &Path| {
        let path = path.display().to_string();
        move |source| ImportError::Write { path, source }
    };
    let mut others = Vec::new();
    let mut stale = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry.map_err(read_failed(dir))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if !catalog::is_fragment_name(&name) || !entry.path().is_file() {
                    continue;
                }
                let text =
                    std::fs::read_to_string(entry.path()).map_err(read_failed(&entry.path()))?;
                let imported = text.starts_with(&ours);
                match (mapped.fragments.contains_key(&name), imported) {
                    (true, true) => {}
                    (true, false) => {
                        return Err(ImportError::NotOurs {
                            path: entry.path().display().to_string(),
                        });
                    }
                    (false, true) => stale.push(entry.path()),
                    (false, false) => others.push((name, text)),
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(read_failed(dir)(e)),
    }
    let rendered = render_with(mapped, dir, &others)?;
    Ok(Plan { rendered, stale })
}

/// Writes the fragments and the report into `dir` (created when missing) as [`plan`] says,
/// each file replaced atomically; nothing is written when the plan fails.
pub fn write(mapped: &Mapped, dir: &Path) -> Result<(), ImportError> {
    let read_failed = |path: &Path| {
        let path = path.display().to_string();
        move |source| ImportError::Write { path, source }
    };
    let Plan { rendered, stale } = plan(mapped, dir)?;
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        common::files::write_atomic(&path, bytes, Default::default()).map_err(|source| {
            ImportError::Write {
                path: path.display().to_string(),
                source,
            }
        })
    };
    for (file, text) in &rendered.fragments {
        write(file, text.as_bytes())?;
    }
    for path in stale {
        tracing::info!(file = %path.display(), "removing a fragment of a resource no longer in the mesh");
        std::fs::remove_file(&path).map_err(read_failed(&path))?;
    }
    write(REPORT_FILE, rendered.report.to_markdown().as_bytes())?;
    Ok(())
}

/// Reads the mesh with the standard AWS configuration and maps it.
pub async fn import(mesh: &MeshRef, options: &Options) -> Result<Mapped, ImportError> {
    let config = common::aws::sdk_config().await;
    let client = aws_sdk_appmesh::Client::new(&config);
    let read = fetch::mesh(&client, mesh).await?;
    map::map(&read, options)
}
