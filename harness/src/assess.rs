//! `clonesafe assess`: the reviewer's answer for one image. A fixed suite of recipes runs on it,
//! and what the report measured is drawn into an [`Assessment`]: what the image itself ships
//! (shared by fresh boots, the baseline), what each recipe still leaves shared, grouped by how
//! bad it is, what each costs, and conclusions that each name the cells they rest on.
//!
//! ```text
//!  assess-cold-boot            the baseline: fresh boots of the image
//!  assess-image-clone          the disk copied per clone
//!  assess-image-clone-sysprep  the same, with virt-sysprep's default operations
//!  assess-naive                live clones, nothing done
//!  assess-full                 live clones with nic-replug, vmgenid and the agent fix-up
//!  assess-strongest            full + rng-gate + clock: the strongest recipe clonesafe knows
//! ```

use crate::checks::catalogue::consequence;
use crate::scenario::{ScenarioError, ScenarioPlan};
use clonesafe_metadata::{Assessment, CheckName, CheckReport, Conclusion, NotRun, RecipeAssessment, Report, ScenarioReport, Severity, Shared, Verdict};
use std::path::Path;

/// The suite: (scenario name, how its recipe is written in a scenario file, what it stands for).
pub const SUITE: &[(&str, &str, &str)] = &[
    ("assess-cold-boot", "strategy = \"cold-boot\"", "fresh boots of the image (the baseline)"),
    ("assess-image-clone", "strategy = \"image-clone\"", "the disk copied per clone"),
    ("assess-image-clone-sysprep", "strategy = \"image-clone-sysprep\"", "the copy with virt-sysprep's default operations"),
    ("assess-naive", "strategy = \"naive\"", "live clones of a running VM, nothing done"),
    ("assess-full", "strategy = \"full\"", "live clones with nic-replug, vmgenid and the agent fix-up"),
    ("assess-strongest", "method = \"live\"\nfixups = [\"nic-replug\", \"vmgenid\", \"agent\", \"rng-gate\", \"clock\"]", "the strongest recipe clonesafe knows: full, the RNG gate and the clock"),
];

/// The suite's scenarios a backend cannot run, with the reason, before any VM starts: on a
/// remote libvirt host the image-clone recipes need the harness to copy (and sysprep) the disk
/// files on this machine, which it cannot there. The capabilities are the backend's own
/// declaration (backend/capability.rs), the same the runner's pre-flight checks.
pub fn unavailable(plan: &[ScenarioPlan], caps: &crate::backend::capability::Capabilities, at: &str) -> Vec<NotRun> {
    plan.iter()
        .filter_map(|s| {
            let (c, by) = crate::clones::requirements(s).into_iter().find(|(c, _)| !caps.has(*c))?;
            Some(NotRun { scenario: s.name.clone(), reason: format!("its {by} needs {c}, which {at} does not offer") })
        })
        .collect()
}

/// The recipe `--fail-on` judges unless told otherwise.
pub const DEFAULT_RECIPE: &str = "assess-strongest";

/// The suite as a scenario file, after the user's `[[identity]]` tables (`identities`, the text
/// of their file, which must hold nothing else), for `clones` VMs each.
pub fn suite_toml(identities: &str, clones: u32) -> String {
    let mut s = String::from(identities);
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    for (name, recipe, what) in SUITE {
        s.push_str(&format!("\n[[scenario]]\nname = \"{name}\"\ndescription = \"{what}\"\n{recipe}\nclones = {clones}\n"));
    }
    s
}

/// The suite's plan, with the identities `file` declares (its `[[identity]]` tables only; line
/// numbers in errors are the file's own).
pub fn plan(file: Option<&Path>, clones: u32) -> Result<Vec<ScenarioPlan>, ScenarioError> {
    let (path, text) = match file {
        None => (Path::new("(assess suite)").to_path_buf(), String::new()),
        Some(p) => {
            let text = crate::input::read_text(p, crate::scenario::MAX_FILE_BYTES).map_err(|e| ScenarioError { file: p.to_path_buf(), line: 0, column: 0, field: None, message: e.to_string() })?;
            let only_identities = toml::from_str::<toml::Table>(&text).map(|t| t.keys().all(|k| k == "identity")).unwrap_or(true);
            if !only_identities {
                return Err(ScenarioError { file: p.to_path_buf(), line: 0, column: 0, field: None, message: "assess takes a file of [[identity]] tables only (its scenarios are fixed: see clonesafe assess --help)".into() });
            }
            (p.to_path_buf(), text)
        }
    };
    crate::scenario::parse(&path, &suite_toml(&text, clones))
}

/// How to fix a built-in identity that the image ships (every fresh boot shares it).
fn fix(id: &CheckName) -> Option<&'static str> {
    use clonesafe_metadata::CheckId::*;
    Some(match id.builtin()? {
        MachineId => "empty /etc/machine-id in the image (virt-sysprep's machine-id operation; systemd makes a new one at first boot), and check that nothing writes one back",
        Hostname => "set the hostname per instance at first boot (cloud-init, or virt-sysprep's net-hostname)",
        SshHostKeys | SshKeyscan => "remove the host keys from the image (virt-sysprep's ssh-hostkeys) so they are made at first boot",
        DbusMachineId => "make /var/lib/dbus/machine-id a link to /etc/machine-id (or remove it)",
        CloudInitInstanceId => "give each instance its own instance-id (a NoCloud seed per VM), or run cloud-init clean in the image",
        RandomSeed => "remove /var/lib/systemd/random-seed from the image (virt-sysprep's random-seed operation), or do not mark it creditable",
        CredentialSecret => "remove /var/lib/systemd/credential.secret from the image (systemd docs/BUILDING_IMAGES.md)",
        TlsTicketKey | OpensslRng => "make the TLS service's keys at first boot, not in the image",
        DhcpClientId | Ipv4Lease | Ipv6Addr | ArpConflict | IpWindowMs => "the client identity follows machine-id: fix machine-id",
        _ => return None,
    })
}

/// A built-in check's severity and consequence from the catalogue; a declared identity's as its
/// declaration states them (carried by the check, so `--from` keeps them).
fn severity_of(c: &CheckReport) -> (Option<Severity>, String) {
    match c.id().builtin() {
        Some(b) => {
            let (s, c) = consequence(b);
            (Some(s), c.to_string())
        }
        None => {
            let st = c.result.stated.as_ref();
            (st.and_then(|s| s.severity), st.and_then(|s| s.consequence.clone()).unwrap_or_else(|| "not stated in the declaration".into()))
        }
    }
}

fn median<T: Copy + PartialOrd>(v: &[T]) -> Option<T> {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get(v.len() / 2).copied()
}

/// Worst first; unknown severities last.
fn order(a: &Shared, b: &Shared) -> std::cmp::Ordering {
    let rank = |s: &Shared| s.severity.map(Severity::rank).unwrap_or(usize::MAX);
    rank(a).cmp(&rank(b)).then_with(|| a.id.cmp(&b.id))
}

fn names(list: &[&Shared]) -> String {
    list.iter().map(|s| format!("{} ({})", s.id, s.severity.map(|x| x.as_str()).unwrap_or("severity not stated"))).collect::<Vec<_>>().join(", ")
}

/// Draw the assessment from `r` (the suite's report) and the identities the user declared.
/// `not_run`: the suite's recipes left out before any VM started (see [`unavailable`]).
pub fn assess(subject: &str, r: &Report, not_run: Vec<NotRun>) -> Assessment {
    let baseline = r.scenarios.iter().find(|s| s.name == SUITE[0].0 && s.error.is_none());
    let dup = |s: &ScenarioReport, id: &CheckName| s.checks.iter().any(|c| c.id() == id && c.verdict() == Verdict::Duplicate);
    let shared_of = |s: &ScenarioReport, c: &CheckReport, shipped: bool| {
        let (severity, consequence) = severity_of(c);
        let id = c.id();
        Shared { id: id.clone(), severity, consequence, shipped, fix: if shipped { fix(id).map(str::to_string) } else { None }, cell: format!("{}/{}", s.name, id) }
    };
    let mut shipped: Vec<Shared> = baseline
        .map(|b| b.checks.iter().filter(|c| c.verdict() == Verdict::Duplicate).map(|c| {
            let mut s = shared_of(b, c, true);
            if s.fix.is_none() && c.id().is_declared() {
                s.fix = Some("regenerate it at first boot, before the application hands it out".into());
            }
            s
        }).collect())
        .unwrap_or_default();
    shipped.sort_by(order);
    let mut recipes = Vec::new();
    for s in r.scenarios.iter().filter(|s| s.name != SUITE[0].0) {
        let mut shared: Vec<Shared> = s.checks.iter().filter(|c| c.verdict() == Verdict::Duplicate).map(|c| shared_of(s, c, baseline.is_some_and(|b| dup(b, c.id())))).collect();
        shared.sort_by(order);
        let fixup: Vec<f64> = r.scenarios.iter().find(|x| x.name == s.name).map(|x| x.timing.measured(clonesafe_metadata::MeasurementId::FixupMs)).unwrap_or_default();
        recipes.push(RecipeAssessment {
            scenario: s.name.clone(),
            recipe: s.recipe_label(),
            error: s.error.clone(),
            shared,
            unknown: s.checks.iter().filter(|c| c.verdict() == Verdict::Error).map(|c| c.id().to_string()).collect(),
            snapshot_ms: s.timing.snapshot_ms,
            restore_ms: median(&s.timing.restore_ms),
            boot_ms: median(&s.timing.boot_ms),
            fixup_ms: median(&fixup),
        });
    }
    let mut conclusions = conclude(r, &shipped, &recipes, baseline.map(|b| b.name.as_str()));
    for n in &not_run {
        conclusions.push(Conclusion { text: format!("{} was not run: {}; nothing is concluded about it.", n.scenario, n.reason), cells: vec![] });
    }
    Assessment { subject: subject.to_string(), baseline: baseline.map(|b| b.name.clone()), shipped, recipes, not_run, conclusions }
}

/// Sentences that follow from the cells, each naming them. Nothing is said of a recipe that did
/// not run, and nothing of an identity a check could not read.
fn conclude(report: &Report, shipped: &[Shared], recipes: &[RecipeAssessment], baseline: Option<&str>) -> Vec<Conclusion> {
    let mut out = Vec::new();
    let cells = |l: &[&Shared]| l.iter().map(|s| s.cell.clone()).collect::<Vec<_>>();
    // A claim that something is unique names the cells that answered unique.
    let unique = |scenario: &str, keep: &dyn Fn(&CheckName) -> bool| -> Vec<String> {
        report.scenarios.iter().filter(|s| s.name == scenario).flat_map(|s| &s.checks).filter(|c| c.verdict() == Verdict::Unique && keep(c.id())).map(|c| format!("{scenario}/{}", c.id())).collect()
    };
    let all = |_: &CheckName| true;
    match baseline {
        None => out.push(Conclusion { text: "The baseline (fresh boots of the image) did not run, so nothing can be said about what the image itself ships; every shared identity below is counted against the recipe.".into(), cells: vec![] }),
        Some(b) if shipped.is_empty() => out.push(Conclusion { text: "Fresh boots of the image share nothing: the image ships no identity.".into(), cells: unique(b, &all) }),
        Some(_) => {
            let l: Vec<&Shared> = shipped.iter().collect();
            out.push(Conclusion { text: format!("The image itself ships {} identit{} that every fresh boot shares, whatever the recipe: {}. Fix the image (see each one's fix).", l.len(), if l.len() == 1 { "y" } else { "ies" }, names(&l)), cells: cells(&l) });
        }
    }
    let severe = |l: &[&Shared]| l.iter().any(|s| matches!(s.severity, Some(Severity::KeyReuse | Severity::NetworkCollision)));
    let ran: Vec<&RecipeAssessment> = recipes.iter().filter(|r| r.error.is_none()).collect();
    for r in recipes.iter().filter(|r| r.error.is_some()) {
        out.push(Conclusion { text: format!("{} ({}) could not run, so nothing is concluded about it.", r.scenario, r.recipe), cells: vec![format!("{}/(could not run)", r.scenario)] });
    }
    if let Some(n) = ran.iter().find(|r| r.scenario == "assess-naive") {
        let l = by_cloning(n);
        let worst: Vec<&Shared> = l.iter().copied().filter(|s| matches!(s.severity, Some(Severity::KeyReuse | Severity::NetworkCollision))).collect();
        if worst.is_empty() {
            let severe_id = |id: &CheckName| id.builtin().is_some_and(|b| matches!(consequence(b).0, Severity::KeyReuse | Severity::NetworkCollision));
            out.push(Conclusion { text: "A plain live restore (naive) made no key, secret, random-output or network identity shared beyond what the image ships.".into(), cells: unique(&n.scenario, &severe_id) });
        } else {
            out.push(Conclusion { text: format!("Live cloning this image by plain restore (naive) is not supportable: cloning makes these shared: {}.", names(&worst)), cells: cells(&worst) });
        }
    }
    // The live recipe that leaves the fewest identities shared by cloning, worst severities first.
    let score = |r: &RecipeAssessment| -> Vec<usize> {
        let l = by_cloning(r);
        let mut v: Vec<usize> = Severity::ALL.iter().map(|s| l.iter().filter(|x| x.severity == Some(*s)).count()).collect();
        v.push(l.iter().filter(|x| x.severity.is_none()).count());
        v
    };
    let live: Vec<&RecipeAssessment> = ran.iter().copied().filter(|r| ["assess-naive", "assess-full", "assess-strongest"].contains(&r.scenario.as_str())).collect();
    if let Some(best) = live.iter().min_by_key(|r| score(r)) {
        let l = by_cloning(best);
        let cost = format!("restore {} ms (median){}", best.restore_ms.map(|v| v.to_string()).unwrap_or_else(|| "?".into()), best.fixup_ms.map(|f| format!(", fix-up {f:.0} ms")).unwrap_or_default());
        if l.is_empty() {
            out.push(Conclusion { text: format!("With {} ({}), cloning itself leaves nothing shared beyond what the image ships; it costs {cost}.", best.scenario, best.recipe), cells: unique(&best.scenario, &all) });
        } else {
            let verdict = if severe(&l) { "still not supportable as it stands" } else { "supportable if these are acceptable" };
            out.push(Conclusion {
                text: format!("The best live recipe measured, {} ({}), is {verdict}: cloning still leaves {} shared ({cost}). What only a program can reseed needs that program told of the clone (vmgenid, or a restart).", best.scenario, best.recipe, names(&l)),
                cells: cells(&l),
            });
        }
    }
    for r in ran.iter().filter(|r| r.scenario.starts_with("assess-image-clone")) {
        let l = by_cloning(r);
        let boot = r.boot_ms.map(|v| v.to_string()).unwrap_or_else(|| "?".into());
        if l.is_empty() {
            out.push(Conclusion { text: format!("Copying the image ({}) makes nothing shared beyond what the image ships; each copy boots ({boot} ms median).", r.recipe), cells: unique(&r.scenario, &all) });
        } else {
            out.push(Conclusion { text: format!("Copying the image ({}) leaves {} shared beyond what the image ships.", r.recipe, names(&l)), cells: cells(&l) });
        }
    }
    // Of what the image ships, what each recipe makes unique and what it leaves shared.
    if !shipped.is_empty() {
        let verdict_in = |scenario: &str, id: &CheckName| report.scenarios.iter().find(|s| s.name == scenario).and_then(|s| s.checks.iter().find(|c| c.id() == id)).map(|c| c.verdict());
        for r in &ran {
            let still: Vec<&Shared> = r.shared.iter().filter(|s| s.shipped).collect();
            // Made unique only where the recipe's own cell says unique: a check that was skipped
            // or failed there tells nothing.
            let fixed: Vec<&Shared> = shipped.iter().filter(|s| verdict_in(&r.scenario, &s.id) == Some(Verdict::Unique)).collect();
            let untold: Vec<&Shared> = shipped.iter().filter(|s| !still.iter().any(|x| x.id == s.id) && !fixed.iter().any(|x| x.id == s.id)).collect();
            if fixed.is_empty() {
                continue;
            }
            let rest = if still.is_empty() { "none stays shared".to_string() } else { format!("{} stay{} shared", names(&still), if still.len() == 1 { "s" } else { "" }) };
            let untold_text = if untold.is_empty() { String::new() } else { format!("; {} could not be told there (not measured)", untold.iter().map(|s| s.id.as_str()).collect::<Vec<_>>().join(", ")) };
            out.push(Conclusion {
                text: format!("Of what the image ships, {} ({}) makes {} unique; {rest}{untold_text}.", r.scenario, r.recipe, fixed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>().join(", ")),
                cells: unique(&r.scenario, &|id| fixed.iter().any(|s| &s.id == id))
                    .into_iter()
                    .chain(still.iter().map(|s| s.cell.clone()))
                    .chain(untold.iter().map(|s| format!("{}/{}", r.scenario, s.id)))
                    .collect(),
            });
        }
    }
    out
}

fn by_cloning(r: &RecipeAssessment) -> Vec<&Shared> {
    r.shared.iter().filter(|s| !s.shipped).collect()
}

/// The worst severity `recipe` leaves shared (shipped or not), if any is known.
pub fn worst(a: &Assessment, recipe: &str) -> Option<Severity> {
    let r = a.recipes.iter().find(|r| r.scenario == recipe)?;
    r.shared.iter().filter_map(|s| s.severity).min_by_key(|s| s.rank())
}

/// assessment.md: the answer in one page.
pub fn markdown(a: &Assessment) -> String {
    use std::fmt::Write;
    let e = crate::text::md_escape;
    let mut m = String::new();
    let _ = writeln!(m, "# clonesafe assessment: {}\n", e(&a.subject));
    let _ = writeln!(m, "## Conclusions\n");
    for c in &a.conclusions {
        let cells = if c.cells.is_empty() { String::new() } else { format!(" (cells: {})", c.cells.iter().map(|x| format!("`{}`", e(x))).collect::<Vec<_>>().join(", ")) };
        let _ = writeln!(m, "- {}{cells}", e(&c.text));
    }
    let _ = writeln!(m, "\n## Shipped in the image (every fresh boot shares it)\n");
    if a.shipped.is_empty() {
        let _ = writeln!(m, "{}\n", if a.baseline.is_some() { "Nothing." } else { "Unknown: the baseline did not run." });
    }
    for s in &a.shipped {
        let _ = writeln!(m, "- **{}** ({}): {}. Fix: {}", e(s.id.as_str()), s.severity.map(|x| x.as_str()).unwrap_or("severity not stated"), e(&s.consequence), e(s.fix.as_deref().unwrap_or("not known to clonesafe")));
    }
    let _ = writeln!(m, "\n## Per recipe: what cloning leaves shared, worst first\n");
    let _ = writeln!(m, "| recipe | shared by cloning | also shipped | could not tell | snapshot ms | restore ms | boot ms | fix-up ms |\n|---|---|---|---|---|---|---|---|");
    for r in &a.recipes {
        if let Some(err) = &r.error {
            let _ = writeln!(m, "| {} ({}) | could not run: {} | | | | | | |", e(&r.scenario), e(&r.recipe), e(err.lines().next().unwrap_or_default()));
            continue;
        }
        let list = |shipped: bool| r.shared.iter().filter(|s| s.shipped == shipped).map(|s| format!("{} ({})", e(s.id.as_str()), s.severity.map(|x| x.as_str()).unwrap_or("?"))).collect::<Vec<_>>().join(", ");
        let n = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
        let _ = writeln!(m, "| {} ({}) | {} | {} | {} | {} | {} | {} | {} |", e(&r.scenario), e(&r.recipe), list(false), list(true), e(&r.unknown.join(", ")), n(r.snapshot_ms), n(r.restore_ms), n(r.boot_ms), r.fixup_ms.map(|f| format!("{f:.0}")).unwrap_or_default());
    }
    let _ = writeln!(m, "\nEvery cell named here is in report.json and report.html (`scenario/check`), with its values and evidence.");
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use clonesafe_metadata::{CheckId, CheckReport, CheckResult, Severity};

    fn scenario(name: &str, dups: &[CheckId], uniques: &[CheckId], error: Option<&str>) -> ScenarioReport {
        let check = |id: CheckId, v: Verdict| CheckReport::new(CheckResult { id: id.into(), declared: false, stated: None, verdict: v, values: vec![], detail: String::new(), evidence: None }, None);
        let mut s: ScenarioReport = serde_json::from_value(serde_json::json!({
            "name": name, "backend": "qemu", "strategy": "naive", "recipe": {"method": "live", "fixups": []}, "guest": "g",
            "clones": 2, "memory_mib": 256, "timing": {"boot_ms": [], "snapshot_ms": 700, "restore_ms": [900, 1100]},
            "checks": [], "expectations_met": true, "error": error, "vms": [], "notes": [], "duration_ms": 1
        }))
        .unwrap();
        s.checks = dups.iter().map(|i| check(*i, Verdict::Duplicate)).chain(uniques.iter().map(|i| check(*i, Verdict::Unique))).collect();
        s
    }

    fn report(scenarios: Vec<ScenarioReport>) -> Report {
        let mut r: Report = serde_json::from_str(include_str!("../../reports/apps/report.json")).unwrap();
        r.scenarios = scenarios;
        r
    }

    #[test]
    fn shipped_identities_are_told_apart_from_what_cloning_shares_and_every_claim_names_its_cells() {
        use CheckId::*;
        let r = report(vec![
            scenario("assess-cold-boot", &[MachineId], &[Mac, SshHostKeys, KernelRng, BootId], None),
            scenario("assess-naive", &[MachineId, Mac, SshHostKeys, KernelRng, BootId], &[], None),
            scenario("assess-full", &[], &[], Some("boom")),
            scenario("assess-strongest", &[MachineId, BootId], &[Mac, SshHostKeys, KernelRng], None),
        ]);
        let a = assess("img.qcow2", &r, vec![]);
        assert_eq!(a.shipped.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), vec!["machine_id"]);
        assert!(a.shipped[0].fix.as_deref().unwrap().contains("machine-id"));
        let naive = a.recipes.iter().find(|r| r.scenario == "assess-naive").unwrap();
        // Worst first: key reuse, then network, then identity confusion; machine_id is the image's.
        let order: Vec<(&str, bool)> = naive.shared.iter().map(|s| (s.id.as_str(), s.shipped)).collect();
        assert_eq!(order[..2], [("ssh_host_keys", false), ("kernel_rng", false)]);
        assert!(order.contains(&("machine_id", true)) && order.contains(&("mac", false)));
        assert_eq!(naive.restore_ms, Some(1100));
        let text: Vec<&str> = a.conclusions.iter().map(|c| c.text.as_str()).collect();
        let naive_c = a.conclusions.iter().find(|c| c.text.contains("(naive) is not supportable")).unwrap_or_else(|| panic!("{text:#?}"));
        assert!(naive_c.cells.contains(&"assess-naive/kernel_rng".to_string()) && !naive_c.cells.iter().any(|c| c.ends_with("machine_id")));
        assert!(text.iter().any(|t| t.contains("assess-full") && t.contains("could not run")), "{text:#?}");
        let best = a.conclusions.iter().find(|c| c.text.contains("best live recipe")).unwrap();
        assert!(best.text.contains("assess-strongest") && best.text.contains("supportable if these are acceptable") && best.cells == ["assess-strongest/boot_id"], "{best:?}");
        // --fail-on judges everything the recipe leaves shared, the image's own included.
        assert_eq!(worst(&a, "assess-strongest"), Some(Severity::NetworkCollision));
        assert_eq!(worst(&a, "assess-naive"), Some(Severity::KeyReuse));
        let md = markdown(&a);
        assert!(md.contains("## Shipped in the image") && md.contains("`assess-naive/kernel_rng`"), "{md}");
    }

    /// A shipped identity is "made unique" by a recipe only where that recipe's cell says so; one
    /// its check did not answer is said to be untold (in the committed Debian run, ssh_keyscan
    /// was skipped under virt-sysprep's copy, and an earlier rule counted it as made unique).
    #[test]
    fn an_identity_a_recipe_did_not_measure_is_not_claimed_unique() {
        use CheckId::*;
        let r = report(vec![scenario("assess-cold-boot", &[MachineId, Hostname], &[], None), scenario("assess-full", &[], &[MachineId], None)]);
        let a = assess("img.qcow2", &r, vec![]);
        let c = a.conclusions.iter().find(|c| c.text.starts_with("Of what the image ships, assess-full")).unwrap();
        assert!(c.text.contains("makes machine_id unique") && c.text.contains("hostname could not be told there"), "{c:?}");
        assert_eq!(c.cells, ["assess-full/machine_id", "assess-full/hostname"]);
        let a = assess("img.qcow2", &r, vec![NotRun { scenario: "assess-naive".into(), reason: "its method needs x".into() }]);
        assert!(a.conclusions.iter().any(|c| c.text.starts_with("assess-naive was not run: its method needs x")));
    }

    #[test]
    fn the_suite_takes_identity_files_only() {
        let d = tempfile::tempdir().unwrap();
        let ok = d.path().join("ids.toml");
        std::fs::write(&ok, "[[identity]]\nid = \"node_id\"\nfile = \"/var/lib/node-id\"\nseverity = \"identity-confusion\"\n").unwrap();
        let p = plan(Some(&ok), 2).unwrap();
        assert_eq!(p.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), SUITE.iter().map(|s| s.0).collect::<Vec<_>>());
        assert!(p.iter().all(|s| s.declared.len() == 1 && s.clones == 2));
        assert_eq!(p[5].recipe.fixups.len(), 5, "the strongest recipe");
        let bad = d.path().join("scen.toml");
        std::fs::write(&bad, "[[scenario]]\nname = \"x\"\nstrategy = \"naive\"\nclones = 2\n").unwrap();
        assert!(plan(Some(&bad), 2).unwrap_err().message.contains("[[identity]] tables only"));
        std::fs::write(&bad, "[[identity]]\nid = \"mac\"\nfile = \"/x\"\n").unwrap();
        let e = plan(Some(&bad), 2).unwrap_err();
        assert_eq!((e.line, e.field.as_deref()), (2, Some("identity[0].id")), "{e}");
    }
}
