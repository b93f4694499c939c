//! [`ThinDisk`]: an ext4 filesystem whose disk a test can make fail writes, and then work
//! again, as a thin-provisioned volume does when its pool runs out of room and is grown.
//!
//! Why: after a failed writeback Linux may drop the dirty pages, report the error to one
//! `fdatasync`, and report the next one as clean although the data never reached the disk.
//! A store that keeps going after a failed sync acknowledges writes on top of that hole;
//! only a disk that fails and then recovers shows it.
//!
//! How: the filesystem's image is a sparse file on a small tmpfs, attached through a loop
//! device. Blocks the image has never had written take tmpfs pages when they are first
//! written; once [`ThinDisk::fill`] has filled the tmpfs, such writes fail in the
//! loop device, and the kernel reports them as writeback errors (`ENOSPC`), to the
//! `fdatasync` that waits for them. [`ThinDisk::grow`] frees the room again. The filesystem
//! has no journal: a failed journal write would turn it read-only for good, and this disk
//! is meant to come back. (The machine has no device-mapper, so no `dm-error`.)
//!
//! It needs root, loop devices, tmpfs and `mkfs.ext4`, like [`crate::power_cut`], and skips
//! or fails the same way ([`thin_disk_or_skip`], `FENCED_REQUIRE_POWER_CUT`).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::power_cut::{run, REQUIRE_VAR};

/// The tmpfs that holds the image: the room the "pool" has.
const POOL_BYTES: u64 = 96 * 1024 * 1024;
/// The filesystem's size, larger than the pool: the image is sparse.
const IMAGE_BYTES: u64 = 256 * 1024 * 1024;

/// A journal-less ext4 on a loop device whose image lives on a small tmpfs; unmounted (and
/// deleted) when dropped.
pub struct ThinDisk {
    /// The tmpfs mount point (the pool).
    pool: PathBuf,
    /// Where the filesystem is mounted.
    mount_point: PathBuf,
    /// The file that fills the pool, while it exists.
    filler: PathBuf,
    /// Which of the two mounts are up.
    pool_mounted: bool,
    fs_mounted: bool,
    /// Owns both mount points.
    _dir: tempfile::TempDir,
}

impl ThinDisk {
    /// Makes and mounts a fresh filesystem, or says why it cannot here.
    pub fn mount() -> Result<ThinDisk, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("no temporary directory: {e}"))?;
        let pool = dir.path().join("pool");
        let mount_point = dir.path().join("mnt");
        for path in [&pool, &mount_point] {
            std::fs::create_dir(path).map_err(|e| format!("no mount point: {e}"))?;
        }
        let mut disk = ThinDisk {
            filler: pool.join("filler"),
            pool,
            mount_point,
            pool_mounted: false,
            fs_mounted: false,
            _dir: dir,
        };
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={POOL_BYTES},huge=never"))
            .arg("tmpfs")
            .arg(&disk.pool))?;
        disk.pool_mounted = true;
        let image = disk.pool.join("disk.img");
        File::create(&image)
            .and_then(|file| file.set_len(IMAGE_BYTES))
            .map_err(|e| format!("cannot create the image: {e}"))?;
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-O", "^has_journal", "-E", "nodiscard"])
            .arg(&image))?;
        run(Command::new("mount")
            .args(["-o", "loop,errors=continue"])
            .arg(&image)
            .arg(&disk.mount_point))?;
        disk.fs_mounted = true;
        Ok(disk)
    }

    /// Where the filesystem is mounted.
    pub fn path(&self) -> &Path {
        &self.mount_point
    }

    /// Fills the pool: from then on, every write to a block the image has never held fails
    /// in the loop device. (Only a write that finds no room at all fails: one that finds a
    /// little room is cut short, and the loop device reports that as a success.)
    pub fn fill(&self) {
        let mut filler = File::create(&self.filler).expect("the filler file opens");
        let chunk = vec![0xA5u8; 1024 * 1024];
        loop {
            match filler.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling the pool failed: {e}"),
            }
        }
    }

    /// Gives the pool its room back: writes reach the disk again.
    pub fn grow(&self) {
        std::fs::remove_file(&self.filler).expect("the filler file is removed");
    }

    fn unmount(&mut self) -> Result<(), String> {
        if self.fs_mounted {
            run(Command::new("umount").arg(&self.mount_point))?;
            self.fs_mounted = false;
        }
        if self.pool_mounted {
            run(Command::new("umount").arg(&self.pool))?;
            self.pool_mounted = false;
        }
        Ok(())
    }
}

impl Drop for ThinDisk {
    fn drop(&mut self) {
        if self.unmount().is_err() {
            // Still busy (a test failed with its server running): detach both once free.
            for path in [&self.mount_point, &self.pool] {
                let _ = Command::new("umount").arg("-l").arg(path).status();
            }
        }
    }
}

/// A mounted [`ThinDisk`]; `None` (after saying why on stderr) where this machine cannot
/// make one and `FENCED_REQUIRE_POWER_CUT` is not set.
pub fn thin_disk_or_skip(test: &str) -> Option<ThinDisk> {
    match ThinDisk::mount() {
        Ok(disk) => Some(disk),
        Err(reason) if std::env::var_os(REQUIRE_VAR).is_some() => {
            panic!("{test}: cannot make a failing disk here ({reason}), and {REQUIRE_VAR} is set")
        }
        Err(reason) => {
            eprintln!(
                "SKIPPED {test}: cannot make a failing disk here ({reason}); it needs root, \
                 loop devices, tmpfs and mkfs.ext4. Set {REQUIRE_VAR}=1 to make this a failure."
            );
            None
        }
    }
}
