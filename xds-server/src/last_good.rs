//! The persisted last good catalog of a directory or S3 prefix: every fragment at the version
//! served, with its source's upload time (and ETag), in one JSON document next to the catalog. A replica
//! that starts while a fragment is bad serves that fragment's last good version from it, so
//! every replica serves the same resources.
//!
//! The document is a function of what is served and nothing else (no time of writing, no
//! host; the upload times are the sources'): replicas
//! that serve the same catalog write the same bytes, and its `digest` (SHA-256 of the
//! fragments) names that content. It is written whole and atomically (a staged file renamed
//! over the old one; one PutObject), so a reader sees one replica's document, never a mix.
//! It holds the fragments' own text, which names certificate files and secrets but never holds
//! their content; a fragment that carries a private key anyway is refused
//! ([`fragments::accept`]), so its last good version is the one persisted, and [`encode`]
//! refuses to write a key all the same. Of two versions of a fragment, the one a replica has
//! just seen replace the version it served, else the one uploaded last, is written
//! ([`merge`]), so a replica that lags behind an upload does not undo it, and a rollback to an
//! older version is written too.
//!
//! A document that is not one (corrupt, another format, its digest wrong) or that was written
//! for another catalog location is ignored with a log line; it is only ever consulted for
//! fragments that are bad now, never over a good live one.

use std::collections::BTreeMap;
use std::path::PathBuf;

use sha2::Digest;

use crate::catalog::fragments::{self, Check, Document, FragmentVersion, Fragments};
use crate::load::CatalogLocation;
use s3_config_loader::S3Location;

/// The `format` of documents this version writes and reads.
const FORMAT: &str = "xds-server last-good catalog v1";

/// The file name of the default location.
pub const DEFAULT_NAME: &str = ".last-good.json";

/// Documents larger than this are not read.
const MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Where the last good catalog is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LastGoodLocation {
    /// A local file.
    File(PathBuf),
    /// An S3 object.
    S3(S3Location),
}

impl std::str::FromStr for LastGoodLocation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with("s3://") {
            let loc: S3Location = s.parse().map_err(|e| format!("{e}"))?;
            if loc.key.is_empty() || loc.key.ends_with('/') {
                return Err(format!(
                    "{s}: name an object, e.g. s3://BUCKET/xds/last-good.json"
                ));
            }
            return Ok(LastGoodLocation::S3(loc));
        }
        if s.is_empty() {
            return Err("the last good location is empty".into());
        }
        Ok(LastGoodLocation::File(PathBuf::from(s)))
    }
}

impl std::fmt::Display for LastGoodLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LastGoodLocation::File(p) => write!(f, "{}", p.display()),
            LastGoodLocation::S3(l) => write!(f, "{l}"),
        }
    }
}

impl LastGoodLocation {
    /// The default for a catalog: `.last-good.json` beside a directory (in its parent; also
    /// one missing at the start, [`CatalogLocation::holds_fragments`]) or under an S3 prefix;
    /// `None` for a single-document catalog, which has no fragments.
    pub fn default_for(catalog: &CatalogLocation) -> Option<LastGoodLocation> {
        match catalog {
            CatalogLocation::File(dir) if catalog.holds_fragments() => {
                let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
                let parent = dir.parent().map(PathBuf::from).unwrap_or(dir);
                Some(LastGoodLocation::File(parent.join(DEFAULT_NAME)))
            }
            CatalogLocation::S3Prefix(prefix) => Some(LastGoodLocation::S3(S3Location {
                bucket: prefix.bucket.clone(),
                key: format!("{}{DEFAULT_NAME}", prefix.key),
            })),
            CatalogLocation::File(_) | CatalogLocation::S3(_) => None,
        }
    }
}

/// One fragment as persisted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Persisted {
    /// [`FragmentVersion`] of `text`.
    version: FragmentVersion,
    /// What the source said of that version: its upload time, and for S3 its ETag
    /// ([`Document::source`]); a document written before times were kept has none.
    source: Option<String>,
    /// The fragment as it was read.
    text: String,
}

/// The persisted document.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LastGoodDocument {
    format: String,
    /// The catalog location it was written for.
    catalog: String,
    /// `sha256:HEX` of the JSON of `fragments`.
    digest: String,
    fragments: BTreeMap<String, Persisted>,
}

fn digest(fragments: &BTreeMap<String, Persisted>) -> String {
    // A BTreeMap of plain fields serializes the same way every time.
    let bytes = serde_json::to_vec(fragments).unwrap_or_default();
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)))
}

/// Why a document is not written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A fragment holds a private key ([`crate::secrets::private_key_in`]).
    #[error(
        "{fragment} holds a private key ({found}): the last good catalog is not written with it; keep keys in files or Secrets Manager and name them"
    )]
    PrivateKey {
        /// The fragment.
        fragment: String,
        /// What was found, without the key.
        found: String,
    },
}

/// A catalog location as a document names it, the same however a replica spells it: an S3
/// location as it is; a directory as its absolute path, its parents' links and `..` resolved
/// (`./catalog.d`, `catalog.d/` and `/srv/catalog.d` are one when the working directory is
/// `/srv`), but not a link the directory itself is: `catalog.d -> releases/42/catalog.d`
/// stays `catalog.d` when the link is switched to `releases/43`, so the replicas started
/// before and after the switch name one catalog. Parents that do not exist (yet) are taken as
/// spelled below the deepest one that does, so a replica that starts while its directory is
/// missing names it as the others do.
pub fn canonical(catalog: &str) -> String {
    use std::path::{Component, Path};
    if catalog.starts_with("s3://") {
        return catalog.to_string();
    }
    let path = Path::new(catalog);
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    // The last component as named; a path ending in `..` or `/` has none of its own.
    let (parent, last) = match absolute.components().next_back() {
        Some(Component::Normal(last)) => (
            absolute.parent().unwrap_or(Path::new("/")).to_path_buf(),
            Some(last.to_os_string()),
        ),
        _ => (absolute.clone(), None),
    };
    // The deepest parent that exists, with its links resolved; then the rest as spelled
    // (what does not exist holds no link).
    let mut real = None;
    let mut rest = Vec::new();
    for ancestor in parent.ancestors() {
        if let Ok(r) = std::fs::canonicalize(ancestor) {
            real = Some(r);
            break;
        }
        if let Some(c) = ancestor.components().next_back() {
            rest.push(c.as_os_str().to_os_string());
        }
    }
    let mut out = real.unwrap_or_default();
    for c in rest.iter().rev().chain(last.as_ref()) {
        match Path::new(c).components().next() {
            Some(Component::ParentDir) => {
                out.pop();
            }
            Some(Component::CurDir) | None => {}
            Some(_) => out.push(c),
        }
    }
    out.display().to_string()
}

/// The document for the fragments served from `catalog`, and its digest.
pub fn encode(catalog: &str, served: &Fragments) -> Result<(Vec<u8>, String), EncodeError> {
    let mut fragments = BTreeMap::new();
    for (name, a) in served {
        if let Some(found) = fragments::private_key(name, &a.text) {
            return Err(EncodeError::PrivateKey {
                fragment: name.clone(),
                found,
            });
        }
        fragments.insert(
            name.clone(),
            Persisted {
                version: a.version.clone(),
                source: a.source.clone(),
                text: a.text.to_string(),
            },
        );
    }
    let digest = digest(&fragments);
    let doc = LastGoodDocument {
        format: FORMAT.into(),
        catalog: canonical(catalog),
        digest: digest.clone(),
        fragments,
    };
    let mut bytes = serde_json::to_vec_pretty(&doc).unwrap_or_default();
    bytes.push(b'\n');
    Ok((bytes, digest))
}

/// A document read back: the fragments it keeps, and what of it could not be used.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The catalog location it names, as written (another spelling of the same location is
    /// written anew: [`canonical`]).
    pub catalog: String,
    /// Its digest.
    pub digest: String,
    /// The fragments that pass their checks here, by name.
    pub fragments: Fragments,
    /// Fragments left out, with why (they fail this server's checks).
    pub skipped: Vec<String>,
    /// Those fragments as stored, not parsed ([`fragments::Accepted::unparsed`]): never
    /// served here, but written back, for the replicas that take them (those of another
    /// trust domain, or of a newer version that knows fields this one does not).
    pub unchecked: Fragments,
}

/// Reads a document written for `catalog`; every fragment is checked again, as if read from the
/// catalog (`check` is this server's part). An error says why the whole document is ignored.
pub fn decode(catalog: &str, bytes: &[u8], check: Check<'_>) -> Result<Decoded, String> {
    let doc: LastGoodDocument =
        serde_json::from_slice(bytes).map_err(|e| format!("not a last good catalog: {e}"))?;
    if doc.format != FORMAT {
        return Err(format!(
            "format {:?} is not {FORMAT:?} (written by another version?)",
            doc.format
        ));
    }
    if canonical(&doc.catalog) != canonical(catalog) {
        return Err(format!(
            "written for catalog {}, not {catalog}",
            doc.catalog
        ));
    }
    let computed = digest(&doc.fragments);
    if computed != doc.digest {
        return Err(format!(
            "its digest {} does not match its content ({computed}): changed or cut short",
            doc.digest
        ));
    }
    let mut out = Fragments::new();
    let mut skipped = Vec::new();
    let mut unchecked = Fragments::new();
    for (name, p) in doc.fragments {
        if FragmentVersion::of(p.text.as_bytes()) != p.version {
            return Err(format!("{name}: its version does not match its text"));
        }
        let document = Document {
            source: p.source.clone(),
            ..Document::new(name.clone(), p.text.as_bytes())
        };
        match fragments::accept(&document, check) {
            Ok(a) => {
                out.insert(name, a);
            }
            Err(errors) => {
                let why: Vec<String> = errors
                    .into_iter()
                    .map(|e| fragments::at(&name, e).to_string())
                    .collect();
                skipped.push(why.join("; "));
                let kept = fragments::Accepted::unparsed(p.version, p.text.into(), p.source);
                unchecked.insert(name, kept);
            }
        }
    }
    Ok(Decoded {
        catalog: doc.catalog,
        digest: doc.digest,
        fragments: out,
        skipped,
        unchecked,
    })
}

/// What the store says of its document's version: the S3 ETag, or `sha256:HEX` of a file's
/// bytes. A write names the tag it replaces, so two replicas writing at once cannot both win.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag(String);

/// The document as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Its version, for a conditional write over it.
    pub tag: Tag,
}

/// What a read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// There is no document yet.
    Absent,
    /// The document is still the one of the tag given.
    Unchanged,
    /// The document.
    Document(Stored),
}

/// Why a write did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// Another replica wrote the document since it was read: read it again and merge.
    #[error("{0} was written by another replica since it was read")]
    Conflict(String),
    /// The store refused or could not be reached.
    #[error("{0}")]
    Failed(String),
}

fn file_tag(bytes: &[u8]) -> Tag {
    Tag(format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(bytes))
    ))
}

/// Reads and writes the document at its location.
pub struct Store {
    location: LastGoodLocation,
    s3: Option<aws_sdk_s3::Client>,
}

impl Store {
    /// A store at `location` (an S3 client is made for an S3 one).
    pub async fn new(location: LastGoodLocation) -> Store {
        let s3 = match &location {
            LastGoodLocation::S3(_) => Some(s3_config_loader::s3_client().await),
            LastGoodLocation::File(_) => None,
        };
        Store { location, s3 }
    }

    /// Where it is.
    pub fn location(&self) -> &LastGoodLocation {
        &self.location
    }

    /// The document, or [`Read::Unchanged`] when it is still the one tagged `known` (for S3 a
    /// conditional GET, so polling it costs no body).
    pub async fn read(&self, known: Option<&Tag>) -> Result<Read, String> {
        let stored = match (&self.location, &self.s3) {
            (LastGoodLocation::File(path), _) => {
                use std::io::Read as _;
                let mut bytes = Vec::new();
                let read = std::fs::File::open(path)
                    .and_then(|f| f.take(MAX_BYTES + 1).read_to_end(&mut bytes));
                match read {
                    Ok(_) if bytes.len() as u64 > MAX_BYTES => {
                        return Err(format!(
                            "{} is larger than {MAX_BYTES} bytes",
                            path.display()
                        ));
                    }
                    Ok(_) => Stored {
                        tag: file_tag(&bytes),
                        bytes,
                    },
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Ok(Read::Absent);
                    }
                    Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
                }
            }
            (LastGoodLocation::S3(loc), Some(client)) => {
                let sent = client
                    .get_object()
                    .bucket(&loc.bucket)
                    .key(&loc.key)
                    .set_if_none_match(known.map(|t| t.0.clone()))
                    .send()
                    .await;
                let resp = match sent {
                    Ok(r) => r,
                    Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                        return Ok(Read::Absent);
                    }
                    // The SDK reports 304 Not Modified as an error.
                    Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 304) => {
                        return Ok(Read::Unchanged);
                    }
                    Err(e) => {
                        return Err(format!(
                            "cannot read {loc}: {}",
                            common::aws::error_text(&e).text
                        ));
                    }
                };
                if resp.content_length().unwrap_or_default().max(0) as u64 > MAX_BYTES {
                    return Err(format!("{loc} is larger than {MAX_BYTES} bytes"));
                }
                let tag = Tag(resp.e_tag().unwrap_or_default().to_string());
                let body =
                    resp.body.collect().await.map_err(|e| {
                        format!("cannot read {loc}: {}", common::aws::error_chain(&e))
                    })?;
                Stored {
                    bytes: body.into_bytes().to_vec(),
                    tag,
                }
            }
            (LastGoodLocation::S3(loc), None) => {
                return Err(format!("cannot read {loc}: no S3 client"));
            }
        };
        if known == Some(&stored.tag) {
            return Ok(Read::Unchanged);
        }
        Ok(Read::Document(stored))
    }

    /// Replaces the document if it is still the one tagged `over` (`None`: if there is none):
    /// for S3 a PutObject with `If-Match` (`If-None-Match: *`); for a file, under a lock of
    /// its directory, a staged file renamed over the old one. The new document's tag.
    pub async fn write(&self, bytes: &[u8], over: Option<&Tag>) -> Result<Tag, WriteError> {
        // No replica could read it back: the document read last stays.
        if bytes.len() as u64 > MAX_BYTES {
            return Err(WriteError::Failed(format!(
                "{} would be {} bytes, more than the {MAX_BYTES} a replica reads",
                self.location,
                bytes.len()
            )));
        }
        match (&self.location, &self.s3) {
            (LastGoodLocation::File(path), _) => write_file(path, bytes, over),
            (LastGoodLocation::S3(loc), Some(client)) => {
                let put = client
                    .put_object()
                    .bucket(&loc.bucket)
                    .key(&loc.key)
                    .content_type("application/json")
                    .body(bytes.to_vec().into());
                let put = match over {
                    Some(tag) => put.if_match(&tag.0),
                    None => put.if_none_match("*"),
                };
                match put.send().await {
                    Ok(out) => Ok(Tag(out.e_tag().unwrap_or_default().to_string())),
                    // 412 Precondition Failed; 409 when another conditional write was under way.
                    Err(e)
                        if e.raw_response()
                            .is_some_and(|r| matches!(r.status().as_u16(), 409 | 412)) =>
                    {
                        Err(WriteError::Conflict(loc.to_string()))
                    }
                    Err(e) => Err(WriteError::Failed(format!(
                        "cannot write {loc}: {}",
                        common::aws::error_text(&e).text
                    ))),
                }
            }
            (LastGoodLocation::S3(loc), None) => Err(WriteError::Failed(format!(
                "cannot write {loc}: no S3 client"
            ))),
        }
    }
}

/// The file side of [`Store::write`]: replicas sharing a directory (a shared volume) take turns
/// through an exclusive lock of the directory, and each checks the file is still the one it read.
fn write_file(path: &std::path::Path, bytes: &[u8], over: Option<&Tag>) -> Result<Tag, WriteError> {
    let failed =
        |e: std::io::Error| WriteError::Failed(format!("cannot write {}: {e}", path.display()));
    let dir = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => dir.to_path_buf(),
        None => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(failed)?;
    let lock = std::fs::File::open(&dir).map_err(failed)?;
    lock.lock().map_err(failed)?;
    let now = match std::fs::read(path) {
        Ok(b) => Some(file_tag(&b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(failed(e)),
    };
    if now.as_ref() != over {
        return Err(WriteError::Conflict(path.display().to_string()));
    }
    // Only the control plane reads it: no more open than the catalog needs.
    let opts = common::files::FileOptions {
        mode: Some(0o640),
        ..Default::default()
    };
    common::files::write_atomic(path, bytes, opts).map_err(failed)?;
    Ok(file_tag(bytes))
}

/// The versions of each fragment a replica served and then replaced by another since its
/// last write of the document ([`merge`]): kept until a write lands, so that a change loaded
/// while the document could not be read or written is not lost to an older write.
pub type Replaced = BTreeMap<String, std::collections::BTreeSet<FragmentVersion>>;

/// What a replica writes: the fragments it serves, and those of the document as stored that
/// it does not serve and has not seen go away. A stored fragment is dropped only when it is
/// absent from the location (`live`) and was in this replica's previous view (`seen`: the
/// names it listed or read in the document before): one it never saw is another replica's
/// newer news, kept until this replica lists it or sees it removed. Of a fragment both hold,
/// the version uploaded last is kept ([`newer`]): a replica that has not polled since an
/// upload does not write its older version over the newer one.
///
/// But a fragment this replica has seen change live since its last write (`replaced`: the
/// versions it served before and moved away from, by name) is written as it serves it,
/// whatever its time, over a version it replaced (a rollback that makes an older version
/// current again, or a version whose source has no time). The stored version wins only when
/// it is another one, which this replica never replaced, uploaded strictly later: another
/// replica saw a newer upload than this one's change (v1, v2, v3 in quick succession; this
/// replica went from v1 to v2 while another wrote v3), so this replica does not undo it. The
/// other replicas see the same change at their next poll and write the same version.
pub fn merge(
    stored: &Fragments,
    served: &Fragments,
    live: &std::collections::BTreeSet<String>,
    seen: &std::collections::BTreeSet<String>,
    replaced: &Replaced,
) -> Fragments {
    let mut out = served.clone();
    for (name, a) in stored {
        let keep = match (out.get(name), replaced.get(name)) {
            (Some(mine), Some(before)) => {
                !before.contains(&a.version)
                    && fragments::uploaded(a.source.as_deref())
                        > fragments::uploaded(mine.source.as_deref())
            }
            (Some(mine), None) => newer(a, mine),
            (None, _) => live.contains(name) || !seen.contains(name),
        };
        if keep {
            out.insert(name.clone(), a.clone());
        }
    }
    out
}

/// Whether `a` is a later version of a fragment than `b`: uploaded later, by its source's
/// time (S3 `Last-Modified`, a file's mtime; a version whose source does not say is the
/// older); at the same time, the greater version, so that every replica picks the same one.
pub fn newer(a: &fragments::Accepted, b: &fragments::Accepted) -> bool {
    let key = |x: &fragments::Accepted| {
        (
            fragments::uploaded(x.source.as_deref()),
            x.version.clone(),
            x.source.clone(),
        )
    };
    key(a) > key(b)
}

/// The last good versions a replica's fragments fall back to: the document's (`shared`) where
/// it holds a fragment, the replica's own (what it served last) otherwise; but the replica's
/// own alone when those do not make one catalog. A document merged by a replica that knew
/// less can pair one fragment's older version with another's newer one that needs what only
/// the newer first one has; falling back to that pair would take out a fragment that did not
/// change. The replica then writes what it serves, and the others follow at their next poll.
pub fn versions(own: &Fragments, shared: Option<&Fragments>) -> Fragments {
    let mut out = own.clone();
    if let Some(shared) = shared {
        out.extend(shared.iter().map(|(n, a)| (n.clone(), a.clone())));
    }
    if fragments::fit_together(&out) {
        out
    } else {
        own.clone()
    }
}

/// The own last good versions of a replica that has served nothing yet, when the document
/// (`shared`) does not make one catalog (written by a replica that knew less, or by hand):
/// each fragment's version as read now (`now`: those that pass their own checks), the
/// document's only for the others (bad now, or no longer listed), so a fragment good now is
/// never taken out by another one's older version. When even those do not fit together, the
/// document's versions that define a name a fragment good now defines, or set another mesh,
/// are left out. When the document does make one catalog, it is the last good, as on the
/// replicas already running.
pub fn starting(now: &Fragments, shared: &Fragments) -> Fragments {
    if fragments::fit_together(shared) {
        return shared.clone();
    }
    let mut out = now.clone();
    for (name, a) in shared {
        out.entry(name.clone()).or_insert_with(|| a.clone());
    }
    if fragments::fit_together(&out) {
        return out;
    }
    out.retain(|name, a| {
        let fits = !fragments::clashes(a, now);
        now.contains_key(name) || fits
    });
    out
}

/// What the status shows of the last good catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LastGoodStatus {
    /// Where it is kept.
    pub location: String,
    /// The digest of the document last read or written.
    pub digest: Option<String>,
    /// Why it could not be read, used or written, if so.
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const WALLET: &str = "version: 1\nproxies:\n  wallet:\n    listeners:\n      - { name: web, port: 8080, protocol: http, routes: [ { match: { prefix: / }, to: wallet } ] }\nupstreams:\n  wallet: { protocol: http1, endpoints: { static: [\"10.0.0.1:80\"] } }\n";

    fn served(texts: &[(&str, &str)]) -> Fragments {
        texts
            .iter()
            .map(|(name, text)| {
                let doc = Document {
                    source: Some("ETag \"abc\"".into()),
                    ..Document::new(name.to_string(), text.as_bytes())
                };
                (
                    name.to_string(),
                    fragments::accept(&doc, &|_| Vec::new()).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn a_document_reads_back_as_the_fragments_it_was_written_from() {
        let fragments = served(&[("wallet.yaml", WALLET)]);
        let (bytes, digest) = encode("s3://config/xds/catalog.d/", &fragments).unwrap();
        // Replicas serving the same fragments write the same bytes.
        assert_eq!(
            encode("s3://config/xds/catalog.d/", &fragments).unwrap().0,
            bytes
        );
        let back = decode("s3://config/xds/catalog.d/", &bytes, &|_| Vec::new()).unwrap();
        assert_eq!(back.digest, digest);
        assert_eq!(back.fragments, fragments);
        assert!(back.skipped.is_empty());
        assert!(back.unchecked.is_empty());
    }

    #[test]
    fn corrupt_or_foreign_documents_are_refused_with_the_reason() {
        let fragments = served(&[("wallet.yaml", WALLET)]);
        let (bytes, _) = encode("s3://config/xds/catalog.d/", &fragments).unwrap();
        let no_check: Check<'_> = &|_| Vec::new();
        let foreign = decode("s3://other/catalog.d/", &bytes, no_check).unwrap_err();
        assert!(
            foreign.starts_with("written for catalog s3://config/xds/catalog.d/"),
            "{foreign}"
        );
        let cut = decode(
            "s3://config/xds/catalog.d/",
            &bytes[..bytes.len() / 2],
            no_check,
        );
        assert!(cut.unwrap_err().starts_with("not a last good catalog"));
        let text = String::from_utf8(bytes.clone()).unwrap();
        let edited = text.replace("10.0.0.1:80", "10.6.6.6:80");
        let e = decode("s3://config/xds/catalog.d/", edited.as_bytes(), no_check).unwrap_err();
        assert!(e.contains("does not match its content"), "{e}");
        let other = text.replace(FORMAT, "something else");
        let e = decode("s3://config/xds/catalog.d/", other.as_bytes(), no_check).unwrap_err();
        assert!(e.starts_with("format \"something else\""), "{e}");
    }

    #[test]
    fn replicas_that_spell_the_directory_otherwise_read_each_others_document() {
        let dir = std::env::temp_dir().join(format!("xds-last-good-spell-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("catalog.d")).unwrap();
        std::fs::create_dir_all(dir.join("x")).unwrap();
        let fragments = served(&[("wallet.yaml", WALLET)]);
        let at = |p: &str| dir.join(p).display().to_string();
        let (bytes, _) = encode(&at("catalog.d"), &fragments).unwrap();
        for other in [at("catalog.d/"), at("./catalog.d"), at("x/../catalog.d")] {
            let back = decode(&other, &bytes, &|_| Vec::new());
            assert_eq!(back.map(|d| d.fragments), Ok(fragments.clone()), "{other}");
            // And write the same bytes.
            assert_eq!(encode(&other, &fragments).unwrap().0, bytes, "{other}");
        }
        // Through a link to its parent, too.
        std::os::unix::fs::symlink(&dir, dir.join("x").join("up")).unwrap();
        assert!(decode(&at("x/up/catalog.d"), &bytes, &|_| Vec::new()).is_ok());
        // Another directory is another catalog.
        assert!(decode(&at("other.d"), &bytes, &|_| Vec::new()).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_that_is_a_release_link_keeps_its_name_when_the_link_is_switched() {
        let dir = std::env::temp_dir().join(format!("xds-last-good-rel-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for release in ["42", "43"] {
            std::fs::create_dir_all(dir.join("releases").join(release).join("catalog.d")).unwrap();
        }
        let real = std::fs::canonicalize(&dir).unwrap();
        let link = dir.join("catalog.d");
        std::os::unix::fs::symlink(dir.join("releases/42/catalog.d"), &link).unwrap();
        let fragments = served(&[("wallet.yaml", WALLET)]);
        let catalog = link.display().to_string();
        let (bytes, _) = encode(&catalog, &fragments).unwrap();
        let written: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            written["catalog"],
            real.join("catalog.d").display().to_string()
        );
        // The deploy switches the link: replicas started before and after write and read
        // one document.
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(dir.join("releases/43/catalog.d"), &link).unwrap();
        assert_eq!(encode(&catalog, &fragments).unwrap().0, bytes);
        assert!(decode(&catalog, &bytes, &|_| Vec::new()).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_missing_under_a_linked_parent_is_named_as_once_it_exists() {
        let dir = std::env::temp_dir().join(format!("xds-last-good-miss-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("volume")).unwrap();
        std::os::unix::fs::symlink(dir.join("volume"), dir.join("mnt")).unwrap();
        let catalog = dir.join("mnt/catalog.d").display().to_string();
        let missing = canonical(&catalog);
        // Also spelled with `..` through a directory that does not exist either.
        let roundabout = dir.join("mnt/gone/../catalog.d").display().to_string();
        assert_eq!(canonical(&roundabout), missing);
        std::fs::create_dir_all(dir.join("volume/catalog.d")).unwrap();
        assert_eq!(canonical(&catalog), missing);
        assert_eq!(
            missing,
            std::fs::canonicalize(dir.join("volume/catalog.d"))
                .unwrap()
                .display()
                .to_string()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_fragment_this_server_refuses_is_left_out_of_what_is_read() {
        let fragments = served(&[("wallet.yaml", WALLET)]);
        let (bytes, _) = encode("catalog.d", &fragments).unwrap();
        let refuse: Check<'_> = &|_| {
            vec![crate::catalog::CatalogError {
                path: "mesh.trust_domain".into(),
                message: "not this control plane's".into(),
                position: None,
            }]
        };
        let back = decode("catalog.d", &bytes, refuse).unwrap();
        assert!(back.fragments.is_empty());
        assert_eq!(
            back.skipped,
            ["wallet.yaml: mesh.trust_domain: not this control plane's"]
        );
        let texts = |f: &Fragments| -> Vec<(String, FragmentVersion, Arc<str>)> {
            f.iter()
                .map(|(n, a)| (n.clone(), a.version.clone(), a.text.clone()))
                .collect()
        };
        assert_eq!(texts(&back.unchecked), texts(&fragments));
    }

    #[test]
    fn a_fragment_this_version_cannot_parse_is_kept_as_text_to_write_back() {
        // Written by a newer server, which knows a field this one does not.
        let future = format!("{WALLET}future_field: {{ on: true }}\n");
        let mut stored = served(&[("wallet.yaml", WALLET)]);
        let source = Some("ETag \"f\", modified 1700000060.000000000".to_string());
        let kept = fragments::Accepted::unparsed(
            FragmentVersion::of(future.as_bytes()),
            future.as_str().into(),
            source.clone(),
        );
        stored.insert("future.yaml".into(), kept);
        let (bytes, _) = encode("catalog.d", &stored).unwrap();
        let back = decode("catalog.d", &bytes, &|_| Vec::new()).unwrap();
        assert_eq!(back.fragments.keys().collect::<Vec<_>>(), ["wallet.yaml"]);
        assert_eq!(back.skipped.len(), 1);
        assert!(
            back.skipped[0].starts_with("future.yaml: "),
            "{:?}",
            back.skipped
        );
        let future_back = &back.unchecked["future.yaml"];
        assert_eq!(&*future_back.text, future);
        assert_eq!(future_back.source, source);
        // Written again as it was read.
        let mut again = back.fragments.clone();
        again.extend(back.unchecked.clone());
        assert_eq!(encode("catalog.d", &again).unwrap().0, bytes);
    }

    #[test]
    fn a_fragment_holding_a_private_key_is_refused_and_never_written() {
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = key.serialize_pem();
        // In a comment.
        let commented: String = pem.lines().map(|l| format!("# {l}\n")).collect();
        let with_key = format!("{WALLET}{commented}");
        // Written all the same (by a fragment that got past the checks): refused.
        let mut keyed = served(&[("wallet.yaml", WALLET)]);
        if let Some(a) = keyed.get_mut("wallet.yaml") {
            a.text = with_key.as_str().into();
        }
        let e = encode("catalog.d", &keyed).unwrap_err();
        assert_eq!(
            e,
            EncodeError::PrivateKey {
                fragment: "wallet.yaml".into(),
                found: "a PEM PRIVATE KEY block".into()
            }
        );
        // In a value, JSON-escaped so that its text shows no PEM line.
        let json = |header: &str| {
            let escaped = serde_json::to_string(header)
                .unwrap()
                .replace(' ', "\\u0020");
            format!(
                r#"{{"version": 1, "proxies": {{"wallet": {{"listeners": [{{"name": "web", "port": 8080, "protocol": "http", "routes": [{{"match": {{"prefix": "/"}}, "to": "wallet", "request_headers": {{"add": {{"x-key": {escaped}}}}}}}]}}]}}}}, "upstreams": {{"wallet": {{"protocol": "http1", "endpoints": {{"static": ["10.0.0.1:80"]}}}}}}}}"#
            )
        };
        use base64ct::Encoding;
        let der = base64ct::Base64::encode_string(&key.serialize_der());
        let refused = |name: &str, text: &str| {
            let doc = Document::new(name, text.as_bytes());
            fragments::accept(&doc, &|_| Vec::new())
                .err()
                .map(|e| e.iter().map(ToString::to_string).collect::<String>())
        };
        let der_error = refused("der.json", &json(&der)).unwrap();
        assert!(
            der_error.starts_with("holds a private key (the base64 of a DER private key)"),
            "{der_error}"
        );
        assert!(!der_error.contains(&der[..20]));
        let pem_error = refused("escaped.json", &json(&pem)).unwrap();
        assert!(
            pem_error.starts_with("holds a private key (a PEM PRIVATE KEY block)"),
            "{pem_error}"
        );
        assert!(refused("comment.yaml", &with_key).is_some());
        // A mention is no key.
        let mention = format!("{WALLET}# no -----BEGIN PRIVATE KEY----- here, keys go in files\n");
        assert_eq!(refused("mention.yaml", &mention), None);
        assert_eq!(refused("shop.yaml", WALLET), None);
    }

    #[test]
    fn a_write_keeps_what_another_replica_added_and_drops_only_what_this_one_saw_removed() {
        let both = served(&[("wallet.yaml", WALLET), ("shop.yaml", WALLET)]);
        let wallet = served(&[("wallet.yaml", WALLET)]);
        let names = |n: &[&str]| {
            n.iter()
                .map(|s| s.to_string())
                .collect::<std::collections::BTreeSet<_>>()
        };
        // Another replica wrote shop.yaml, which this one has not listed yet: it stays.
        let merged = merge(
            &both,
            &wallet,
            &names(&["wallet.yaml"]),
            &names(&["wallet.yaml"]),
            &Default::default(),
        );
        assert_eq!(merged, both);
        // This replica saw shop.yaml go (listed or read before, absent now): it goes.
        let merged = merge(
            &both,
            &wallet,
            &names(&["wallet.yaml"]),
            &names(&["wallet.yaml", "shop.yaml"]),
            &Default::default(),
        );
        assert_eq!(merged, wallet);
        // Still listed, though served by none of its versions here (refused): it stays.
        let merged = merge(
            &both,
            &wallet,
            &names(&["wallet.yaml", "shop.yaml"]),
            &names(&["wallet.yaml", "shop.yaml"]),
            &Default::default(),
        );
        assert_eq!(merged, both);
    }

    /// `served`, each uploaded at `secs` (an S3 `Last-Modified`).
    fn uploaded_at(texts: &[(&str, &str)], secs: u64) -> Fragments {
        let mut out = served(texts);
        for a in out.values_mut() {
            a.source = Some(format!("ETag \"abc\", modified {secs}.000000000"));
        }
        out
    }

    #[test]
    fn of_two_versions_of_a_fragment_the_one_uploaded_last_is_written() {
        let wallet = |ip: &str| WALLET.replace("10.0.0.1", ip);
        let names = || std::collections::BTreeSet::from(["wallet.yaml".to_string()]);
        let merged = |stored: &Fragments, served: &Fragments| {
            merge(stored, served, &names(), &names(), &Default::default())["wallet.yaml"].clone()
        };
        let old = uploaded_at(&[("wallet.yaml", &wallet("10.0.0.1"))], 1_700_000_000);
        let new = uploaded_at(&[("wallet.yaml", &wallet("10.0.0.9"))], 1_700_000_060);
        // A replica that has not polled since the upload keeps the newer version stored.
        assert_eq!(merged(&new, &old), new["wallet.yaml"]);
        // One that has, writes it over the older one.
        assert_eq!(merged(&old, &new), new["wallet.yaml"]);
        // Uploaded in the same second: replicas writing at once pick the same one.
        let twin = uploaded_at(&[("wallet.yaml", &wallet("10.0.0.9"))], 1_700_000_000);
        assert_eq!(merged(&old, &twin), merged(&twin, &old));
        // Unless a replica has just seen it change live: then what it serves is the latest
        // (uploaded in the same second as the one it replaced).
        let changed = |stored: &Fragments, served: &Fragments, before: &Fragments| {
            let before = Replaced::from([(
                "wallet.yaml".to_string(),
                [before["wallet.yaml"].version.clone()].into(),
            )]);
            merge(stored, served, &names(), &names(), &before)["wallet.yaml"].clone()
        };
        let (first, second) = if newer(&old["wallet.yaml"], &twin["wallet.yaml"]) {
            (&twin, &old)
        } else {
            (&old, &twin)
        };
        assert_eq!(changed(first, second, first), second["wallet.yaml"]);
        assert_eq!(changed(second, first, second), first["wallet.yaml"]);
        // But not over another version, uploaded strictly later, which another replica saw:
        // one that went from v1 to v2 while v3 was uploaded does not undo v3.
        let v0 = uploaded_at(&[("wallet.yaml", &wallet("10.0.0.5"))], 1_699_999_000);
        assert_eq!(changed(&new, &old, &v0), new["wallet.yaml"]);
        // A version stored before sources carried a time is the older.
        let untimed = served(&[("wallet.yaml", &wallet("10.0.0.7"))]);
        assert_eq!(merged(&untimed, &old), old["wallet.yaml"]);
        assert_eq!(merged(&old, &untimed), old["wallet.yaml"]);
        // The document stays readable: the time is in the source, which it always had.
        let (bytes, _) = encode("catalog.d", &new).unwrap();
        let back = decode("catalog.d", &bytes, &|_| Vec::new()).unwrap();
        assert_eq!(
            fragments::uploaded(back.fragments["wallet.yaml"].source.as_deref()),
            Some(std::time::Duration::from_secs(1_700_000_060))
        );
    }

    #[test]
    fn a_rollback_to_an_older_version_is_written_over_the_one_it_replaced() {
        let wallet = |ip: &str| WALLET.replace("10.0.0.1", ip);
        let names = || std::collections::BTreeSet::from(["wallet.yaml".to_string()]);
        let v1 = uploaded_at(&[("wallet.yaml", &wallet("10.0.0.1"))], 1_700_000_000);
        let v2 = uploaded_at(&[("wallet.yaml", &wallet("10.0.0.2"))], 1_700_000_060);
        let went_back = Replaced::from([(
            "wallet.yaml".to_string(),
            [v2["wallet.yaml"].version.clone()].into(),
        )]);
        // The current version of a versioned bucket deleted: v1 is current again, with its old
        // Last-Modified. A replica that served v2 and now serves v1 writes v1.
        let merged = merge(&v2, &v1, &names(), &names(), &went_back);
        assert_eq!(merged["wallet.yaml"], v1["wallet.yaml"]);
        // A version whose source has no time replaces the one it was seen to replace, too.
        let untimed = served(&[("wallet.yaml", &wallet("10.0.0.3"))]);
        let merged = merge(&v2, &untimed, &names(), &names(), &went_back);
        assert_eq!(merged["wallet.yaml"], untimed["wallet.yaml"]);
    }

    /// A service's fragment: proxy `proxy` routes `/` to `to`; it defines `upstreams`.
    fn service(proxy: &str, to: &str, upstreams: &[&str]) -> String {
        let mut text = format!(
            "version: 1\nproxies:\n  {proxy}:\n    listeners:\n      - {{ name: web, port: 8080, protocol: http, routes: [ {{ match: {{ prefix: / }}, to: {to} }} ] }}\nupstreams:\n"
        );
        for u in upstreams {
            text.push_str(&format!(
                "  {u}: {{ protocol: http1, endpoints: {{ static: [\"10.0.0.1:80\"] }} }}\n"
            ));
        }
        text
    }

    #[test]
    fn an_unchanged_fragment_stays_when_a_bad_one_falls_back_after_a_replica_that_knew_less_wrote()
    {
        let names = |n: &[&str]| {
            n.iter()
                .map(|s| s.to_string())
                .collect::<std::collections::BTreeSet<_>>()
        };
        let connector_v1 = service("connector", "connector", &["connector"]);
        let connector_v2 = service("connector", "connector", &["connector", "ledger"]);
        let wallet = service("wallet", "ledger", &["wallet"]);
        let broken = connector_v2.replace("port: 8080", "port: 70000");
        // When each was uploaded.
        let secs = |t: &str| match t {
            t if t == connector_v1 => 0,
            t if t == broken => 120,
            _ => 60,
        };
        let resolve = |texts: &[(&str, &str)], last_good: &Fragments| {
            let docs: Vec<Document> = texts
                .iter()
                .map(|(n, t)| Document {
                    source: Some(format!("mtime {}.000000000", 1_700_000_000 + secs(t))),
                    ..Document::new(format!("catalog.d/{n}"), t.as_bytes())
                })
                .collect();
            fragments::resolve("catalog.d", &docs, last_good, &|_| Vec::new())
        };
        // Both replicas served connector v1; the document holds it.
        let v1 = resolve(&[("connector.yaml", &connector_v1)], &Fragments::new());
        let doc = v1.served.clone();
        // One apply: connector v2 adds `ledger`, a new wallet fragment routes to it.
        // Replica X lists both, serves both and writes them.
        let x = resolve(
            &[("connector.yaml", &connector_v2), ("wallet.yaml", &wallet)],
            &versions(&v1.served, Some(&doc)),
        );
        assert!(x.refused.is_empty(), "{:?}", x.refused);
        let live = names(&["connector.yaml", "wallet.yaml"]);
        let doc = merge(
            &doc,
            &x.served,
            &live,
            &names(&["connector.yaml"]),
            &Default::default(),
        );
        // Replica Y listed just before the apply and reads X's document just after: it serves
        // connector v1, and what it writes keeps connector v2, the newer, and wallet.yaml,
        // which it has not listed yet.
        let y = resolve(
            &[("connector.yaml", &connector_v1)],
            &versions(&v1.served, Some(&doc)),
        );
        let only_connector = names(&["connector.yaml"]);
        let written_by_y = merge(
            &doc,
            &y.served,
            &only_connector,
            &only_connector,
            &Default::default(),
        );
        assert_eq!(written_by_y, x.served);
        // A document that pairs connector v1 with wallet all the same (written by an older
        // version, whose sources carried no time): connector breaks, and wallet, which did not
        // change, stays on X, with the connector version it needs.
        let mut doc = x.served.clone();
        doc.insert(
            "connector.yaml".into(),
            fragments::Accepted {
                source: None,
                ..v1.served["connector.yaml"].clone()
            },
        );
        assert!(!fragments::fit_together(&doc));
        let now = [
            ("connector.yaml", broken.as_str()),
            ("wallet.yaml", &wallet),
        ];
        let x2 = resolve(&now, &versions(&x.served, Some(&doc)));
        assert_eq!(
            x2.refused.keys().collect::<Vec<_>>(),
            ["connector.yaml"],
            "{:?}",
            x2.refused
        );
        assert_eq!(x2.served["wallet.yaml"], x.served["wallet.yaml"]);
        assert_eq!(x2.served["connector.yaml"], x.served["connector.yaml"]);
        // What X writes then brings Y to the same catalog.
        let doc = merge(&doc, &x2.served, &live, &live, &Default::default());
        let y2 = resolve(&now, &versions(&y.served, Some(&doc)));
        assert_eq!(y2.served, x2.served);
        assert_eq!(y2.catalog, x2.catalog);
    }

    #[tokio::test]
    async fn a_document_larger_than_a_replica_reads_is_neither_read_nor_written() {
        let dir = std::env::temp_dir().join(format!("xds-last-good-big-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(DEFAULT_NAME);
        // Sparse: no disk is used for it.
        std::fs::File::create(&path)
            .unwrap()
            .set_len(MAX_BYTES + 1)
            .unwrap();
        let store = Store::new(LastGoodLocation::File(path.clone())).await;
        assert_eq!(
            store.read(None).await,
            Err(format!(
                "{} is larger than {MAX_BYTES} bytes",
                path.display()
            ))
        );
        // Nor is one written that no replica could read back.
        std::fs::remove_file(&path).unwrap();
        let big = vec![b' '; MAX_BYTES as usize + 1];
        assert_eq!(
            store.write(&big, None).await,
            Err(WriteError::Failed(format!(
                "{} would be {} bytes, more than the {MAX_BYTES} a replica reads",
                path.display(),
                big.len()
            )))
        );
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_file_is_written_over_the_version_read_only() {
        let dir = std::env::temp_dir().join(format!("xds-last-good-w-{}", std::process::id()));
        let path = dir.join(DEFAULT_NAME);
        let store = Store::new(LastGoodLocation::File(path.clone())).await;
        assert_eq!(store.read(None).await.unwrap(), Read::Absent);
        // Two replicas both saw no document: the first write wins, the second is told.
        let first = store.write(b"one", None).await.unwrap();
        assert_eq!(
            store.write(b"two", None).await,
            Err(WriteError::Conflict(path.display().to_string()))
        );
        let Read::Document(stored) = store.read(None).await.unwrap() else {
            panic!("no document");
        };
        assert_eq!(
            (stored.bytes.as_slice(), &stored.tag),
            (&b"one"[..], &first)
        );
        assert_eq!(store.read(Some(&first)).await.unwrap(), Read::Unchanged);
        // Over the version read, it is replaced; over an older one, it is not.
        let second = store.write(b"three", Some(&first)).await.unwrap();
        assert!(matches!(
            store.write(b"four", Some(&first)).await,
            Err(WriteError::Conflict(_))
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"three");
        assert_ne!(first, second);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_default_sits_beside_a_directory_or_under_a_prefix() {
        let prefix: CatalogLocation = "s3://config/xds/catalog.d/".parse().unwrap();
        assert_eq!(
            LastGoodLocation::default_for(&prefix),
            Some("s3://config/xds/catalog.d/.last-good.json".parse().unwrap())
        );
        let dir = std::env::temp_dir().join(format!("xds-last-good-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("catalog.d")).unwrap();
        let found = LastGoodLocation::default_for(&CatalogLocation::File(dir.join("catalog.d")));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(found, Some(LastGoodLocation::File(dir.join(DEFAULT_NAME))));
        let one: CatalogLocation = "s3://config/xds/catalog.yaml".parse().unwrap();
        assert_eq!(LastGoodLocation::default_for(&one), None);
    }
}
