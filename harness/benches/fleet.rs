//! Host-side work that grows with the number of clones: evaluating every check over 1,000
//! clones' observations, and what the host does for each clone on the restore path before QEMU
//! runs (a fresh identity, the QEMU command line, the disk overlay).
//! Run: cargo bench -p clonesafe --bench fleet

use clonesafe::backend::snapshot::{CloneArgs, Machine, Ram};
use clonesafe::evidence::Evidence;
use clonesafe::guest::GuestProfile;
use clonesafe::identity::HostIdentity;
use clonesafe::probes::Observation;
use clonesafe_metadata::{Accel, Method, Recipe};
use clonesafe_protocol::{Disk, Identity, Nic, Sample};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

/// Observations of `n` clones as a naive restore leaves them: host identities unique, guest
/// identities (MAC, machine-id, RNG) shared, so every comparison has to look at every value.
fn observations(n: usize) -> Vec<Observation> {
    (0..n)
        .map(|i| Observation {
            vm: format!("clonesafe-1-bench-clone{i}"),
            kernel_rng: (0..6).map(|k| Sample { t_ns: k * 1_000_000, hex: format!("{:032x}", k) }).collect(),
            userspace_rng: (0..3).map(|k| Sample { t_ns: k, hex: format!("{:016x}", k + 7) }).collect(),
            identity: Some(Identity {
                nics: vec![Nic { name: "eth0".into(), mac: "52:54:00:12:34:56".into() }],
                product_uuid: Some("0b2f6d8e-5f1a-4c2b-9a57-3f0e7d4c1a20".into()),
                disks: vec![Disk { name: "vda".into(), serial: format!("CS{i:018}") }],
                machine_id: Some("2c65f51e8a0c4b7d9e1f3a5b7c9d1e3f".into()),
                hostname: Some("tiny-4a1b2c3d".into()),
                boot_id: Some("17490db2-0000-4000-8000-000000000000".into()),
                ..Default::default()
            }),
            host_mac: Some(format!("52:54:00:{:02x}:{:02x}:{:02x}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff)),
            ..Default::default()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let obs = observations(1000);
    let recipe = Recipe { method: Method::Live, fixups: vec![] };
    let ev = Evidence::of(&recipe, obs);
    let mut g = c.benchmark_group("checks");
    g.sample_size(20);
    g.bench_function("run_all_1000_clones", |b| b.iter(|| clonesafe::checks::run_all(black_box(&ev))));
    g.finish();

    let Ok(guest) = GuestProfile::locate(&clonesafe::guest::default_guests_dir(), clonesafe::guest::DEFAULT_GUEST) else {
        eprintln!("restore-path benchmarks skipped: the tiny guest is not built");
        return;
    };
    let mut machine = Machine::new(guest, 256, Accel::Tcg);
    machine.ram = Ram::Shared;
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("restore_path_per_clone");
    g.bench_function("identity_and_command_line", |b| {
        b.iter(|| {
            let args = CloneArgs::fresh(HostIdentity::fresh("clonesafe-1-bench-clone0".into()), dir.path().join("c"), &machine);
            clonesafe::backend::qemu::restore_command_line(&machine, &args, &dir.path().join("disk.qcow2"), Some(&dir.path().join("ram.mem")))
        })
    });
    // The disk overlay on the frozen disk: a qemu-img process per clone.
    let frozen = dir.path().join("frozen.qcow2");
    let made = std::process::Command::new("qemu-img").args(["create", "-q", "-f", "qcow2"]).arg(&frozen).arg("64M").status().is_ok_and(|s| s.success());
    if made {
        g.sample_size(20);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let overlay = dir.path().join("overlay.qcow2");
        g.bench_function("disk_overlay", |b| {
            b.iter(|| {
                let _ = std::fs::remove_file(&overlay);
                rt.block_on(clonesafe::tools::qemu_img::create_overlay(&frozen, "qcow2", &overlay)).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
