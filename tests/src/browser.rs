//! Headless Chromium (Debian `chromium`, which `scripts/setup.sh` installs), to read a page as a
//! person's browser renders it.

use std::process::Command;

use crate::TempDir;

/// The DOM of `url` after Chromium loaded it, serialized as HTML (`--dump-dom`).
pub fn dump_dom(url: &str) -> String {
    let profile = TempDir::new("chromium");
    // A hung browser must not hang the suite: coreutils' timeout ends it (and kills it 5 s
    // later if it ignores that).
    let out = Command::new("timeout")
        .args(["--kill-after=5", "60", "chromium"])
        .args([
            "--headless",
            // Containers' /dev/shm is small; Chromium crashes on it otherwise.
            "--disable-dev-shm-usage",
            "--disable-crash-reporter",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("chromium runs (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "chromium --dump-dom {url} (exit {:?}; 124: it took over 60 s): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text a person reads in an HTML fragment: tags dropped, entities decoded.
pub fn text(html: &str) -> String {
    let tags = regex::Regex::new(r"<[^>]*>").expect("a valid pattern");
    tags.replace_all(html, " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&")
}

/// The rows of every table in `html`, each as the text of its cells.
pub fn table_rows(html: &str) -> Vec<Vec<String>> {
    let row = regex::Regex::new(r"(?s)<tr[^>]*>(.*?)</tr>").expect("a valid pattern");
    let cell = regex::Regex::new(r"(?s)<t[dh][^>]*>(.*?)</t[dh]>").expect("a valid pattern");
    row.captures_iter(html)
        .map(|r| {
            cell.captures_iter(&r[1])
                .map(|c| text(&c[1]).trim().to_string())
                .collect()
        })
        .collect()
}
