//! `IMPORT-REPORT.md`: for every App Mesh resource, each field and what became of it.

use std::fmt::Write;

/// What became of one App Mesh field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Mapped as App Mesh applied it; says where.
    Mapped(String),
    /// Mapped, with a difference; says which.
    Lossy(String),
    /// Not in the catalog; says why and what follows.
    NotMapped(String),
}

/// One field of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The App Mesh field path, e.g. `spec.httpRoute.match.headers[0]`.
    pub field: String,
    /// What became of it.
    pub outcome: Outcome,
}

/// One App Mesh resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// `virtual node`, `route`, …
    pub kind: &'static str,
    /// Its name (a route with its router: `ROUTER/ROUTE`).
    pub name: String,
    /// Its fields, in the order they were looked at.
    pub fields: Vec<Field>,
}

impl Resource {
    /// A resource with nothing recorded yet.
    pub fn new(kind: &'static str, name: impl Into<String>) -> Resource {
        Resource {
            kind,
            name: name.into(),
            fields: Vec::new(),
        }
    }

    /// Records a field mapped as App Mesh applied it.
    pub fn mapped(&mut self, field: impl Into<String>, to: impl Into<String>) {
        self.push(field, Outcome::Mapped(to.into()));
    }

    /// Records a field mapped with a difference.
    pub fn lossy(&mut self, field: impl Into<String>, why: impl Into<String>) {
        self.push(field, Outcome::Lossy(why.into()));
    }

    /// Records a field that is not in the catalog.
    pub fn not_mapped(&mut self, field: impl Into<String>, why: impl Into<String>) {
        self.push(field, Outcome::NotMapped(why.into()));
    }

    fn push(&mut self, field: impl Into<String>, outcome: Outcome) {
        self.fields.push(Field {
            field: field.into(),
            outcome,
        });
    }
}

/// The report of one import.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The mesh imported.
    pub mesh: String,
    /// The fragments written, by file name.
    pub fragments: Vec<String>,
    /// Every resource looked at, in the order they were.
    pub resources: Vec<Resource>,
    /// The resources left out because they are not ACTIVE.
    pub skipped: Vec<super::Skipped>,
    /// What the catalog loader warns of in the imported catalog (`PATH: MESSAGE`), as
    /// `xds-server validate` prints it.
    pub warnings: Vec<String>,
}

impl Report {
    /// The fields of every resource whose outcome is of the kind `pick` selects.
    pub fn count(&self, pick: fn(&Outcome) -> bool) -> usize {
        self.resources
            .iter()
            .flat_map(|r| &r.fields)
            .filter(|f| pick(&f.outcome))
            .count()
    }

    /// The report as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let mapped = self.count(|o| matches!(o, Outcome::Mapped(_)));
        let lossy = self.count(|o| matches!(o, Outcome::Lossy(_)));
        let missing = self.count(|o| matches!(o, Outcome::NotMapped(_)));
        let _ = writeln!(out, "# App Mesh import report: mesh `{}`\n", self.mesh);
        let _ = writeln!(
            out,
            "{} resources; fields mapped: {mapped}, mapped with a loss: {lossy}, not mapped: {missing}.\n",
            self.resources.len()
        );
        let _ = writeln!(out, "Fragments written: {}.\n", {
            let names: Vec<String> = self.fragments.iter().map(|f| format!("`{f}`")).collect();
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        });
        if !self.skipped.is_empty() {
            let _ = writeln!(out, "## Not imported: not ACTIVE\n");
            for s in &self.skipped {
                let _ = writeln!(
                    out,
                    "- {} `{}`: {}, left out (App Mesh serves only ACTIVE resources)",
                    s.kind, s.name, s.status
                );
            }
            out.push('\n');
        }
        if !self.warnings.is_empty() {
            let _ = writeln!(out, "## Catalog warnings\n");
            let _ = writeln!(
                out,
                "Valid, but most likely a mistake (what `xds-server validate` prints); a route that never matches here did not in App Mesh either, where routes are matched in the same order.\n"
            );
            for w in &self.warnings {
                let _ = writeln!(out, "- {w}");
            }
            out.push('\n');
        }
        if lossy + missing > 0 {
            let _ = writeln!(out, "## Needs a look\n");
            let _ = writeln!(out, "| resource | field | outcome |");
            let _ = writeln!(out, "| --- | --- | --- |");
            for r in &self.resources {
                for f in &r.fields {
                    let text = match &f.outcome {
                        Outcome::Mapped(_) => continue,
                        Outcome::Lossy(why) => format!("mapped with a loss: {why}"),
                        Outcome::NotMapped(why) => format!("**not mapped**: {why}"),
                    };
                    let _ = writeln!(
                        out,
                        "| {} `{}` | `{}` | {} |",
                        r.kind,
                        r.name,
                        f.field,
                        cell(&text)
                    );
                }
            }
            out.push('\n');
        }
        for r in &self.resources {
            let _ = writeln!(out, "## {} `{}`\n", r.kind, r.name);
            if r.fields.is_empty() {
                let _ = writeln!(out, "Nothing to map.\n");
                continue;
            }
            let _ = writeln!(out, "| field | outcome | |");
            let _ = writeln!(out, "| --- | --- | --- |");
            for f in &r.fields {
                let (outcome, text) = match &f.outcome {
                    Outcome::Mapped(to) => ("mapped", to),
                    Outcome::Lossy(why) => ("mapped with a loss", why),
                    Outcome::NotMapped(why) => ("**not mapped**", why),
                };
                let _ = writeln!(out, "| `{}` | {outcome} | {} |", f.field, cell(text));
            }
            out.push('\n');
        }
        out
    }
}

/// Text fit for a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_puts_what_needs_a_look_first() {
        let mut r = Resource::new("route", "color/tcp");
        r.mapped("spec.priority", "the route's place");
        r.not_mapped(
            "spec.tcpRoute",
            "a tcp route on a shared port | needs a port",
        );
        let report = Report {
            mesh: "color".into(),
            fragments: vec!["blue.yaml".into()],
            resources: vec![r],
            skipped: vec![super::super::Skipped {
                kind: "virtual node",
                name: "white".into(),
                status: "INACTIVE".into(),
            }],
            warnings: Vec::new(),
        };
        let md = report.to_markdown();
        assert!(md.contains("fields mapped: 1, mapped with a loss: 0, not mapped: 1"));
        let look = md.find("## Needs a look").unwrap();
        let row = md
            .find("| route `color/tcp` | `spec.tcpRoute` | **not mapped**: a tcp route on a shared port \\| needs a port |")
            .unwrap();
        assert!(look < row, "{md}");
        assert!(md.contains("| `spec.priority` | mapped | the route's place |"));
        assert!(
            md.contains(
                "- virtual node `white`: INACTIVE, left out (App Mesh serves only ACTIVE resources)"
            ),
            "{md}"
        );
    }
}
