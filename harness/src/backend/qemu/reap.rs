//! Leftovers of a killed run on the QEMU backend: QEMU processes named `clonesafe-<pid>-...`,
//! and the swtpm of such a VM (argv[0] `swtpm:clonesafe-<pid>-...`), whose harness `<pid>` is gone. (PR_SET_PDEATHSIG normally makes them die with the harness;
//! this covers QEMUs that outlived it anyway, e.g. a harness killed between fork and prctl.)

use crate::identity::{is_stale, owner_of};

/// A clonesafe VM process found on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundVm {
    pub pid: i32,
    pub name: String,
    /// The harness process that started it.
    pub owner: u32,
}

/// Every QEMU process whose `-name` is a clonesafe name (libvirt's QEMUs included).
pub fn find_vms() -> Vec<FoundVm> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else { return out };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else { continue };
        let args: Vec<String> = cmdline.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if let Some(vm) = parse_cmdline(pid, &args) {
            out.push(vm);
        }
    }
    out
}

fn parse_cmdline(pid: i32, args: &[String]) -> Option<FoundVm> {
    // A VM's swtpm: argv[0] is `swtpm:<vm name>` (process.rs).
    if let Some(name) = args.first()?.strip_prefix(super::process::SWTPM_ARG0) {
        return Some(FoundVm { pid, name: name.to_string(), owner: owner_of(name)? });
    }
    if !args.first()?.contains("qemu-system") {
        return None;
    }
    let i = args.iter().position(|a| a == "-name")?;
    let name = args.get(i + 1)?.split(',').next()?.trim_start_matches("guest=").to_string();
    let owner = owner_of(&name)?;
    Some(FoundVm { pid, name, owner })
}

/// Kill clonesafe QEMUs whose harness is gone. Returns what was killed.
pub fn reap_stale() -> Vec<FoundVm> {
    let stale: Vec<FoundVm> = find_vms().into_iter().filter(|v| is_stale(&v.name)).collect();
    for v in &stale {
        // SAFETY: kill(2) on a pid we just read from /proc; at worst the process is gone.
        unsafe { libc::kill(v.pid, libc::SIGKILL) };
    }
    stale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_clonesafe_qemus_only() {
        let a = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            parse_cmdline(7, &a("qemu-system-x86_64 -name clonesafe-123-naive-clone1,process=x -m 1")),
            Some(FoundVm { pid: 7, name: "clonesafe-123-naive-clone1".into(), owner: 123 })
        );
        assert_eq!(parse_cmdline(7, &a("qemu-system-x86_64 -name other -m 1")), None);
        assert_eq!(parse_cmdline(7, &a("bash -name clonesafe-1-x")), None);
        assert_eq!(parse_cmdline(8, &a("swtpm:clonesafe-123-naive-clone1 socket --tpm2")), Some(FoundVm { pid: 8, name: "clonesafe-123-naive-clone1".into(), owner: 123 }));
        assert_eq!(parse_cmdline(8, &a("swtpm socket --tpm2")), None);
    }
}
