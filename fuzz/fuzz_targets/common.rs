//! Shared by the fuzz targets that need files (included with `#[path]`, not a target itself).

/// Where targets make their temporary folders: memory-backed `/dev/shm` when there is one,
/// so a run is not bound by the disk.
pub fn tmp_root() -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}
