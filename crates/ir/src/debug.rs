//! The dump switch: with `SKIPGRAD_DUMP=dir` in the environment (or [`set_dump_dir`] from code),
//! every stage of a compile writes numbered files into `dir`: each graph as text, Graphviz DOT and
//! JSON (`03-fuse.txt`, `03-fuse.dot`, `03-fuse.json`), the memory plan, and every kernel's
//! Cranelift IR, register-allocated code and disassembly. Numbers follow the order stages ran in,
//! across the whole process. Files are written to a temporary name and renamed, so a reader never
//! sees half a file; a dump that cannot be written is reported once on stderr and does not stop
//! the program.

use crate::Graph;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The environment variable that names the dump directory.
pub const DUMP_ENV: &str = "SKIPGRAD_DUMP";

/// `None`: follow the environment; `Some(dir)`: set from code (`Some(None)` turns dumps off).
static OVERRIDE: Mutex<Option<Option<PathBuf>>> = Mutex::new(None);
static NEXT: AtomicUsize = AtomicUsize::new(0);
static WARNED: AtomicBool = AtomicBool::new(false);

/// Turns dumps on into `dir` (`Some`) or off (`None`) for the rest of the process, whatever the
/// environment says.
pub fn set_dump_dir(dir: Option<PathBuf>) {
    *OVERRIDE.lock().unwrap_or_else(|e| e.into_inner()) = Some(dir);
}

/// The directory dumps go to, if dumps are on.
pub fn dump_dir() -> Option<PathBuf> {
    if let Some(set) = OVERRIDE.lock().unwrap_or_else(|e| e.into_inner()).clone() {
        return set;
    }
    std::env::var_os(DUMP_ENV).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// Writes `graph` as stage `stage` (text, DOT and JSON) when dumps are on.
pub fn dump_graph(stage: &str, graph: &Graph) {
    if let Some(dir) = dump_dir() {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let base = format!("{n:02}-{}", file_name(stage));
        write(&dir, &format!("{base}.txt"), &graph.dump());
        write(&dir, &format!("{base}.dot"), &graph.to_dot());
        write(&dir, &format!("{base}.json"), &graph.to_json_string());
    }
}

/// Writes the files of one stage under one number when dumps are on. Each file is (name,
/// contents): a name starting with `.` is an extension (`NN-stage.txt`), any other name goes into a
/// directory for the stage (`NN-stage/k3_conv2d.clif`).
pub fn dump_files(stage: &str, files: &[(String, String)]) {
    if let Some(dir) = dump_dir() {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let base = format!("{n:02}-{}", file_name(stage));
        for (name, contents) in files {
            let path =
                if name.starts_with('.') { format!("{base}{name}") } else { format!("{base}/{}", file_name(name)) };
            write(&dir, &path, contents);
        }
    }
}

/// A name as a file name: letters, digits, `-`, `_` and `.` kept, anything else `_`.
fn file_name(stage: &str) -> String {
    stage.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect()
}

fn write(dir: &Path, name: &str, contents: &str) {
    let path = dir.join(name);
    let result = (|| -> std::io::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
        std::fs::write(&tmp, contents)?;
        std::fs::rename(&tmp, &path)
    })();
    if let Err(e) = result
        && !WARNED.swap(true, Ordering::SeqCst)
    {
        eprintln!("skipgrad: cannot write dump {}: {e} (further dump errors are not reported)", path.display());
    }
}
