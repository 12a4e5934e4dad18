//! Finding the USB image's partitions by label, as init needs them before anything else
//! runs: no udev, no blkid. A partition matches a label by its GPT partition name (the
//! kernel's `PARTNAME` in `/sys/class/block/*/uevent`) or by its filesystem's label (ext2/3/4
//! or FAT, read from the first bytes of the device). The data partition ships without a
//! filesystem: [`Content::Blank`] tells init it may format it.
//!
//! Pure parts ([`content`], [`parse_uevent`]) are tested on bytes; [`find`] takes the sysfs
//! and /dev directories so the tests give it a fake tree.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use super::ApplianceError;

/// What the image builder writes at the start of the data partition: "no filesystem yet,
/// format me". A partition starting with it, or with 1 MiB of zeros, is [`Content::Blank`].
pub const BLANK_MARKER: &[u8] = b"OMNICLOUD BLANK DATA PARTITION\n";

/// How many bytes of a device [`content`] looks at.
pub const HEAD_BYTES: usize = 1 << 20;

/// What a device holds, judged from its first [`HEAD_BYTES`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// ext2, ext3 or ext4 (the same superblock).
    Ext {
        label: String,
    },
    Fat {
        label: String,
    },
    /// The image's blank marker or nothing but zeros: safe to format.
    Blank,
    /// Anything else: never formatted by init.
    Unknown,
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim_end_matches(['\0', ' '])
        .to_string()
}

/// Identifies the filesystem (or its absence) from a device's first bytes.
pub fn content(head: &[u8]) -> Content {
    // ext: superblock at 1024, magic 0xEF53 at +56, volume name (16 bytes) at +120.
    if head.len() >= 1024 + 136 && head[1024 + 56..1024 + 58] == [0x53, 0xEF] {
        return Content::Ext {
            label: text(&head[1024 + 120..1024 + 136]),
        };
    }
    // FAT: boot sector signature, then the type string tells where the label sits.
    if head.len() >= 512 && head[510..512] == [0x55, 0xAA] {
        if &head[0x52..0x57] == b"FAT32" {
            return Content::Fat {
                label: text(&head[0x47..0x52]),
            };
        }
        if &head[0x36..0x39] == b"FAT" {
            return Content::Fat {
                label: text(&head[0x2B..0x36]),
            };
        }
    }
    if head.starts_with(BLANK_MARKER) || (!head.is_empty() && head.iter().all(|b| *b == 0)) {
        return Content::Blank;
    }
    Content::Unknown
}

/// A block device as sysfs describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockDev {
    /// The name under /dev (`sda3`, `nvme0n1p2`).
    pub name: String,
    /// The GPT partition name, if any.
    pub partname: Option<String>,
    pub partition: bool,
}

/// Reads a `/sys/class/block/X/uevent` file's text.
pub fn parse_uevent(text: &str) -> Option<BlockDev> {
    let mut dev = BlockDev {
        name: String::new(),
        partname: None,
        partition: false,
    };
    for line in text.lines() {
        match line.split_once('=') {
            Some(("DEVNAME", v)) => dev.name = v.to_string(),
            Some(("PARTNAME", v)) => dev.partname = Some(v.to_string()),
            Some(("DEVTYPE", v)) => dev.partition = v == "partition",
            _ => {}
        }
    }
    (!dev.name.is_empty()).then_some(dev)
}

/// Every block device in `sys_block` (`/sys/class/block`), sorted by name, without the
/// ram and loop devices.
pub fn block_devices(sys_block: &Path) -> Vec<BlockDev> {
    let mut out: Vec<BlockDev> = std::fs::read_dir(sys_block)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("uevent")).ok())
        .filter_map(|t| parse_uevent(&t))
        .filter(|d| !d.name.starts_with("ram") && !d.name.starts_with("loop"))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The first [`HEAD_BYTES`] of a device (fewer if it is smaller).
pub fn read_head(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(HEAD_BYTES);
    std::fs::File::open(path)?
        .take(HEAD_BYTES as u64)
        .read_to_end(&mut head)?;
    Ok(head)
}

/// The device path (under `dev_dir`) of the partition called `label`: GPT partition names
/// first, then filesystem labels. Devices that cannot be read are passed over.
pub fn find(label: &str, sys_block: &Path, dev_dir: &Path) -> Option<String> {
    let devices = block_devices(sys_block);
    let path = |d: &BlockDev| dev_dir.join(&d.name).display().to_string();
    if let Some(d) = devices
        .iter()
        .find(|d| d.partname.as_deref() == Some(label))
    {
        return Some(path(d));
    }
    devices.iter().map(path).find(|p| {
        matches!(
            read_head(Path::new(p)).map(|h| content(&h)),
            Ok(Content::Ext { label: l } | Content::Fat { label: l }) if l == label
        )
    })
}

/// [`find`] on the running system, polling until `timeout`: USB disks appear a while after
/// their driver loads. The error lists what was seen, for the console.
pub fn wait_for(label: &str, timeout: Duration) -> Result<String, ApplianceError> {
    let (sys, dev) = (Path::new("/sys/class/block"), Path::new("/dev"));
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = find(label, sys, dev) {
            return Ok(found);
        }
        if Instant::now() >= deadline {
            let seen: Vec<String> = block_devices(sys)
                .into_iter()
                .map(|d| match d.partname {
                    Some(p) => format!("{} ({p})", d.name),
                    None => d.name,
                })
                .collect();
            return Err(ApplianceError::NoPartition {
                label: label.to_string(),
                waited_s: timeout.as_secs(),
                seen: if seen.is_empty() {
                    "none".to_string()
                } else {
                    seen.join(", ")
                },
            });
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(label: &str) -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        b[1024 + 56] = 0x53;
        b[1024 + 57] = 0xEF;
        b[1024 + 120..1024 + 120 + label.len()].copy_from_slice(label.as_bytes());
        b
    }

    fn fat(label: &str, fat32: bool) -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        b[0] = 0xEB;
        b[510] = 0x55;
        b[511] = 0xAA;
        let padded = format!("{label:<11}");
        if fat32 {
            b[0x47..0x52].copy_from_slice(padded.as_bytes());
            b[0x52..0x5A].copy_from_slice(b"FAT32   ");
        } else {
            b[0x2B..0x36].copy_from_slice(padded.as_bytes());
            b[0x36..0x3E].copy_from_slice(b"FAT16   ");
        }
        b
    }

    #[test]
    fn filesystems_and_blank_partitions_are_told_apart() {
        assert_eq!(
            content(&ext("OMNIDATA")),
            Content::Ext {
                label: "OMNIDATA".into()
            }
        );
        assert_eq!(
            content(&fat("OMNICONFIG", false)),
            Content::Fat {
                label: "OMNICONFIG".into()
            }
        );
        assert_eq!(
            content(&fat("BOOT", true)),
            Content::Fat {
                label: "BOOT".into()
            }
        );
        let mut marked = vec![0u8; 4096];
        marked[..BLANK_MARKER.len()].copy_from_slice(BLANK_MARKER);
        assert_eq!(content(&marked), Content::Blank);
        assert_eq!(content(&[0u8; 8192]), Content::Blank);
        // Old data on a reused stick is never called blank.
        let mut old = vec![0u8; 8192];
        old[4000] = 7;
        assert_eq!(content(&old), Content::Unknown);
        assert_eq!(content(&[]), Content::Unknown);
    }

    #[test]
    fn partitions_are_found_by_gpt_name_or_filesystem_label() {
        let dir = tempfile::tempdir().unwrap();
        let (sys, dev) = (dir.path().join("sys"), dir.path().join("dev"));
        std::fs::create_dir_all(&dev).unwrap();
        let add = |name: &str, partname: Option<&str>, head: Vec<u8>| {
            let d = sys.join(name);
            std::fs::create_dir_all(&d).unwrap();
            let mut ev = format!("MAJOR=8\nDEVNAME={name}\nDEVTYPE=partition\n");
            if let Some(p) = partname {
                ev.push_str(&format!("PARTNAME={p}\n"));
            }
            std::fs::write(d.join("uevent"), ev).unwrap();
            std::fs::write(dev.join(name), head).unwrap();
        };
        add("loop0", Some("OMNIDATA"), vec![]);
        add("sda1", Some("EFI system"), fat("", true));
        add("sda2", None, fat("OMNICONFIG", false));
        add("sda3", Some("OMNIDATA"), vec![0; 100]);
        add("sdb1", None, ext("OMNIDATA"));
        let at = |n: &str| dev.join(n).display().to_string();
        assert_eq!(find("OMNICONFIG", &sys, &dev), Some(at("sda2")));
        // The GPT name wins over a filesystem label elsewhere; loop devices never count.
        assert_eq!(find("OMNIDATA", &sys, &dev), Some(at("sda3")));
        assert_eq!(find("NOPE", &sys, &dev), None);
        let names: Vec<String> = block_devices(&sys).into_iter().map(|d| d.name).collect();
        assert_eq!(names, ["sda1", "sda2", "sda3", "sdb1"]);
    }
}
