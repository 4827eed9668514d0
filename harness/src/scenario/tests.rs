use super::*;
use clonesafe_metadata::{BackendKind, CheckId, Expectation, FixupId, Method, Recipe, Strategy, Verdict};

const GOOD: &str = r#"
[[scenario]]
name = "naive"
strategy = "naive"
clones = 3

[scenario.expect]
mac = "duplicate"
kernel_rng = "any"

[[scenario]]
name = "boot"
strategy = "cold-boot"
backend = "libvirt"
clones = 2
memory_mib = 512
"#;

fn err(src: &str) -> ScenarioError {
    parse(Path::new("s.toml"), src).unwrap_err()
}

#[test]
fn a_good_file_becomes_a_plan_with_defaults() {
    let p = parse(Path::new("s.toml"), GOOD).unwrap();
    assert_eq!(p.len(), 2);
    assert_eq!((p[0].guest.as_str(), p[0].backend, p[0].memory_mib, p[0].clones), ("tiny", BackendKind::Qemu, None, 3));
    assert_eq!(p[0].expect[&CheckId::Mac.into()], Expectation::Verdict(Verdict::Duplicate));
    assert_eq!(p[0].expect[&CheckId::KernelRng.into()], Expectation::Any);
    assert_eq!((p[1].strategy, p[1].backend, p[1].memory_mib), (Strategy::ColdBoot, BackendKind::Libvirt, Some(512)));
}

#[test]
fn unknown_fields_name_the_line_and_field() {
    let e = err("[[scenario]]\nname = \"a\"\nstrategy = \"naive\"\nclones = 2\ncolor = \"red\"\n");
    assert_eq!(e.line, 5, "{e}");
    assert!(e.to_string().starts_with("s.toml:5:"), "{e}");
    assert!(e.message.contains("unknown field `color`"), "{e}");
}

#[test]
fn bad_values_name_the_line_and_field() {
    let e = err("[[scenario]]\nname = \"a\"\nstrategy = \"naive\"\nclones = 99\n");
    assert_eq!((e.line, e.field.as_deref()), (4, Some("scenario[0].clones")), "{e}");
    let e = err("[[scenario]]\nname = \"a\"\nstrategy = \"teleport\"\nclones = 2\n");
    assert_eq!((e.line, e.field.as_deref()), (3, Some("scenario[0].strategy")), "{e}");
    assert!(e.message.contains("cold-boot, image-clone, image-clone-sysprep, naive, nic-replug, vmgenid, agent-fixup, full"), "{e}");
    assert!(!e.message.contains("custom"), "custom is a label, not a preset: {e}");
    let e = err("[[scenario]]\nname = \"a\"\nstrategy = \"naive\"\nclones = \"three\"\n");
    assert_eq!((e.line, e.field.as_deref()), (4, Some("clones")), "{e}");
    let e = err("[[scenario]]\nname = \"a\"\nstrategy = \"naive\"\nclones = 2\n[scenario.expect]\nmac = \"same\"\n");
    assert_eq!((e.line, e.field.as_deref()), (6, Some("scenario[0].expect.mac")), "{e}");
    let e = err("[[scenario]]\nname = \"a\"\nstrategy = \"naive\"\nclones = 2\n[scenario.expect]\ncpu = \"unique\"\n");
    assert!(e.message.contains("unknown check \"cpu\""), "{e}");
}

#[test]
fn structure_errors_are_caught() {
    assert!(err("").message.contains("no [[scenario]]"));
    let e = err("[[scenario]]\nname = \"a\"\nclones = 2\n");
    assert!(e.message.contains("missing field `strategy`"), "{e}");
    let e = err("[[scenario]]\nname = \"a\"\nstrategy = \"naive\"\nclones = 2\n[[scenario]]\nname = \"a\"\nstrategy = \"naive\"\nclones = 2\n");
    assert_eq!(e.line, 6, "{e}");
    assert!(err("[[scenario]\n").line >= 1);
    assert!(err("[[scenario]]\nname = \"Bad Name\"\nstrategy = \"naive\"\nclones = 2\n").message.contains("not a valid name"));
}

#[test]
fn the_shipped_scenarios_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            load(&p).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

/// A recipe composed from `method` and `fixups` is a plan of its own; one equal to a preset is
/// labelled with the preset's name.
#[test]
fn recipes_compose_from_method_and_fixups() {
    let src = "[[scenario]]\nname = \"a\"\nmethod = \"live\"\nfixups = [\"vmgenid\", \"agent\"]\nclones = 2\n\n[[scenario]]\nname = \"b\"\nmethod = \"live\"\nfixups = [\"nic-replug\", \"vmgenid\", \"agent\"]\nclones = 2\nmitigate_remanence = true\n";
    let p = parse(Path::new("s.toml"), src).unwrap();
    assert_eq!(p[0].recipe, Recipe { method: Method::Live, fixups: vec![FixupId::Vmgenid, FixupId::Agent] });
    assert_eq!(p[0].strategy, Strategy::Custom);
    assert_eq!(p[1].strategy, Strategy::Full);
    assert_eq!(p[1].recipe.fixups[0], FixupId::MitigateRemanence);
    assert!(p[1].canary, "mitigation implies the canary");
}

#[test]
fn composition_errors_name_the_line_and_field() {
    let e = err("[[scenario]]\nname = \"a\"\nmethod = \"live\"\nfixups = [\"vmgenid\", \"teleport\"]\nclones = 2\n");
    assert_eq!((e.line, e.field.as_deref()), (4, Some("scenario[0].fixups[1]")), "{e}");
    assert!(e.message.contains("unknown fix-up \"teleport\"") && e.message.contains("nic-replug"), "{e}");
    let e = err("[[scenario]]\nname = \"a\"\nmethod = \"cold-boot\"\nfixups = [\"vmgenid\"]\nclones = 2\n");
    assert!(e.message.contains("vmgenid does not apply to method cold-boot") && e.message.contains("live"), "{e}");
    let e = err("[[scenario]]\nname = \"a\"\nmethod = \"live\"\nfixups = [\"agent\", \"agent\"]\nclones = 2\n");
    assert!(e.message.contains("listed twice"), "{e}");
    let e = err("[[scenario]]\nname = \"a\"\nstrategy = \"naive\"\nmethod = \"live\"\nclones = 2\n");
    assert_eq!((e.line, e.field.as_deref()), (4, Some("scenario[0].method")), "{e}");
    let e = err("[[scenario]]\nname = \"a\"\nstrategy = \"naive\"\nfixups = [\"agent\"]\nclones = 2\n");
    assert!(e.message.contains("fixups compose with method"), "{e}");
    let e = err("[[scenario]]\nname = \"a\"\nmethod = \"warp\"\nclones = 2\n");
    assert!(e.message.contains("unknown clone method \"warp\"") && e.message.contains("image-copy"), "{e}");
    let e = err("[[scenario]]\nname = \"a\"\nstrategy = \"cold-boot\"\nclones = 2\nmitigate_remanence = true\n");
    assert!(e.message.contains("does not apply to method cold-boot"), "{e}");
    // genid-wait waits for vmgenid's uevent, and one gate holds the first read.
    let e = err("[[scenario]]\nname = \"a\"\nmethod = \"live\"\nfixups = [\"genid-wait\"]\nclones = 2\n");
    assert_eq!((e.line, e.field.as_deref()), (4, Some("scenario[0].fixups[0]")), "{e}");
    assert!(e.message.contains("list vmgenid before it"), "{e}");
    let e = err("[[scenario]]\nname = \"a\"\nmethod = \"live\"\nfixups = [\"vmgenid\", \"rng-gate\", \"genid-wait\"]\nclones = 2\n");
    assert_eq!(e.field.as_deref(), Some("scenario[0].fixups[2]"), "{e}");
    assert!(e.message.contains("rng-gate and genid-wait both hold the first RNG read"), "{e}");
    assert!(parse(Path::new("s.toml"), "[[scenario]]\nname = \"a\"\nmethod = \"live\"\nfixups = [\"vmgenid\", \"genid-wait\"]\nclones = 2\n").is_ok());
}

/// Issue 11, item 3 and 5: a FIFO or /dev/zero as a scenario file used to block or grow memory
/// without bound; a directory or non-UTF-8 file said `:0:0:`.
#[test]
fn files_that_are_not_small_regular_text_are_refused_at_once() {
    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("s.toml");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let e = load(&fifo).unwrap_err().to_string();
    assert!(e.contains("s.toml: not a regular file (it is a FIFO)") && !e.contains(":0:0"), "{e}");
    let e = load(Path::new("/dev/zero")).unwrap_err().to_string();
    assert!(e.starts_with("/dev/zero: not a regular file (it is a character device)"), "{e}");
    let e = load(d.path()).unwrap_err().to_string();
    assert!(e.contains("a directory") && !e.contains(":0:0"), "{e}");
    let big = d.path().join("big.toml");
    std::fs::write(&big, vec![b'#'; 2 << 20]).unwrap();
    assert!(load(&big).unwrap_err().to_string().contains("too large: 2097152 bytes"));
    let bad = d.path().join("bad.toml");
    std::fs::write(&bad, b"[[scenario]]\nname = \"\xff\"\n").unwrap();
    assert!(load(&bad).unwrap_err().to_string().contains("not UTF-8 text (first bad byte at offset 21)"));
    let e = load(&d.path().join("missing.toml")).unwrap_err().to_string();
    assert!(e.contains("missing.toml: cannot read: No such file") && !e.contains(":0:0"), "{e}");
}

#[test]
fn a_huge_bad_value_is_cut_in_the_message() {
    let v = "x".repeat(500_000);
    let e = err(&format!("[[scenario]]\nname = \"a\"\nstrategy = \"{v}\"\nclones = 2\n")).to_string();
    assert!(e.len() < 1000, "{} bytes", e.len());
    assert!(e.starts_with("s.toml:3:"), "{}", &e[..100]);
}

#[test]
fn a_missing_field_and_a_name_used_twice_across_files_say_where() {
    let e = err("[[scenario]]\nname = \"a\"\nstrategy = \"naive\"\nclones = 2\n\n[[scenario]]\nname = \"b\"\nstrategy = \"naive\"\n");
    assert_eq!(e.field.as_deref(), Some("scenario[1].clones"), "{e}");
    assert!(e.line > 0, "{e}");
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (d.path().join("a.toml"), d.path().join("b.toml"));
    std::fs::write(&a, "[[scenario]]\nname = \"x\"\nstrategy = \"naive\"\nclones = 2\n").unwrap();
    std::fs::write(&b, "# another\n\n[[scenario]]\nname = \"x\"\nstrategy = \"naive\"\nclones = 2\n").unwrap();
    let e = load_plan(&[a.clone(), b]).unwrap_err().to_string();
    assert!(e.contains("b.toml:4:1: name: \"x\" is also a scenario in") && e.contains("a.toml:2"), "{e}");
}

/// `pool` belongs to the shared-ram method and is bounded; the method composes with fix-ups.
#[test]
fn a_warm_pool_is_for_shared_ram_only() {
    let ok = "[[scenario]]\nname = \"a\"\nmethod = \"shared-ram\"\nfixups = [\"vmgenid\", \"agent\"]\npool = 2\nclones = 3\n";
    let p = parse(Path::new("s.toml"), ok).unwrap();
    assert_eq!((p[0].recipe.method, p[0].pool), (Method::SharedRam, Some(2)));
    let e = err("[[scenario]]\nname = \"a\"\nstrategy = \"naive\"\npool = 2\nclones = 3\n");
    assert_eq!((e.line, e.field.as_deref()), (4, Some("scenario[0].pool")), "{e}");
    assert!(e.message.contains("shared-ram method, not live"), "{e}");
    let e = err("[[scenario]]\nname = \"a\"\nmethod = \"shared-ram\"\npool = 0\nclones = 3\n");
    assert!(e.message.contains("0 is out of range"), "{e}");
}

/// `network` is user (the default) or segment; the segment refuses shared-ram's frozen template.
#[test]
fn network_is_user_or_segment() {
    let p = parse(Path::new("s.toml"), "[[scenario]]\nname = \"a\"\nstrategy = \"naive\"\nclones = 2\n").unwrap();
    assert_eq!(p[0].network, Network::User);
    let p = parse(Path::new("s.toml"), "[[scenario]]\nname = \"a\"\nstrategy = \"full\"\nclones = 2\nnetwork = \"segment\"\n").unwrap();
    assert_eq!(p[0].network, Network::Segment);
    let e = err("[[scenario]]\nname = \"a\"\nstrategy = \"naive\"\nclones = 2\nnetwork = \"bridge\"\n");
    assert_eq!((e.line, e.field.as_deref()), (5, Some("scenario[0].network")), "{e}");
    assert!(e.message.contains("\"bridge\" is not a network"), "{e}");
    let e = err("[[scenario]]\nname = \"a\"\nmethod = \"shared-ram\"\nclones = 2\nnetwork = \"segment\"\n");
    assert!(e.message.contains("not offered with the shared-ram method"), "{e}");
}

const SCEN: &str = "[[scenario]]\nname = \"a\"\nstrategy = \"naive\"\nclones = 2\n";

#[test]
fn declared_identities_apply_to_every_scenario_or_one_and_take_expectations() {
    let src = format!(
        "[[identity]]\nid = \"node_id\"\nfile = \"/var/lib/agent/node-id\"\nexpect = \"unique\"\n\n{SCEN}[scenario.expect]\nnode_id = \"duplicate\"\n[[scenario.identity]]\nid = \"pg_system_id\"\ncommand = [\"pg_controldata\", \"/var/lib/postgresql/15/main\"]\nmatch = 'identifier:\\s+(\\d+)'\nwhen = \"right-after-resume\"\ntimeout_s = 3\nseverity = \"identity-confusion\"\nconsequence = \"replicas refuse it\"\n\n[[scenario]]\nname = \"b\"\nstrategy = \"full\"\nclones = 2\n"
    );
    let p = parse(Path::new("s.toml"), &src).unwrap();
    let ids = |i: usize| p[i].declared.iter().map(|d| d.id.as_str()).collect::<Vec<_>>();
    assert_eq!((ids(0), ids(1)), (vec!["node_id", "pg_system_id"], vec!["node_id"]));
    let pg = &p[0].declared[1];
    assert_eq!((pg.when, pg.timeout.as_secs(), pg.line), (declared::When::RightAfterResume, 3, 13));
    assert_eq!(pg.source, declared::Source::Command(vec!["pg_controldata".into(), "/var/lib/postgresql/15/main".into()]));
    assert_eq!(p[0].declared[0].source, declared::Source::File("/var/lib/agent/node-id".into()));
    assert_eq!((pg.severity, pg.consequence.as_deref()), (Some(clonesafe_metadata::Severity::IdentityConfusion), Some("replicas refuse it")));
    assert_eq!(p[0].declared[0].severity, None);
    // The scenario's [scenario.expect] wins over the declaration's own expect.
    let node = clonesafe_metadata::CheckName::Declared("node_id".into());
    assert_eq!(p[0].expect[&node], Expectation::Verdict(Verdict::Duplicate));
    assert_eq!(p[1].expect[&node], Expectation::Verdict(Verdict::Unique));
    assert_eq!(p[1].declared[0].timeout.as_secs(), declared::DEFAULT_TIMEOUT_S);
}

#[test]
fn bad_declarations_name_the_file_line_and_field() {
    let case = |decl: &str| err(&format!("{SCEN}[[scenario.identity]]\n{decl}"));
    let cases: &[(&str, usize, &str, &str)] = &[
        ("id = \"x\"\nfile = \"/a\"\ncolour = 1\n", 8, "colour", "unknown field `colour`"),
        ("id = \"x\"\nfile = \"/a\"\ncommand = [\"/bin/true\"]\n", 8, "scenario[0].identity[0].command", "not both"),
        ("id = \"x\"\ndescription = \"none\"\n", 5, "scenario[0].identity[0].file", "give file"),
        ("id = \"machine_id\"\nfile = \"/a\"\n", 6, "scenario[0].identity[0].id", "built-in check"),
        ("id = \"Bad-Id\"\nfile = \"/a\"\n", 6, "scenario[0].identity[0].id", "snake_case"),
        ("id = \"x\"\nfile = \"/a\"\n[[scenario.identity]]\nid = \"x\"\nfile = \"/b\"\n", 9, "scenario[0].identity[1].id", "repeats the identity declared at s.toml:6"),
        ("id = \"x\"\ncommand = [\"/bin/cat\"]\nmatch = \"(unclosed\"\n", 8, "scenario[0].identity[0].match", "not a regular expression"),
        ("id = \"x\"\nfile = \"etc/node-id\"\n", 7, "scenario[0].identity[0].file", "not an absolute path"),
        ("id = \"x\"\ncommand = [\"./run\", \"a\"]\n", 7, "scenario[0].identity[0].command[0]", "relative path"),
        ("id = \"x\"\ncommand = []\n", 7, "scenario[0].identity[0].command", "empty argv"),
        ("id = \"x\"\ncommand = [\"/bin/cat\"]\nwhen = \"later\"\n", 8, "scenario[0].identity[0].when", "right-after-resume"),
        ("id = \"x\"\ncommand = [\"/bin/cat\"]\ntimeout_s = 0\n", 8, "scenario[0].identity[0].timeout_s", "out of range"),
        ("id = \"x\"\nfile = \"/a\"\ntimeout_s = 5\n", 8, "scenario[0].identity[0].timeout_s", "bounds a command"),
        ("id = \"x\"\nfile = \"/a\"\nseverity = \"bad\"\n", 8, "scenario[0].identity[0].severity", "key-reuse"),
    ];
    for (decl, line, field, msg) in cases {
        let e = case(decl);
        assert_eq!((e.line, e.field.as_deref()), (*line, Some(*field)), "{decl}: {e}");
        assert!(e.message.contains(msg) && e.to_string().starts_with(&format!("s.toml:{line}:")), "{decl}: {e}");
    }
    // A declared id repeated between the file's list and a scenario's; an expectation on an id
    // nobody declared.
    let e = err(&format!("[[identity]]\nid = \"x\"\nfile = \"/a\"\n{SCEN}[[scenario.identity]]\nid = \"x\"\nfile = \"/b\"\n"));
    assert_eq!((e.line, e.field.as_deref()), (9, Some("scenario[0].identity[0].id")), "{e}");
    let e = err(&format!("{SCEN}[scenario.expect]\nnode_id = \"unique\"\n"));
    assert!(e.message.contains("unknown check \"node_id\""), "{e}");
}
