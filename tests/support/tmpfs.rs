//! Small tmpfs mounts for the tests that fill a filesystem up (they need
//! root and mount permission, as CI has).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted for one test, unmounted when dropped.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    pub fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs to fill up, which needs root and mount \
             permission (CI runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Like [`Tmpfs::mount`], but `None` (the reason printed) where tmpfs
/// cannot be mounted, for tests that skip then.
pub fn try_mount(at: &Path, size: &str) -> Option<Tmpfs> {
    std::fs::create_dir_all(at).expect("mount point");
    match Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(at)
        .output()
    {
        Ok(out) if out.status.success() => Some(Tmpfs(at.to_owned())),
        Ok(out) => {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs (needs root and mount permission): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            None
        }
        Err(error) => {
            eprintln!("SKIPPED: cannot run mount: {error}");
            None
        }
    }
}
