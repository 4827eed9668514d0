//! Issue 19, item 2: no code path opens a disk image without naming its format. A guest writes
//! its own disk; a tool that format-probes that disk can be made to read a qcow2 header the guest
//! wrote, and through its backing file any host file. This reads the source (comments and test
//! modules aside) and checks every place an image is handed to qemu-img, libguestfs, QEMU or
//! libvirt.

use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The file's code before its `#[cfg(test)]` module, without `//` comments.
fn code(p: &Path) -> String {
    let s = std::fs::read_to_string(p).unwrap();
    let s = s.split("#[cfg(test)]").next().unwrap_or("");
    s.lines().map(|l| if l.trim_start().starts_with("//") { "" } else { l }).collect::<Vec<_>>().join("\n")
}

/// Statements (split at `;`) of the code that contain `needle`.
fn statements<'a>(code: &'a str, needle: &str) -> Vec<&'a str> {
    code.split(';').filter(|s| s.contains(needle)).collect()
}

#[test]
fn every_qemu_img_call_names_the_format_of_what_it_opens() {
    let text = code(&src().join("tools/qemu_img.rs"));
    let calls: Vec<&str> = text.split("qemu_img(&").skip(1).chain(text.split("vec![s(\"convert\")").skip(1)).collect();
    assert!(calls.len() >= 4, "found {} qemu-img calls; has the wrapper changed?", calls.len());
    for c in calls {
        let call = c.split(".await").next().unwrap();
        if call.contains("s(\"create\")") {
            // -f names the new overlay's format, -F its backing's.
            assert!(call.contains("s(\"-F\")") && call.contains("s(\"-f\")"), "qemu-img create without -f/-F: {call}");
        } else if call.contains("args") && !call.contains("s(\"") {
            continue; // `qemu_img(&args)`: the vector checked as its own call
        } else {
            assert!(call.contains("s(\"-f\")"), "qemu-img without -f (the input would be probed): {call}");
        }
    }
    // Elsewhere, qemu-img is only run with -f (the image check) or for its version.
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    for f in files.iter().filter(|f| !f.ends_with("tools/qemu_img.rs")) {
        for st in statements(&code(f), "\"qemu-img\"") {
            if st.contains("Command::new(\"qemu-img\")") {
                assert!(st.contains("\"-f\""), "{}: qemu-img without -f: {st}", f.display());
            }
        }
    }
}

#[test]
fn every_libguestfs_and_qemu_disk_names_its_format() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut guestfs_calls = 0;
    for f in &files {
        let c = code(f);
        // guestfish / virt-sysprep: the command and its -a are built over a few statements; the
        // `-a` must come with --format.
        for st in statements(&c, "\"-a\"") {
            guestfs_calls += 1;
            assert!(st.contains("--format"), "{}: libguestfs -a without --format: {st}", f.display());
        }
        // QEMU's -drive: every file= with format=.
        for st in c.split("format!(").filter(|s| s.starts_with("\"if=none") || s.contains(",file={")) {
            let opt = st.split(')').next().unwrap();
            assert!(opt.contains("format="), "{}: -drive without format=: {opt}", f.display());
        }
        // libvirt: every disk's driver names its type, every backing store its format.
        for st in c.split("<driver name='qemu'").skip(1) {
            assert!(st.trim_start().starts_with("type="), "{}: a libvirt disk driver without a type: {st:.80}", f.display());
        }
        for st in c.split("<backingStore>").skip(1) {
            let b = st.split("</backingStore>").next().unwrap();
            assert!(b.contains("<format type="), "{}: a libvirt backingStore without a format: {b}", f.display());
        }
    }
    assert!(guestfs_calls >= 3, "found {guestfs_calls} libguestfs calls");
}
