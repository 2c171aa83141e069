//! The demo inbox as test input: which of its plates the shipped model passes is a property of
//! the model, not of the plates, so a test that needs both verdicts asks for a mixed sample
//! instead of assuming the first few plates have them.

use super::cli::{scan_command, succeeds};
use super::daemon::{files_under, sql};
use super::root;
use std::path::PathBuf;
use std::sync::OnceLock;

/// Each demo plate with the shipped model's verdict (true = usable), from one `plateqc scan`
/// of `demo/inbox` per test process.
fn verdicts() -> &'static Vec<(PathBuf, bool)> {
    static V: OnceLock<Vec<(PathBuf, bool)>> = OnceLock::new();
    V.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let (db, out) = (tmp.path().join("qc.sqlite"), tmp.path().join("out"));
        let demo = root().join("demo/inbox");
        succeeds(&mut scan_command(None, &demo, &db, &out));
        let usable: Vec<String> = sql(
            &db,
            "SELECT source_path FROM plates WHERE verdict = 'usable'",
        )
        .lines()
        .map(str::to_owned)
        .collect();
        files_under(&demo)
            .into_iter()
            .map(|f| {
                let name = f.file_name().unwrap().to_string_lossy().into_owned();
                let ok = usable.iter().any(|u| u.ends_with(&format!("/{name}")));
                (f, ok)
            })
            .collect()
    })
}

/// `n` demo plates (in name order within each verdict), usable and unusable alternating for
/// as long as both last, so any `n >= 2` holds both verdicts.
pub fn mixed(n: usize) -> Vec<PathBuf> {
    let all = verdicts();
    let pick = |want: bool| all.iter().filter(move |(_, u)| *u == want).map(|(f, _)| f);
    let (mut good, mut bad) = (pick(true), pick(false));
    assert!(
        all.iter().any(|(_, u)| *u) && all.iter().any(|(_, u)| !*u),
        "the demo inbox must hold plates of both verdicts under the shipped model"
    );
    let mut out = Vec::new();
    while out.len() < n {
        let next = if out.len() % 2 == 0 {
            good.next().or_else(|| bad.next())
        } else {
            bad.next().or_else(|| good.next())
        };
        match next {
            Some(f) => out.push(f.clone()),
            None => break,
        }
    }
    out
}
