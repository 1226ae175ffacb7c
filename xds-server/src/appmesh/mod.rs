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

/// The fragments of an import as YAML text (file name → text), checked with the catalog
/// loader as `serve --catalog DIR` would load them.
pub fn render(mapped: &Mapped, dir: &Path) -> Result<Vec<(String, String)>, ImportError> {
    let mut out = Vec::new();
    for (file, doc) in &mapped.fragments {
        let text = serde_saphyr::to_string(doc).map_err(|e| ImportError::Render {
            file: file.clone(),
            message: e.to_string(),
        })?;
        let header = format!(
            "# Imported from App Mesh mesh {} by `xds-server import-appmesh`; see {REPORT_FILE}.\n",
            mapped.report.mesh
        );
        out.push((file.clone(), header + &text));
    }
    let location = dir.display().to_string();
    let documents: Vec<catalog::fragments::Document> = out
        .iter()
        .map(|(file, text)| {
            catalog::fragments::Document::new(
                format!("{}/{file}", location.trim_end_matches('/')),
                text.as_bytes(),
            )
        })
        .collect();
    catalog::merge(&location, &documents).map_err(ImportError::Invalid)?;
    Ok(out)
}

/// Writes the fragments and the report into `dir` (created when missing), each file replaced
/// atomically; the fragments are checked first ([`render`]).
pub fn write(mapped: &Mapped, dir: &Path) -> Result<(), ImportError> {
    let fragments = render(mapped, dir)?;
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        common::files::write_atomic(&path, bytes, Default::default()).map_err(|source| {
            ImportError::Write {
                path: path.display().to_string(),
                source,
            }
        })
    };
    for (file, text) in &fragments {
        write(file, text.as_bytes())?;
    }
    write(REPORT_FILE, mapped.report.to_markdown().as_bytes())?;
    Ok(())
}

/// Reads the mesh with the standard AWS configuration and maps it.
pub async fn import(mesh: &MeshRef, options: &Options) -> Result<Mapped, ImportError> {
    let config = common::aws::sdk_config().await;
    let client = aws_sdk_appmesh::Client::new(&config);
    let read = fetch::mesh(&client, mesh).await?;
    map::map(&read, options)
}
