use clap::{Parser, Subcommand};
use clonesafe::backend::accel::AccelChoice;
use clonesafe::backend::libvirt::{LibvirtBackend, SnapshotMode};
use clonesafe::backend::lifecycle::Timeouts;
use clonesafe::backend::Backend;
use clonesafe::events::{EventSink, Fanout};
use clonesafe::report::{self, terminal};
use clonesafe::runner::{self, Backends, RunOptions};
use clonesafe_metadata::{exit_codes, BackendKind};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "clonesafe", version, about = "Settles, with evidence, whether cloning a running VM is safe",
    long_about = "clonesafe boots real guests, takes live snapshots, restores clones from them, and reads each \
clone's identity from inside the guest (MAC, SMBIOS UUID, disk serial, machine-id, boot_id, hostname, \
SSH host keys, kernel and userspace RNG output, vmgenid), what the image carries on its disks and in its \
files (file system and LVM UUIDs, LUKS volume keys, credentials, machine accounts), and from the host \
and the wire (host keys, TLS, DHCP, shared RAM pages). It then says, per identity, whether the clones \
are unique or duplicates, with the values as evidence (`clonesafe checks` lists every check).",
    after_help = exit_codes::HELP)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run scenario files and write DIR/report.json, DIR/junit.xml, DIR/report.html and
    /// DIR/events.jsonl
    #[command(after_help = exit_codes::HELP)]
    Run {
        /// Scenario files (TOML), e.g. scenarios/smoke.toml
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Where the report goes (created, and checked for writing, before any VM starts)
        #[arg(long, default_value = "clonesafe-out")]
        out: PathBuf,
        /// Run every scenario on this backend (qemu or libvirt), whatever its file says
        #[arg(long)]
        backend: Option<BackendKind>,
        /// Run every scenario on your own disk image (qcow2 or raw, booting with its own
        /// bootloader) instead of its guest. The image is never written: each VM gets an overlay.
        /// It is probed through qemu-guest-agent if it runs one (in-guest checks are skipped if
        /// not), and from the host through ssh (22) and TLS (443) if it serves them.
        #[arg(long, value_name = "PATH")]
        image: Option<PathBuf>,
        #[command(flatten)]
        image_policy: ImagePolicyArgs,
        #[command(flatten)]
        engine: EngineArgs,
        /// VMs booted or restored at once (keep it low under TCG on few cores)
        #[arg(long, default_value_t = 2)]
        jobs: usize,
        /// Scenarios run at once (scenarios that share a source run one after another, as one).
        /// Each has its own VMs, so the guests alive at once can reach parallel x (clones + 1);
        /// on 2 cores under TCG, 2 is the most that pays
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=8))]
        parallel: u16,
        /// How the libvirt backend snapshots: external (live, source keeps running) or save
        /// (suspend and clone)
        #[arg(long, value_enum, default_value_t = SnapshotMode::External)]
        libvirt_snapshot: SnapshotMode,
        /// Also write the reference form: summary.md and the plots as SVG files
        #[arg(long)]
        reference: bool,
        /// Run only shard I of N of the scenarios (e.g. 2/3), for a CI job matrix. A scenario's
        /// shard depends on its name only; the report records the shard and the whole plan's
        /// identity, and `report merge` joins the shards. An empty shard writes a valid report
        /// and exits 0
        #[arg(long, value_name = "I/N")]
        shard: Option<clonesafe::scenario::shard::ShardSpec>,
        /// The QEMU binary the QEMU backend runs instead of the system's (e.g. QEMU 10 from
        /// ci/install-qemu10.sh); the report records its version. QEMU 7.2 stays the default,
        /// and the libvirt backend always runs the system's QEMU
        #[arg(long, value_name = "PATH")]
        emulator: Option<PathBuf>,
        /// Run the scenarios on the libvirt host at this URI (e.g. qemu+ssh://host/system;
        /// implies --backend libvirt). The host need not share a filesystem with this machine:
        /// the guest's files are uploaded into a storage pool made for the run there (see
        /// --pool-dir), save images are read and rewritten through libvirt's volume streams,
        /// consoles and probes are libvirt streams, the canary scan reads the snapshot through
        /// volume streams, and the pool is removed at the end. Not offered there (refused
        /// before any VM starts): network = "segment", the recipes that edit disk files with
        /// tools on this machine (sysprep, mitigate-remanence, image-copy), and expectations on
        /// ssh_keyscan, tls_ticket_key and openssl_rng (no port is forwarded from that host)
        #[arg(long, value_name = "URI")]
        connect: Option<String>,
        /// The directory on the --connect host under which the run's pool directory is made
        /// (libvirt creates it, 0700)
        #[arg(long, value_name = "DIR", default_value = clonesafe::backend::libvirt::remote::DEFAULT_POOL_DIR, requires = "connect")]
        pool_dir: String,
    },
    /// Measure every way of making a clone side by side on this machine: cold boot, restore
    /// through the migration stream, shared-RAM restore, and shared-RAM restore from a warm
    /// pool, for each memory size (most of it dirtied by the guest first) and each fan-out.
    /// Writes DIR/bench.json, DIR/bench.md (ratios and targets) and two SVG plots. QEMU only;
    /// the tiny guest unless --guest names another built guest or --image a user's image (a
    /// Debian guest or an image is reached through qemu-guest-agent: the probe is injected after
    /// each boot, which counts as boot time, and every clone's time runs to the injected probe's
    /// answer)
    Bench {
        /// Where the results go
        #[arg(long, default_value = "clonesafe-bench")]
        out: PathBuf,
        /// Guest memory sizes in MiB, comma-separated
        #[arg(long, value_delimiter = ',', default_value = "256,1024,4096")]
        memory: Vec<u32>,
        /// Part of each guest's RAM the probe fills with non-zero data before the snapshot
        #[arg(long, default_value_t = 0.75)]
        dirty_fraction: f64,
        /// Clones resumed at once, comma-separated
        #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
        fanout: Vec<u32>,
        /// Rounds per (method, memory, fan-out)
        #[arg(long, default_value_t = 3)]
        repeat: u32,
        /// Accelerator: auto uses KVM only if a guest really boots under it, else TCG
        #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
        accel: AccelChoice,
        /// Directory of built guest images [default: $CLONESAFE_GUESTS or /var/lib/clonesafe/guests]
        #[arg(long)]
        guests: Option<PathBuf>,
        /// The built guest to measure (a directory under --guests), e.g. debian12; a Debian boot
        /// under TCG takes minutes, so give it one memory size and fan-out 1
        #[arg(long, default_value = clonesafe::guest::DEFAULT_GUEST)]
        guest: String,
        /// Measure your own disk image (qcow2 or raw, booting with its own bootloader) instead
        /// of a built guest. It must run qemu-guest-agent: the probe is injected through it and
        /// every clone is timed to the probe's answer. The image is never written
        #[arg(long, value_name = "PATH", conflicts_with = "guest")]
        image: Option<PathBuf>,
        #[command(flatten)]
        image_policy: ImagePolicyArgs,
        /// Where the private run directory (snapshots, RAM files) goes; removed after the run
        /// [default: $CLONESAFE_WORKDIR or /var/lib/clonesafe/runs]
        #[arg(long)]
        workdir: Option<PathBuf>,
        /// The QEMU binary to run instead of the system's, e.g. QEMU 10 unpacked by
        /// ci/install-qemu10.sh into /opt/clonesafe/qemu-10/usr/bin/qemu-system-x86_64; with
        /// QEMU 9.0 or later, mapped-ram (with and without multifd) is measured too
        #[arg(long, value_name = "PATH")]
        emulator: Option<PathBuf>,
    },
    /// List every built-in check: its id, what it reads and where (in the guest, on the host,
    /// from the guest's services, on the wire), which recipes or fix-ups can make it unique, and
    /// the public hazard list it comes from (virt-sysprep's operations, systemd's image docs,
    /// Firecracker's clone docs, the 2013 thread). With --scenario, also the identities those
    /// scenario files declare ([[identity]])
    Checks {
        /// Print JSON instead of a table
        #[arg(long, conflicts_with = "markdown")]
        json: bool,
        /// Print a Markdown table (docs/checks.md is this output)
        #[arg(long)]
        markdown: bool,
        /// Also list the identities this scenario file declares (repeatable); a bad
        /// declaration is exit 2 with its file, line and field
        #[arg(long, value_name = "FILE")]
        scenario: Vec<PathBuf>,
    },
    /// Inspect libvirt save images (virsh save, external memory snapshots)
    SaveImage {
        #[command(subcommand)]
        cmd: SaveImageCmd,
    },
    /// The report contract
    Report {
        #[command(subcommand)]
        cmd: ReportCmd,
    },
    /// The reviewer's answer for one image: run a fixed suite on it (cold-boot baseline,
    /// image-clone, image-clone-sysprep, naive, full, and the strongest recipe: full + rng-gate +
    /// clock), then write the usual report plus assessment.md: what the image itself ships (shared
    /// by fresh boots), what each recipe still leaves shared by cloning, grouped by severity, with
    /// its cost, and conclusions that name the cells they rest on. Exit 0 when everything ran (2
    /// if something could not), or with --fail-on, 1 when --recipe leaves an identity of that
    /// severity or worse shared
    #[command(after_help = exit_codes::HELP)]
    Assess {
        /// The disk image to assess (qcow2 or raw, booting with its own bootloader; never written)
        #[arg(long, value_name = "PATH", required_unless_present_any = ["guest", "from"], conflicts_with_all = ["guest", "from"])]
        image: Option<PathBuf>,
        /// Run nothing: draw the assessment again from the report.json of an earlier assess
        /// (to judge it with another --fail-on or --recipe, or with a newer clonesafe's rules)
        #[arg(long, value_name = "REPORT", conflicts_with = "guest")]
        from: Option<PathBuf>,
        /// Or a built guest (tiny, debian12, debian13, debian13-bpo, debian12-apps)
        #[arg(long, value_name = "NAME")]
        guest: Option<String>,
        #[command(flatten)]
        image_policy: ImagePolicyArgs,
        /// A file of [[identity]] tables: your own identities, checked in every recipe
        #[arg(long, value_name = "FILE")]
        identities: Option<PathBuf>,
        #[arg(long, default_value = "clonesafe-assess")]
        out: PathBuf,
        #[arg(long)]
        backend: Option<BackendKind>,
        /// VMs compared per recipe
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(2..=16))]
        clones: u32,
        /// Exit 1 when --recipe leaves an identity of this severity or worse shared:
        /// key-reuse, network-collision, identity-confusion or informational
        #[arg(long, value_name = "SEVERITY")]
        fail_on: Option<clonesafe_metadata::Severity>,
        /// The suite's recipe --fail-on judges (a scenario name of the suite)
        #[arg(long, default_value = clonesafe::assess::DEFAULT_RECIPE, value_parser = clonesafe::assess::SUITE.iter().map(|s| s.0).collect::<Vec<_>>())]
        recipe: String,
        #[command(flatten)]
        engine: EngineArgs,
        /// Recipes run at once (2 pays on 2 cores under TCG)
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=8))]
        parallel: u16,
        /// Assess on the libvirt host at this URI (implies --backend libvirt; see `run
        /// --connect`). The image-clone recipes copy and sysprep disk files on this machine, so
        /// they are not run there: the assessment lists them as not run, with the reason
        #[arg(long, value_name = "URI", conflicts_with = "from")]
        connect: Option<String>,
        /// The directory on the --connect host under which the run's pool directory is made
        #[arg(long, value_name = "DIR", default_value = clonesafe::backend::libvirt::remote::DEFAULT_POOL_DIR, requires = "connect")]
        pool_dir: String,
    },
    /// Report what this machine offers: QEMU, KVM, libvirtd, built guests; or, with --image,
    /// what a user's image holds (its OS, qemu-guest-agent, sshd), read offline
    Doctor {
        /// Boot a trial guest under KVM now (otherwise a cached result is shown)
        #[arg(long)]
        trial_boot: bool,
        /// Inspect this disk image (read-only, nothing booted) instead of the machine
        #[arg(long, value_name = "PATH")]
        image: Option<PathBuf>,
        #[command(flatten)]
        image_policy: ImagePolicyArgs,
        /// Ask the libvirt host at this URI what it offers instead (e.g. qemu+ssh://host/system,
        /// or qemu+tcp://127.0.0.1/system after ci/start-libvirt.sh --tcp-loopback): its
        /// versions, KVM, storage pools and free space, and whether the connection is encrypted
        #[arg(long, value_name = "URI", conflicts_with = "image")]
        connect: Option<String>,
        #[arg(long)]
        guests: Option<PathBuf>,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
}

/// How VMs are run: the options `run` and `assess` share.
#[derive(clap::Args)]
struct EngineArgs {
    /// Accelerator: auto uses KVM only if a guest really boots under it, else TCG
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    accel: AccelChoice,
    /// Directory of built guest images [default: $CLONESAFE_GUESTS or /var/lib/clonesafe/guests]
    #[arg(long)]
    guests: Option<PathBuf>,
    /// Where private run directories (snapshots, overlays) go; removed after the run
    /// [default: $CLONESAFE_WORKDIR or /var/lib/clonesafe/runs]
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Seconds a guest may take to boot before the run fails, showing its console
    #[arg(long, default_value_t = 240)]
    boot_timeout: u64,
    /// The static probe injected into guests that offer qemu-guest-agent
    /// [default: $CLONESAFE_PROBE or /var/lib/clonesafe/probe/clonesafe-probe]
    #[arg(long)]
    probe: Option<PathBuf>,
    /// Boot a source for every scenario. By default scenarios whose sources would be booted
    /// identically (same guest or image, backend, memory, devices, kernel arguments, network)
    /// share one: each reuses its snapshot, or takes a derived one after its recipe's changes
    /// (nic-replug), and each report says which source it used (docs/fast-clones.md)
    #[arg(long)]
    no_share: bool,
}

impl EngineArgs {
    /// How a run is made, from these and the rest of a command's choices.
    fn options(self, jobs: usize, parallel: u16, out: &std::path::Path, shard: Option<clonesafe_metadata::Shard>, image_policy: ImagePolicyArgs) -> RunOptions {
        RunOptions {
            probe: self.probe.unwrap_or_else(clonesafe::guest::default_probe),
            accel: self.accel,
            jobs,
            parallel: parallel.into(),
            guests_dir: self.guests.unwrap_or_else(clonesafe::guest::default_guests_dir),
            work_root: self.workdir.unwrap_or_else(clonesafe::secrets::default_work_root),
            timeouts: Timeouts { boot: std::time::Duration::from_secs(self.boot_timeout), ..Timeouts::default() },
            shard,
            captures: Some(out.join("captures")),
            image_policy: image_policy.policy(),
            share: !self.no_share,
        }
    }
}

/// What a user's image may be: checked before anything opens it (docs/trust-model.md).
#[derive(clap::Args)]
struct ImagePolicyArgs {
    /// The format of the user's image (--image, or a scenario's image =): qcow2 or raw. Without
    /// it, the name says: .qcow2 is qcow2, .raw and .img are raw, anything else is refused.
    /// clonesafe never guesses a format from an image's bytes (a raw disk's first sector is
    /// the guest's to write)
    #[arg(long, value_name = "FORMAT", value_parser = ["qcow2", "raw"])]
    image_format: Option<String>,
    /// Let the user's image use this file as a backing file (repeat it for each link of a
    /// chain). Off by default: an image's backing chain is chosen by whoever made the image,
    /// and QEMU would hand its VMs any host file it names. json: and network backings are
    /// always refused
    #[arg(long, value_name = "FILE")]
    allow_backing: Vec<PathBuf>,
}

impl ImagePolicyArgs {
    fn policy(self) -> clonesafe::guest::image::ImagePolicy {
        clonesafe::guest::image::ImagePolicy { format: self.image_format, allow_backing: self.allow_backing }
    }
}

#[derive(Subcommand)]
enum SaveImageCmd {
    /// Print the header, the XML and cookie sizes, the stream offset, and the domain's name,
    /// UUID, MACs and genid. Exit 2 if the file is not a valid save image.
    Show {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ReportCmd {
    /// Print the JSON Schema (draft 2020-12) of report.json, generated from the report types
    Schema,
    /// Write the people's forms of a report.json again (report.html, junit.xml, and with
    /// --reference summary.md and the plots) into DIR, e.g. after an upgrade changed how they
    /// render. The verdicts are the file's; nothing is run. Exit 2 on unreadable input
    Render {
        report: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Also write summary.md and the plots as SVG files
        #[arg(long)]
        reference: bool,
    },
    /// List the verdicts that differ between two report.json files, per scenario and check.
    /// Exit 0 when every verdict is the same, 1 when some differ, 2 on unreadable input.
    Diff {
        old: PathBuf,
        new: PathBuf,
        /// Also write the differences as an HTML page to FILE (regressions first: an identity
        /// that became shared); FILE is replaced, never written through a link
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
    },
    /// The race-window table of several runs (e.g. one per QEMU, ci/windows.sh): one row per
    /// kernel x VMM x recipe, pooling repeated scenarios, with per clone how long its kernel
    /// getrandom, glibc (vDSO) getrandom and random uuid stayed equal to another clone's, when
    /// NEW_VMGENID came, what VMClock showed, and the gate's cost. Writes DIR/race-windows.md and
    /// DIR/race-windows.svg. Nothing is run. Exit 2 on unreadable input
    Windows {
        /// report.json files
        #[arg(required = true)]
        reports: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Merge the reports of `run --shard I/N` (one directory each) into the report one run of
    /// the whole plan would have written: report.json, junit.xml, report.html (and with
    /// --reference summary.md and plots). Exit 2 for shards of different plans, overlapping or
    /// missing shards (unless --allow-partial); otherwise the exit code the merged run has
    #[command(after_help = exit_codes::HELP)]
    Merge {
        /// Directories holding each shard's report.json
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        /// Also write summary.md and the plots as SVG files
        #[arg(long)]
        reference: bool,
        /// Merge what is there, and say in the report which shards and scenarios are missing
        #[arg(long)]
        allow_partial: bool,
    },
}

/// Run `plan` into `out` (the report files written as the run ends), with progress on the
/// terminal and `extra` events (assess's time left); the report, or the exit code to give.
async fn execute(plan: &clonesafe::scenario::Plan, out: &std::path::Path, reference: bool, opts: RunOptions, backends: &CliBackends, extra: Option<&dyn EventSink>) -> Result<clonesafe_metadata::Report, i32> {
    let files_out = match report::Files::create(out, reference) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: cannot write the report into {}: {e}", out.display());
            return Err(exit_codes::HARNESS_ERROR);
        }
    };
    let progress = terminal::Progress::new();
    let mut all: Vec<&dyn EventSink> = vec![&progress, &files_out];
    all.extend(extra);
    let sinks = Fanout(all);
    let r = runner::run_plan(plan, &opts, backends, &sinks).await;
    progress.finish();
    let report = match r {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {}", clonesafe::error_chain(&e));
            return Err(exit_codes::HARNESS_ERROR);
        }
    };
    match files_out.written() {
        Some(Ok(files)) => {
            for p in files {
                println!("wrote {}", p.display());
            }
        }
        Some(Err(e)) => {
            eprintln!("error: cannot write the report into {}: {e}", out.display());
            return Err(exit_codes::HARNESS_ERROR);
        }
        None => {
            eprintln!("error: the run ended without a report");
            return Err(exit_codes::HARNESS_ERROR);
        }
    }
    Ok(report)
}

/// assess's progress: after each recipe, how many are done and, from how long the finished
/// ones took, about how long the rest will take.
struct TimeLeft {
    total: usize,
    parallel: usize,
    done: std::sync::Mutex<Vec<u64>>,
}

impl TimeLeft {
    fn new(total: usize, parallel: usize) -> Self {
        TimeLeft { total, parallel: parallel.max(1), done: Default::default() }
    }
}

impl EventSink for TimeLeft {
    fn emit(&self, e: clonesafe::events::Event) {
        if let clonesafe::events::EventKind::ScenarioFinished { report } = &e.kind {
            let mut d = self.done.lock().unwrap_or_else(|p| p.into_inner());
            d.push(report.duration_ms);
            let mean = d.iter().sum::<u64>() / d.len() as u64;
            let left = (self.total - d.len().min(self.total)).div_ceil(self.parallel) as u64 * mean / 1000;
            eprintln!("assess: {}/{} recipes done; about {} min {} s left (from the ones measured so far)", d.len(), self.total, left / 60, left % 60);
        }
    }
}

struct CliBackends {
    libvirt_mode: SnapshotMode,
    /// `--connect URI` and `--pool-dir`: libvirt on a host reached through its storage API.
    remote: Option<(String, String)>,
}

impl Backends for CliBackends {
    fn get(&self, kind: BackendKind) -> Result<Arc<dyn Backend>, Box<dyn std::error::Error + Send + Sync>> {
        match kind {
            BackendKind::Qemu => Ok(Arc::new(clonesafe::backend::qemu::QemuBackend)),
            BackendKind::Libvirt => {
                if clonesafe::backend::emulator::is_private() {
                    return Err(format!(
                        "--emulator {} is a QEMU in a private prefix, which libvirtd cannot run (it needs the firmware beside it); the libvirt backend runs the system's QEMU: drop --emulator for libvirt scenarios",
                        clonesafe::backend::emulator::qemu_binary().display()
                    )
                    .into());
                }
                if let Some((uri, pool_dir)) = &self.remote {
                    let b = LibvirtBackend::connect_remote(uri, self.libvirt_mode, pool_dir)
                        .map_err(|e| format!("cannot use the libvirt host {uri} (storage pool under {pool_dir}): {e} (`clonesafe doctor --connect {uri}` says what it offers)"))?;
                    return Ok(Arc::new(b));
                }
                let b = LibvirtBackend::connect(clonesafe::backend::libvirt::DEFAULT_URI, self.libvirt_mode)
                    .map_err(|e| format!("cannot connect to {}: {e} (is libvirtd running? ci/start-libvirt.sh starts it)", clonesafe::backend::libvirt::DEFAULT_URI))?;
                Ok(Arc::new(b))
            }
        }
    }
}

fn save_image_show(file: &std::path::Path, json: bool) -> i32 {
    use clonesafe::backend::libvirt::save_image::{DomainSummary, SaveImage};
    let img = match SaveImage::read(file) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {}: {}", file.display(), clonesafe::error_chain(&e));
            return exit_codes::HARNESS_ERROR;
        }
    };
    let d = match DomainSummary::of(&img.xml) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            return exit_codes::HARNESS_ERROR;
        }
    };
    let stream = match clonesafe::backend::libvirt::save_image::check_stream(file, &img) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {}: {}", file.display(), clonesafe::error_chain(&e));
            return exit_codes::HARNESS_ERROR;
        }
    };
    let h = &img.header;
    let v = serde_json::json!({
        "version": h.version,
        "data_len": h.data_len,
        "was_running": h.was_running,
        "compressed": h.compressed,
        "cookie_offset": h.cookie_offset,
        "xml_len": img.xml.len(),
        "cookie_len": img.cookie.as_ref().map(|c| c.len()),
        "stream_offset": img.stream_offset(),
        "name": d.name,
        "uuid": d.uuid,
        "macs": d.macs,
        "genid": d.genid,
        "stream_len": stream.stream_len,
        "stream_ends_with": stream.ends_with,
        "stream_unchecked": stream.unchecked,
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        for (k, val) in v.as_object().into_iter().flatten() {
            println!("{k:<14} {}", clonesafe::text::for_terminal(&match val { serde_json::Value::String(s) => s.clone(), o => o.to_string() }));
        }
    }
    exit_codes::OK
}

fn report_merge(dirs: &[PathBuf], out: &std::path::Path, reference: bool, allow_partial: bool) -> i32 {
    let mut shards = Vec::new();
    for d in dirs {
        let p = d.join("report.json");
        match read_json::<clonesafe_metadata::Report>(&p, "a clonesafe report") {
            Ok(r) => shards.push((p, r)),
            Err(e) => {
                eprintln!("error: {e}");
                return exit_codes::HARNESS_ERROR;
            }
        }
    }
    let merged = match report::merge::merge(shards, allow_partial) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {}", clonesafe::text::for_terminal(&e.to_string()));
            return exit_codes::HARNESS_ERROR;
        }
    };
    let written = if reference { report::write_reference(&merged, out) } else { report::write_all(&merged, out) };
    if let Err(e) = written {
        eprintln!("error: cannot write the merged report into {}: {e}", out.display());
        return exit_codes::HARNESS_ERROR;
    }
    if let Some(s) = &merged.shard {
        eprintln!("partial merge: shard(s) {:?} of {} missing; scenarios not reported: {}", s.missing_shards, s.count, clonesafe::text::for_terminal(&s.missing_scenarios.join(", ")));
    }
    let passed = merged.scenarios.iter().filter(|s| s.passed()).count();
    println!("merged {} shard(s): {} scenario(s), {passed} passed, into {}", dirs.len(), merged.scenarios.len(), out.display());
    merged.exit_code()
}

/// A report file given on the command line, read like every user input (a regular file, bounded:
/// docs/trust-model.md says so of reports too) and parsed as `what`.
fn read_json<T: serde::de::DeserializeOwned>(p: &std::path::Path, what: &str) -> Result<T, String> {
    /// A report of thousands of scenarios is a few tens of MB.
    const MAX_REPORT_BYTES: u64 = 256 << 20;
    let text = clonesafe::input::read_text(p, MAX_REPORT_BYTES).map_err(|e| format!("{}: {e}", p.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: not {what}: {e}", p.display()))
}

fn report_windows(paths: &[PathBuf], out: &std::path::Path) -> i32 {
    let mut reports = Vec::new();
    for p in paths {
        match read_json::<clonesafe_metadata::Report>(p, "a clonesafe report") {
            Ok(r) => reports.push(r),
            Err(e) => {
                eprintln!("error: {}", clonesafe::text::for_terminal(&e));
                return exit_codes::HARNESS_ERROR;
            }
        }
    }
    let cells = report::race::cells(&reports);
    let sources: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let md = report::race::page(&sources, &cells);
    let mut written = vec![std::fs::create_dir_all(out).and_then(|_| clonesafe::output::write_atomic(out, "race-windows.md", md.as_bytes()))];
    match report::race::plot(&cells) {
        Ok(svg) => written.push(clonesafe::output::write_atomic(out, "race-windows.svg", svg.as_bytes())),
        Err(e) => eprintln!("note: no plot: {e}"),
    }
    for w in written {
        match w {
            Ok(p) => println!("wrote {}", p.display()),
            Err(e) => {
                eprintln!("error: cannot write into {}: {e}", out.display());
                return exit_codes::HARNESS_ERROR;
            }
        }
    }
    exit_codes::OK
}

fn report_diff(old: &std::path::Path, new: &std::path::Path, html: Option<&std::path::Path>) -> i32 {
    let read = |p: &std::path::Path| read_json::<serde_json::Value>(p, "JSON");
    let (a, b) = match (read(old), read(new)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return exit_codes::HARNESS_ERROR;
        }
    };
    if let Some(path) = html {
        let page = match report::diff::changes(&a, &b) {
            Ok(c) => report::diff::html(&c, &old.display().to_string(), &new.display().to_string(), report::diff::count(&a)),
            Err(e) => {
                eprintln!("error: not a clonesafe report: {e}");
                return exit_codes::HARNESS_ERROR;
            }
        };
        // Written beside, then renamed into place: never through a link (output.rs).
        let (dir, name) = (path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new(".")), path.file_name().and_then(|n| n.to_str()).unwrap_or(""));
        let written = if name.is_empty() {
            Err(std::io::Error::other("--html needs a file name"))
        } else {
            clonesafe::output::write_atomic(dir, name, page.as_bytes()).map(drop)
        };
        if let Err(e) = written {
            eprintln!("error: cannot write {}: {e}", path.display());
            return exit_codes::HARNESS_ERROR;
        }
        eprintln!("wrote {}", path.display());
    }
    match report::diff::diff(&a, &b) {
        Err(e) => {
            eprintln!("error: not a clonesafe report: {e}");
            exit_codes::HARNESS_ERROR
        }
        Ok(d) if d.is_empty() => {
            println!("same verdicts: {} (scenario, check) rows", report::diff::count(&a));
            exit_codes::OK
        }
        Ok(d) => {
            // Both files' names and values can carry what a guest said (issue 19, item 8). A
            // reader that goes away (`| head`) ends the listing, not the process with a panic.
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            for line in &d {
                if writeln!(out, "{}", clonesafe::text::for_terminal(line)).is_err() {
                    return exit_codes::EXPECTATION_FAILED;
                }
            }
            drop(out);
            println!("{} verdict(s) differ", d.len());
            exit_codes::EXPECTATION_FAILED
        }
    }
}

/// `--emulator`: choose that QEMU before any VM starts; false (said on stderr) if it is unusable.
fn choose_emulator(path: Option<&std::path::Path>) -> bool {
    let Some(p) = path else { return true };
    match clonesafe::backend::emulator::choose(p) {
        Ok(v) => {
            eprintln!("emulator: {} ({v})", p.display());
            true
        }
        Err(e) => {
            eprintln!("error: {e}");
            false
        }
    }
}

struct StderrProgress;

impl clonesafe::bench::Progress for StderrProgress {
    fn step(&self, line: &str) {
        eprintln!("bench {line}");
    }
}

#[allow(clippy::too_many_arguments)]
#[allow(clippy::too_many_arguments)]
async fn bench(out: PathBuf, memory: Vec<u32>, dirty_fraction: f64, fanout: Vec<u32>, repeat: u32, accel: AccelChoice, guest: clonesafe::guest::GuestProfile, workdir: Option<PathBuf>) -> i32 {
    use clonesafe::bench;
    if let Err(e) = bench::check_params(&memory, dirty_fraction, &fanout, repeat) {
        eprintln!("error: {e}");
        return exit_codes::HARNESS_ERROR;
    }
    // A guest reached through qemu-guest-agent is measured to the injected probe's answer: no
    // probe, nothing to measure.
    let inject = if guest.agent == clonesafe::guest::AgentTransport::Qga {
        match clonesafe::agent::Injected::load(&clonesafe::guest::default_probe()) {
            Ok((files, notes)) => {
                notes.iter().for_each(|n| eprintln!("note: {n}"));
                Some(std::sync::Arc::new(files))
            }
            Err(why) => {
                eprintln!("error: guest {:?} is reached through qemu-guest-agent and the bench times clones to the probe's answer, but there is {why} (bash ci/setup.sh builds it)", guest.name);
                return exit_codes::HARNESS_ERROR;
            }
        }
    } else {
        None
    };
    // The output directory is checked before any VM starts.
    if let Err(e) = std::fs::create_dir_all(&out).and_then(|_| tempfile::tempfile_in(&out).map(|_| ())) {
        eprintln!("error: cannot write into {}: {e}", out.display());
        return exit_codes::HARNESS_ERROR;
    }
    let root = workdir.unwrap_or_else(clonesafe::secrets::default_work_root);
    if let Err(e) = std::fs::create_dir_all(&root) {
        eprintln!("error: cannot create {}: {e}", root.display());
        return exit_codes::HARNESS_ERROR;
    }
    for line in clonesafe::secrets::reap_stale_run_dirs(&root) {
        eprintln!("{line}");
    }
    let backend = clonesafe::backend::qemu::QemuBackend;
    for line in backend.reap_stale() {
        eprintln!("{line}");
    }
    let work = match clonesafe::secrets::run_dir(&root) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: cannot create a run directory in {}: {e}", root.display());
            return exit_codes::HARNESS_ERROR;
        }
    };
    let decision = clonesafe::backend::accel::resolve(accel, &backend, &guest, work.path()).await;
    eprintln!("bench: accelerator {} ({})", decision.accel.as_str(), decision.reason);
    let opts = bench::BenchOptions {
        memory,
        dirty_fraction,
        fanout,
        repeat,
        accel: decision.accel,
        accel_reason: decision.reason,
        guest,
        inject,
        work: work.path().to_path_buf(),
        timeouts: Timeouts::default(),
    };
    let r = bench::run(&backend, &opts, &StderrProgress).await;
    drop(work);
    let report = match r {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {}", clonesafe::error_chain(&e));
            return exit_codes::HARNESS_ERROR;
        }
    };
    match bench::output::write(&report, &out) {
        Ok((files, notes)) => {
            for n in notes {
                eprintln!("note: {n}");
            }
            for f in files {
                println!("wrote {}", f.display());
            }
        }
        Err(e) => {
            eprintln!("error: cannot write into {}: {e}", out.display());
            return exit_codes::HARNESS_ERROR;
        }
    }
    for t in bench::output::targets(&report) {
        let met = match t.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "-",
        };
        println!("{met:<6} {}: {}", t.what, t.measured);
    }
    exit_codes::OK
}

use std::time::Duration;

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let code = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
        tokio::select! {
            code = dispatch(cli) => code,
            // Dropping the command's future drops every VM (QEMU is killed on drop) and the run
            // directory (snapshots are deleted).
            _ = tokio::signal::ctrl_c() => { eprintln!("\ninterrupted: tearing down every VM of this run"); exit_codes::INTERRUPTED }
            _ = term.recv() => { eprintln!("\nterminated: tearing down every VM of this run"); exit_codes::TERMINATED }
        }
    });
    // A libvirt call in flight when the run's future was dropped (Ctrl-C during a restore) can
    // still create its domain: wait for such calls and remove what they made.
    for line in clonesafe::backend::libvirt::sweep_own_domains(Duration::from_secs(60)) {
        eprintln!("{line}");
    }
    // Not `drop(rt)`: that waits for every blocking task, and one may be stuck in a call that
    // never returns (issue 19, item 9: `doctor --connect` to an endpoint that accepts and never
    // answers said "no answer within 20 s" and then never exited). Libvirt calls that could
    // still create a domain were waited for just above.
    rt.shutdown_timeout(Duration::from_secs(2));
    std::process::exit(code);
}

async fn dispatch(cli: Cli) -> i32 {
    match cli.cmd {
        Cmd::SaveImage { cmd: SaveImageCmd::Show { file, json } } => save_image_show(&file, json),
        Cmd::Checks { json, markdown, scenario } => {
            use std::io::Write;
            let mut all = clonesafe::checks::catalogue::built_in();
            if !scenario.is_empty() {
                match clonesafe::scenario::load_plan(&scenario) {
                    Ok(plan) => all.extend(clonesafe::checks::catalogue::declared(&plan)),
                    Err(e) => {
                        eprintln!("error: {}", clonesafe::text::for_terminal(&e.to_string()));
                        return exit_codes::HARNESS_ERROR;
                    }
                }
            }
            let text = if json {
                serde_json::to_string_pretty(&all).expect("the catalogue serializes") + "\n"
            } else if markdown {
                clonesafe::checks::catalogue::markdown(&all)
            } else {
                clonesafe::checks::catalogue::render(&all)
            };
            let _ = std::io::stdout().write_all(text.as_bytes());
            exit_codes::OK
        }
        Cmd::Report { cmd: ReportCmd::Schema } => {
            use std::io::Write;
            // `| head` closes the pipe early: that is no error of ours.
            let _ = writeln!(std::io::stdout(), "{}", serde_json::to_string_pretty(&clonesafe_metadata::schema()).expect("schema serializes"));
            exit_codes::OK
        }
        Cmd::Report { cmd: ReportCmd::Diff { old, new, html } } => report_diff(&old, &new, html.as_deref()),
        Cmd::Report { cmd: ReportCmd::Render { report, out, reference } } => {
            let r = match read_json::<clonesafe_metadata::Report>(&report, "a clonesafe report") {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {}", clonesafe::text::for_terminal(&e));
                    return exit_codes::HARNESS_ERROR;
                }
            };
            let written = if reference { report::write_reference(&r, &out) } else { report::write_all(&r, &out) };
            match written {
                Ok(files) => {
                    for f in files {
                        println!("wrote {}", f.display());
                    }
                    exit_codes::OK
                }
                Err(e) => {
                    eprintln!("error: cannot write into {}: {e}", out.display());
                    exit_codes::HARNESS_ERROR
                }
            }
        }
        Cmd::Report { cmd: ReportCmd::Merge { dirs, out, reference, allow_partial } } => report_merge(&dirs, &out, reference, allow_partial),
        Cmd::Report { cmd: ReportCmd::Windows { reports, out } } => report_windows(&reports, &out),
        Cmd::Run { files, out, backend, image, image_policy, engine, jobs, parallel, libvirt_snapshot, reference, shard, emulator, connect, pool_dir } => {
            if !choose_emulator(emulator.as_deref()) {
                return exit_codes::HARNESS_ERROR;
            }
            if connect.is_some() {
                if let Err(e) = clonesafe::backend::libvirt::remote::check_pool_dir(&pool_dir) {
                    eprintln!("error: {e}");
                    return exit_codes::HARNESS_ERROR;
                }
            }
            if connect.is_some() && backend == Some(BackendKind::Qemu) {
                eprintln!("error: --connect is for the libvirt backend (it names a libvirt host); drop --backend qemu or --connect");
                return exit_codes::HARNESS_ERROR;
            }
            let backend = if connect.is_some() { Some(BackendKind::Libvirt) } else { backend };
            let mut plan = match clonesafe::scenario::load_plan(&files) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: {e}");
                    return exit_codes::HARNESS_ERROR;
                }
            };
            if let Some(b) = backend {
                plan.override_backend(b);
            }
            if let Some(i) = &image {
                plan.override_image(i);
            }
            let shard = shard.map(|spec| {
                let info = plan.shard(spec);
                eprintln!("shard {spec}: {} of the plan's {} scenario(s)", plan.scenarios.len(), info.plan.len());
                info
            });
            let opts = engine.options(jobs, parallel, &out, shard, image_policy);
            let report = match execute(&plan, &out, reference, opts, &CliBackends { libvirt_mode: libvirt_snapshot, remote: connect.map(|c| (c, pool_dir)) }, None).await {
                Ok(r) => r,
                Err(code) => return code,
            };
            println!("{}", terminal::closing_line(&report));
            report.exit_code()
        }
        Cmd::Assess { image, from, guest, image_policy, identities, out, backend, clones, fail_on, recipe, engine, parallel, connect, pool_dir } => {
            let mut scenarios = match clonesafe::assess::plan(identities.as_deref(), clones) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: {}", clonesafe::text::for_terminal(&e.to_string()));
                    return exit_codes::HARNESS_ERROR;
                }
            };
            for s in &mut scenarios {
                if let Some(g) = &guest {
                    s.guest = g.clone();
                }
            }
            let mut plan = clonesafe::scenario::Plan { scenarios };
            if connect.is_some() && backend == Some(BackendKind::Qemu) {
                eprintln!("error: --connect is for the libvirt backend (it names a libvirt host); drop --backend qemu or --connect");
                return exit_codes::HARNESS_ERROR;
            }
            if connect.is_some() {
                if let Err(e) = clonesafe::backend::libvirt::remote::check_pool_dir(&pool_dir) {
                    eprintln!("error: {e}");
                    return exit_codes::HARNESS_ERROR;
                }
            }
            if let Some(b) = backend.or(connect.as_ref().map(|_| BackendKind::Libvirt)) {
                plan.override_backend(b);
            }
            if let Some(i) = &image {
                plan.override_image(i);
            }
            let backends = CliBackends { libvirt_mode: SnapshotMode::External, remote: connect.clone().map(|c| (c, pool_dir)) };
            // What the backend cannot run is left out now, and said in the assessment.
            let mut not_run = Vec::new();
            if from.is_none() {
                let kind = plan.scenarios.first().map(|s| s.backend).unwrap_or(BackendKind::Qemu);
                let b = match backends.get(kind) {
                    Ok(b) => b,
                    Err(e) => {
                        eprintln!("error: {}", clonesafe::text::for_terminal(&e.to_string()));
                        return exit_codes::HARNESS_ERROR;
                    }
                };
                let at = match &connect {
                    Some(uri) => format!("the libvirt host at {uri}"),
                    None => format!("the {kind} backend"),
                };
                not_run = clonesafe::assess::unavailable(&plan.scenarios, &b.capabilities(), &at);
                plan.scenarios.retain(|s| !not_run.iter().any(|n| n.scenario == s.name));
                for n in &not_run {
                    eprintln!("assess: not running {}: {}", n.scenario, n.reason);
                }
                if let Some(n) = not_run.iter().find(|n| n.scenario == recipe && fail_on.is_some()) {
                    eprintln!("error: --fail-on judges --recipe {recipe}, which cannot run here: {}; choose another --recipe", n.reason);
                    return exit_codes::HARNESS_ERROR;
                }
            }
            let subject = image.as_ref().map(|i| i.display().to_string()).or(guest.clone()).unwrap_or_default();
            let ran = match &from {
                Some(p) => read_json::<clonesafe_metadata::Report>(p, "a clonesafe report").map_err(|e| {
                    eprintln!("error: {}", clonesafe::text::for_terminal(&e));
                    exit_codes::HARNESS_ERROR
                }).and_then(|r| {
                    let names: Vec<&str> = r.scenarios.iter().map(|s| s.name.as_str()).chain(r.assessment.iter().flat_map(|a| a.not_run.iter().map(|n| n.scenario.as_str()))).collect();
                    if clonesafe::assess::SUITE.iter().any(|s| !names.contains(&s.0)) {
                        eprintln!("error: {} is not the report of an assess run (its scenarios are not the suite's)", p.display());
                        return Err(exit_codes::HARNESS_ERROR);
                    }
                    if let Err(e) = std::fs::create_dir_all(&out) {
                        eprintln!("error: cannot write into {}: {e}", out.display());
                        return Err(exit_codes::HARNESS_ERROR);
                    }
                    Ok(r)
                }),
                None => Err(0),
            };
            let (subject, ran) = match ran {
                Ok(r) => (r.assessment.as_ref().map(|a| a.subject.clone()).unwrap_or_else(|| r.scenarios[0].guest.clone()), Some(r)),
                Err(0) => (subject, None),
                Err(code) => return code,
            };
            let opts = engine.options(2, parallel, &out, None, image_policy);
            let eta = TimeLeft::new(plan.scenarios.len(), parallel.into());
            let mut report = match ran {
                Some(r) => {
                    not_run = r.assessment.as_ref().map(|a| a.not_run.clone()).unwrap_or_default();
                    r
                }
                None => match execute(&plan, &out, false, opts, &backends, Some(&eta)).await {
                    Ok(r) => r,
                    Err(code) => return code,
                },
            };
            let a = clonesafe::assess::assess(&subject, &report, not_run);
            let worst = clonesafe::assess::worst(&a, &recipe);
            for c in &a.conclusions {
                println!("- {}", clonesafe::text::for_terminal(&c.text));
            }
            report.assessment = Some(a);
            match report::write_all(&report, &out) {
                Ok(files) => {
                    for p in files.iter().filter(|p| p.ends_with("assessment.md")) {
                        println!("wrote {}", p.display());
                    }
                }
                Err(e) => {
                    eprintln!("error: cannot write the assessment into {}: {e}", out.display());
                    return exit_codes::HARNESS_ERROR;
                }
            }
            if report.scenarios.iter().any(|s| s.error.is_some()) {
                return exit_codes::HARNESS_ERROR;
            }
            match (fail_on, worst) {
                (Some(limit), Some(w)) if w.rank() <= limit.rank() => {
                    println!("{recipe} leaves an identity of severity {w} shared (--fail-on {limit})");
                    exit_codes::EXPECTATION_FAILED
                }
                _ => exit_codes::OK,
            }
        }
        Cmd::Bench { out, memory, dirty_fraction, fanout, repeat, accel, guests, guest, image, image_policy, workdir, emulator } => {
            if !choose_emulator(emulator.as_deref()) {
                return exit_codes::HARNESS_ERROR;
            }
            let guests = guests.unwrap_or_else(clonesafe::guest::default_guests_dir);
            let guest = match &image {
                Some(path) => clonesafe::guest::GuestProfile::from_image(path, &image_policy.policy()),
                None => clonesafe::guest::GuestProfile::locate(&guests, &guest),
            };
            let guest = match guest {
                Ok(g) => g,
                Err(e) => {
                    eprintln!("error: {}", clonesafe::error_chain(&e));
                    return exit_codes::HARNESS_ERROR;
                }
            };
            bench(out, memory, dirty_fraction, fanout, repeat, accel, guest, workdir).await
        }
        Cmd::Doctor { trial_boot, image, image_policy, connect, guests, json } => {
            let guests = guests.unwrap_or_else(clonesafe::guest::default_guests_dir);
            let work = std::env::temp_dir().join(format!("clonesafe-doctor-{}", std::process::id()));
            let items = match (&image, &connect) {
                (Some(p), _) => clonesafe::doctor::inspect_image(p, &image_policy.policy()).await,
                (None, Some(uri)) => clonesafe::doctor::remote(uri).await,
                (None, None) => clonesafe::doctor::run(&guests, trial_boot, &work).await,
            };
            let _ = std::fs::remove_dir_all(&work);
            if json {
                println!("{}", serde_json::to_string_pretty(&items).unwrap_or_default());
            } else {
                for i in &items {
                    println!("{:<4} {:<14} {}", if i.ok { "ok" } else { "NO" }, i.what, clonesafe::text::for_terminal(&i.detail));
                }
            }
            if items.iter().all(|i| i.ok || ["kvm", "agent", "ssh"].contains(&i.what.as_str())) {
                exit_codes::OK
            } else {
                exit_codes::HARNESS_ERROR
            }
        }
    }
}
