//! [`ScratchFs`]: a small ext4 filesystem on a loop device whose power the test can cut.
//!
//! Why: `kill -9` leaves the kernel's page cache alone, so a server that answered before its
//! data reached the disk passes every `kill -9` test. A power cut loses everything not yet
//! synced. ext4's shutdown ioctl (`EXT4_IOC_SHUTDOWN` with `EXT4_GOING_FLAGS_NOLOGFLUSH`,
//! the "godown" of xfstests' crash tests) does that to a mounted filesystem: from that
//! instant nothing more reaches its disk (later writes and syncs fail with EIO), and what
//! was only in the page cache is gone once it is unmounted and mounted again, when ext4
//! replays its own journal as after a real power cut.
//!
//! What it does not model: a disk's volatile write cache. What reached the loop device
//! before the cut survives (the loop device writes into a file of the host), so a server
//! that wrote its data back without asking the disk to flush its cache would pass here and
//! could still lose data on real hardware. Everything that only the page cache or ext4's
//! uncommitted journal held (data not synced, file sizes, renames, new files, directory
//! entries not synced) is lost, as on a real power cut.
//!
//! It needs root, loop devices and `mkfs.ext4`. [`ScratchFs::mount`] says which is missing;
//! [`scratch_fs_or_skip`] turns that into a skipped test, or a failed one where
//! `FENCED_REQUIRE_POWER_CUT` is set (CI sets it, so the tests cannot silently not run
//! there).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `EXT4_IOC_SHUTDOWN`: `_IOR('X', 125, __u32)`.
const EXT4_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587D;
/// Shut down without flushing the data or ext4's journal: a power cut.
const EXT4_GOING_FLAGS_NOLOGFLUSH: u32 = 0x2;
/// The filesystem's size: room for a server's journal and sled files many times over.
const IMAGE_BYTES: u64 = 256 * 1024 * 1024;
/// Set in CI: a missing prerequisite fails the test instead of skipping it.
pub const REQUIRE_VAR: &str = "FENCED_REQUIRE_POWER_CUT";

/// An ext4 image mounted through a loop device in a temporary directory; unmounted (and
/// deleted) when dropped.
pub struct ScratchFs {
    image: PathBuf,
    mount_point: PathBuf,
    mounted: bool,
    /// Owns the image and the mount point.
    _dir: tempfile::TempDir,
}

impl ScratchFs {
    /// Makes and mounts a fresh filesystem, or says why it cannot here.
    pub fn mount() -> Result<ScratchFs, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("no temporary directory: {e}"))?;
        let image = dir.path().join("disk.img");
        let mount_point = dir.path().join("mnt");
        std::fs::create_dir(&mount_point).map_err(|e| format!("no mount point: {e}"))?;
        File::create(&image)
            .and_then(|file| file.set_len(IMAGE_BYTES))
            .map_err(|e| format!("cannot create the image: {e}"))?;
        run(Command::new("mkfs.ext4").arg("-q").arg("-F").arg(&image))?;
        let mut fs = ScratchFs {
            image,
            mount_point,
            mounted: false,
            _dir: dir,
        };
        fs.mount_image()?;
        Ok(fs)
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.mount_point
    }

    /// Cuts the power: nothing written from now on reaches the disk, and whatever was not
    /// synced yet is lost at the next [`ScratchFs::remount`].
    #[allow(unsafe_code)] // one ioctl, which no safe wrapper offers
    pub fn cut_power(&self) {
        let dir = File::open(&self.mount_point).expect("the mount point opens");
        let flags: u32 = EXT4_GOING_FLAGS_NOLOGFLUSH;
        // SAFETY: `dir` is an open descriptor for the whole call, and EXT4_IOC_SHUTDOWN
        // reads one u32 through the pointer, which points at `flags`, alive for the call.
        let result = unsafe { libc::ioctl(dir.as_raw_fd(), EXT4_IOC_SHUTDOWN, &flags) };
        assert_eq!(
            result,
            0,
            "EXT4_IOC_SHUTDOWN failed: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Unmounts and mounts again, as the machine coming back after the power cut. Every
    /// process using the filesystem must be gone.
    pub fn remount(&mut self) {
        self.unmount().expect("the scratch filesystem unmounts");
        self.mount_image()
            .expect("the scratch filesystem mounts again after the power cut");
    }

    fn mount_image(&mut self) -> Result<(), String> {
        run(Command::new("mount")
            .arg("-o")
            .arg("loop")
            .arg(&self.image)
            .arg(&self.mount_point))?;
        self.mounted = true;
        Ok(())
    }

    fn unmount(&mut self) -> Result<(), String> {
        if self.mounted {
            run(Command::new("umount").arg(&self.mount_point))?;
            self.mounted = false;
        }
        Ok(())
    }
}

impl Drop for ScratchFs {
    fn drop(&mut self) {
        if self.unmount().is_err() {
            // Still busy (a test failed with its server running): detach it once free.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mount_point)
                .status();
        }
    }
}

/// A mounted [`ScratchFs`]; `None` (after saying why on stderr) where this machine cannot
/// make one and `FENCED_REQUIRE_POWER_CUT` is not set.
pub fn scratch_fs_or_skip(test: &str) -> Option<ScratchFs> {
    match ScratchFs::mount() {
        Ok(fs) => Some(fs),
        Err(reason) if std::env::var_os(REQUIRE_VAR).is_some() => {
            panic!("{test}: cannot simulate a power cut here ({reason}), and {REQUIRE_VAR} is set")
        }
        Err(reason) => {
            eprintln!(
                "SKIPPED {test}: cannot simulate a power cut here ({reason}); it needs root, \
                 loop devices and mkfs.ext4. Set {REQUIRE_VAR}=1 to make this a failure."
            );
            None
        }
    }
}

/// Runs a command; its stderr on failure.
pub(crate) fn run(command: &mut Command) -> Result<(), String> {
    let output = command
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", command.get_program()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{:?} failed ({}): {}",
            command.get_program(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
