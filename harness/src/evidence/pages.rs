//! Host side: how much of each compared VM's guest RAM is physically shared with another process
//! (another clone, the template a shared-RAM clone maps, a pool process, or pages KSM merged).
//! Clones that share physical pages are exposed to the page-sharing side channels of the KSM
//! class (Flush+Reload across VMs, dedup timing): a reviewer must see when a method does this.
//!
//! Read from `/proc/<pid>/smaps` of each VM's QEMU process: the mapping that holds guest RAM
//! (the one the size of the VM's memory) and its `Shared_Clean`/`Shared_Dirty` counts, which are
//! the resident pages mapped by more than one process (Linux Documentation/filesystems/proc.rst,
//! "The /proc/PID/smaps"). Measured once the probes have read the VMs, not at resume: what a
//! clone shares shrinks as it writes (copy-on-write).

use super::types::{Evidence, RamPages};
use crate::clones::recipe::{Ctx, Fleet, Made};

pub(super) async fn gather(cx: &Ctx<'_>, fleet: &Fleet, made: &Made, ev: &mut Evidence) {
    let _ = cx;
    ev.pages = made
        .compared
        .iter()
        .map(|c| {
            let vm = &fleet.0[c.index];
            let Some(pid) = vm.host_pid() else {
                return Err(format!("{}: its process is not on this host (or the backend does not say which it is)", vm.name()));
            };
            let kib = u64::from(vm.machine().memory_mib) * 1024;
            let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).map_err(|e| format!("{}: /proc/{pid}/smaps: {e}", vm.name()))?;
            guest_ram(&smaps, kib).map(|mut p| {
                p.pid = pid;
                p
            }).ok_or_else(|| format!("{}: no mapping of {kib} KiB in /proc/{pid}/smaps", vm.name()))
        })
        .collect();
}

/// The guest RAM mapping in an smaps text: the mapping at least `ram_kib` and at most 8 MiB
/// larger (QEMU aligns RAM blocks), the largest resident one if there are several.
pub fn guest_ram(smaps: &str, ram_kib: u64) -> Option<RamPages> {
    let mut maps: Vec<RamPages> = Vec::new();
    for line in smaps.lines() {
        let mut w = line.split_whitespace();
        let first = w.next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            // address perms offset dev inode [path]
            let path = w.nth(4).map(|p| p.to_string()).unwrap_or_else(|| "anonymous".into());
            maps.push(RamPages { pid: 0, mapping: path, size_kib: 0, rss_kib: 0, shared_kib: 0, private_kib: 0 });
            continue;
        }
        let Some(m) = maps.last_mut() else { continue };
        let n: u64 = w.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        match first {
            "Size:" => m.size_kib = n,
            "Rss:" => m.rss_kib = n,
            "Shared_Clean:" | "Shared_Dirty:" => m.shared_kib += n,
            "Private_Clean:" | "Private_Dirty:" => m.private_kib += n,
            _ => {}
        }
    }
    maps.into_iter().filter(|m| m.size_kib >= ram_kib && m.size_kib <= ram_kib + 8192).max_by_key(|m| m.rss_kib)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_ram_mapping_and_its_shared_pages() {
        let smaps = "\
55d0c0000000-55d0c0100000 r-xp 00000000 08:01 1234 /usr/bin/qemu-system-x86_64
Size:               1024 kB
Rss:                 900 kB
Shared_Clean:        900 kB
7f0000000000-7f0010000000 rw-p 00000000 00:2a 77 /run/clonesafe/x/ram
Size:             262144 kB
Rss:               81920 kB
Shared_Clean:      79872 kB
Shared_Dirty:          0 kB
Private_Clean:         0 kB
Private_Dirty:      2048 kB
7f1000000000-7f1010000000 rw-p 00000000 00:00 0
Size:             262144 kB
Rss:                4 kB
";
        let p = guest_ram(smaps, 262144).unwrap();
        assert_eq!(p.mapping, "/run/clonesafe/x/ram");
        assert_eq!((p.rss_kib, p.shared_kib, p.private_kib), (81920, 79872, 2048));
        assert!(guest_ram(smaps, 1 << 22).is_none());
        let anon = "7f1000000000-7f1010000000 rw-p 00000000 00:00 0 \nSize: 262144 kB\nRss: 100 kB\nPrivate_Dirty: 100 kB\n";
        assert_eq!(guest_ram(anon, 262144).unwrap().mapping, "anonymous");
    }
}
